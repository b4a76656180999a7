"""Run a classifier on a stream of frames, from camera to decision.

    python -m edge.run --model crowd.engine --source csi://0 --mode heatmap --output flight.jsonl
    python -m edge.run --model crowd.onnx --source footage.mp4 --save-video annotated.mp4
    python -m edge.run --model crowd.onnx --source photos/ --output results.jsonl
    python -m edge.run --model crowd.onnx --source rtsp://10.0.0.2:8554/cam --mode heatmap \\
        --reconnect-timeout 30 --output flight.jsonl --summary-json summary.json

Sources: an image, a folder or glob of images (sorted), a video file, /dev/videoN or a camera
index, csi://N (Jetson CSI camera through GStreamer), rtsp://..., synthetic://WxH[?frames=N].
Decision: each frame gets its own verdict by the model's decision rule (classify: p(crowd) >=
--classify-threshold; heatmap: the share of the frame above its tile threshold is >= --min-area, on
tiles sized from the camera: --gsd, --altitude/--hfov, --tile, or for a video file --altitude-log
(DJI subtitles or a CSV of the height over time) with --hfov; the tile threshold is --threshold
raised for the frame's number of training patches when the model carries background scores, see
--fixed-threshold) and a calibrated score, 0.5 at the rule's boundary; that score is smoothed (--smooth) with hysteresis (--unsafe-above / --safe-below /
--hold) into safe_to_overfly, which starts unsafe. See docs/jetson.md, "Camera scale and decision".
Exit status: 0 done (end of source, --max-frames, SIGINT/SIGTERM), 2 bad model/source/arguments,
3 a live source dropped for longer than --reconnect-timeout.
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from edge.backends import BACKENDS
from edge.cli_checks import OneLineParser, check_run_args, write_text_output
from edge.command import model_error, run_command
from edge.contract import IMAGE_EXTENSIONS, PRECISIONS, positive_class_index
from edge.model_checks import open_model
from edge.sidecar import SidecarError
from edge.heatmap import FlightSafety
from edge.altitude import MIN_ALTITUDE_M, read_altitude_log
from edge.judge import (Camera, add_camera_args, add_decision_args, camera_from_args,
                        resolve_tiling, rule_from_args)
from edge.outputs import GuardedSink, ImageSink, JsonlWriter, VideoSink, Window
from edge.pipeline import HEATMAP_IMPLS, MODES, Pipeline, PipelineConfig, annotate
from edge.sources import SourceError, SourceLost, open_source


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m edge.run", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="exported .onnx or TensorRT .engine (with its .json sidecar)")
    p.add_argument("--source", required=True, help="image, folder, glob, video, /dev/videoN, N, csi://N, rtsp://...")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend (default: auto)")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="default: the model's own; ort-trt can run an fp32 ONNX at fp16; an engine's is fixed at build")
    p.add_argument("--mode", default="classify", choices=MODES, help="one decision per frame, or a crowd heatmap")
    p.add_argument("--output", default=None, help="JSON Lines file, one record per frame, appended ('-' = stdout)")
    # a flag pair rather than BooleanOptionalAction: each side says what it trades (in --help)
    p.add_argument("--fsync", dest="fsync", action="store_true", default=True,
                   help="fsync the JSONL after every record, so a power cut loses at most one (default)")
    p.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="only flush per record (faster on slow storage; survives a crash, not a power cut)")
    p.add_argument("--save-video", default=None, help="write annotated frames to this video file")
    p.add_argument("--save-images", default=None, help="write annotated frames as JPEGs into this folder")
    p.add_argument("--display", action="store_true", help="show annotated frames in a window (q quits)")
    p.add_argument("--summary-json", default=None, help="also write the end-of-run summary to this file")
    p.add_argument("--positive-class", default=None,
                   help="class the decision is about, name or index (default: 'crowd' by name)")
    p.add_argument("--unsafe-above", type=float, default=0.5, help="smoothed crowd score that makes overflying unsafe")
    p.add_argument("--safe-below", type=float, default=0.35, help="smoothed score below which it may become safe again")
    p.add_argument("--smooth", type=float, default=0.4, help="EMA weight of the newest frame (1 = no smoothing)")
    p.add_argument("--hold", type=int, default=5, help="frames below --safe-below before 'safe to overfly'")
    p.add_argument("--heatmap-impl", default="auto", choices=HEATMAP_IMPLS,
                   help="dense score map (if the model has one) or tiles at the training scale")
    p.add_argument("--stride", type=int, default=None, help="heatmap tile stride in pixels (default: half a tile)")
    p.add_argument("--no-grid", dest="record_grid", action="store_false",
                   help="heatmap: keep only max/mean/area in the JSONL, not the grid (~25 kB/frame at 720p dense)")
    p.add_argument("--tile-batch", type=int, default=64, help="tiles per inference call")
    p.add_argument("--batch", type=int, default=1, help="classify: up to this many queued frames per inference")
    p.add_argument("--queue-size", type=int, default=4, help="decoded frames buffered ahead of inference")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: cores - 1)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--loop", action="store_true", help="repeat a file/folder source forever (soak tests)")
    p.add_argument("--reconnect-timeout", type=float, default=10.0,
                   help="seconds to keep reconnecting a dropped camera/stream before exiting with status 3")
    p.add_argument("--csi-size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"), help="CSI capture size")
    p.add_argument("--csi-fps", type=int, default=30, help="CSI capture frame rate")
    p.add_argument("--video-fps", type=float, default=30.0, help="frame rate of --save-video")
    add_scale_args(p)
    return p


def add_scale_args(p: argparse.ArgumentParser) -> None:
    """The camera (heatmap tile size) and the per-frame decision rule."""
    g = p.add_argument_group("camera scale and decision (default: the model's metadata)")
    add_camera_args(g)
    g.add_argument("--altitude-log", default=None, metavar="FILE",
                   help="heatmap of a video file: its height above ground over time, DJI subtitles "
                        "(.srt, rel_alt) or a CSV time_s,altitude_m; tiles follow it (with --hfov)")
    add_decision_args(g)


def judge_settings(args, info) -> dict:
    """PipelineConfig fields from the scale/decision flags; ValueError names a bad value (raised
    here, before any output is opened)."""
    rule = rule_from_args(info.decision, args)
    if getattr(args, "altitude_log", None) is not None:
        return {**altitude_settings(args, info), "rule": rule, "resize": args.resize}
    camera = camera_from_args(args)
    if args.mode == "heatmap":
        resolve_tiling(camera, info.scale, int(info.preprocess.size[1]))
    return {"camera": camera, "rule": rule, "resize": args.resize}


def altitude_settings(args, info) -> dict:
    """``--altitude-log`` with ``--hfov``: checked against the mode, the other camera flags, the
    source and the model, then read whole (ValueError names what is wrong)."""
    if args.mode != "heatmap":
        raise ValueError("--altitude-log sizes heatmap tiles; use it with --mode heatmap")
    others = [f for f, v in (("--altitude", args.altitude), ("--gsd", args.gsd), ("--tile", args.tile))
              if v is not None]
    if others:
        raise ValueError(f"--altitude-log gives the height; drop {' and '.join(others)}")
    if args.hfov is None:
        raise ValueError("--altitude-log needs --hfov DEG (the ground width a frame shows needs both)")
    # a bad --hfov, or a model without a ground scale, named as the camera flags name them
    resolve_tiling(Camera(altitude=MIN_ALTITUDE_M, hfov=args.hfov), info.scale,
                   int(info.preprocess.size[1]))
    src = Path(str(args.source))
    if not src.exists() and not re.match(r"^[a-z]+://", str(args.source)):
        raise ValueError(f"source not found: {args.source}")
    if not src.is_file() or src.suffix.lower() in IMAGE_EXTENSIONS:
        raise ValueError(f"--altitude-log follows a video file's time; --source {args.source} is not "
                         "a video file")
    return {"camera": Camera(), "altitude_log": read_altitude_log(args.altitude_log),
            "log_hfov": float(args.hfov)}


class Publisher:
    """Records and annotated frames to the outputs; a failing output ends itself, never the run."""

    def __init__(self, args, on_quit=lambda: None) -> None:
        self.window = Window() if args.display else None     # first: it may refuse (headless)
        self.jsonl = JsonlWriter(args.output, fsync=args.fsync) if args.output else None
        self.video = GuardedSink(VideoSink(args.save_video, fps=args.video_fps),
                                 "--save-video") if args.save_video else None
        self.images = GuardedSink(ImageSink(args.save_images),
                                  "--save-images") if args.save_images else None
        self.on_quit = on_quit                 # the window's q / Esc stops the run

    @property
    def needs_images(self) -> bool:
        return any(s is not None for s in (self.video, self.images, self.window))

    def __call__(self, record, item, heat_grid) -> None:
        if self.jsonl is not None:
            self.jsonl.write(record)
        if not self.needs_images:
            return
        frame = annotate(record, item, heat_grid)
        if frame is None:
            return
        if self.video is not None:
            self.video.write(frame)
        if self.images is not None:
            self.images.write(frame, item.frame.index)
        if self.window is not None and not self.window.show(frame):
            self.on_quit()
        item.frame.image = None   # release the full-resolution frame at once

    def close(self) -> None:
        for s in (self.jsonl, self.video, self.images, self.window):
            if s is not None:
                s.close()

    def losses(self) -> dict:
        """What the outputs could not write, for the summary."""
        out = {"records_lost": self.jsonl.lost if self.jsonl is not None else 0}
        errors = [s.error for s in (self.jsonl, self.video, self.images)
                  if s is not None and s.error is not None]
        if errors:
            out["output_errors"] = errors
        return out


#: what a bad model, source or flag raises while setting up (exit status 2)
SETUP_ERRORS = (ValueError, OSError, ImportError, RuntimeError, SourceError, SidecarError)


def main(argv: Optional[List[str]] = None) -> int:
    return run_command("edge.run", build_parser().parse_args(argv), set_up, fly, SETUP_ERRORS,
                       model_error)


def set_up(args) -> Tuple[Pipeline, Publisher]:
    """The pipeline and its outputs; one of :data:`SETUP_ERRORS` names a bad model, source or
    value. The outputs open last: a bad model, source or setting leaves no file behind."""
    check_run_args(args)
    backend = open_model(args.model, args.backend, threads=args.threads, precision=args.precision)
    positive = positive_class_index(backend.info.class_names, args.positive_class)
    settings = judge_settings(args, backend.info)
    safety = FlightSafety(args.unsafe_above, args.safe_below, args.smooth, args.hold)
    frames = open_source(args.source, args.reconnect_timeout, tuple(args.csi_size), args.csi_fps, args.loop)
    cfg = PipelineConfig(mode=args.mode, positive=positive, **settings,
                         heatmap_impl=args.heatmap_impl, stride=args.stride,
                         tile_batch=args.tile_batch, batch=args.batch, queue_size=args.queue_size,
                         max_frames=args.max_frames,
                         keep_images=bool(args.save_video or args.save_images or args.display),
                         record_grid=args.record_grid)
    pipe = Pipeline(backend, frames, cfg, safety=safety)
    pipe.publish = publisher = Publisher(args, on_quit=lambda: pipe.request_stop("window closed"))
    return pipe, publisher


def fly(args, state: Tuple[Pipeline, Publisher]) -> int:
    """Run until the source ends or something stops it; the summary; the exit status."""
    pipe, publisher = state
    print(f"edge.run: {args.model} on {pipe.backend.describe().get('provider')}, mode {args.mode}"
          + (f" ({pipe.impl})" if args.mode == "heatmap" else ""), file=sys.stderr)
    for note in pipe.judge.notes:          # e.g. the default camera: said once, recorded in the summary
        print(f"edge.run: note: {note}", file=sys.stderr)
    try:
        summary, status = run_with_signals(pipe)
    finally:
        publisher.close()
    summary.update(publisher.losses())
    report(summary, args.summary_json)
    return status


def run_with_signals(pipe: Pipeline) -> Tuple[dict, int]:
    """``pipe.run()`` with SIGINT and SIGTERM asking it to stop; (summary, exit status)."""
    def on_signal(signum, _frame):
        pipe.request_stop(f"signal {signal.Signals(signum).name}")

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return pipe.run(), 0
    except SourceLost as e:
        return failed(pipe, f"source lost: {e}", e), 3
    except (SourceError, RuntimeError) as e:
        return failed(pipe, f"error: {e}", e), 2
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def failed(pipe: Pipeline, stopped_by: str, e: BaseException) -> dict:
    """The summary of a run an error ended, and the error on stderr."""
    summary = pipe.summary()
    summary["stopped_by"] = stopped_by
    print(f"edge.run: error: {e}", file=sys.stderr)
    return summary


def report(summary, path: Optional[str]) -> None:
    lat = summary.get("latency_ms", {}).get("total", {})
    print(f"edge.run: {summary['frames']} frames, {summary['skipped']} skipped, "
          f"{summary['fps']} FPS, latency p50 {lat.get('p50', 'n/a')} ms p90 {lat.get('p90', 'n/a')} ms "
          f"p99 {lat.get('p99', 'n/a')} ms; stopped by {summary['stopped_by']}", file=sys.stderr)
    print(json.dumps({"summary": summary}), file=sys.stderr)
    if path:
        try:
            write_text_output(path, json.dumps(summary, indent=2) + "\n")
        except OSError as e:               # the summary is on stderr above: say so, end normally
            print(f"edge.run: warning: --summary-json {path} not written ({e.strerror or e})",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
