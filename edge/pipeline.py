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

from edge.contract import DecisionRule
from edge.heatmap import FlightSafety
from edge.judge import HEATMAP_IMPLS, MODES, Camera, Judge, Judgement, Prepared, resolve_impl
from edge.outputs import LatencyStats, overlay
from edge.sources import Frame

__all__ = ["HEATMAP_IMPLS", "MODES", "Pipeline", "PipelineConfig", "annotate"]
_END = object()


@dataclass(frozen=True)
class PipelineConfig:
    mode: str = "classify"
    positive: int = 0                    # index of the crowd class
    rule: Optional[DecisionRule] = None  # the per-frame verdict (default: the model's metadata)
    heatmap_impl: str = "auto"
    camera: Camera = Camera()            # heatmap tile size: explicit, from GSD or altitude+HFOV
    stride: Optional[int] = None         # default: half the tile
    resize: Optional[str] = None         # classify: resize policy (default: the model's)
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
    prepared: Optional[Prepared]         # the network input (tiles or whole frame); None: skipped
    times: Dict[str, float]


class Pipeline:
    def __init__(self, backend, frames: Iterator[Frame], cfg: PipelineConfig,
                 publish=None, safety: Optional[FlightSafety] = None) -> None:
        self.backend, self.frames, self.cfg = backend, frames, cfg
        self.publish = publish or (lambda record, item, heat_grid: None)
        self.safety = safety or FlightSafety()
        self.class_names = list(backend.info.class_names)
        self.impl = (resolve_impl(cfg.heatmap_impl, bool(getattr(backend, "has_dense", False)))
                     if cfg.mode == "heatmap" else "none")
        # one judge of a frame, the same as edge.evaluate's and training's validation
        self.judge = Judge(backend.info, cfg.mode, positive=cfg.positive, rule=cfg.rule,
                           camera=cfg.camera, impl=self.impl if cfg.mode == "heatmap" else "tiles",
                           stride=cfg.stride, resize=cfg.resize, tile_batch=cfg.tile_batch)
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

    # --- reader thread: decode + preprocess --------------------------------------------------
    def _prepare(self, frame: Frame) -> Item:
        t0 = time.perf_counter()
        prepared = self.judge.prepare(frame.image)   # [1, C, H, W] frame, [T, C, H, W] tiles, dense
        times = {"preprocess": (time.perf_counter() - t0) * 1e3}
        if not self.cfg.keep_images:
            frame.image = None
        return Item(frame, prepared, times)

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
                    item = Item(frame, None, {"decode": decode})
                else:
                    try:
                        item = self._prepare(frame)
                    except ValueError as e:   # e.g. an image shape the contract cannot take
                        frame.image, frame.error = None, f"preprocess: {e}"
                        item = Item(frame, None, {})
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
                if obj.prepared is None:
                    self._put_always(out_q, ("skip", obj, None, 0.0))
                    continue
                batch = [obj]
                while self.cfg.mode == "classify" and len(batch) < self.cfg.batch:
                    try:
                        nxt = q.get_nowait()
                    except queue.Empty:
                        break
                    if isinstance(nxt, Item) and nxt.prepared is not None:
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
                else:                       # logits [C], [T, C] or a score map [C, h, w]
                    self._finish(item, infer_ms, self.judge.decide(out, item.prepared))
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
        if self.cfg.mode == "classify":       # frames batched across the queue: one call
            xs = [b.prepared.x for b in batch]
            logits = self.backend(xs[0] if len(xs) == 1 else np.concatenate(xs))   # [B, C]
            infer = (time.perf_counter() - t0) * 1e3 / len(batch)
            for item, row in zip(batch, logits):
                item.prepared.x = None
                self._put_always(out_q, ("out", item, row, infer))
            return
        item = batch[0]
        out = self.judge.run(item.prepared, self.backend, getattr(self.backend, "score_map", None))
        item.prepared.x = None                                           # free the input tensor now
        self._put_always(out_q, ("out", item, out, (time.perf_counter() - t0) * 1e3))

    def _put_always(self, q: "queue.Queue", obj) -> None:
        """Hand a result to the publisher even while stopping: inferred frames are not dropped."""
        while self._pub_error is None:
            try:
                q.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    def _finish(self, item: Item, infer_ms: float, verdict: Judgement) -> None:
        t0 = time.perf_counter()
        f = item.frame
        rec: Dict[str, object] = {"source": f.name, "frame": f.index, "timestamp": round(f.timestamp, 6)}
        if f.video_ms is not None:
            rec["video_ms"] = round(f.video_ms, 3)
        rec["mode"] = self.cfg.mode
        heat = verdict.heat
        if verdict.probs is not None:
            rec["probabilities"] = {n: round(float(v), 5) for n, v in zip(self.class_names, verdict.probs)}
            rec["top_class"] = self.class_names[int(np.argmax(verdict.probs))]
        else:
            rec["heat"] = heat.to_record(grid=self.cfg.record_grid)
        # this frame's own verdict beside the smoothed state, which is fed the calibrated score
        rec["verdict"] = verdict.to_record()
        decision = self.safety.update(verdict.score)
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
                "mode": self.cfg.mode, "heatmap_impl": self.impl, "judge": self.judge.describe(),
                "decision_changes": self.flips,
                "final_decision": {"safe_to_overfly": self.safety.safe},
                "stopped_by": self.reason, "latency_ms": self.stats.summary(), "backend": describe}


def annotate(record, item: Item, heat_grid) -> Optional[np.ndarray]:
    """The annotated frame for a published record (None for skipped frames or dropped images)."""
    if item.frame.image is None:
        return None
    return overlay(item.frame.image, record, heat_grid)
