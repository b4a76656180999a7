"""Frame sources through OpenCV: images, folders/globs, video files, V4L2, Jetson CSI, RTSP, synthetic.

Every source yields :class:`Frame` objects holding OpenCV's BGR (or gray) uint8 image, or
``image=None`` with ``error`` set for a frame that could not be read (the pipeline skips and
counts it). Live sources (cameras, streams) reconnect with exponential back-off for
``reconnect_timeout`` seconds, then raise :class:`SourceLost`.
"""
from __future__ import annotations

import glob as globlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import numpy as np

from edge.preprocess import IMAGE_EXTENSIONS, decode_bgr, list_image_files

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
def live_frames(spec: str, open_capture: Callable[[], object], reconnect_timeout: float = 10.0,
                backoff: float = 0.25, max_backoff: float = 4.0,
                sleep: Callable[[float], None] = time.sleep) -> Iterator[Frame]:
    """Frames of a camera/stream; on a drop, reopen with back-off until ``reconnect_timeout``."""
    cap = _open_with_retry(spec, open_capture, reconnect_timeout, backoff, max_backoff, sleep)
    index = 0
    try:
        while True:
            ok, img = cap.read()
            if ok and _valid(img):
                yield Frame(index, time.time(), img, spec)
                index += 1
                continue
            if ok:  # the driver returned a frame we cannot use: skip it, keep the stream
                yield Frame(index, time.time(), None, spec, "corrupt frame")
                index += 1
                continue
            cap.release()
            cap = _open_with_retry(spec, open_capture, reconnect_timeout, backoff, max_backoff,
                                   sleep, dropped=True)
    finally:
        cap.release()


def _open_with_retry(spec, open_capture, timeout, backoff, max_backoff, sleep, dropped=False):
    deadline = time.monotonic() + timeout
    delay, attempts = backoff, 0
    while True:
        cap = open_capture()
        attempts += 1
        if cap is not None and cap.isOpened():
            return cap
        if cap is not None:
            cap.release()
        if time.monotonic() + delay > deadline:
            what = "dropped and did not come back" if dropped else "could not be opened"
            raise SourceLost(f"source {spec} {what} within --reconnect-timeout {timeout:g} s "
                             f"({attempts} attempts)")
        sleep(delay)
        delay = min(delay * 2, max_backoff)


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


def open_source(spec: str, reconnect_timeout: float = 10.0, csi_size=(1280, 720), csi_fps: int = 30,
                loop: bool = False) -> Iterator[Frame]:
    """Parse a ``--source`` value and return its frame iterator (raises ``SourceError``)."""
    import cv2

    spec = str(spec)
    m = _SYNTH.match(spec)
    if m:
        return synthetic_frames(int(m.group(1)), int(m.group(2)),
                                int(m.group(3)) if m.group(3) else None)
    if spec.startswith("csi://"):
        sensor = spec[len("csi://"):] or "0"
        if not sensor.isdigit():
            raise SourceError(f"csi source must be csi://N, got {spec}")
        pipe = csi_pipeline(int(sensor), csi_size[0], csi_size[1], csi_fps)
        return live_frames(spec, lambda: cv2.VideoCapture(pipe, cv2.CAP_GSTREAMER), reconnect_timeout)
    if re.match(r"^(rtsp|rtsps|rtmp|http|https)://", spec):
        return live_frames(spec, lambda: cv2.VideoCapture(spec, cv2.CAP_FFMPEG), reconnect_timeout)
    if spec.isdigit() or re.match(r"^/dev/video\d+$", spec):
        dev = int(spec) if spec.isdigit() else spec
        return live_frames(spec, lambda: cv2.VideoCapture(dev, cv2.CAP_V4L2), reconnect_timeout)
    if any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in globlib.glob(spec)
                       if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise SourceError(f"no images match {spec}")
        return _maybe_loop(lambda: image_frames(paths), loop)
    path = Path(spec)
    if path.is_dir():
        paths = list_image_files(path)
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
