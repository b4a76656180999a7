"""Judge a folder of labelled photos, each on its own, and report how the crowd verdict does.

    python -m edge.evaluate --model crowd.onnx --data photos/ --mode heatmap --altitude 60 --hfov 82 \\
        --json eval.json --csv eval.csv --errors-sheet errors.png
    python -m edge.evaluate --model crowd.onnx --data photos/ --map crowd_ground=crowd --group-by prefix

Labels come from the top-level folders: ``photos/<class>/...`` with <class> one of the model's
classes; ``--map FOLDER=CLASS`` labels other folders; the rest are skipped with a note. Every image
goes through the runtime's own per-frame judge (edge/judge.py: tiling from the camera flags, the
model's decision rule unless overridden) with no smoothing across photos. Printed: balanced and
per-class accuracy, ROC-AUC of the calibrated score, the confusion matrix and a breakdown by
``--group-by`` (the folder, or the file name up to its second underscore). Written on request:
``--json`` (everything), ``--csv`` (one row per image), ``--errors-sheet`` (a PNG of the wrong
verdicts). Exit status: 0 done, 2 bad model, data or arguments (one line on stderr, no file
written). Details: docs/evaluate.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from edge.backends import BACKENDS, open_backend
from edge.cameras import read_cameras
from edge.cli_checks import check_not_input, check_output_file, model_inputs, need_int
from edge.command import run_command
from edge.contract import positive_class_index
from edge.judge import (HEATMAP_IMPLS, MODES, Judge, add_camera_args, add_decision_args,
                        camera_from_args, impl_for, rule_from_args)
from edge.labelled import GROUP_BY, list_labelled, notes, parse_map
from edge.files import atomic_write
from edge.sidecar import SidecarError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported .onnx or TensorRT .engine (with its .json sidecar)")
    p.add_argument("--data", required=True, help="folder of labelled photos: DIR/<class>/...")
    p.add_argument("--mode", default="classify", choices=MODES, help="the runtime mode to judge with")
    p.add_argument("--map", nargs="+", action="extend", default=[], metavar="FOLDER=CLASS",
                   help="label a top-level folder with a class, e.g. crowd_ground=crowd (repeatable)")
    p.add_argument("--group-by", default="folder", choices=GROUP_BY,
                   help="breakdown by the image's folder, or its file name up to the second underscore")
    p.add_argument("--json", default=None, metavar="OUT", help="write the full report as JSON")
    p.add_argument("--csv", default=None, metavar="OUT", help="write one row per image")
    p.add_argument("--errors-sheet", default=None, metavar="PNG", help="write a contact sheet of the wrong verdicts")
    p.add_argument("--sheet-max", type=int, default=48, help="at most this many images on the sheet")
    p.add_argument("--positive-class", default=None, help="the class the verdict is about (default: 'crowd')")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default: auto)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--heatmap-impl", default="auto", choices=HEATMAP_IMPLS, help="as edge.run")
    p.add_argument("--stride", type=int, default=None, help="heatmap tile stride in pixels (default: half a tile)")
    p.add_argument("--tile-batch", type=int, default=64, help="tiles per inference call")
    g = p.add_argument_group("camera scale and decision (as edge.run; default: the model's metadata)")
    add_camera_args(g)
    g.add_argument("--cameras", default=None, metavar="CSV",
                   help="heatmap: a camera per photo (columns path,gsd,altitude,hfov,tile; path "
                        "relative to --data); photos it does not list use the flags above")
    add_decision_args(g)
    return p


OUTPUTS = (("--json", "json"), ("--csv", "csv"), ("--errors-sheet", "errors_sheet"))


def _check_outputs(args) -> None:
    """Flags and output paths, before the model opens: every output can be written and none is
    the model."""
    for flag, attr in OUTPUTS:
        check_output_file(flag, getattr(args, attr))
        check_not_input(flag, getattr(args, attr), model_inputs(args.model)
                        + ([("the --cameras file", args.cameras)] if args.cameras else []))
    if args.errors_sheet is not None and Path(args.errors_sheet).suffix.lower() != ".png":
        raise ValueError(f"--errors-sheet {args.errors_sheet} must end in .png")
    if args.sheet_max < 1:
        raise ValueError(f"--sheet-max must be >= 1, got {args.sheet_max}")
    need_int("--threads", args.threads, 1, note=" (omit it for cores - 1)")


def _check_not_data(args, listing) -> None:
    """No output is one of the photos being judged."""
    for flag, attr in OUTPUTS:
        path = getattr(args, attr)
        if path is not None and Path(path).exists():
            check_not_input(flag, path, [("the --data image", im.path) for im in listing.images])


def setup(args):
    """(backend, judge, listing, positive name); ValueError & co. for bad input."""
    _check_outputs(args)
    backend = open_backend(args.model, args.backend, threads=args.threads)
    info = backend.info
    pos = info.class_names[positive_class_index(info.class_names, args.positive_class)]
    listing = list_labelled(args.data, info.class_names, pos, parse_map(args.map, info.class_names))
    _check_not_data(args, listing)
    if args.cameras is not None and args.mode != "heatmap":
        raise ValueError("--cameras sizes heatmap tiles; classify judges the whole frame "
                         "(use it with --mode heatmap)")
    cameras = read_cameras(args.cameras, args.data) if args.cameras is not None else {}
    rule = rule_from_args(info.decision, args)

    def judge_with(camera):
        return Judge(info, args.mode, positive=list(info.class_names).index(pos),
                     rule=rule, camera=camera, impl=impl_for(args.mode, args.heatmap_impl, backend),
                     stride=args.stride, resize=args.resize, tile_batch=args.tile_batch)

    judge = judge_with(camera_from_args(args))
    judges = {cam: judge_with(cam) for cam in sorted(set(cameras.values()), key=repr)}
    listed = {im.rel for im in listing.images}
    per_image = {rel: judges[cam] for rel, cam in cameras.items() if rel in listed}
    return backend, judge, listing, pos, per_image


#: what a bad model, data folder or flag raises while setting up (exit status 2)
SETUP_ERRORS = (ValueError, FileNotFoundError, ImportError, RuntimeError, SidecarError)


def main(argv: Optional[List[str]] = None) -> int:
    return run_command("edge.evaluate", build_parser().parse_args(argv), setup, evaluate,
                       SETUP_ERRORS)


def _judge_notes(judge, per_image, listing) -> List[str]:
    """The notes of the judges that judge some photo, each once (the flags' judge's only when a
    photo has no camera of its own)."""
    used = list(per_image.values())
    if len(per_image) < len(listing.images):
        used.insert(0, judge)
    out: List[str] = []
    for j in used:
        out += [n for n in j.notes if n not in out]
    return out


def evaluate(args, state) -> int:
    """Judge every image, print the report, write the files asked for."""
    from edge.evaluation import format_report, judge_images, report

    backend, judge, listing, pos, per_image = state
    judge_notes = _judge_notes(judge, per_image, listing)
    for note in judge_notes + notes(listing, args.data):
        print(f"edge.evaluate: note: {note}", file=sys.stderr)
    names = list(backend.info.class_names)
    negative = next((c for c in names if c != pos), "other") if len(names) == 2 else f"not {pos}"
    rows = judge_images(listing.images, judge, backend, getattr(backend, "score_map", None),
                        thumbs=args.errors_sheet is not None, per_image=per_image)
    try:
        rep = report(rows, args.group_by, pos, negative)
    except ValueError as e:
        print(f"edge.evaluate: error: {e} in {args.data}", file=sys.stderr)
        return 2
    described = judge.describe()
    if args.cameras is not None:
        described["cameras"] = {"file": str(args.cameras), "photos": len(per_image),
                                "others": len(listing.images) - len(per_image)}
    rep = {"model": str(args.model), "data": str(args.data), "judge": described,
           "notes": judge_notes + notes(listing, args.data), "positive_class": pos,
           "map": parse_map(args.map, names), **rep}
    print(format_report(rep))
    write_outputs(args, rep, rows, names, pos)
    return 0


def write_outputs(args, rep, rows, class_names, positive) -> None:
    """Each requested file through a temporary sibling and a rename."""
    if args.json:
        text = json.dumps(rep, indent=2) + "\n"
        atomic_write(args.json, lambda f: f.write(text.encode()))
    if args.csv:
        from edge.evaluation import csv_text

        text = csv_text(rows, args.group_by, class_names)
        atomic_write(args.csv, lambda f: f.write(text.encode()))
    if args.errors_sheet:
        import cv2

        from edge.evaluation import contact_sheet

        ok, png = cv2.imencode(".png", contact_sheet(rows, positive, args.sheet_max))
        if not ok:
            raise RuntimeError("OpenCV could not encode the contact sheet")
        atomic_write(args.errors_sheet, lambda f: f.write(png.tobytes()))


if __name__ == "__main__":
    sys.exit(main())
