"""What following a height log costs ``edge.run``: the heatmap pipeline with ``--altitude-log`` (a
log that holds one height) against ``--altitude`` at that height, the same tiles either way, so
the difference is the per-frame lookup of the height and its judge (target: <= 1.01x).

The built-in crowd model through ONNX Runtime on synthetic 1280x720 frames that carry a video
position, as a video file's do. The two variants alternate within every repeat, in a fresh
random order, so that load from other processes hits them alike; the ratio is the median over
repeats of the paired ratio. The lookup alone is timed too.

    python -m benchmarks.bench_altitude_log
    python -m benchmarks.bench_altitude_log --repeats 10 --frames 60 --threads 2
"""
from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

from edge.altitude import read_altitude_log
from edge.backends import open_backend
from edge.bench import git_commit
from edge.judge import Camera
from edge.pipeline import Pipeline, PipelineConfig
from edge.sources import Frame


def frames(n: int, size, seed: int = 0):
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for i in range(n):
        yield Frame(i, time.time(), np.roll(base, i * 7, axis=1), "bench", video_ms=i * 1000 / 30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--frames", type=int, default=45, help="frames per timing")
    p.add_argument("--size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"))
    p.add_argument("--altitude", type=float, default=40.0)
    p.add_argument("--hfov", type=float, default=82.0)
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    args = p.parse_args()
    backend = open_backend("crowd", "auto", threads=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "flat.csv"
        log_path.write_text(f"time_s,altitude_m\n0,{args.altitude}\n3600,{args.altitude}\n")
        log = read_altitude_log(log_path)
    fixed = PipelineConfig(mode="heatmap", heatmap_impl="tiles", record_grid=False,
                           camera=Camera(altitude=args.altitude, hfov=args.hfov))
    logged = PipelineConfig(mode="heatmap", heatmap_impl="tiles", record_grid=False,
                            altitude_log=log, log_hfov=args.hfov)

    def run(cfg: PipelineConfig) -> float:
        pipe = Pipeline(backend, frames(args.frames, args.size), cfg)
        t = time.perf_counter()
        summary = pipe.run()
        assert summary["frames"] == args.frames, summary
        return (time.perf_counter() - t) / args.frames

    run(fixed), run(logged)                               # warm-up: sessions, caches
    ratios, t_fixed, t_logged = [], [], []
    for _ in range(args.repeats):
        order = [("fixed", fixed), ("logged", logged)]
        random.shuffle(order)
        got = {name: run(cfg) for name, cfg in order}
        t_fixed.append(got["fixed"])
        t_logged.append(got["logged"])
        ratios.append(got["logged"] / got["fixed"])

    pipe = Pipeline(backend, iter(()), logged)
    probe = list(frames(300, args.size))
    k = iter(range(10 ** 9))
    lookup_us = timeit.timeit(lambda: pipe._judge_at(probe[next(k) % 300]), number=20000) / 20000 * 1e6
    tile = pipe._judge_at(probe[0])[0].tiling.tile_px(args.size[0])
    print(f"commit {git_commit()}; {args.size[0]}x{args.size[1]} frames, heatmap tiles of {tile} px "
          f"({args.altitude:g} m, {args.hfov:g} deg), {args.frames} frames x {args.repeats} repeats")
    print(f"  --altitude:     {statistics.median(t_fixed) * 1e3:.2f} ms/frame (median)")
    print(f"  --altitude-log: {statistics.median(t_logged) * 1e3:.2f} ms/frame (median)")
    print(f"  ratio (paired, median): {statistics.median(ratios):.3f}x "
          f"(range {min(ratios):.3f}-{max(ratios):.3f}); the lookup alone: {lookup_us:.1f} us/frame")


if __name__ == "__main__":
    main()
