"""Frame sources through OpenCV: images, folders/globs, video files, V4L2, Jetson CSI, RTSP, synthetic.

Every source yields :class:`Frame` objects holding OpenCV's BGR (or gray) uint8 image, or
``image=None`` with ``error`` set for a frame that could not be read (the pipeline skips and
counts it). Live sources (cameras, streams) bound every open and read (a watchdog thread,
plus the backend's own timeouts where it honours them), report a stall or a drop as such a
frame, reconnect with exponential back-off for ``reconnect_timeout`` seconds after the last good
frame, then raise :class:`SourceLost`.
"""
from __future__ import annotations

import glob as globlib
import math
import queue
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import numpy as np

from edge.contract import IMAGE_EXTENSIONS
from edge.files import images_in, is_image_file
from edge.preprocess import decode_bgr

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264")


class SourceError(ValueError):
    """The source does not exist or cannot be opened."""


class SourceLost(RuntimeError):
    """A live source dropped and did not come back within the reconnect timeout."""


@dataclass
class Frame:
    index: int
    timestamp: float                    # wall clock (time.time()) when the frame was captured
    image: Optional[np.ndarray]         # BGR / BGRA / gray uint8, None if unreadable
    name: str                           # file path or source spec
    error: Optional[str] = None
    video_ms: Optional[float] = None    # position in a video file


def csi_pipeline(sensor_id: int = 0, width: int = 1280, height: int = 720, fps: int = 30,
                 flip: int = 0) -> str:
    """GStreamer pipeline for a Jetson CSI camera: ISP capture in NVMM, conversion on the VIC."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM),width={width},height={height},framerate={fps}/1 ! "
            f"nvvidconv flip-method={flip} ! video/x-raw,format=BGRx ! "
            "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=2 sync=false")


# --- files ----------------------------------------------------------------------------------
def image_frames(paths: List[Path], name: str = "") -> Iterator[Frame]:
    for i, p in enumerate(paths):
        img = decode_bgr(p)
        yield Frame(i, time.time(), img, str(p), None if img is not None else "undecodable image")


def video_frames(path: str, capture_factory: Callable = None, max_bad: int = 30) -> Iterator[Frame]:
    """Frames of a video file; a frame that fails to decode is yielded as a skipped frame.

    OpenCV reports both the end of file and a broken frame as ``read() -> False``; a failure before
    the container's frame count is a broken frame, and ``max_bad`` failures in a row end the file.
    """
    import cv2

    cap = (capture_factory or (lambda s: cv2.VideoCapture(s, cv2.CAP_FFMPEG)))(path)
    if not cap.isOpened():
        raise SourceError(f"cannot open video {path}")
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    index, bad = 0, 0
    try:
        while True:
            ok, img = cap.read()
            if ok and _valid(img):
                bad = 0
                yield Frame(index, time.time(), img, path, video_ms=float(cap.get(cv2.CAP_PROP_POS_MSEC)))
            else:
                if total <= 0 or index >= total - 1 or bad >= max_bad:
                    return
                bad += 1
                yield Frame(index, time.time(), None, path, "undecodable video frame")
            index += 1
    finally:
        cap.release()


def _valid(img) -> bool:
    return isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim in (2, 3) \
        and img.size > 0 and min(img.shape[:2]) > 0


# --- live -----------------------------------------------------------------------------------
_TIMED_OUT = object()


def stall_after(reconnect_timeout: float) -> float:
    """Seconds without a frame that count as a stall: half the reconnect budget, kept between
    0.25 s (longer than a frame interval of any live camera) and 2 s (so the loss is reported
    within the budget plus 2 s, whatever the budget)."""
    return min(max(float(reconnect_timeout) / 2.0, 0.25), 2.0)


def check_reconnect_timeout(value) -> float:
    """``--reconnect-timeout`` as a float: finite and > 0 (NaN or inf would retry forever)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise SourceError(f"--reconnect-timeout {value}: must be a finite number of seconds > 0")
    return t


class WatchedCapture:
    """An OpenCV capture whose every call (open, read, release) runs in one worker thread and is
    waited for at most a timeout.

    OpenCV's open and read block inside the backend (an FFmpeg HTTP/RTSP connection that accepts
    and never answers blocks ~30 s; V4L2 and GStreamer have their own waits), and only some
    backends honour ``CAP_PROP_OPEN_TIMEOUT_MSEC`` / ``CAP_PROP_READ_TIMEOUT_MSEC``. The worker
    bounds all of them: a call that overruns is abandoned, and the worker releases the capture
    itself when the backend finally returns, so no other thread ever touches a capture that is
    still inside a call.
    """

    def __init__(self, name: str) -> None:
        self._jobs: "queue.Queue" = queue.Queue()
        self._results: "queue.Queue" = queue.Queue()
        self._cap = None
        self._closed = False
        threading.Thread(target=self._serve, name=f"capture {name}", daemon=True).start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                break
            try:
                self._results.put((True, job()))
            except Exception as e:  # noqa: BLE001 - handed to the waiting caller, which re-raises
                self._results.put((False, e))
        if self._cap is not None:
            self._cap.release()

    def _call(self, job: Callable[[], object], timeout: float):
        self._jobs.put(job)
        try:
            ok, value = self._results.get(timeout=max(float(timeout), 0.0))
        except queue.Empty:
            self.release()                  # the worker releases once the backend returns
            return _TIMED_OUT
        if not ok:
            self.release()
            raise value
        return value

    def open(self, open_capture: Callable[[], object], timeout: float) -> bool:
        """Open through ``open_capture()``; False when it fails or takes longer than ``timeout``."""
        def job():
            self._cap = open_capture()
            return self._cap is not None and bool(self._cap.isOpened())
        return self._call(job, timeout) is True

    def read(self, timeout: float):
        """``(ok, image)`` like ``cap.read()``, or :data:`_TIMED_OUT` after ``timeout`` s."""
        return self._call(lambda: self._cap.read(), timeout)

    def release(self) -> None:
        if not self._closed:
            self._closed = True
            self._jobs.put(None)


def live_frames(spec: str, open_capture: Callable[[], object], reconnect_timeout: float = 10.0,
                backoff: float = 0.25, max_backoff: float = 4.0,
                sleep: Callable[[float], None] = time.sleep,
                stall_timeout: Optional[float] = None) -> Iterator[Frame]:
    """Frames of a camera/stream; on a drop or a stall, reopen with back-off.

    Every open and read is bounded (:class:`WatchedCapture`). A read that brings nothing for
    ``stall_timeout`` s (default :func:`stall_after`) is a stall; a stall or a drop is yielded as
    a frame without an image (the pipeline records it), then the source is reopened until
    ``reconnect_timeout`` s have passed since the last good frame, and :class:`SourceLost` is
    raised: the loss is known within the timeout plus at most 2 s.
    """
    timeout = check_reconnect_timeout(reconnect_timeout)
    stall = stall_after(timeout) if stall_timeout is None else float(stall_timeout)
    watch = _open_until(spec, open_capture, time.monotonic() + timeout, timeout, backoff,
                        max_backoff, sleep, "could not be opened")
    index, last_good = 0, time.monotonic()
    try:
        while True:
            got = watch.read(stall)
            if got is _TIMED_OUT:
                what = f"stalled (no frame for {stall:g} s)"
            else:
                ok, img = got
                if ok and _valid(img):
                    yield Frame(index, time.time(), img, spec)
                    index, last_good = index + 1, time.monotonic()
                    continue
                if ok:  # the driver returned a frame we cannot use: skip it, keep the stream
                    yield Frame(index, time.time(), None, spec, "corrupt frame")
                    index += 1
                    continue
                what = "dropped"
            yield Frame(index, time.time(), None, spec, f"source {what}; reconnecting")
            index += 1
            watch.release()
            watch = _open_until(spec, open_capture, last_good + timeout, timeout, backoff,
                                max_backoff, sleep, f"{what} and did not come back")
    finally:
        watch.release()


def _open_until(spec, open_capture, deadline, timeout, backoff, max_backoff, sleep,
                what) -> WatchedCapture:
    """A capture opened before ``deadline`` (monotonic), or :class:`SourceLost`."""
    delay, attempts = backoff, 0
    while time.monotonic() < deadline:
        watch = WatchedCapture(spec)
        attempts += 1
        if watch.open(open_capture, deadline - time.monotonic()):
            return watch
        watch.release()
        if time.monotonic() + delay > deadline:
            break
        sleep(delay)
        delay = min(delay * 2, max_backoff)
    raise SourceLost(f"source {spec} {what} within --reconnect-timeout {timeout:g} s "
                     f"({attempts} attempts)")


def _ffmpeg_capture(spec: str, open_s: float, read_s: float):
    """An FFmpeg capture with its own open/read timeouts (OpenCV >= 4.5.2), so an abandoned
    worker thread ends soon after the watchdog gave up on it; plain on older OpenCV."""
    import cv2

    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_s * 1000),
              cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_s * 1000)]
    try:
        return cv2.VideoCapture(spec, cv2.CAP_FFMPEG, params)
    except (TypeError, AttributeError):
        return cv2.VideoCapture(spec, cv2.CAP_FFMPEG)


def synthetic_frames(width: int = 1280, height: int = 720, frames: Optional[int] = None,
                     seed: int = 0) -> Iterator[Frame]:
    """Endless (or ``frames``-long) stream of moving noise frames, for benchmarks and tests."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height, width * 2, 3), dtype=np.uint8)
    i = 0
    while frames is None or i < frames:
        off = (i * 7) % width
        yield Frame(i, time.time(), base[:, off:off + width], f"synthetic://{width}x{height}")
        i += 1


# --- dispatch -------------------------------------------------------------------------------
_SYNTH = re.compile(r"^synthetic://(\d+)x(\d+)(?:\?frames=(\d+))?$")
MAX_SYNTHETIC_SIDE = 8192     # the stream keeps a 2W x H x 3 base image: 400 MB at the limit


def _synthetic_args(spec: str, m) -> tuple:
    w, h = int(m.group(1)), int(m.group(2))
    frames = int(m.group(3)) if m.group(3) else None
    if not (1 <= w <= MAX_SYNTHETIC_SIDE and 1 <= h <= MAX_SYNTHETIC_SIDE):
        raise SourceError(f"--source {spec}: width and height must be 1..{MAX_SYNTHETIC_SIDE} pixels")
    if frames is not None and frames < 1:
        raise SourceError(f"--source {spec}: frames must be >= 1")
    return w, h, frames


def open_source(spec: str, reconnect_timeout: float = 10.0, csi_size=(1280, 720), csi_fps: int = 30,
                loop: bool = False) -> Iterator[Frame]:
    """Parse a ``--source`` value and return its frame iterator (raises ``SourceError``)."""
    import cv2

    spec = str(spec)
    timeout = check_reconnect_timeout(reconnect_timeout)
    m = _SYNTH.match(spec)
    if m:
        return synthetic_frames(*_synthetic_args(spec, m))
    if spec.startswith("csi://"):
        sensor = spec[len("csi://"):] or "0"
        if not sensor.isdigit():
            raise SourceError(f"csi source must be csi://N, got {spec}")
        pipe = csi_pipeline(int(sensor), csi_size[0], csi_size[1], csi_fps)
        return live_frames(spec, lambda: cv2.VideoCapture(pipe, cv2.CAP_GSTREAMER), timeout)
    if re.match(r"^(rtsp|rtsps|rtmp|http|https)://", spec):
        # FFmpeg's own timeouts a little past the watchdog's, which then always speaks first
        read_s = stall_after(timeout) + 0.5
        return live_frames(spec, lambda: _ffmpeg_capture(spec, timeout + 0.5, read_s), timeout)
    if spec.isdigit() or re.match(r"^/dev/video\d+$", spec):
        dev = int(spec) if spec.isdigit() else spec
        return live_frames(spec, lambda: cv2.VideoCapture(dev, cv2.CAP_V4L2), timeout)
    if any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in globlib.glob(spec) if is_image_file(p))
        if not paths:
            raise SourceError(f"no images match {spec}")
        return _maybe_loop(lambda: image_frames(paths), loop)
    path = Path(spec)
    if path.is_dir():
        paths = images_in(path)
        if not paths:
            raise SourceError(f"folder {path} has no images ({', '.join(IMAGE_EXTENSIONS)})")
        return _maybe_loop(lambda: image_frames(paths), loop)
    if not path.exists():
        raise SourceError(f"source not found: {spec} (expected an image, folder, glob, video, "
                          "/dev/videoN, camera index, csi://N or rtsp://...)")
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return _maybe_loop(lambda: image_frames([path]), loop)
    # a video suffix or anything else: let FFmpeg try (it raises SourceError if it cannot)
    return _maybe_loop(lambda: video_frames(str(path)), loop)


def _maybe_loop(make: Callable[[], Iterator[Frame]], loop: bool) -> Iterator[Frame]:
    if not loop:
        return make()

    def forever():
        n = 0
        while True:
            for f in make():
                f.index = n
                n += 1
                yield f
    return forever()
