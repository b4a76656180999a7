"""Step-time overhead of the self-distillation losses over plain CE (target: POSD <= 1.05x).

Times one full training step (forward with the feature tap, loss, backward, SGD step) at batch 64
on random data, for ``cifar_cnn`` (32x32) and ``crowd_fcn`` (128x128); ``posd_pt`` is POSD on its
pure-PyTorch path, to compare with the native CPU kernel (train/native.py, train/native.c). Methods are interleaved
within every repeat, in a fresh random order each time, so that load from other processes and
cache effects hit them alike. The ratio is the median over repeats of ``t_method / t_ce`` within
the same repeat (paired), with a bootstrap 95% interval; the ratio of medians is printed too.

    OMP_NUM_THREADS=2 python -m benchmarks.bench_posd_overhead
    OMP_NUM_THREADS=1 python -m benchmarks.bench_posd_overhead --nets cifar_cnn
    python -m benchmarks.bench_posd_overhead --repeats 300 --device cuda
"""
from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Callable, Dict, List, Optional

import torch

from train.features import FeatureTap
from train import native
from train.losses import build_loss
from train.models import build_model
from edge.bench import git_commit

METHODS = {"ce": {}, "posd": {"knn": 2}, "posd_pt": {"knn": 2}, "oskd": {"knn": 2}}
# posd_pt: POSD on its pure-PyTorch path (train.losses.native.paused), next to the native kernel
NETS = {"cifar_cnn": 32, "crowd_fcn": 128}


def make_step(net: str, size: int, method: str, batch: int, device: str) -> Callable[[], None]:
    torch.manual_seed(0)
    model = build_model(net, num_classes=10, input_size=size).to(device).train()
    loss = build_loss(method.split("_")[0], **METHODS[method]).to(device).train()
    tap = FeatureTap(model, loss.feature_layer) if loss.needs_features else None
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        terms = loss(logits, y, features=tap.read(logits) if tap else None)
        sum(terms.values()).backward()
        opt.step()

    def step_pure_pytorch() -> None:
        with native.paused():
            step()

    return step_pure_pytorch if method.endswith("_pt") else step


def time_interleaved(steps: Dict[str, Callable[[], None]], repeats: int, warmup: int,
                     device: str) -> Dict[str, List[float]]:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: Dict[str, List[float]] = {m: [] for m in steps}
    order, rng = list(steps.items()), random.Random(0)
    for _ in range(repeats):
        rng.shuffle(order)
        for method, step in order:
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[method].append(time.perf_counter() - t0)
    return times


def paired_ratio(ts: List[float], base: List[float], boot: int = 1000) -> tuple:
    """Median of the per-repeat ratios ``ts[i] / base[i]`` and its bootstrap 95% interval."""
    ratios = [a / b for a, b in zip(ts, base)]
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(boot))
    return statistics.median(ratios), meds[int(0.025 * boot)], meds[int(0.975 * boot) - 1]


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64, help="mini-batch size (default 64)")
    ap.add_argument("--repeats", type=int, default=300, help="timed steps per method")
    ap.add_argument("--warmup", type=int, default=20, help="untimed steps per method first")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS),
                    help="models to time (default: all)")
    args = ap.parse_args(argv)
    print(f"device={args.device} threads={torch.get_num_threads()} fp32 batch={args.batch_size} "
          f"torch={torch.__version__} commit={git_commit()} repeats={args.repeats}")
    print(f"posd (d=2) on CPU: {native.status()}; posd_pt: the pure-PyTorch path")
    print(f"{'model':<10} {'method':<8} {'median ms':>10} {'p90 ms':>8} {'paired ratio [95% CI]':>24} "
          f"{'ratio of medians':>17}")
    for net in args.nets:
        size = NETS[net]
        steps = {m: make_step(net, size, m, args.batch_size, args.device) for m in METHODS}
        times = time_interleaved(steps, args.repeats, args.warmup, args.device)
        base = statistics.median(times["ce"])
        for method, ts in times.items():
            med, p90 = statistics.median(ts), statistics.quantiles(ts, n=10)[-1]
            r, lo, hi = paired_ratio(ts, times["ce"])
            print(f"{net:<10} {method:<8} {med * 1e3:>10.3f} {p90 * 1e3:>8.3f} "
                  f"{r:>9.3f} [{lo:.3f}, {hi:.3f}] {med / base:>17.3f}")


if __name__ == "__main__":
    main()
