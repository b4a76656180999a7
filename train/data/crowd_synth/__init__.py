"""``crowd_synth``: synthetic Crowd-drone-like aerial scenes (128x128 RGB, ``crowd`` / ``no_crowd``).

The real Crowd-drone set is not public, so the toolkit ships a generator that poses the same
question: does this drone view show a dense group of people? Each generator version is one
renderer module (``scene_v2``, ...); :mod:`.folder` writes a cached, parallel, atomic image folder
of any version; :mod:`.cli` is ``python -m train.data.crowd_synth``.

Image ``i`` of (split, class) comes from ``numpy.random.default_rng([seed, split, class, i])``, so
it is the same whatever the size of the set; the cache key holds the generator version, and a
change that alters any pixel of a version is a new version.

    python -m train.data.crowd_synth --per-class 7000 --seed 0 --out data/crowd_synth
    python -m train.data.crowd_synth --per-class 8 --out /tmp/cs --preview preview.png
"""
from train.data.crowd_synth.layout import (CLASSES, DEFAULT_AUGMENT, GENERATOR_VERSION, MARKER,
                                           PAPER_TRAIN_PER_CLASS, SIZE, SPLITS, VERSIONS,
                                           default_augment, n_test_per_class)
from train.data.crowd_synth.folder import (cache_folder, ensure_crowd_synth, generate_folder,
                                           is_complete, renderer)
from train.data.crowd_synth.cli import contact_sheet, main


def render(seed: int, split_id: int, class_id: int, index: int, version: int = GENERATOR_VERSION):
    """Image ``index`` of (split, class) as 128x128x3 uint8 RGB; a pure function of its arguments."""
    return renderer(version)(seed, split_id, class_id, index)


def ground_scale(version: int = GENERATOR_VERSION):
    """The ground scale a generator version's scenes are drawn at (contract 4)."""
    import importlib

    return importlib.import_module(f"train.data.crowd_synth.scene_v{version}").ground_scale()


__all__ = ["CLASSES", "DEFAULT_AUGMENT", "GENERATOR_VERSION", "MARKER", "PAPER_TRAIN_PER_CLASS", "SIZE",
           "SPLITS", "VERSIONS", "cache_folder", "contact_sheet", "default_augment", "ensure_crowd_synth",
           "generate_folder", "ground_scale", "is_complete", "main", "n_test_per_class", "render", "renderer"]
