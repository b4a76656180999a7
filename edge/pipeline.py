"""capture -> preprocess -> infer -> publish.

A reader thread decodes and preprocesses frames into a small bounded queue while the main thread
runs the backend (OpenCV and ONNX Runtime release the GIL, so the stages overlap on two cores) and
a publisher thread decides and writes. What differs between classify, the dense heatmap and the
tiled heatmap is the judge's strategy (:class:`edge.judge.JudgeMode`): how a frame is prepared,
inferred (frames batched or not), decided and recorded. The queue bound keeps memory flat; bad
frames are skipped and counted. Every stop (a signal, the display's q, the end of the source,
a failing output) goes through :meth:`Pipeline.request_stop`: the loop ends cleanly and the
summary still comes out.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from edge.altitude import MIN_ALTITUDE_M, AltitudeLog
from edge.contract import DecisionRule
from edge.heatmap import FlightSafety
from edge.judge import (HEATMAP_IMPLS, MODES, Camera, Judge, Judgement, Prepared, impl_for,
                        resolve_tiling)
from edge.outputs import LatencyStats, overlay
from edge.sources import Frame

__all__ = ["HEATMAP_IMPLS", "MODES", "Pipeline", "PipelineConfig", "annotate"]
_END = object()                          # the publisher's queue is drained: it ends
MAX_JUDGES = 512                         # altitude log: judges kept, one per tile size


@dataclass(frozen=True)
class PipelineConfig:
    mode: str = "classify"
    positive: int = 0                    # index of the crowd class
    rule: Optional[DecisionRule] = None  # the per-frame verdict (default: the model's metadata)
    heatmap_impl: str = "auto"
    camera: Camera = Camera()            # heatmap tile size: explicit, from GSD or altitude+HFOV
    altitude_log: Optional[AltitudeLog] = None   # heatmap of a video: the height per moment ...
    log_hfov: Optional[float] = None             # ... with this horizontal field of view (degrees)
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
        if self.altitude_log is not None and (self.mode != "heatmap" or self.log_hfov is None
                                              or self.camera.given):
            raise ValueError("an altitude log sizes heatmap tiles, with a field of view and no "
                             "other camera")


@dataclass
class Item:
    """A frame on its way through: prepared by the reader, inferred by the main thread, decided
    and published by the publisher."""

    frame: Frame
    prepared: Optional[Prepared]         # the network input (tiles or whole frame); None: skipped
    times: Dict[str, float]
    out: Optional[np.ndarray] = None     # the network's output; None: nothing to decide
    infer_ms: float = 0.0
    judge: Optional[Judge] = None        # the frame's own judge (its altitude), else the pipeline's
    altitude_m: Optional[float] = None   # the height it was judged at (altitude log)


@dataclass(frozen=True)
class _End:
    """The reader's last word: why the frames ended ("end of source", "max frames")."""

    reason: str


class Pipeline:
    def __init__(self, backend, frames: Iterator[Frame], cfg: PipelineConfig,
                 publish=None, safety: Optional[FlightSafety] = None) -> None:
        self.backend, self.frames, self.cfg = backend, frames, cfg
        self.publish = publish or (lambda record, item, heat_grid: None)
        self.safety = safety or FlightSafety()
        self.class_names = list(backend.info.class_names)
        # one judge of a frame, the same as edge.evaluate's and training's validation
        log = cfg.altitude_log
        camera = cfg.camera if log is None else \
            Camera(altitude=max(log.at(0.0)[0], MIN_ALTITUDE_M), hfov=cfg.log_hfov)
        self.judge = self._make_judge(camera)
        self._by_tile: Dict[int, Judge] = {}           # altitude log: tile px -> judge
        self._tile_sizes: set = set()                  # every tile size judged at
        self._beyond = 0                               # frames outside the log's span
        self._heights: List[float] = []                # min and max height judged at
        self.strategy = self.judge.strategy          # classify, dense or tiled heatmap
        self.impl = self.strategy.impl
        self.stats = LatencyStats()
        self.processed = self.skipped = self.flips = self.invalid = 0
        self.stop = threading.Event()
        self.reason = "end of source"
        self._pub_error: Optional[BaseException] = None

    def _make_judge(self, camera: Camera) -> Judge:
        cfg = self.cfg
        return Judge(self.backend.info, cfg.mode, positive=cfg.positive, rule=cfg.rule,
                     camera=camera, impl=impl_for(cfg.mode, cfg.heatmap_impl, self.backend),
                     stride=cfg.stride, resize=cfg.resize, tile_batch=cfg.tile_batch)

    def _judge_at(self, frame: Frame) -> Tuple[Judge, Optional[float]]:
        """The judge of a frame: with an altitude log, tiles for the height at the frame's time
        in the video (one judge per tile size, made once); else the pipeline's."""
        log = self.cfg.altitude_log
        if log is None or frame.video_ms is None:
            return self.judge, None
        h, inside = log.at(frame.video_ms / 1000.0)
        self._beyond += int(not inside)
        h = max(h, MIN_ALTITUDE_M)
        self._heights = [min(self._heights[0], h), max(self._heights[1], h)] if self._heights else [h, h]
        info = self.backend.info
        tiling = resolve_tiling(Camera(altitude=h, hfov=self.cfg.log_hfov), info.scale,
                                int(info.preprocess.size[1]))
        tile = tiling.tile_px(int(frame.image.shape[1]))
        judge = self._by_tile.get(tile)
        if judge is None:
            self._tile_sizes.add(tile)
            if len(self._by_tile) >= MAX_JUDGES:      # a long flight through many heights
                self._by_tile.clear()
            judge = self._by_tile[tile] = self._make_judge(Camera(tile=tile))
        return judge, h

    def request_stop(self, reason: str) -> None:
        """End the run: the one path of every stop (a signal, the display window, the end of
        the source or --max-frames, a failing output or an error). The main loop takes no new
        frame after it, what was inferred is still published, and the first reason is reported."""
        if not self.stop.is_set():
            self.reason = reason
        self.stop.set()

    # --- reader thread: decode + preprocess --------------------------------------------------
    def _reader(self, q: "queue.Queue") -> None:
        last: object = _End("end of source")
        try:
            last = _End(self._read(q))
        except Exception as e:  # noqa: BLE001 - handed to the main thread, which re-raises it
            last = e
        finally:
            self._put(q, last)

    def _read(self, q: "queue.Queue") -> str:
        """Decode and prepare frames into ``q`` until they end or the run stops; why they ended."""
        it = iter(self.frames)
        n = 0
        while not self.stop.is_set():
            if self.cfg.max_frames is not None and n >= self.cfg.max_frames:
                return "max frames"
            t0 = time.perf_counter()
            frame = next(it, None)
            if frame is None:
                return "end of source"
            n += 1
            self._put(q, self._prepare(frame, (time.perf_counter() - t0) * 1e3))
        return "stopped"

    def _prepare(self, frame: Frame, decode_ms: float) -> Item:
        if frame.image is None:
            return Item(frame, None, {"decode": decode_ms})
        t0 = time.perf_counter()
        judge, height = self._judge_at(frame)
        try:     # [1, C, H, W] frame, [T, C, H, W] tiles, [1, C, h, w] dense
            prepared = judge.strategy.prepare(frame.image)
        except ValueError as e:   # e.g. an image shape the contract cannot take
            frame.image, frame.error = None, f"preprocess: {e}"
            return Item(frame, None, {"decode": decode_ms})
        times = {"preprocess": (time.perf_counter() - t0) * 1e3, "decode": decode_ms}
        if not self.cfg.keep_images:
            frame.image = None
        return Item(frame, prepared, times, judge=judge, altitude_m=height)

    def _put(self, q, obj) -> None:
        while not self.stop.is_set():
            try:
                q.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- main thread: infer ---------------------------------------------------------------------
    def run(self) -> Dict[str, object]:
        cap = self.strategy.queue_cap
        size = min(self.cfg.queue_size, cap) if cap else self.cfg.queue_size
        q: "queue.Queue" = queue.Queue(maxsize=size)
        out_q: "queue.Queue" = queue.Queue(maxsize=size)
        reader = threading.Thread(target=self._reader, args=(q,), name="edge-reader", daemon=True)
        # post-processing, JSON and video writing run beside inference, not after it
        writer = threading.Thread(target=self._publisher, args=(out_q,), name="edge-publish", daemon=True)
        self.t_start = time.perf_counter()
        reader.start()
        writer.start()
        try:
            self._infer_all(q, out_q)
        except BaseException as e:
            self.request_stop(f"error: {e}")
            raise
        finally:
            self._wind_down(reader, writer, out_q)
        if self._pub_error is not None:
            raise self._pub_error
        return self.summary(time.perf_counter() - self.t_start)

    def _infer_all(self, q: "queue.Queue", out_q: "queue.Queue") -> None:
        pending: List = []
        while not self.stop.is_set():
            obj = pending.pop(0) if pending else self._get(q)
            if obj is None:
                continue
            if isinstance(obj, _End):
                self.request_stop(obj.reason)
            elif isinstance(obj, BaseException):
                raise obj
            elif obj.prepared is None:
                self._put_always(out_q, obj)          # skipped: published as such
            else:
                self._infer(self._gather(obj, q, pending), out_q)

    def _gather(self, first: Item, q: "queue.Queue", pending: List) -> List[Item]:
        """``first`` and the prepared frames queued behind it, as many as one call may take (the
        first thing that is not one waits in ``pending``)."""
        limit = self.cfg.batch if self.strategy.batches_frames else 1
        batch = [first]
        while len(batch) < limit:
            try:
                nxt = q.get_nowait()
            except queue.Empty:
                break
            if isinstance(nxt, Item) and nxt.prepared is not None:
                batch.append(nxt)
            else:
                pending.append(nxt)
                break
        return batch

    def _get(self, q):
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            return None

    def _infer(self, batch: List[Item], out_q: "queue.Queue") -> None:
        t0 = time.perf_counter()
        strategy = (batch[0].judge or self.judge).strategy    # a heatmap infers one frame a call
        outs = strategy.infer([b.prepared for b in batch], self.backend,
                              getattr(self.backend, "score_map", None))
        infer_ms = (time.perf_counter() - t0) * 1e3 / len(batch)
        for item, out in zip(batch, outs):
            item.prepared.x = None                                       # free the input tensor now
            item.out, item.infer_ms = out, infer_ms
            self._put_always(out_q, item)

    def _put_always(self, q: "queue.Queue", obj) -> None:
        """Hand a result to the publisher even while stopping: inferred frames are not dropped."""
        while self._pub_error is None:
            try:
                q.put(obj, timeout=0.1)
                return
            except queue.Full:
                continue

    def _wind_down(self, reader: threading.Thread, writer: threading.Thread,
                   out_q: "queue.Queue") -> None:
        """After the stop: the publisher drains what was inferred and ends, then the reader."""
        while writer.is_alive():
            try:
                out_q.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        writer.join()
        reader.join(timeout=5)

    # --- publisher thread: decide + publish -----------------------------------------------------
    def _publisher(self, out_q: "queue.Queue") -> None:
        while True:
            item = out_q.get()
            if item is _END:
                return
            if self._pub_error is not None:
                continue                    # keep draining so the main thread never blocks
            try:
                self._decide(item)
            except Exception as e:  # noqa: BLE001 - re-raised by run() in the main thread
                self._pub_error = e
                self.request_stop(f"error: {e}")

    def _decide(self, item: Item) -> None:
        if item.out is not None and not np.isfinite(item.out).all():
            # NaN/inf scores decide nothing: the frame is recorded as invalid and the
            # flight-safety filter keeps its state
            self.invalid += 1
            item.frame.error = "invalid model output (NaN or inf)"
            item.out = None
        if item.out is None:
            self._skip(item)
        else:                       # logits [C], [T, C] or a score map [C, h, w]
            self._finish(item, (item.judge or self.judge).decide(item.out, item.prepared))

    def _skip(self, item: Item) -> None:
        self.skipped += 1
        f = item.frame
        self.publish({**_where(f), "skipped": True, "error": f.error or "unreadable"}, item, None)

    def _finish(self, item: Item, verdict: Judgement) -> None:
        t0 = time.perf_counter()
        rec = self._record(item.frame, verdict)
        if item.altitude_m is not None:
            rec["altitude_m"] = round(item.altitude_m, 2)
        decision = self.safety.update(verdict.score)
        self.flips += int(decision.changed)
        rec["decision"] = decision.to_record()
        rec["latency_ms"] = self._latency(item, t0)
        t1 = time.perf_counter()
        self.publish(rec, item, verdict.grid)
        self.stats.add("publish", (time.perf_counter() - t1) * 1e3)
        self.processed += 1

    def _record(self, f: Frame, verdict: Judgement) -> Dict[str, object]:
        rec: Dict[str, object] = _where(f)
        if f.video_ms is not None:
            rec["video_ms"] = round(f.video_ms, 3)
        rec["mode"] = self.cfg.mode
        rec.update(self.strategy.record(verdict, self.class_names, self.cfg.record_grid))
        # this frame's own verdict beside the smoothed state, which is fed the calibrated score
        rec["verdict"] = verdict.to_record()
        return rec

    def _latency(self, item: Item, t0: float) -> Dict[str, float]:
        """The frame's stage times (ms, postprocess since ``t0``), also added to the stats."""
        times = dict(item.times, infer=item.infer_ms)
        times["postprocess"] = (time.perf_counter() - t0) * 1e3
        times["total"] = sum(times.values())
        for k, v in times.items():
            self.stats.add(k, v)
        return {k: round(v, 3) for k, v in times.items()}

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
                "stopped_by": self.reason, "latency_ms": self.stats.summary(), "backend": describe,
                **self._altitude_summary()}

    def _altitude_summary(self) -> Dict[str, object]:
        log = self.cfg.altitude_log
        if log is None:
            return {}
        used = [round(h, 2) for h in self._heights] or None
        return {"altitude_log": {**log.describe(), "hfov_deg": self.cfg.log_hfov,
                                 "judged_at_m": used, "frames_beyond_span": self._beyond,
                                 "tile_sizes": len(self._tile_sizes)}}


def _where(f: Frame) -> Dict[str, object]:
    return {"source": f.name, "frame": f.index, "timestamp": round(f.timestamp, 6)}


def annotate(record, item: Item, heat_grid) -> Optional[np.ndarray]:
    """The annotated frame for a published record (None for skipped frames or dropped images)."""
    if item.frame.image is None:
        return None
    return overlay(item.frame.image, record, heat_grid)
