"""Step-time cost of ``--ema`` (train/ema.py): a training step plus the average's update, against
the step alone (target: <= 1.01x; the average is one multiply-add over the weights per step).

crowd_fcn at 128x128, batch 32 (the crowd preset), CE on random data, SGD. The two variants
alternate within every repeat, in a fresh random order, so that load from other processes hits
them alike; the ratio is the median over repeats of the paired ratio.

    OMP_NUM_THREADS=2 python -m benchmarks.bench_ema
    python -m benchmarks.bench_ema --repeats 40 --steps 20
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from edge.bench import git_commit
from train.ema import WeightAverage
from train.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--steps", type=int, default=10, help="training steps per timing")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--decay", type=float, default=0.9998)
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model("crowd_fcn", num_classes=2, input_size=128).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    avg = WeightAverage(model, args.decay)
    x, y = torch.randn(args.batch, 3, 128, 128), torch.randint(0, 2, (args.batch,))

    def run(with_average: bool) -> float:
        t = time.perf_counter()
        for _ in range(args.steps):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if with_average:
                avg.update(model)
        return (time.perf_counter() - t) / args.steps

    run(True), run(False)                                   # warm-up
    times = {False: [], True: []}
    ratios = []
    for _ in range(args.repeats):
        order = [False, True]
        random.shuffle(order)
        got = {v: run(v) for v in order}
        for v, t in got.items():
            times[v].append(t)
        ratios.append(got[True] / got[False])
    update = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(200):
            avg.update(model)
        update.append((time.perf_counter() - t) / 200)
    print(f"commit {git_commit()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"crowd_fcn batch {args.batch}, {args.repeats} repeats x {args.steps} steps")
    print(f"step alone {statistics.median(times[False]) * 1e3:.2f} ms, with the average "
          f"{statistics.median(times[True]) * 1e3:.2f} ms, the update alone {min(update) * 1e3:.3f} ms")
    print(f"ratio (median of paired ratios) {statistics.median(ratios):.4f}x; "
          f"update / step {min(update) / statistics.median(times[False]):.4f}")


if __name__ == "__main__":
    main()
