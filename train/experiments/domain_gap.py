"""How a folder of real frames differs from the crowd_synth scenes, at the model's input size.

    python -m train.experiments.domain_gap --data my_frames/
    python -m train.experiments.domain_gap --data my_frames/ --synth-version 3 --per-class 500 --json gap.json

Each image is brought to the input (128 px, the ``letterbox`` policy of crowd_synth models, or
``--resize``) as the runtime's classify mode brings a whole frame, and three statistics are taken
of the picture itself (a letterbox's bands are left out):

- **sharpness**: the mean absolute Laplacian (3x3) of the luma, in grey levels: how much fine
  detail survives the shrink;
- **saturation**: the mean HSV saturation, 0-1;
- **brightness**: the mean luma, 0-1.

The same is taken of the generator's test-split scenes of each class (``--per-class`` of each,
rendered in memory; nothing is written or cached). Each subfolder of ``--data`` is a group (the
images directly in it: group ``.``). The table gives each group's median and interquartile range,
and the share of its images above the 90th percentile of the scenes of *both* classes: where
that share is large, the model is asked about pictures unlike anything it was trained on
(docs/crowd_synth.md reads the figures for the development photos). Exit status: 0 done; 2 a bad
flag, folder or output (one line on stderr, nothing written). Unreadable images are skipped, and
counted in a note.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from edge.cli_checks import OneLineParser, UsageError, check_not_input, check_output_file, fail, need_int
from edge.contract import RESIZE_POLICIES, fit_to_size, letterbox_size, resize_u8
from edge.files import atomic_write, images_in

PROG = "python -m train.experiments.domain_gap"
STATS = ("sharpness", "saturation", "brightness")


def picture(img_rgb: np.ndarray, size: int, policy: str) -> np.ndarray:
    """``img_rgb`` (HxWx3 uint8) at the input ``size`` by ``policy``; a letterbox keeps only the
    scaled picture, without its bands, so they do not count as flat image."""
    if policy != "letterbox":
        return fit_to_size(img_rgb, (size, size), policy)
    return resize_u8(img_rgb, letterbox_size(img_rgb.shape[:2], (size, size)))


def image_stats(img_rgb: np.ndarray) -> Dict[str, float]:
    """The three statistics of one HxWx3 uint8 RGB picture (see the module's docstring)."""
    import cv2

    img = np.ascontiguousarray(img_rgb)
    luma = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(luma.astype(np.float32), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    return {"sharpness": float(np.abs(lap).mean()), "saturation": float(hsv[..., 1].mean() / 255.0),
            "brightness": float(luma.mean() / 255.0)}


def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def folder_groups(data: Path) -> Dict[str, List[Path]]:
    """Group name -> its images: ``.`` for images directly in ``data``, else each subfolder's
    (sorted; hidden folders skipped). ValueError when there are none."""
    if not data.is_dir():
        raise UsageError(f"--data {data} is not a folder")
    groups = {".": images_in(data)}
    for sub in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        groups[sub.name] = images_in(sub)
    groups = {k: v for k, v in groups.items() if v}
    if not groups:
        raise UsageError(f"--data {data} holds no images (in it or in its subfolders)")
    return groups


def synthetic_stats(version: int, per_class: int, size: int, policy: str,
                    step: Callable[[int], object] = lambda n: None) -> Dict[str, List[Dict[str, float]]]:
    """Statistics of the first ``per_class`` test-split scenes of each class (seed 0); ``step(1)``
    after each scene (a progress bar's ``update``)."""
    from train.data.crowd_synth import CLASSES, SPLITS, renderer

    render = renderer(version)
    test = SPLITS.index("test")
    out: Dict[str, List[Dict[str, float]]] = {}
    for c, name in enumerate(CLASSES):
        rows = out[f"crowd_synth v{version} {name}"] = []
        for i in range(per_class):
            rows.append(image_stats(picture(render(0, test, c, i), size, policy)))
            step(1)
    return out


def summarise(rows: Sequence[Dict[str, float]], p90: Dict[str, float]) -> Dict[str, object]:
    out: Dict[str, object] = {"n": len(rows)}
    for s in STATS:
        v = np.array([r[s] for r in rows], np.float64)
        q25, q50, q75 = np.percentile(v, [25, 50, 75])
        out[s] = {"median": round(float(q50), 4), "q25": round(float(q25), 4), "q75": round(float(q75), 4),
                  "above_synthetic_p90": round(float((v > p90[s]).mean()), 4)}
    return out


def report(groups: Dict[str, List[Dict[str, float]]], synthetic: Dict[str, List[Dict[str, float]]]) -> Dict[str, object]:
    """Per group (synthetic classes first): n, and for each statistic its median, quartiles and
    the share above the 90th percentile of all synthetic scenes (``synthetic_p90``)."""
    pooled = [r for rows in synthetic.values() for r in rows]
    p90 = {s: float(np.percentile([r[s] for r in pooled], 90)) for s in STATS}
    return {"synthetic_p90": {s: round(v, 4) for s, v in p90.items()},
            "groups": {name: summarise(rows, p90) for name, rows in {**synthetic, **groups}.items()}}


def table(rep: Dict[str, object]) -> str:
    lines = ["| group | n | " + " | ".join(f"{s}: median (IQR), share above synthetic p90" for s in STATS) + " |",
             "|---|---|" + "---|" * len(STATS)]
    for name, g in rep["groups"].items():
        cells = [f"{g[s]['median']:.3g} ({g[s]['q25']:.3g}-{g[s]['q75']:.3g}), {100 * g[s]['above_synthetic_p90']:.0f} %"
                 for s in STATS]
        lines.append(f"| {name} | {g['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    from train.data.crowd_synth import GENERATOR_VERSION, VERSIONS

    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, type=Path, help="folder of frames (each subfolder a group)")
    p.add_argument("--synth-version", type=int, default=GENERATOR_VERSION, choices=VERSIONS,
                   help=f"crowd_synth version to compare with (default {GENERATOR_VERSION})")
    p.add_argument("--per-class", type=int, default=300, help="scenes of each class (default 300)")
    p.add_argument("--size", type=int, default=128, help="input side in px (default 128)")
    p.add_argument("--resize", default="letterbox", choices=RESIZE_POLICIES,
                   help="how a frame is brought to the input (default letterbox, crowd_synth models' policy)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    return p.parse_args(argv)


def _progress(total: int):
    """A progress bar on stderr (off when stderr is not a terminal)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="domain_gap", unit="img", leave=False, mininterval=1.0, disable=None)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    bar = None
    try:
        need_int("--per-class", args.per_class, 1)
        need_int("--size", args.size, 8)
        check_output_file("--json", args.json)
        files = folder_groups(args.data)
        check_not_input("--json", args.json, [("an image of --data", f) for v in files.values() for f in v])
        groups, skipped = {}, []
        bar = _progress(sum(len(v) for v in files.values()) + 2 * args.per_class)
        for name, paths in files.items():
            rows = []
            for f in paths:
                bar.update(1)
                try:
                    rows.append(image_stats(picture(read_rgb(f), args.size, args.resize)))
                except ValueError:
                    skipped.append(f)
            if rows:
                groups[name] = rows
        if not groups:
            raise UsageError(f"--data {args.data}: none of its {len(skipped)} images could be read")
        if skipped:
            print(f"{PROG}: note: skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}",
                  file=sys.stderr)
        rep = report(groups, synthetic_stats(args.synth_version, args.per_class, args.size, args.resize,
                                             bar.update))
    except ValueError as e:
        return fail(PROG, str(e))
    finally:
        if bar is not None:
            bar.close()
    print(table(rep))
    if args.json is not None:
        text = json.dumps(rep, indent=1) + "\n"
        try:
            atomic_write(args.json, lambda f: f.write(text.encode()))
        except OSError as e:
            return fail(PROG, f"--json {args.json}: {e.strerror or e}")
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
