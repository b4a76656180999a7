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
"""
from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath
from typing import Dict, Optional

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
