"""capture -> preprocess -> infer -> publish.

A reader thread decodes and preprocesses frames into a small bounded queue while the main thread
runs the backend (OpenCV and ONNX Runtime release the GIL, so the stages overlap on two cores).
The queue bound keeps memory flat; bad frames are skipped and counted; ``stop`` (set by a signal
handler) ends the loop cleanly and the summary still comes out.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

import numpy as np

from edge.heatmap import (FlightSafety, TileGrid, cut_tiles, softmax, stats_from_dense,
                          stats_from_tiles, tile_grid)
from edge.outputs import LatencyStats, overlay
from edge.preprocess import FramePreprocessor
from edge.sources import Frame

MODES = ("classify", "heatmap")
HEATMAP_IMPLS = ("auto", "dense", "tiles")
_END = object()


@dataclass(frozen=True)
class PipelineConfig:
    mode: str = "classify"
    positive: int = 0                    # index of the crowd class
    threshold: float = 0.5               # heatmap: per-area probability threshold
    heatmap_impl: str = "auto"
    tile: Optional[int] = None           # heatmap tile side in frame px (default: model input)
    stride: Optional[int] = None         # default: half the tile
    tile_batch: int = 64
    batch: int = 1                       # classify: frames per inference, at most
    queue_size: int = 4
    max_frames: Optional[int] = None
    keep_images: bool = False            # overlays need the frame after inference
    record_grid: bool = True             # heatmap: write the whole grid into each record

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} not in {MODES}")
        if self.heatmap_impl not in HEATMAP_IMPLS:
            raise ValueError(f"heatmap impl {self.heatmap_impl!r} not in {HEATMAP_IMPLS}")
        if self.batch < 1 or self.tile_batch < 1 or self.queue_size < 1:
            raise ValueError("batch, tile batch and queue size must be >= 1")


@dataclass
class Item:
    frame: Frame
    x: Optional[np.ndarray]              # float32 NCHW network input (tiles or whole frame)
    grid: Optional[TileGrid]
    times: Dict[str, float]


class Pipeline:
    def __init__(self, backend, frames: Iterator[Frame], cfg: PipelineConfig,
                 publish=None, safety: Optional[FlightSafety] = None) -> None:
        self.backend, self.frames, self.cfg = backend, frames, cfg
        self.publish = publish or (lambda record, item, heat_grid: None)
        self.safety = safety or FlightSafety()
        self.prep = FramePreprocessor(backend.info.preprocess)
        self.class_names = list(backend.info.class_names)
        self.impl = self._heatmap_impl()
        th, tw = self.prep.size
        self.tile = (cfg.tile, cfg.tile) if cfg.tile else (th, tw)
        self.stride = (cfg.stride, cfg.stride) if cfg.stride else (max(1, self.tile[0] // 2),
                                                                   max(1, self.tile[1] // 2))
        self.stats = LatencyStats()
        self.processed = self.skipped = self.flips = self.invalid = 0
        self.stop = threading.Event()
        self.reason = "end of source"
        self._pub_error: Optional[BaseException] = None

    def request_stop(self, reason: str) -> None:
        """End the run early: the one way signals, the display window and callers stop it (the
        loop then ends as at the end of the source, and the first reason given is reported)."""
        if not self.stop.is_set():
            self.reason = reason
        self.stop.set()

    def _heatmap_impl(self) -> str:
        if self.cfg.mode != "heatmap":
            return "none"
        dense_ok = bool(getattr(self.backend, "has_dense", False))
        if self.cfg.heatmap_impl == "dense" and not dense_ok:
            raise ValueError("--heatmap-impl dense needs a model with a dynamic-size "
                             "'score_map' output; this one has none (use tiles or auto)")
        if self.cfg.heatmap_impl == "auto":
            return "dense" if dense_ok else "tiles"
        return self.cfg.heatmap_impl

    # --- reader thread: decode + preprocess --------------------------------------------------
    def _prepare(self, frame: Frame) -> Item:
        t0 = time.perf_counter()
        img, grid = frame.image, None
        if self.cfg.mode == "classify":
            x = self.prep([img])                                           # [1, C, H, W]
        elif self.impl == "dense":
            x = self.prep.to_tensor(img, size=img.shape[:2])[None]       # [1, C, Hf, Wf]
        else:
            grid = tile_grid(img.shape[:2], self.tile, self.stride)
            x = self.prep(cut_tiles(img, grid))                            # [T, C, H, W]
        times = {"preprocess": (time.perf_counter() - t0) * 1e3}
        if not self.cfg.keep_images:
            frame.image = None
        return Item(frame, x, grid, times)

    def _reader(self, q: "queue.Queue") -> None:
        try:
            it = iter(self.frames)
            n = 0
            while not self.stop.is_set():
                if self.cfg.max_frames is not None and n >= self.cfg.max_frames:
                    self.reason = "max frames"
                    break
                t0 = time.perf_counter()
                frame = next(it, None)
                if frame is None:
                    break
                decode = (time.perf_counter() - t0) * 1e3
                n += 1
                if frame.image is None:
                    item = Item(frame, None, None, {"decode": decode})
                else:
                    try:
                        item = self._prepare(frame)
                    except ValueError as e:   # e.g. an image shape the contract cannot take
                        frame.image, frame.error = None, f"preprocess: {e}"
                        item = Item(frame, None, None, {})
                    item.times["decode"] = decode
                self._put(q, item)
        except Exception as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self._put(q, e)
        finally:
            self._put(q, _END)

    def _put(self, q, obj) -> None:
        while not self.stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- main thread: infer + publish ---------------------------------------------------------
    def run(self) -> Dict[str, object]:
        # tiles of a 720p frame are ~40 MB of float32: buffer fewer of them
        small = min(self.cfg.queue_size, 2) if self.impl == "tiles" else self.cfg.queue_size
        q: "queue.Queue" = queue.Queue(maxsize=small)
        out_q: "queue.Queue" = queue.Queue(maxsize=small)
        reader = threading.Thread(target=self._reader, args=(q,), name="edge-reader", daemon=True)
        # post-processing, JSON and video writing run beside inference, not after it
        writer = threading.Thread(target=self._publisher, args=(out_q,), name="edge-publish", daemon=True)
        self._pub_error: Optional[BaseException] = None
        t_start = self.t_start = time.perf_counter()
        reader.start()
        writer.start()
        pending: List = []
        try:
            while not self.stop.is_set():
                obj = pending.pop(0) if pending else self._get(q)
                if obj is None:
                    continue
                if obj is _END:
                    break
                if isinstance(obj, BaseException):
                    raise obj
                if obj.x is None:
                    self._put_always(out_q, ("skip", obj, None, 0.0))
                    continue
                batch = [obj]
                while self.cfg.mode == "classify" and len(batch) < self.cfg.batch:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(nxt, Item) and nxt.x is not None:
                        batch.append(nxt)
                    else:
                        pending.append(nxt)
                        break
                self._infer(batch, out_q)
        finally:
            stopped = self.stop.is_set()
            while writer.is_alive():        # the publisher drains what was inferred, then ends
                try:
                    out_q.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    continue
            writer.join()
            self.stop.set()
            reader.join(timeout=5)
            if stopped and self.reason == "end of source":
                self.reason = "stopped"
        if self._pub_error is not None:
            raise self._pub_error
        elapsed = time.perf_counter() - t_start
        return self.summary(elapsed)

    def _publisher(self, out_q: "queue.Queue") -> None:
        while True:
            obj = out_q.get()
            if obj is _END:
                return
            if self._pub_error is not None:
                continue                    # keep draining so the main thread never blocks
            kind, item, out, infer_ms = obj
            try:
                if kind != "skip" and not np.isfinite(out).all():
                    # NaN/inf scores decide nothing: the frame is recorded as invalid and the
                    # flight-safety filter keeps its state
                    self.invalid += 1
                    item.frame.error = "invalid model output (NaN or inf)"
                    kind = "skip"
                if kind == "skip":
                    self._skip(item)
                elif kind == "probs":
                    self._finish(item, infer_ms, probs=out)
                elif kind == "dense":
                    pmap = softmax(out, axis=0)[self.cfg.positive]                 # [h, w]
                    self._finish(item, infer_ms, heat=stats_from_dense(pmap, self.cfg.threshold))
                else:
                    probs = softmax(out)[:, self.cfg.positive]                      # [T]
                    self._finish(item, infer_ms, heat=stats_from_tiles(probs, item.grid, self.cfg.threshold))
            except Exception as e:  # noqa: BLE001 - re-raised by run() in the main thread
                self._pub_error = e
                self.stop.set()

    def _get(self, q):
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            return None

    def _skip(self, item: Item) -> None:
        self.skipped += 1
        f = item.frame
        self.publish({"source": f.name, "frame": f.index, "timestamp": round(f.timestamp, 6),
                      "skipped": True, "error": f.error or "unreadable"}, item, None)

    def _infer(self, batch: List[Item], out_q: "queue.Queue") -> None:
        t0 = time.perf_counter()
        if self.cfg.mode == "classify":
            x = batch[0].x if len(batch) == 1 else np.concatenate([b.x for b in batch])
            probs = softmax(self.backend(x))                             # [B, C]
            infer = (time.perf_counter() - t0) * 1e3 / len(batch)
            for item, p in zip(batch, probs):
                item.x = None
                self._put_always(out_q, ("probs", item, p, infer))
            return
        item = batch[0]
        if self.impl == "dense":
            out, kind = self.backend.score_map(item.x)[0], "dense"       # [C, h, w] logits
        else:
            n, tb = item.x.shape[0], self.cfg.tile_batch
            out = np.concatenate([self.backend(item.x[i:i + tb]) for i in range(0, n, tb)])  # [T, C]
            kind = "tiles"
        item.x = None                                                    # free the input tensor now
        self._put_always(out_q, (kind, item, out, (time.perf_counter() - t0) * 1e3))

    def _put_always(self, q: "queue.Queue", obj) -> None:
        """Hand a result to the publisher even while stopping: inferred frames are not dropped."""
        while self._pub_error is None:
            try:
                q.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    def _finish(self, item: Item, infer_ms: float, probs=None, heat=None) -> None:
        t0 = time.perf_counter()
        f = item.frame
        rec: Dict[str, object] = {"source": f.name, "frame": f.index, "timestamp": round(f.timestamp, 6)}
        if f.video_ms is not None:
            rec["video_ms"] = round(f.video_ms, 3)
        rec["mode"] = self.cfg.mode
        if probs is not None:
            rec["probabilities"] = {n: round(float(v), 5) for n, v in zip(self.class_names, probs)}
            rec["top_class"] = self.class_names[int(np.argmax(probs))]
            score = float(probs[self.cfg.positive])
        else:
            rec["heat"] = heat.to_record(grid=self.cfg.record_grid)
            score = heat.max
        decision = self.safety.update(score)
        self.flips += int(decision.changed)
        rec["decision"] = decision.to_record()
        times = dict(item.times, infer=infer_ms)
        times["postprocess"] = (time.perf_counter() - t0) * 1e3
        times["total"] = sum(times.values())
        rec["latency_ms"] = {k: round(v, 3) for k, v in times.items()}
        for k, v in times.items():
            self.stats.add(k, v)
        t1 = time.perf_counter()
        self.publish(rec, item, heat.grid if heat is not None else None)
        self.stats.add("publish", (time.perf_counter() - t1) * 1e3)
        self.processed += 1

    def summary(self, elapsed: Optional[float] = None) -> Dict[str, object]:
        if elapsed is None:  # after an error: time since the start of run()
            elapsed = time.perf_counter() - getattr(self, "t_start", time.perf_counter())
        describe = getattr(self.backend, "describe", lambda: {})()
        return {"frames": self.processed, "skipped": self.skipped, "invalid_outputs": self.invalid,
                "elapsed_s": round(elapsed, 3),
                "fps": round(self.processed / elapsed, 2) if elapsed > 0 else 0.0,
                "mode": self.cfg.mode, "heatmap_impl": self.impl, "decision_changes": self.flips,
                "final_decision": {"safe_to_overfly": self.safety.safe},
                "stopped_by": self.reason, "latency_ms": self.stats.summary(), "backend": describe}


def annotate(record, item: Item, heat_grid) -> Optional[np.ndarray]:
    """The annotated frame for a published record (None for skipped frames or dropped images)."""
    if item.frame.image is None:
        return None
    return overlay(item.frame.image, record, heat_grid)
