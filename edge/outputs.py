"""Publishing: JSON Lines (flushed per record), annotated video/images, an optional window, stats."""
from __future__ import annotations

import json
import os
import stat
import sys
from itertools import chain
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional

import numpy as np

from edge.heatmap import GRID_DECIMALS

_GRID_SCALE = 10 ** GRID_DECIMALS
# repr(i / 1000) is exactly what json.dumps prints for the float np.round(x, 3) gives when
# rint(x * 1000) == i: both are the correctly rounded quotient i / 1000
_GRID_LUT = np.array([repr(i / _GRID_SCALE) for i in range(_GRID_SCALE + 1)], dtype=object)


def _grid_json(grid) -> Optional[str]:
    """``json.dumps(grid, separators=(",", ":"))`` for a heat grid (rows of probabilities rounded
    to 3 decimals), about 5x faster; None when ``grid`` is anything else (the caller then falls
    back to ``json.dumps``). The fast path checks that every value is exactly ``i / 1000`` for an
    ``i`` in 0..1000, which is what makes its text identical to json's."""
    if not (isinstance(grid, list) and grid and isinstance(grid[0], list) and grid[0]):
        return None
    try:
        a = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):      # ragged rows, non-numbers
        return None
    if a.ndim != 2 or set(map(type, chain.from_iterable(grid))) != {float}:   # ints/bools print
        return None                                                               # differently
    idx = np.rint(a * _GRID_SCALE)
    if not ((idx >= 0).all() and (idx <= _GRID_SCALE).all() and (idx / _GRID_SCALE == a).all()):
        return None
    rows = _GRID_LUT[idx.astype(np.intp)].tolist()
    return "[[" + "],[".join([",".join(r) for r in rows]) + "]]"


def dumps_record(record: Mapping) -> str:
    """One record as compact JSON (no NaN/inf). A heatmap record's ``heat.grid`` (3,600 floats per
    720p frame) is encoded by :func:`_grid_json`: json.dumps spends ~1 ms on it with the GIL held,
    which stalls the inference thread; the text is byte-identical either way."""
    heat = record.get("heat") if isinstance(record, Mapping) else None
    grid_text = _grid_json(heat.get("grid")) if isinstance(heat, Mapping) else None
    if grid_text is None:
        return json.dumps(record, separators=(",", ":"), allow_nan=False)
    marker = "\x00grid\x00"
    text = json.dumps({**record, "heat": {**heat, "grid": marker}}, separators=(",", ":"),
                      allow_nan=False)
    quoted = json.dumps(marker)
    if text.count(quoted) != 1:          # some other string of the record holds the marker
        return json.dumps(record, separators=(",", ":"), allow_nan=False)
    at = text.index(quoted)
    return text[:at] + grid_text + text[at + len(quoted):]


def _warn(message: str) -> None:
    print(f"edge.run: warning: {message}", file=sys.stderr, flush=True)


class JsonlWriter:
    """One JSON object per line, flushed (and by default fsync'ed) per record, so a power cut
    loses at most the record being written. ``path`` "-" writes to stdout.

    A write that fails (disk full, I/O error, closed pipe) stops the log, never the run: the
    decisions matter more than their record. The file is cut back to its last complete line,
    the failure is announced once through ``warn``, and every record after it is counted in
    :attr:`lost`."""

    def __init__(self, path, fsync: bool = True, warn: Callable[[str], None] = _warn) -> None:
        self.path = str(path)
        self._own = self.path != "-"
        if self._own:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # unbuffered bytes: a failed write leaves nothing queued that close() would retry
        self.file = open(self.path, "ab", buffering=0) if self._own else sys.stdout
        # fsync is for files on a disk; a device or pipe (/dev/null, a FIFO) refuses it (EINVAL)
        self.fsync = fsync and self._own and stat.S_ISREG(os.fstat(self.file.fileno()).st_mode)
        self.warn = warn
        self.records = 0
        self.lost = 0
        self.error: Optional[str] = None

    def write(self, record: Mapping) -> None:
        if self.error is not None:
            self.lost += 1
            return
        try:
            line = dumps_record(record) + "\n"
        except (TypeError, ValueError) as e:   # a value JSON cannot hold: lose this record only
            self.lost += 1
            self.warn(f"record of frame {record.get('frame')} not logged ({e})")
            return
        try:
            self._append(line)
        except OSError as e:
            self._stop(e)
            return
        self.records += 1

    def _append(self, line: str) -> None:
        if not self._own:
            self.file.write(line)
            self.file.flush()
            return
        data = memoryview(line.encode("utf-8"))
        while data:
            data = data[os.write(self.file.fileno(), data):]
        if self.fsync:
            os.fsync(self.file.fileno())

    def _stop(self, e: OSError) -> None:
        self.error = f"{self.path}: {e.strerror or e}"
        self.lost += 1
        if self._own:
            self._cut_partial_line()
        self.warn(f"logging stopped: cannot write {self.error}; decisions go on, lost records "
                  "are counted in the summary")

    def _cut_partial_line(self) -> None:
        """Drop the half-written tail so the file stays valid JSON Lines (best effort: a device
        like /dev/full cannot be cut, and a file that cannot be cut is left as it is)."""
        try:
            fd = self.file.fileno()
            size = os.fstat(fd).st_size
            if size == 0:
                return
            with open(self.path, "rb") as f:
                f.seek(max(0, size - (1 << 20)))
                tail = f.read()
            keep = size - len(tail) + tail.rfind(b"\n") + 1 if b"\n" in tail else size - len(tail)
            if keep < size:
                os.ftruncate(fd, keep)
        except OSError:
            return                          # the warning already says logging stopped

    def close(self) -> None:
        if self._own and not self.file.closed:
            self.file.close()


class LatencyStats:
    """Per-stage latency samples in fixed memory (reservoir of ``capacity``), so a run of days
    keeps a flat footprint while the percentiles stay unbiased."""

    def __init__(self, capacity: int = 20000, seed: int = 0) -> None:
        self.capacity = capacity
        self.samples: Dict[str, np.ndarray] = {}
        self.counts: Dict[str, int] = {}
        self.rng = np.random.default_rng(seed)

    def add(self, stage: str, ms: float) -> None:
        buf = self.samples.get(stage)
        if buf is None:
            buf = self.samples[stage] = np.empty(self.capacity, np.float64)
            self.counts[stage] = 0
        n = self.counts[stage]
        if n < self.capacity:
            buf[n] = ms
        else:
            j = int(self.rng.integers(0, n + 1))
            if j < self.capacity:
                buf[j] = ms
        self.counts[stage] = n + 1

    def summary(self) -> Dict[str, Dict[str, float]]:
        out = {}
        for stage, buf in self.samples.items():
            v = buf[: min(self.counts[stage], self.capacity)]
            if v.size:
                p50, p90, p99 = np.percentile(v, [50, 90, 99])
                out[stage] = {"mean": round(float(v.mean()), 3), "p50": round(float(p50), 3),
                              "p90": round(float(p90), 3), "p99": round(float(p99), 3)}
        return out


# --- overlay --------------------------------------------------------------------------------
def _bgr(img: np.ndarray) -> np.ndarray:
    import cv2

    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1):
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return np.ascontiguousarray(img[:, :, :3])
    return img.copy()


def overlay(image: np.ndarray, record: Mapping, heat_grid: Optional[np.ndarray] = None,
            alpha: float = 0.45) -> np.ndarray:
    """The frame with the heatmap blended in (if any) and the decision written on it."""
    import cv2

    out = _bgr(image)
    h, w = out.shape[:2]
    if heat_grid is not None and heat_grid.size:
        heat = cv2.resize(np.clip(heat_grid * 255, 0, 255).astype(np.uint8), (w, h),
                          interpolation=cv2.INTER_LINEAR)
        out = cv2.addWeighted(out, 1 - alpha, cv2.applyColorMap(heat, cv2.COLORMAP_JET), alpha, 0)
    dec = record.get("decision") or {}
    safe = dec.get("safe_to_overfly")
    text = "SAFE TO OVERFLY" if safe else "DO NOT OVERFLY" if safe is not None else ""
    if "probabilities" in record:
        text += "  " + "  ".join(f"{k}={v:.2f}" for k, v in record["probabilities"].items())
    if "heat" in record:
        heat = record["heat"]
        text += f"  max={heat['max']:.2f} thr={heat['threshold']:.2f} area={heat['area_over_threshold']:.2f}"
    colour = (0, 200, 0) if safe else (0, 0, 255)
    scale = max(0.4, w / 1600)
    cv2.putText(out, text, (8, int(30 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                4, cv2.LINE_AA)
    cv2.putText(out, text, (8, int(30 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, colour,
                1, cv2.LINE_AA)
    return out


class VideoSink:
    """Annotated frames -> a video file (opened on the first frame, at its size)."""

    def __init__(self, path, fps: float = 30.0, fourcc: str = "mp4v") -> None:
        self.path, self.fps, self.fourcc = str(path), fps, fourcc
        self.writer = None

    def write(self, frame_bgr: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            h, w = frame_bgr.shape[:2]
            self.writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*self.fourcc), self.fps, (w, h))
            if not self.writer.isOpened():
                raise RuntimeError(f"cannot write video {self.path} (codec {self.fourcc})")
        self.writer.write(frame_bgr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()


#: the name :class:`ImageSink` gives frame ``index``
FRAME_NAME = "{:06d}.jpg"


def is_frame_name(name: str) -> bool:
    """Whether ``name`` is one :class:`ImageSink` writes (six digits and ``.jpg``)."""
    return len(name) == 10 and name.endswith(".jpg") and name[:6].isdigit()


class ImageSink:
    """Annotated frames -> ``DIR/<frame>.jpg``, each encoded in memory and written through a
    temporary sibling and a rename (:func:`edge.files.atomic_write`), so a frame on disk is
    always a whole JPEG. ``edge.cli_checks.check_run_args`` refuses a folder that already holds
    such frames, so nothing is overwritten."""

    def __init__(self, folder) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, frame_bgr: np.ndarray, index: int) -> None:
        import cv2

        from edge.files import atomic_write

        path = self.folder / FRAME_NAME.format(index)
        ok, jpeg = cv2.imencode(".jpg", frame_bgr)
        if not ok:                                    # OpenCV reports a failed encode by False
            raise OSError(f"cannot encode frame {index} as JPEG for {path}")
        atomic_write(path, lambda f: f.write(jpeg.tobytes()))

    def close(self) -> None:
        return None


class GuardedSink:
    """A video or image sink whose failure (disk full, codec, folder gone) ends that output, not
    the run: the first error is announced once and later frames are counted in :attr:`lost`."""

    def __init__(self, sink, flag: str, warn: Callable[[str], None] = _warn) -> None:
        self.sink, self.flag, self.warn = sink, flag, warn
        self.error: Optional[str] = None
        self.lost = 0

    def write(self, *args) -> None:
        if self.error is not None:
            self.lost += 1
            return
        try:
            self.sink.write(*args)
        except Exception as e:  # noqa: BLE001 - OSError, cv2.error, RuntimeError: all end the output
            self.error = f"{self.flag}: {e}"
            self.lost += 1
            self.warn(f"{self.flag} stopped ({e}); decisions go on")

    def close(self) -> None:
        try:
            self.sink.close()
        except Exception as e:  # noqa: BLE001 - a sink that cannot finish must not hide the summary
            self.warn(f"{self.flag}: cannot finish ({e})")


class Window:
    """``--display``: an OpenCV window; fails at start on a headless OpenCV build."""

    def __init__(self, title: str = "edge") -> None:
        import cv2

        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            raise RuntimeError("--display needs OpenCV with GUI support (opencv-python, not "
                               f"-headless, or JetPack's python3-opencv): {e}") from None

    def show(self, frame_bgr: np.ndarray) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        import cv2

        cv2.imshow(self.title, frame_bgr)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        import cv2

        cv2.destroyWindow(self.title)
