"""Benchmark a model on this device: latency percentiles, throughput, pipeline FPS, power.

    python -m edge.bench --model crowd.engine --batch 1 8 32 --power
    python -m edge.bench --model crowd.onnx --backend ort-cpu --batch 1 8 --json bench.json

Per batch size: warm-up, then ``--iters`` timed calls; latency p50/p90/p99 (ms per call) and
throughput (images/s) are reported apart. For TensorRT the host->device and device->host copies
are timed with CUDA events apart from compute. The end-to-end figure runs the whole pipeline
(preprocess in a reader thread, infer, JSON record) on a synthetic stream. ``--power`` reads
board power from jtop (jetson-stats) and reports energy per frame, or "n/a" without jtop.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from edge.backends import BACKENDS
from edge import sidecar as S
from edge.cli_checks import OneLineParser, check_bench_args, write_text_output
from edge.command import model_error, run_command
from edge.model_checks import open_model
from edge.contract import PRECISIONS
from edge.outputs import JsonlWriter
from edge.pipeline import Pipeline, PipelineConfig
from edge.power import PowerSampler, energy_report
from edge.sources import synthetic_frames


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m edge.bench", description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help=".onnx or .engine")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="inference backend")
    p.add_argument("--precision", default=None, choices=PRECISIONS,
                   help="default: the model's own; ort-trt can run an fp32 ONNX at fp16; an engine's is fixed at build")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="batch sizes to measure")
    p.add_argument("--warmup", type=int, default=20, help="untimed calls before measuring")
    p.add_argument("--iters", type=int, default=200, help="timed calls per batch size")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    p.add_argument("--pipeline-frames", type=int, default=300, help="frames of the end-to-end run (0 = skip)")
    p.add_argument("--pipeline-size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"),
                   help="synthetic frame size of the end-to-end run")
    p.add_argument("--power", action="store_true", help="sample board power with jtop")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    return p


def percentiles(ms: List[float]) -> Dict[str, float]:
    p50, p90, p99 = np.percentile(np.asarray(ms), [50, 90, 99])
    return {"p50": round(float(p50), 4), "p90": round(float(p90), 4), "p99": round(float(p99), 4)}


def bench_batch(backend, batch: int, warmup: int, iters: int, power: Optional[PowerSampler]) -> Dict:
    c = backend.info.preprocess.channels
    h, w = backend.info.preprocess.size
    x = np.random.default_rng(0).standard_normal((batch, c, h, w)).astype(np.float32)
    for _ in range(warmup):
        backend(x)
    if power is not None:
        power.reset()
    lat, copies = [], {"h2d_ms": [], "compute_ms": [], "d2h_ms": []}
    t0 = time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        backend(x)                       # returns host logits: the call is synchronous
        lat.append((time.perf_counter() - t) * 1e3)
        for k, v in getattr(backend, "last_timing", {}).items():
            copies[k].append(v)
    total = time.perf_counter() - t0
    row = {"batch": batch, "latency_ms": percentiles(lat),
           "throughput_ips": round(batch * iters / total, 1)}
    if copies["compute_ms"]:
        row["trt_split_ms"] = {k: percentiles(v) for k, v in copies.items()}
    if power is not None:
        row.update(energy_report(power.mean_watts(), total, batch * iters))
    return row


def bench_pipeline(backend, frames: int, size, power: Optional[PowerSampler]) -> Dict:
    if power is not None:
        power.reset()
    sink = JsonlWriter(os.devnull, fsync=False)
    pipe = Pipeline(backend, synthetic_frames(size[0], size[1], frames), PipelineConfig(mode="classify"),
                    publish=lambda rec, item, heat: sink.write(rec))
    s = pipe.run()
    sink.close()
    out = {"frames": s["frames"], "frame_size": list(size), "fps": s["fps"],
           "latency_ms": s["latency_ms"].get("total", {})}
    if power is not None:
        out.update(energy_report(power.mean_watts(), s["elapsed_s"], s["frames"]))
    return out


def environment(backend) -> Dict[str, object]:
    import cv2

    fp = S.probe_device()
    try:
        import onnxruntime as ort  # noqa: PLC0415
        ort_version = ort.__version__
    except ImportError:
        ort_version = "n/a"
    return {"device": fp.get(S.FP_GPU_NAME) or cpu_name(),
            "compute_capability": fp.get(S.FP_COMPUTE_CAPABILITY) or "n/a",
            "l4t": fp.get(S.FP_L4T) or "n/a", "jetpack": fp.get(S.FP_JETPACK) or "n/a",
            "tensorrt": fp.get(S.FP_TRT_VERSION) or "n/a", "onnxruntime": ort_version,
            "opencv": cv2.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "commit": git_commit(), "precision": backend.precision,
            **{k: v for k, v in backend.describe().items() if k in ("backend", "provider", "threads")}}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "n/a"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=True, cwd=os.path.dirname(__file__)).stdout.strip() or "n/a"
    except (OSError, subprocess.SubprocessError):
        return "n/a"


def print_table(result: Dict) -> None:
    env = result["environment"]
    print(f"device {env['device']} | backend {env['backend']} ({env['provider']}) | precision "
          f"{env['precision']} | TensorRT {env['tensorrt']} | ORT {env['onnxruntime']} | commit {env['commit']}")
    print(f"{'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'p99 ms':>9} {'img/s':>10} {'W':>7} {'mJ/img':>8}")
    for r in result["batches"]:
        lat = r["latency_ms"]
        print(f"{r['batch']:>5} {lat['p50']:>9.3f} {lat['p90']:>9.3f} {lat['p99']:>9.3f} "
              f"{r['throughput_ips']:>10.1f} {str(r.get('power_w', 'n/a')):>7} {str(r.get('energy_mj_per_frame', 'n/a')):>8}")
        if "trt_split_ms" in r:
            s = r["trt_split_ms"]
            print(f"      h2d p50 {s['h2d_ms']['p50']} ms, compute p50 {s['compute_ms']['p50']} ms, "
                  f"d2h p50 {s['d2h_ms']['p50']} ms")
    if result.get("pipeline"):
        p = result["pipeline"]
        print(f"pipeline (synthetic {p['frame_size'][0]}x{p['frame_size'][1]}, {p['frames']} frames): "
              f"{p['fps']} FPS, power {_watts(p.get('power_w', 'n/a'))}")


def _watts(v) -> str:
    return f"{v} W" if isinstance(v, (int, float)) else str(v)


def main(argv: Optional[List[str]] = None) -> int:
    return run_command("edge.bench", build_parser().parse_args(argv), open_checked, bench,
                       (ValueError, OSError, ImportError, RuntimeError), model_error)


def open_checked(args):
    """The backend, once the flags and the batch sizes are checked against the model."""
    check_bench_args(args)
    backend = open_model(args.model, args.backend, threads=args.threads,
                         precision=args.precision)
    check_batches(backend, args.batch)
    return backend


def bench(args, backend) -> int:
    """Every batch size, the pipeline run, the table and the JSON file."""
    sampler = PowerSampler() if args.power else None
    with (sampler if sampler is not None else _Null()):
        live = sampler if sampler is not None and sampler.error is None else None
        if sampler is not None and live is None:
            print(f"edge.bench: power n/a: {sampler.error}", file=sys.stderr)
        rows = [bench_batch(backend, b, args.warmup, args.iters, live) for b in args.batch]
        pipe = bench_pipeline(backend, args.pipeline_frames, args.pipeline_size, live) \
            if args.pipeline_frames > 0 else None
    if args.power and live is None:
        for r in rows + ([pipe] if pipe else []):
            r.update(energy_report(None, 0.0, 0))
    result = {"environment": environment(backend), "batches": rows, "pipeline": pipe}
    print_table(result)
    if args.json:
        try:
            write_text_output(args.json, json.dumps(result, indent=2) + "\n")
        except OSError as e:
            print(f"edge.bench: error: --json {args.json} not written ({e.strerror or e})",
                  file=sys.stderr)
            return 2
    return 0


def check_batches(backend, batches: List[int]) -> None:
    """Every --batch fits the model (an engine's optimisation profile bounds it)."""
    lo = getattr(backend, "min_batch", None) or 1
    hi = getattr(backend, "max_batch", None)
    bad = [b for b in batches if b < lo or (hi is not None and b > hi)]
    if bad:
        raise ValueError(f"--batch {' '.join(map(str, bad))}: this model takes batches "
                         f"{lo}..{hi if hi is not None else 'any'}")


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None


if __name__ == "__main__":
    sys.exit(main())
