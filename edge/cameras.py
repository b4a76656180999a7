"""Per-image cameras: a CSV that gives each photo of a labelled folder its own ground scale.

    path,gsd,altitude,hfov,tile
    crowd/flight3_0042.jpg,0.021,,,
    no_crowd/lot_0007.jpg,,60,82,
    no_crowd/figure_crop.png,,,,300

Photos pooled from several flights, drones or altitudes have no one camera, and a heatmap judged
at the wrong scale is judged on tiles of the wrong ground size (docs/evaluate.md measures how much
that matters). ``edge.evaluate --cameras FILE`` reads such a file: the header names ``path`` and
any of ``gsd`` (metres per pixel), ``altitude`` + ``hfov`` (metres, degrees; nadir) and ``tile``
(frame pixels); each row gives one photo, by its path relative to the data folder (as the CSV
output's ``path`` column writes it), exactly one of those cameras (the others empty), as the
command-line flags would. Photos without a row use the command-line camera. A row naming no image
of the folder, a photo named twice, an unknown column or a bad value is an error naming the line.

Drone stills usually say their own camera. ``python -m edge.cameras DIR --out FILE`` writes the
file from the photos' metadata (edge/photo_meta.py: DJI's XMP height and gimbal pitch, the
EXIF lens): a photo looking straight down (within ``--nadir-within`` degrees) gets ``altitude``
and ``hfov``; an oblique one the ``gsd`` at its centre; the rest are listed as skipped, with why.

    python -m edge.cameras val/ --out val/cameras.csv
    python -m edge.cameras photos/ --out cams.csv --hfov 73.7     # a lens the EXIF does not give

Exit status: 0 written (and how many photos of each kind on stderr), 2 a missing folder, a bad
flag, no photo with a camera or an output that cannot be written (one line on stderr, nothing
written).
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional

from edge.judge import Camera

#: the columns a cameras file may have (``path`` is required)
COLUMNS = ("path", "gsd", "altitude", "hfov", "tile")


def _number(text: str, column: str, where: str) -> Optional[float]:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {column} {text!r} is not a number") from None


def _camera(row: Dict[str, str], where: str) -> Camera:
    vals = {c: _number(row.get(c) or "", c, where) for c in COLUMNS[1:]}
    tile = vals["tile"]
    if tile is not None and tile != int(tile):
        raise ValueError(f"{where}: tile {tile:g} is not a whole number of pixels")
    if all(v is None for v in vals.values()):
        raise ValueError(f"{where}: no camera given (fill gsd, altitude and hfov, or tile)")
    try:
        return Camera(tile=None if tile is None else int(tile), gsd=vals["gsd"],
                      altitude=vals["altitude"], hfov=vals["hfov"])
    except ValueError as e:
        # the flag names of the command line, as the file's column names
        msg = str(e).replace("--altitude/--hfov", "altitude+hfov").replace("--", "")
        raise ValueError(f"{where}: {msg}") from None


def read_cameras(path, data_root) -> Dict[str, Camera]:
    """``{path relative to data_root (forward slashes): Camera}``; ValueError names the file, the
    line and what is wrong (a missing or unreadable file too)."""
    path, root = Path(path), Path(data_root)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ValueError(f"--cameras file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--cameras {path}: cannot read it as text ({e.__class__.__name__})") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    if "path" not in header:
        raise ValueError(f"--cameras {path}: the first line must name the columns, with 'path' "
                         f"among them (columns: {', '.join(COLUMNS)})")
    unknown = [h for h in header if h not in COLUMNS]
    if unknown or len(set(header)) != len(header):
        what = f"unknown column {unknown[0]!r}" if unknown else "a column named twice"
        raise ValueError(f"--cameras {path}: {what} (columns: {', '.join(COLUMNS)})")
    reader.fieldnames = header
    out: Dict[str, Camera] = {}
    for row in reader:
        where = f"--cameras {path} line {reader.line_num}"
        if None in row:
            raise ValueError(f"{where}: more values than columns")
        if all(not (v or "").strip() for v in row.values()):
            continue                                            # a blank line
        rel = (row.get("path") or "").strip()
        posix = PurePosixPath(rel.replace("\\", "/"))
        if not rel or posix.is_absolute() or ".." in posix.parts:
            raise ValueError(f"{where}: path {rel!r} must be relative to the data folder")
        key = posix.as_posix()
        if not (root / key).is_file():
            raise ValueError(f"{where}: {key} is not a file in {root}")
        if key in out:
            raise ValueError(f"{where}: {key} is given a camera twice")
        out[key] = _camera(row, where)
    if not out:
        raise ValueError(f"--cameras {path}: no rows (one line per photo after the header)")
    return out


# ------------------------------------------------------------------------------ from photos
def cameras_from_photos(root, hfov_deg: Optional[float] = None, nadir_within_deg: float = 5.0):
    """(rows ``{column: value}`` in path order, ``{photo: why skipped}``) for the images under
    ``root``; see the module doc."""
    from edge.files import images_under
    from edge.photo_meta import ground_scale, is_jpeg_name, read_photo_meta

    root = Path(root)
    rows: List[Dict[str, str]] = []
    skipped: Dict[str, str] = {}
    for p in images_under(root):
        rel = p.relative_to(root).as_posix()
        if not is_jpeg_name(p):
            skipped[rel] = "not a JPEG (no drone metadata)"
            continue
        try:
            meta = read_photo_meta(p)
        except OSError as e:
            skipped[rel] = f"unreadable ({e.strerror or e})"
            continue
        kind, value = ground_scale(meta, hfov_deg, nadir_within_deg)
        if kind == "skip":
            skipped[rel] = str(value)
        elif kind == "altitude":
            h, hfov = value
            rows.append({"path": rel, "altitude": f"{h:.2f}", "hfov": f"{hfov:.2f}"})
        else:
            rows.append({"path": rel, "gsd": f"{value:.5f}"})
    return rows, skipped


def build_parser() -> argparse.ArgumentParser:
    from edge.cli_checks import OneLineParser

    p = OneLineParser(prog="python -m edge.cameras", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", help="photos (any depth below it), e.g. the --data or --val-data folder")
    p.add_argument("--out", required=True, help="the cameras CSV to write")
    p.add_argument("--hfov", type=float, default=None, metavar="DEG",
                   help="horizontal field of view for every photo (default: from each one's EXIF lens)")
    p.add_argument("--nadir-within", type=float, default=5.0, metavar="DEG",
                   help="a gimbal pitch this close to straight down counts as nadir (default 5)")
    return p


def _setup(args):
    from edge.cli_checks import check_not_input, check_output_file, need_number
    from edge.files import images_under

    root = Path(args.folder)
    if not root.is_dir():
        raise ValueError(f"folder not found: {root}")
    check_output_file("--out", args.out)
    if Path(args.out).exists():
        check_not_input("--out", args.out, [("the photo", p) for p in images_under(root)])
    if args.hfov is not None:
        Camera(altitude=1.0, hfov=args.hfov)                   # a bad --hfov, named
    need_number("--nadir-within", args.nadir_within, 0.0, 90.0)
    rows, skipped = cameras_from_photos(root, args.hfov, args.nadir_within)
    if not rows:
        reasons = Counter(skipped.values()).most_common(1)
        why = f" (most: {reasons[0][0]})" if reasons else " (it has no images)"
        raise ValueError(f"no photo in {root} says its camera{why}")
    return rows, skipped


def _write(args, state) -> int:
    from edge.files import atomic_write

    rows, skipped = state
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    # checked before the rename: every line reads back as the camera it was written from
    lines = text.getvalue().splitlines()
    check = csv.DictReader(lines)
    for i, row in enumerate(check):
        _camera(row, f"row {i + 2} written for {row['path']}")
    try:
        atomic_write(args.out, lambda f: f.write(text.getvalue().encode("utf-8")))
    except OSError as e:                     # a full disk: the old file, if any, is left whole
        print(f"edge.cameras: error: --out {args.out} not written ({e.strerror or e})", file=sys.stderr)
        return 2
    nadir = sum("altitude" in r for r in rows)
    print(f"edge.cameras: {len(rows)} photos written to {args.out} ({nadir} nadir: altitude and "
          f"hfov; {len(rows) - nadir} oblique: gsd at the centre), {len(skipped)} skipped",
          file=sys.stderr)
    for why, n in Counter(skipped.values()).most_common():
        print(f"edge.cameras: skipped {n}: {why}", file=sys.stderr)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from edge.command import run_command

    return run_command("edge.cameras", build_parser().parse_args(argv), _setup, _write,
                       (ValueError, OSError))


if __name__ == "__main__":
    sys.exit(main())
