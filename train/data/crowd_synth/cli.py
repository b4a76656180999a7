"""``python -m train.data.crowd_synth``: write a crowd_synth folder, optionally with a preview sheet.

    python -m train.data.crowd_synth --per-class 7000 --seed 0 --out data/crowd_synth
    python -m train.data.crowd_synth --per-class 8 --out /tmp/cs --preview preview.png
    python -m train.data.crowd_synth --version 2 --per-class 7000     # the earlier generator
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from train.data.crowd_synth.folder import ensure_crowd_synth, generate_folder, is_complete, renderer
from train.data.crowd_synth.layout import CLASSES, GENERATOR_VERSION, PAPER_TRAIN_PER_CLASS, VERSIONS


def contact_sheet(seed: int = 0, per_class: int = 8, split_id: int = 0, columns: int = 8,
                  scale: int = 2, version: int = GENERATOR_VERSION) -> np.ndarray:
    """A labelled grid (RGB uint8): ``per_class`` crowd images, then as many no_crowd ones."""
    import cv2

    render = renderer(version)
    rows = []
    for class_id, name in enumerate(CLASSES):
        tiles = [render(seed, split_id, class_id, i) for i in range(per_class)]
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % columns)
        for r in range(0, len(tiles), columns):
            row = np.concatenate(tiles[r:r + columns], 1)
            row = cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            label = np.full((22, row.shape[1], 3), 255, np.uint8)
            cv2.putText(label, f"{name} {r}-{min(r + columns, per_class) - 1}", (4, 16),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
            rows += [label, row]
    return np.concatenate(rows, 0)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    """``rgb`` as a PNG at ``path``, written to a temporary file and renamed (edge.files)."""
    import cv2

    from edge.files import atomic_write

    ok, data = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write(path, lambda f: f.write(data.tobytes()))


def main(argv: Optional[Sequence[str]] = None) -> Path:
    """Returns the folder; a bad value, an output that cannot be written (checked before any
    work) or missing photographs (v5) end it with one line ``python -m train.data.crowd_synth:
    error: ...`` and status 2."""
    from edge.cli_checks import OneLineParser, UsageError, check_output_dir, check_output_file, fail, need_int
    from train.cli_checks import describe_os_error
    from train.data import DataError

    parser = OneLineParser(prog="python -m train.data.crowd_synth", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=PAPER_TRAIN_PER_CLASS,
                        help="training images per class; the test split gets ceil(3/7 of it)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--version", type=int, default=GENERATOR_VERSION, choices=VERSIONS,
                        help=f"generator version (default {GENERATOR_VERSION}: v5's photograph textures and wider "
                             "views through a lighter camera; 2, 3 and 5 reproduce earlier results; 4 (wide views) "
                             "and 6 (every crowd on open ground) are opt-in variants; see docs/crowd_synth.md)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the cache folder train.data uses)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all CPU cores)")
    parser.add_argument("--preview", type=Path, default=None,
                        help="also write a contact sheet PNG (8 crowd + 8 no_crowd training images)")
    args = parser.parse_args(argv)
    try:
        need_int("--per-class", args.per_class)
        need_int("--workers", args.workers)
        check_output_dir("--out", args.out)
        check_output_file("--preview", args.preview)
        if args.out is None:
            root = ensure_crowd_synth(args.per_class, args.seed, workers=args.workers, version=args.version)
        elif is_complete(args.out, args.per_class, args.seed, args.version):
            root = args.out
        else:
            root = generate_folder(args.out, args.per_class, args.seed, args.workers, version=args.version)
        print(f"crowd_synth: {root}")
        if args.preview is not None:
            _write_png(args.preview, contact_sheet(args.seed, version=args.version))
            print(f"preview: {args.preview}")
    except (UsageError, DataError) as e:
        raise SystemExit(fail(parser.prog, str(e))) from None
    except OSError as e:                  # a full disk, a folder made unwritable meanwhile
        raise SystemExit(fail(parser.prog, describe_os_error(e))) from None
    return root



