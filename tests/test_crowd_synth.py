"""crowd_synth: determinism, folder layout, caching and atomicity, and that the classes are not
separable by global image statistics while a trained crowd_fcn separates them."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from train.data import crowd_synth as cs


def _digest(root: Path, split: str, name: str, index: int) -> str:
    return hashlib.sha256((root / split / name / f"{index:05d}.png").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return cs.ensure_crowd_synth(40, seed=0, cache_dir=tmp_path_factory.mktemp("cs40"), workers=2,
                                 progress=False)


def test_render_shape_dtype_and_purity():
    a = cs.render(0, 0, 0, 3)
    assert a.shape == (cs.SIZE, cs.SIZE, 3) and a.dtype == np.uint8
    assert np.array_equal(a, cs.render(0, 0, 0, 3))
    assert not np.array_equal(a, cs.render(1, 0, 0, 3))      # another seed
    assert not np.array_equal(a, cs.render(0, 1, 0, 3))      # the test split is other images
    assert a.std() > 5                                        # a scene, not a flat colour


def test_layout_balance_and_paper_ratio(small):
    assert cs.n_test_per_class(cs.PAPER_TRAIN_PER_CLASS) == 3000
    assert cs.n_test_per_class(40) == 18
    assert small.name == f"v{cs.GENERATOR_VERSION}-s0-n40"
    for split, count in (("train", 40), ("test", 18)):
        assert sorted(p.name for p in (small / split).iterdir()) == ["crowd", "no_crowd"]
        for name in cs.CLASSES:
            assert len(list((small / split / name).glob("*.png"))) == count
    assert cs.is_complete(small)


def test_same_seed_same_bytes_and_index_stable(small, tmp_path):
    other = cs.ensure_crowd_synth(20, seed=0, cache_dir=tmp_path, workers=1, progress=False)
    for split, n in (("train", 20), ("test", 9)):
        for name in cs.CLASSES:
            for i in range(n):  # image i is the same whatever the set size
                assert _digest(other, split, name, i) == _digest(small, split, name, i)
    changed = cs.ensure_crowd_synth(2, seed=1, cache_dir=tmp_path, workers=1, progress=False)
    assert _digest(changed, "train", "crowd", 0) != _digest(other, "train", "crowd", 0)


def test_folder_loads_as_dataset(small):
    from train.data.builtin import folder_dataset

    splits = folder_dataset(small, 128, name="crowd_synth")
    assert splits.class_names == ["crowd", "no_crowd"]
    assert tuple(splits.train_x.shape) == (80, 3, 128, 128) and splits.train_x.dtype == torch.uint8
    assert splits.train_y.bincount().tolist() == [40, 40]
    assert splits.test_y.bincount().tolist() == [18, 18]


def test_cache_is_reused(tmp_path, monkeypatch):
    root = cs.ensure_crowd_synth(5, seed=0, cache_dir=tmp_path, workers=1, progress=False)
    stamp = (root / cs.MARKER).stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete folder")

    monkeypatch.setattr(cs.folder, "_run_tasks", fail)
    assert cs.ensure_crowd_synth(5, seed=0, cache_dir=tmp_path) == root
    assert (root / cs.MARKER).stat().st_mtime_ns == stamp


def test_incomplete_folder_is_regenerated(tmp_path):
    root = cs.cache_folder(5, seed=0, cache_dir=tmp_path)
    (root / "train" / "crowd").mkdir(parents=True)           # what a killed run could leave
    (root / "train" / "crowd" / "00000.png").write_bytes(b"truncated")
    assert not cs.is_complete(root)
    out = cs.ensure_crowd_synth(5, seed=0, cache_dir=tmp_path, workers=1, progress=False)
    assert out == root and cs.is_complete(root)
    assert (root / "train" / "crowd" / "00000.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # no temporary left behind


def test_killed_runs_temporary_is_never_used(tmp_path):
    root = cs.cache_folder(5, seed=0, cache_dir=tmp_path)
    dead = tmp_path / f".{root.name}.tmp-999999999-deadbeef"  # no such pid
    (dead / "train" / "crowd").mkdir(parents=True)
    (dead / cs.MARKER).write_text("{}")
    out = cs.ensure_crowd_synth(5, seed=0, cache_dir=tmp_path, workers=1, progress=False)
    assert cs.is_complete(out) and not dead.exists()


def test_folder_of_other_settings_is_not_reused(tmp_path):
    out = cs.generate_folder(tmp_path / "x", 3, seed=0, workers=1, progress=False)
    assert cs.is_complete(out, 3, 0) and not cs.is_complete(out, 4, 0) and not cs.is_complete(out, 3, 1)
    cs.main(["--per-class", "4", "--out", str(out), "--workers", "1"])
    assert cs.is_complete(out, 4, 0) and len(list((out / "train" / "crowd").glob("*.png"))) == 4


def test_cli_writes_folder_and_preview(tmp_path):
    out = cs.main(["--per-class", "3", "--seed", "2", "--out", str(tmp_path / "cs"),
                   "--workers", "1", "--preview", str(tmp_path / "preview.png")])
    assert cs.is_complete(out)
    import cv2

    sheet = cv2.imread(str(tmp_path / "preview.png"))
    assert sheet is not None and sheet.shape[1] == 8 * cs.SIZE * 2


# --- not trivially separable ----------------------------------------------------------------

def _stats_features(x: torch.Tensor) -> np.ndarray:
    """Global statistics: per-channel mean/std, 16-bin luminance histogram, mean gradient."""
    f = x.float().numpy() / 255.0                                        # [N, 3, H, W]
    lum = 0.299 * f[:, 0] + 0.587 * f[:, 1] + 0.114 * f[:, 2]            # [N, H, W]
    hist = np.stack([np.histogram(im, 16, (0.0, 1.0))[0] / im.size for im in lum])
    grad = np.abs(np.diff(lum, axis=2)).mean((1, 2)) + np.abs(np.diff(lum, axis=1)).mean((1, 2))
    return np.concatenate([f.mean((2, 3)), f.std((2, 3)), hist, grad[:, None]], 1)


def _stats_accuracy(splits) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    clf.fit(_stats_features(splits.train_x), splits.train_y.numpy())
    return float(clf.score(_stats_features(splits.test_x), splits.test_y.numpy()))


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel standardisation. It removes exactly the global statistics the
    logistic regression sees, so the FCN has to use structure, and it learns in a few epochs
    (with dataset-level mean/std the same net needs ~30 epochs for the same accuracy)."""
    f = x.float() / 255.0
    return (f - f.mean((2, 3), keepdim=True)) / (f.std((2, 3), keepdim=True) + 0.02)


def _fcn_accuracy(splits, epochs: int) -> float:
    from train.models import build_model

    torch.manual_seed(0)
    model = build_model("crowd_fcn", num_classes=2)
    x, y, x_test = _standardise(splits.train_x), splits.train_y, _standardise(splits.test_x)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(16):
            batch = x[idx].flip(3) if torch.rand(()) < 0.5 else x[idx]  # aerial views mirror
            loss = torch.nn.functional.cross_entropy(model(batch), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return float((model(x_test).argmax(1) == splits.test_y).float().mean())


@pytest.mark.slow
def test_not_separable_by_global_statistics(tmp_path):
    """Generator v2. Measured (seed 0): here (300/class, 129 test/class) stats logreg 0.56,
    crowd_fcn 0.74 after 12 epochs. On 1000/class (429 test/class): stats logreg 0.57 (gradient
    boosting on the same features 0.58-0.61), crowd_fcn 0.93 after 15 epochs with this
    per-image standardisation, 0.91 after 30 epochs with dataset mean/std as train/ uses."""
    from train.data.builtin import folder_dataset

    torch.set_num_threads(1)
    root = cs.ensure_crowd_synth(300, seed=0, cache_dir=tmp_path, workers=os.cpu_count(),
                                 progress=False, version=2)
    splits = folder_dataset(root, 128, name="crowd_synth")
    stats_acc = _stats_accuracy(splits)
    fcn_acc = _fcn_accuracy(splits, epochs=FCN_EPOCHS)
    print(f"stats logreg {stats_acc:.3f}  crowd_fcn {fcn_acc:.3f}")
    assert stats_acc <= STATS_MAX
    assert fcn_acc >= stats_acc + FCN_MARGIN


@pytest.mark.slow
@pytest.mark.parametrize("version", [3, 5, 6])
def test_v3_v5_v6_not_separable_by_global_statistics(tmp_path, version):
    """v3, v5 and v6 draw places, light, hard negatives, photographs and artefacts alike for both
    classes, so global statistics stay weak (measured, 150/class: v3 0.64). That a crowd_fcn
    does separate the scenes is shown on the shipped model's own test split in
    tests/test_builtin_model.py; it needs far more than the 12 epochs on 300 images per class
    that v2 needs, too long for this suite."""
    from train.data.builtin import folder_dataset

    root = cs.ensure_crowd_synth(150, seed=0, cache_dir=tmp_path, workers=os.cpu_count(),
                                 progress=False, version=version)
    stats_acc = _stats_accuracy(folder_dataset(root, 128, name="crowd_synth"))
    print(f"stats logreg {stats_acc:.3f}")
    assert stats_acc <= STATS_MAX


FCN_EPOCHS = 12
STATS_MAX = 0.72
FCN_MARGIN = 0.1


# --- versions ---------------------------------------------------------------------------------

#: sha256 (first 16 hex digits) of v2 images (seed 0; (split, class, index) below), recorded when
#: v2 was split out of the single-file generator. They pin v2's pixels so earlier results stay
#: reproducible; OpenCV's JPEG/resize code is part of the pixels, so they are checked only under
#: the OpenCV they were recorded with.
V2_DIGESTS = {(0, 0, 0): "11b3025f6102d89e", (0, 1, 5): "07124b33d5b9b77a", (1, 0, 9): "83358b2eade75686"}
#: the same for v3, recorded before v4 was added on v3's scene code (the shipped model's data)
V3_DIGESTS = {(0, 0, 0): "9354d5959be73e1a", (0, 1, 5): "a31967f8b2660041", (1, 0, 9): "ed4d951c7d76bbc5",
              (1, 1, 3): "b82569061450c832"}
#: the same for v5, recorded when it became the default (the shipped model's data)
V5_DIGESTS = {(0, 0, 0): "977e45da555914a6", (0, 1, 5): "aff8bdbcbdb97d36", (1, 0, 9): "a4358dd8ae9d5a7d",
              (1, 1, 3): "a35ed88dff269dfe"}
#: the same for v6, recorded when it was added; (0, 0, 6) is a crowd moved onto open ground,
#: (0, 0, 8) one moved into a cleared square, (0, 1, 0) a no_crowd view with a square cleared
V6_DIGESTS = {(0, 0, 0): "160fc983dc2e5e9b", (0, 1, 5): "9b4eaf85d494e321", (1, 0, 9): "261a922a2c6fc677",
              (1, 1, 3): "ea832de07091eb8d", (0, 0, 6): "3a906e186bf49c40", (0, 0, 8): "8e2d2c4f26a26a6f",
              (0, 1, 0): "d3bfd23709d13088"}
#: the same for v10, recorded when it was added (the pixels its A/B runs and the mosaic run of
#: docs/crowd_synth.md were measured on; the default since, and the shipped model's data)
V10_DIGESTS = {(0, 0, 0): "7b65983fde973f6f", (0, 1, 5): "241f300c43fd4958", (1, 0, 9): "60bfd13147c08dbd",
               (1, 1, 3): "b550350015c9a1b1"}
DIGEST_OPENCV = "5.1.0"


@pytest.mark.parametrize("version,digests", [(2, V2_DIGESTS), (3, V3_DIGESTS), (5, V5_DIGESTS), (6, V6_DIGESTS),
                                              (10, V10_DIGESTS)])
def test_versions_pixels_are_pinned(version, digests):
    import cv2

    if cv2.__version__ != DIGEST_OPENCV:
        pytest.skip(f"digests recorded under OpenCV {DIGEST_OPENCV}, this is {cv2.__version__}")
    for (split, cls, index), digest in digests.items():
        img = cs.render(0, split, cls, index, version=version)
        assert hashlib.sha256(img.tobytes()).hexdigest()[:16] == digest


def test_versions_are_separate_and_selectable(tmp_path):
    assert cs.GENERATOR_VERSION == 10 and cs.VERSIONS == (2, 3, 4, 5, 6, 10)
    images = [cs.render(0, 0, 0, 4, version=v) for v in cs.VERSIONS]
    assert all(im.shape == (cs.SIZE, cs.SIZE, 3) for im in images)
    assert all(not np.array_equal(a, b) for i, a in enumerate(images) for b in images[i + 1:])
    assert np.array_equal(images[5], cs.render(0, 0, 0, 4))         # v10 is the default
    old = cs.ensure_crowd_synth(2, seed=0, cache_dir=tmp_path, workers=1, progress=False, version=2)
    new = cs.ensure_crowd_synth(2, seed=0, cache_dir=tmp_path, workers=1, progress=False)
    assert (old.name, new.name) == ("v2-s0-n2", "v10-s0-n2")
    assert cs.is_complete(old, version=2) and not cs.is_complete(old, version=10)
    with pytest.raises(ValueError, match="version 7"):
        cs.generate_folder(tmp_path / "x", 2, version=7, workers=1, progress=False)
    assert not (tmp_path / "x").exists()


def test_ground_scale_per_version():
    v2, v3 = cs.ground_scale(2), cs.ground_scale(3)
    assert v2.patch_m_range == (16.0, 42.67) and v2.input_width == cs.SIZE
    assert v3.patch_m_range == (12.8, 64.0)                          # 2-10 px per metre
    assert v3.patch_m == pytest.approx((12.8 * 64.0) ** 0.5, abs=0.01)
    assert cs.ground_scale(4).patch_m_range == (12.8, 128.0)         # 1-10 px per metre
    assert cs.ground_scale(5).patch_m_range == (12.8, 85.33)         # 1.5-10 px per metre
    assert cs.ground_scale(6) == cs.ground_scale(5)                  # v6: v5's scales
    assert cs.ground_scale(10) == cs.ground_scale(5)                 # v10: v5's scenes
    assert cs.ground_scale() == cs.ground_scale(10)


def test_default_augment_per_version():
    """v10 trains with aerial-mosaic by default, the earlier versions with aerial, so a run of an
    earlier version reproduces with --synth-version alone."""
    assert cs.default_augment(10) == "aerial-mosaic"
    assert all(cs.default_augment(v) == "aerial" for v in cs.VERSIONS if v != 10)
    from train.data.augment import POLICIES

    assert set(cs.DEFAULT_AUGMENT.values()) <= set(POLICIES)
    from train.config import TrainConfig

    assert TrainConfig().synth_version == cs.GENERATOR_VERSION     # the CLI's default is the generator's


def _scene(area: float = 1.0):
    from train.data.crowd_synth.scene_v2 import R, Scene

    return Scene(rng=np.random.default_rng(0), img=np.zeros((R, R, 3), np.float32), ppm=4.0,
                 sun=np.float32([1, 0]), shadow_len=1.0, shadow_dark=0.5, roads=[],
                 roofs=np.zeros((R, R), np.uint8), area=area)


def test_v4_fills_a_wide_view_with_more_of_everything():
    from train.data.crowd_synth import scene_v3, scene_v4

    recipe = scene_v4.V4
    assert scene_v3._view_area(recipe, 3.0) == 1.0 == scene_v3._view_area(recipe, 10.0)
    assert scene_v3._view_area(recipe, 2.0) == pytest.approx(2.25)   # (3 / 2)^2 the ground
    assert scene_v3._view_area(recipe, 1.0) == 6.0                   # 9x the ground, capped
    assert scene_v3._view_area(scene_v3.V3, 1.0) == 1.0              # v3: never
    wide = _scene(4.0)
    assert scene_v3._n(wide, 10) == 40 and scene_v3._n(wide, 10, linear=True) == 20
    assert scene_v3._n(_scene(), 7) == 7


def test_v4_moves_a_crowd_that_fell_out_of_view_onto_free_ground():
    from train.data.crowd_synth import scene_v3
    from train.data.crowd_synth.scene_v2 import R

    sc = _scene()
    sc.roofs[:, : R // 2] = 1                                       # the left half is roofs
    H = np.eye(3)                                                    # a nadir view of the canvas
    outside = np.random.default_rng(1).uniform(-3 * R, -2 * R, (200, 2)).astype(np.float32)
    assert scene_v3._seen(sc, H, 0, outside) == 0
    moved = scene_v3._into_view(sc, H, 0, outside, 60)
    assert scene_v3._seen(sc, H, 0, moved) >= 60
    assert np.allclose(moved - moved.mean(0), outside - outside.mean(0), atol=1e-3)  # same shape
    inside = np.random.default_rng(2).uniform(R * 0.6, R * 0.9, (100, 2)).astype(np.float32)
    assert np.array_equal(scene_v3._into_view(sc, H, 0, inside, 60), inside)  # seen: left alone


@pytest.mark.parametrize("version", [3, 5, 6])
def test_classes_differ_in_people_not_in_statistics_alone(version):
    """Both classes draw from the same places, light, photographs and artefacts: the mean
    brightness of the two classes over a few dozen images is close, and every image is a real scene."""
    crowd = np.stack([cs.render(0, 0, 0, i, version=version) for i in range(24)]).astype(np.float32)
    empty = np.stack([cs.render(0, 0, 1, i, version=version) for i in range(24)]).astype(np.float32)
    assert abs(crowd.mean() - empty.mean()) < 20
    assert min(im.std() for im in np.concatenate([crowd, empty])) > 2


# --- v5: photograph textures -------------------------------------------------------------------

def test_v5_photographs_come_from_the_installed_packages_checked_by_digest():
    from train.data.crowd_synth import scene_v5

    imgs = scene_v5.photos()
    assert len(imgs) == len(scene_v5.PHOTOS) == 16
    for img in imgs:
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[2] == 3
        assert 290 <= min(img.shape[:2]) and max(img.shape[:2]) <= scene_v5.PHOTO_MAX_SIDE
        assert 0 <= img.min() and img.max() <= 255 and img.std() > 10     # a photograph, not blank
    assert imgs[1].mean(axis=(0, 1)).std() > 5                          # the flower is in colour


@pytest.fixture
def fresh_photos():
    from train.data.crowd_synth import scene_v5

    scene_v5.photos.cache_clear()
    yield scene_v5
    scene_v5.photos.cache_clear()


def test_v5_refuses_a_changed_or_missing_photograph(fresh_photos, monkeypatch, tmp_path, capsys):
    from train.data import DataError

    scene_v5 = fresh_photos
    changed = ((*scene_v5.PHOTOS[0][:2], "0" * 64),) + scene_v5.PHOTOS[1:]
    monkeypatch.setattr(scene_v5, "PHOTOS", changed)
    with pytest.raises(DataError, match="china.jpg is not the photograph v5 was made with"):
        scene_v5.photos()
    monkeypatch.undo()
    scene_v5.photos.cache_clear()
    real_find_spec = scene_v5.importlib.util.find_spec
    monkeypatch.setattr(scene_v5.importlib.util, "find_spec",
                        lambda name, *a: None if name == "skimage" else real_find_spec(name, *a))
    with pytest.raises(DataError, match="ship with scikit-image, which is not installed: pip install scikit-image"):
        scene_v5.photos()
    for version in (5, 6, 10):                                      # every version with photographs
        with pytest.raises(DataError, match="scikit-image"):           # before any image is written
            cs.generate_folder(tmp_path / f"v{version}", 2, version=version, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []
    from train.cli import main                                       # the training CLI: one line, 2

    monkeypatch.setenv("EDGE_STUDENTS_CACHE", str(tmp_path / "cache"))
    assert main(["--dataset", "crowd_synth", "--model", "crowd_fcn", "--synth-size", "2", "--epochs", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install scikit-image" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()   # nothing written


def test_v5_is_v3_with_photograph_texture_wider_views_and_crowds_in_view():
    from train.data.crowd_synth import scene_v3, scene_v5
    from train.data.crowd_synth.scene_v2 import R

    recipe = scene_v5.V5
    assert recipe.ppm_range == (1.5, 10.0) and recipe.crowd_in_view == 60
    assert scene_v3._view_area(recipe, 3.0) == 1.0 and scene_v3._view_area(recipe, 1.5) == 4.0

    a = cs.render(0, 0, 0, 7, version=5)
    assert np.array_equal(a, cs.render(0, 0, 0, 7, version=5))
    assert not np.array_equal(a, cs.render(0, 0, 0, 7, version=3))
    # ground: a photograph over part of the ground, or on building blocks (marked as roofs)
    roofs = 0
    for seed in range(12):
        sc = _scene()
        sc.rng = np.random.default_rng(seed)
        sc.img[:] = 100.0
        scene_v5._photo_ground(sc)
        share = float((np.abs(sc.img - 100.0).max(2) > 1).mean())
        assert 0.01 < share <= 1.0
        roofs += bool(sc.roofs.any())
        assert not sc.roofs.any() or (np.abs(sc.img - 100.0).max(2)[sc.roofs > 0] > 0).mean() > 0.5
    assert 0 < roofs < 12                         # both kinds drawn
    # objects: a group of small textured objects, a bounded part of the view
    sc = _scene()
    sc.img[:] = 100.0
    scene_v5._photo_objects(sc)
    share = float((np.abs(sc.img - 100.0).max(2) > 1).mean())
    assert 0.005 < share < 0.9 and not sc.roofs.any()
    assert sc.img.shape == (R, R, 3) and np.isfinite(sc.img).all()


def test_v5_folder_from_worker_processes_matches_render(tmp_path):
    root = cs.ensure_crowd_synth(2, seed=0, cache_dir=tmp_path, workers=2, progress=False, version=5)
    import cv2

    assert root.name == "v5-s0-n2" and cs.is_complete(root, version=5)
    img = cv2.imread(str(root / "train" / "crowd" / "00001.png"))[:, :, ::-1]
    assert np.array_equal(img, cs.render(0, 0, 0, 1, version=5))


def test_cli_bad_values_and_unwritable_outputs_exit_2_in_one_line(tmp_path):
    """Checked before any work with the runtime's shared checks (edge.cli_checks): one line,
    status 2, nothing written."""
    import subprocess
    import sys

    def run(*args):
        return subprocess.run([sys.executable, "-m", "train.data.crowd_synth", *args], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1])

    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    prog = "python -m train.data.crowd_synth: error: "
    for args, why in ((["--per-class", "0"], "--per-class 0: must be an integer >= 1"),
                      (["--per-class", "1", "--workers", "0"], "--workers 0: must be an integer >= 1"),
                      (["--per-class", "1", "--out", str(blocker / "x")],
                       f"--out {blocker / 'x'}: {blocker} is a file, not a folder"),
                      (["--per-class", "1", "--workers", "1", "--out", str(tmp_path / "cs"),
                        "--preview", str(blocker / "sheet.png")],
                       f"--preview {blocker / 'sheet.png'}: {blocker} is a file, not a folder")):
        r = run(*args)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [prog + why]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]          # nothing written
    assert blocker.read_text() == "not a folder"


# --- v6: every crowd on open ground in view ----------------------------------------------------

def _people_drawn(monkeypatch, version: int, cls: int, indices) -> list:
    """How many people each image of ``cls`` shows in the picture (what reaches the drawing)."""
    from train.data.crowd_synth import scene_v3

    counts, draw = [], scene_v3._draw_people
    monkeypatch.setattr(scene_v3, "_draw_people", lambda img, rng, xy, *a: (counts.append(len(xy)), draw(img, rng, xy, *a)))
    for i in indices:
        cs.render(0, 1, cls, i, version=version)
    monkeypatch.undo()
    return counts


def test_v6_crowd_images_show_their_crowd(monkeypatch):
    """The defect v6 fixes, measured on the same test-split images: a v5 crowd that landed on
    roofs (a dense city, water) kept its label with few people or none; every v6 crowd stands in
    view. v6's no_crowd images hold what the label allows (up to 12 walkers)."""
    v5 = _people_drawn(monkeypatch, 5, 0, range(48))
    v6 = _people_drawn(monkeypatch, 6, 0, range(48))
    assert sum(n < 12 for n in v5) >= 4                             # measured: 9 of 48
    assert min(v6) >= 20 and np.median(v6) > 100
    assert max(_people_drawn(monkeypatch, 6, 1, range(24))) <= 12


def test_v6_open_ground_packs_a_crowd_onto_streets_and_clears_a_square_in_both_classes():
    from train.data.crowd_synth import scene_v3, scene_v6
    from train.data.crowd_synth.scene_v2 import R

    H = np.eye(3)                                                    # a nadir view of the canvas
    sc = _scene()
    sc.roofs[:] = 1
    sc.roofs[:, 100:110] = 0                                         # one street, 10 px wide
    street = sc.roofs.copy()
    on_roofs = np.random.default_rng(1).uniform(0, 90, (300, 2)).astype(np.float32)
    assert scene_v3._seen(sc, H, 0, on_roofs) == 0
    moved = scene_v6.open_ground(sc, H, 0, on_roofs, 60)
    assert np.array_equal(sc.roofs, street)                          # room enough: no square
    assert scene_v3._seen(sc, H, 0, moved) == len(moved) >= 60      # all on the street
    assert ((moved[:, 0] > 99.5) & (moved[:, 0] < 109.5)).all()
    seen = np.random.default_rng(2).uniform(100, 110, (100, 2)).astype(np.float32)
    assert scene_v6.open_ground(sc, H, 0, seen, 60) is seen          # in view: left alone
    for gathering in (on_roofs, None):                               # roofs only: a square, both classes
        sc = _scene()
        sc.roofs[:] = 1
        before = sc.img.copy()
        out = scene_v6.open_ground(sc, H, 0, gathering, 60)
        cleared = sc.roofs == 0
        assert 60 * 1.7 ** 2 <= cleared.sum() < R * R / 4            # 0.45-1.1 m a person at 4 px/m
        assert (np.abs(sc.img - before).max(2)[cleared] > 0).all()   # paved
        if gathering is None:
            assert out is None
        else:
            assert scene_v3._seen(sc, H, 0, out) >= 60
    sc = _scene()                                                    # an oblique view: rows above
    horizon = R // 3                                                 # the horizon are not ground
    assert not scene_v6.seen_ground(sc, H, horizon)[:horizon + 3].any()
    assert scene_v6.seen_ground(sc, H, horizon)[horizon + 3:].all()


def test_v10_is_v5_with_a_lighter_camera():
    import dataclasses

    from train.data.crowd_synth import scene_v3, scene_v5, scene_v10

    assert dataclasses.replace(scene_v10.V10, version=5, camera=scene_v3.V3_CAMERA) == scene_v5.V5
    v3, v10 = scene_v3.V3_CAMERA, scene_v10.CAMERA
    assert v10.motion < v3.motion and v10.blurred < v3.blurred           # blurred less often
    assert v10.defocus_sigma[1] < v3.defocus_sigma[1] and v10.motion_px[1] < v3.motion_px[1]
    assert v10.noise_sigma[1] < v3.noise_sigma[1] and v10.jpeg_quality[0] > v3.jpeg_quality[0]
    # the same canvas through both cameras, many draws: v10 leaves more fine detail
    canvas = np.repeat(np.repeat(cs.render(0, 1, 1, 3, version=5).astype(np.float32), 2, 0), 2, 1)
    detail = lambda camera, seed: float(np.abs(np.diff(scene_v3._finish(
        np.random.default_rng(seed), canvas, camera).astype(float), axis=1)).mean())
    assert np.mean([detail(v10, s) for s in range(40)]) > np.mean([detail(v3, s) for s in range(40)])
