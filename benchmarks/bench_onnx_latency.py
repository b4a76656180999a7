"""ONNX Runtime CPU latency of a checkpoint's fp32 and INT8 Q/DQ ONNX, batch 1 and 32.

    python benchmarks/bench_onnx_latency.py runs/crowd/model.pt
    python benchmarks/bench_onnx_latency.py runs/crowd/model.pt --threads 1 --iters 100
    python benchmarks/bench_onnx_latency.py model.onnx model.int8.onnx      # existing files

Exports (parity-gated) and quantises (calibrated on the training split) into a temporary folder
when given a ``.pt``. Latency percentiles after warm-up; device, precision, batch, threads and
commit are printed with every figure (STYLE 12). Random inputs: latency does not depend on them.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.parity import ort_session  # noqa: E402
from edge.bench import cpu_name, git_commit






def bench(path, batch: int, iters: int, warmup: int, threads: int):
    sess = ort_session(path, threads)
    inp = sess.get_inputs()[0]
    shape = [batch] + [int(d) for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "img_per_s": batch * 1e3 / float(ms.mean())}


def prepare(pt: Path, out: Path):
    from export import ExportInputError
    from export.onnx import export_onnx
    from export.quantize import quantize_qdq
    from export.source import ExportSource

    source = ExportSource.from_checkpoint(pt)
    res = export_onnx(source, out / "model.onnx", check_size=16)
    if not res.passed:
        sys.exit("parity gate failed: " + res.reports[0].format())
    try:
        calib, _ = source.calibration_set(512)        # what export.trt calibrates on
    except ExportInputError as e:
        sys.exit(f"no calibration data: {e}")
    return [("fp32", res.onnx_path), ("int8", quantize_qdq(res.onnx_path, out / "model.int8.onnx", calib))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="a model.pt, or one or more .onnx files")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
                   help="ONNX Runtime intra-op threads (0: its default)")
    p.add_argument("--json", default=None, help="also write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(args.models[0])
        models = prepare(first, Path(tmp)) if first.suffix == ".pt" else [
            ("int8" if ".int8." in m else "fp32", Path(m)) for m in args.models]
        rows = []
        for precision, path in models:
            for b in args.batches:
                r = bench(path, b, args.iters, args.warmup, args.threads)
                rows.append({"precision": precision, "batch": b, **r})
    head = (f"device: {cpu_name()} (ONNX Runtime CPU, threads {args.threads or 'default'}), "
            f"commit {git_commit()}, model {first.name}")
    print(head)
    print(f"{'precision':>9} {'batch':>5} {'p50 ms':>9} {'p90 ms':>9} {'img/s':>9}")
    for r in rows:
        print(f"{r['precision']:>9} {r['batch']:>5} {r['p50_ms']:9.3f} {r['p90_ms']:9.3f} {r['img_per_s']:9.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"header": head, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
