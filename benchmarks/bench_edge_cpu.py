"""CPU benchmarks of the edge runtime (issue #4 targets), all measured in one run as ratios.

    OMP_NUM_THREADS=1 python benchmarks/bench_edge_cpu.py --json reports/bench_edge_cpu.json
    OMP_NUM_THREADS=1 python benchmarks/bench_edge_cpu.py --quick        # smaller, for a smoke run

1. ONNX Runtime CPU vs PyTorch eager, crowd_fcn at its 128x128 training size, batch 1, same
   thread count: throughput ratio (target >= 2x).
2. Video end to end (decode + preprocess + infer + JSONL, the reader thread overlapping decode and
   preprocessing with inference) vs inference only on the same, already preprocessed frames:
   FPS ratio (target >= 0.8x), for the heatmap (dense score map on 1280x720) and classify modes;
   interleaved rounds, reported as the median of per-round ratios and as best-of-rounds.
3. Soak: 10,000 frames through the pipeline with JSONL output; resident memory growth from
   /proc/self/status VmRSS (target <= 20 MiB).

This script imports torch (for the model and the eager baseline); edge/ itself never does.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def rss_mib() -> float:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _rate(fn, seconds: float, warmup: int = 20) -> float:
    for _ in range(warmup):
        fn()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def ort_vs_torch(model_path, threads: int, seconds: float) -> dict:
    import torch

    from edge.backends import open_backend
    from edge_helpers import build_crowd_model

    torch.set_num_threads(threads)
    net = build_crowd_model(seed=0)             # the same weights export_crowd_onnx wrote
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    xt = torch.from_numpy(x)
    ort = open_backend(model_path, "ort-cpu", threads=threads)
    with torch.inference_mode():
        ref = net(xt).numpy()
        torch_ips = _rate(lambda: net(xt), seconds)
    np.testing.assert_allclose(ort(x), ref, atol=1e-4)
    ort_ips = _rate(lambda: ort(x), seconds)
    return {"threads": threads, "batch": 1, "input": [128, 128], "torch_eager_ips": round(torch_ips, 1),
            "ort_cpu_ips": round(ort_ips, 1), "ratio": round(ort_ips / torch_ips, 2)}


def write_video(path: Path, frames: int, size=(1280, 720), fps: float = 30.0) -> Path:
    import cv2

    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (h, w * 2, 3), dtype=np.uint8), (0, 0), 3)
    for i in range(frames):
        vw.write(np.ascontiguousarray(base[:, (i * 9) % w:(i * 9) % w + w]))
    vw.release()
    return path


def video_ratio(model_path, video: Path, mode: str, threads: int, frames: int, fsync: bool,
                rounds: int = 3) -> dict:
    import cv2

    from edge.backends import open_backend
    from edge.outputs import JsonlWriter
    from edge.pipeline import Pipeline, PipelineConfig
    from edge.preprocess import FramePreprocessor
    from edge.sources import open_source

    backend = open_backend(model_path, "ort-cpu", threads=threads)
    prep = FramePreprocessor(backend.info.preprocess)
    # inference only: the same frames, decoded and preprocessed beforehand
    cap = cv2.VideoCapture(str(video))
    tensors = []
    while len(tensors) < min(frames, 60):
        ok, img = cap.read()
        if not ok:
            break
        tensors.append(prep.to_tensor(img, size=img.shape[:2])[None] if mode == "heatmap" else prep.batch([img]))
    cap.release()
    call = backend.score_map if mode == "heatmap" else backend
    for t in tensors[:5]:
        call(t)
    reps = max(1, frames // len(tensors))
    infer, e2e, last = [], [], None
    # the CPUs are shared: interleave the two measurements and compare like with like
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            for t in tensors:
                call(t)
        infer.append(reps * len(tensors) / (time.perf_counter() - t0))
        with tempfile.TemporaryDirectory() as tmp:
            sink = JsonlWriter(Path(tmp) / "out.jsonl", fsync=fsync)
            cfg = PipelineConfig(mode=mode, heatmap_impl="dense" if mode == "heatmap" else "auto")
            pipe = Pipeline(backend, open_source(str(video)), cfg, publish=lambda r, i, g: sink.write(r))
            last = pipe.run()
            sink.close()
        e2e.append(last["fps"])
    ratios = [e / i for e, i in zip(e2e, infer)]
    return {"mode": mode, "frame_size": [1280, 720], "frames": last["frames"], "fsync": fsync,
            "rounds": rounds, "inference_only_fps": [round(v, 1) for v in infer],
            "end_to_end_fps": e2e, "ratios": [round(r, 3) for r in ratios],
            "ratio_median": round(float(np.median(ratios)), 3),
            "ratio_best_of": round(max(e2e) / max(infer), 3),
            "stage_p50_ms_last": {k: v["p50"] for k, v in last["latency_ms"].items()}}


def soak(model_path, threads: int, frames: int, size=(640, 480)) -> dict:
    from edge.backends import open_backend
    from edge.outputs import JsonlWriter
    from edge.pipeline import Pipeline, PipelineConfig
    from edge.sources import synthetic_frames

    backend = open_backend(model_path, "ort-cpu", threads=threads)
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        warm = JsonlWriter(Path(tmp) / "warm.jsonl", fsync=False)
        Pipeline(backend, synthetic_frames(*size, 300), PipelineConfig(),
                 publish=lambda r, i, g: warm.write(r)).run()
        warm.close()
        start = rss_mib()
        sink = JsonlWriter(Path(tmp) / "soak.jsonl", fsync=False)

        def publish(rec, item, grid):
            sink.write(rec)
            if sink.records % 1000 == 0:
                samples.append(round(rss_mib(), 2))
        s = Pipeline(backend, synthetic_frames(*size, frames, seed=1), PipelineConfig(), publish=publish).run()
        sink.close()
        end = rss_mib()
    return {"frames": s["frames"], "skipped": s["skipped"], "frame_size": list(size), "fps": s["fps"],
            "rss_start_mib": round(start, 2), "rss_end_mib": round(end, 2),
            "rss_growth_mib": round(end - start, 2), "rss_max_mib": max(samples + [end]),
            "rss_every_1000_frames": samples}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="threads for ORT and torch (same for both)")
    p.add_argument("--seconds", type=float, default=3.0, help="timing window per throughput figure")
    p.add_argument("--video-frames", type=int, default=300, help="frames of the 1280x720 test video")
    p.add_argument("--rounds", type=int, default=5,
                   help="interleaved inference-only / end-to-end rounds per video figure")
    p.add_argument("--modes", nargs="+", default=["heatmap", "classify"],
                   choices=["heatmap", "classify"], help="video modes to measure")
    p.add_argument("--skip", nargs="*", default=[], choices=["ort", "soak"],
                   help="leave out the ORT-vs-torch or the soak figure")
    p.add_argument("--soak-frames", type=int, default=10000, help="frames of the soak run")
    p.add_argument("--quick", action="store_true", help="1 s windows, 60-frame video, 2000-frame soak")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.video_frames, args.soak_frames, args.rounds = 1.0, 60, 2000, 1
    from edge_helpers import export_crowd_onnx

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        m128 = export_crowd_onnx(tmp / "crowd128.onnx", size=128, dense=True, seed=0)
        video = write_video(tmp / "footage.mp4", args.video_frames)
        res = {"machine": {"cpu": _cpu(), "cores": os.cpu_count(), "python": platform.python_version()}}
        if "ort" not in args.skip:
            res["ort_vs_torch"] = ort_vs_torch(m128, args.threads, args.seconds)
            print("ORT vs torch eager:", json.dumps(res["ort_vs_torch"]), flush=True)
        res["video"] = []
        for mode in args.modes:
            for fsync in (False, True):
                r = video_ratio(m128, video, mode, args.threads, args.video_frames, fsync,
                                rounds=args.rounds)
                res["video"].append(r)
                print("video:", json.dumps(r), flush=True)
        if "soak" not in args.skip:
            res["soak"] = soak(m128, args.threads, args.soak_frames)
            print("soak:", json.dumps(res["soak"]), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2))
    return 0


def _cpu() -> str:
    from edge.bench import cpu_name

    return cpu_name()


if __name__ == "__main__":
    sys.exit(main())
