"""A flight's height above the ground over time, so a recorded video's heatmap tiles follow it.

    python -m edge.run --model crowd --source DJI_0042.MP4 --mode heatmap --altitude-log DJI_0042.SRT --hfov 82

A drone climbs, descends and hovers at different heights within one video, and the heatmap's
tiles must cover the ground a training image covered at each of them (docs/jetson.md, "Camera
scale and decision"). ``--altitude-log FILE`` gives the height per moment of the video. Two
formats are read:

- **DJI subtitles** (``.SRT``, written beside the video by DJI drones): one cue per frame or per
  second, its start time and the relative altitude in its text: ``rel_alt: 40.2`` (Mini, Air,
  Mavic 3 and later), ``H 40.2m`` (Phantom 4 Pro, Mavic 2) or ``BAROMETER:40.2`` (Phantom 3/4).
  ``abs_alt`` and ``[altitude: ...]`` are heights above sea level and are not used: a file with
  only those is refused.
- **CSV** with the header ``time_s,altitude_m``: seconds from the start of the video and metres
  above the ground, for any other logger (a flight controller's log, a rangefinder); heights
  between two rows are interpolated.

A DJI relative altitude is the height above the take-off point: over sloping ground, give the
height above the ground being watched as a CSV instead. A frame outside the log's time span
takes its nearest end and is counted in the run's summary; heights below
:data:`MIN_ALTITUDE_M` (on the ground before take-off) are judged as that height.
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

#: heights below this (metres) are judged as this: a drone on the ground sees a few metres
MIN_ALTITUDE_M = 1.0
#: a frame further than this (seconds) outside the log's span is counted as beyond it
SPAN_SLACK_S = 1.0

_CUE_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})[,.](\d{1,3})\s*-->")
_NUM = r"([-+]?\d+(?:\.\d+)?)"
#: relative-altitude fields of DJI subtitles, most specific first
_RELATIVE = (("rel_alt", re.compile(r"rel_alt\s*:\s*" + _NUM)),
             ("H", re.compile(r"(?:^|[\s,\]])H\s+" + _NUM + r"\s*m\b")),
             ("BAROMETER", re.compile(r"BAROMETER\s*:\s*" + _NUM)))
_ABSOLUTE = re.compile(r"abs_alt\s*:|\[altitude\s*:")


@dataclass(frozen=True)
class AltitudeLog:
    """Heights (metres above the ground) at times (seconds from the video's start)."""

    times_s: np.ndarray
    altitude_m: np.ndarray
    path: str
    kind: str                 # "DJI subtitles (rel_alt)", "CSV", ...
    stepwise: bool            # subtitles: a cue holds until the next; CSV: interpolated

    def at(self, t_s: float) -> Tuple[float, bool]:
        """(height at ``t_s``, whether ``t_s`` lies within the log's span, give or take
        :data:`SPAN_SLACK_S`); outside it, the nearest end's height."""
        t = float(t_s)
        inside = self.times_s[0] - SPAN_SLACK_S <= t <= self.times_s[-1] + SPAN_SLACK_S
        if self.stepwise:
            i = int(np.searchsorted(self.times_s, t, side="right")) - 1
            h = float(self.altitude_m[max(i, 0)])
        else:
            h = float(np.interp(t, self.times_s, self.altitude_m))
        return h, inside

    def describe(self) -> Dict[str, object]:
        return {"file": self.path, "format": self.kind, "samples": int(len(self.times_s)),
                "span_s": [round(float(self.times_s[0]), 3), round(float(self.times_s[-1]), 3)],
                "altitude_m": [round(float(self.altitude_m.min()), 2),
                               round(float(self.altitude_m.max()), 2)]}


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig", errors="strict")
    except FileNotFoundError:
        raise ValueError(f"--altitude-log file not found: {path}") from None
    except UnicodeDecodeError:
        try:                      # older DJI firmware writes Latin-1 degree signs
            return path.read_text(encoding="latin-1")
        except OSError as e:
            raise ValueError(f"--altitude-log {path}: cannot read it ({e.strerror or e})") from None
    except OSError as e:
        raise ValueError(f"--altitude-log {path}: cannot read it ({e.strerror or e})") from None


def _parse_srt(text: str, path: Path) -> Tuple[List[float], List[float], str]:
    times: List[float] = []
    heights: List[float] = []
    field = ""
    absolute = False
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        m = _CUE_TIME.search(block)
        if m is None:
            continue
        h, mi, s, ms = m.groups()
        t = int(h) * 3600 + int(mi) * 60 + int(s) + int(ms.ljust(3, "0")) / 1000.0
        body = block[m.end():]
        for name, rx in _RELATIVE:
            hit = rx.search(body)
            if hit is not None:
                field = field or name
                times.append(t)
                heights.append(float(hit.group(1)))
                break
        else:
            absolute = absolute or bool(_ABSOLUTE.search(body))
    if not times:
        if absolute:
            raise ValueError(f"--altitude-log {path}: its subtitles give only the height above sea "
                             "level (abs_alt / altitude), not above the ground; give a CSV "
                             "time_s,altitude_m instead")
        raise ValueError(f"--altitude-log {path}: no subtitle cue with a relative altitude "
                         "(rel_alt:, H ...m or BAROMETER:)")
    return times, heights, f"DJI subtitles ({field})"


def _parse_csv(text: str, path: Path) -> Tuple[List[float], List[float], str]:
    reader = csv.reader(text.splitlines())
    header = [h.strip() for h in next(reader, [])]
    if header[:2] != ["time_s", "altitude_m"]:
        raise ValueError(f"--altitude-log {path}: a CSV must start with the header time_s,altitude_m "
                         f"(got {','.join(header) or 'an empty file'})")
    times: List[float] = []
    heights: List[float] = []
    for row in reader:
        where = f"--altitude-log {path} line {reader.line_num}"
        if not any(c.strip() for c in row):
            continue
        try:
            t, h = float(row[0]), float(row[1])
        except (ValueError, IndexError):
            raise ValueError(f"{where}: expected two numbers, got {','.join(row)!r}") from None
        if not (math.isfinite(t) and math.isfinite(h)):
            raise ValueError(f"{where}: time and altitude must be finite numbers")
        if t < 0:
            raise ValueError(f"{where}: time {t:g} s is before the video starts")
        if times and t <= times[-1]:
            raise ValueError(f"{where}: times must increase (got {t:g} s after {times[-1]:g} s)")
        times.append(t)
        heights.append(h)
    if not times:
        raise ValueError(f"--altitude-log {path}: no rows after the header")
    return times, heights, "CSV"


def read_altitude_log(path) -> AltitudeLog:
    """A DJI ``.srt`` or a ``time_s,altitude_m`` CSV; ValueError names the file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--altitude-log {path} is a folder, not a file")
    text = _read_text(path)
    if path.suffix.lower() == ".srt":
        times, heights, kind = _parse_srt(text, path)
        stepwise = True
    elif path.suffix.lower() == ".csv":
        times, heights, kind = _parse_csv(text, path)
        stepwise = False
    else:
        raise ValueError(f"--altitude-log {path}: expected DJI subtitles (.srt) or a CSV (.csv) "
                         "with the header time_s,altitude_m")
    order = np.argsort(np.asarray(times), kind="stable")
    t = np.asarray(times, dtype=np.float64)[order]
    h = np.asarray(heights, dtype=np.float64)[order]
    return AltitudeLog(t, h, str(path), kind, stepwise)
