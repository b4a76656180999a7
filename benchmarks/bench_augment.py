"""Cost of the robustness augmentation: training steps with ``aerial-robust`` vs ``aerial``.

    python benchmarks/bench_augment.py                          # crowd_fcn, batch 32 (the crowd preset)
    OMP_NUM_THREADS=1 python benchmarks/bench_augment.py --rounds 9
    python benchmarks/bench_augment.py --policies aerial crop-flip --model cifar_cnn --size 32 --batch-size 64
    python benchmarks/bench_augment.py --policies aerial aerial-mosaic   # the mosaics' cost
    OMP_NUM_THREADS=1 python benchmarks/bench_augment.py --augment-only     # the batch alone, both paths

Each variant is a real :meth:`train.engine.Trainer.train_step` (the batch's augmentation and
normalisation, forward, loss, backward, SGD step) over the same ``--steps`` batches of random
uint8 images, on CPU, one ``Trainer`` per variant built once. Within a round the two variants
alternate step by step (A B, B A, ...), so that drift in the machine's speed falls on both; the
figure is the median over rounds of the per-round ratio of the summed step times, with the
spread of the per-round ratios. Both clocks are reported: wall time, and the process's CPU time,
which a machine shared with other jobs inflates less (at one thread it is the work the step
does). Target: the step's cost per image rises by at most 10 % (ratio <= 1.10).

``--augment-only`` times just the batch (:func:`train.data.augment.augment_batch`: draws,
augmentation, normalisation) per policy, on the native path (each CPU kernel the machine has)
and on the PyTorch path, in thread CPU time, median over ``--rounds`` x ``--steps`` batches.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from edge.contract import Preprocess
from train import native
from train.config import TrainConfig
from train.data import DataSplits
from train.data.augment import Normalizer, augment_batch
from train.engine import Trainer, _seed, epoch_batches


def make_data(n: int, size: int, policy: str, channels: int = 3) -> DataSplits:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 2, (n,), generator=gen)
    pre = Preprocess(size=(size, size), mean=(0.5,) * channels, std=(0.25,) * channels)
    # class 0 is "crowd": aerial-mosaic needs one (the other policies never read the names)
    return DataSplits("bench", x, y, x[:64].clone(), y[:64].clone(), ["crowd", "no_crowd"], pre, policy)


def make_trainer(data: DataSplits, model: str, batch: int, out: Path) -> Trainer:
    cfg = TrainConfig(dataset="bench", model=model, method="ce", epochs=1, batch_size=batch,
                      lr=1e-3, device="cpu", out=str(out))
    trainer = Trainer(cfg, data=data, progress=False)
    trainer.model.train()
    return trainer


def time_round(trainers, batches, seed: int):
    """{variant: (wall, CPU) seconds} of one round: every step of ``batches`` by each variant,
    alternating the order step by step (the per-step generators as in a run)."""
    sums = {k: [0.0, 0.0] for k in trainers}
    names = list(trainers)
    for step, idx in enumerate(batches):
        for k in (names if step % 2 == 0 else names[::-1]):
            gen = torch.Generator().manual_seed(_seed(seed, 0, step + 2))
            t0, c0 = time.perf_counter(), time.process_time()
            trainers[k].train_step(idx, gen)
            sums[k][0] += time.perf_counter() - t0
            sums[k][1] += time.process_time() - c0
    return sums


def augment_only(args, n: int) -> dict:
    """Per-batch thread CPU time (ms) of augment_batch for each policy and path."""
    data = make_data(n, args.size, args.policies[0])
    norm = Normalizer(data.preprocess.mean, data.preprocess.std, "cpu")
    batches = epoch_batches(n, args.batch_size, 0, 0)
    paths = [("pytorch", None)]
    if native.kernel() is not None:
        paths = [(f"native-{name}", k) for k, name in ((0, "generic"), (1, "avx2"))
                 if native.select_kernel(k) == k] + paths
    out = {}
    for policy in args.policies:
        for name, k in paths:
            times = []
            for r in range(args.rounds):
                for step, idx in enumerate(batches[:args.steps]):
                    gen = torch.Generator().manual_seed(_seed(r, 0, step + 2))
                    t0 = time.thread_time()
                    if k is None:
                        with native.paused():
                            augment_batch(data.train_x, idx, policy, gen, norm, data.train_y, 0)
                    else:
                        native.select_kernel(k)
                        augment_batch(data.train_x, idx, policy, gen, norm, data.train_y, 0)
                    times.append(time.thread_time() - t0)
            out[f"{policy} {name}"] = statistics.median(times) * 1e3
            print(f"  {policy:14s} {name:15s} {out[f'{policy} {name}']:8.3f} ms per batch")
    if native.kernel() is not None:
        native.select_kernel(-1)
    return out


def summarise(times, policies, n: int):
    old, new = policies
    ratios = [b / a for a, b in zip(times[old], times[new])]
    return {"ms_per_image": {k: statistics.median(v) / n * 1e3 for k, v in times.items()},
            "ratio": statistics.median(ratios), "ratios": ratios}


def format_line(r, policies) -> str:
    old, new = policies
    ms = r["ms_per_image"]
    return (f"{old} {ms[old]:.3f} ms/image, {new} {ms[new]:.3f} ms/image; ratio {r['ratio']:.3f} "
            f"(median of per-round ratios, range {min(r['ratios']):.3f}-{max(r['ratios']):.3f}; "
            f"target <= 1.10)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policies", nargs=2, default=["aerial", "aerial-robust"], metavar=("BASE", "NEW"))
    p.add_argument("--model", default="crowd_fcn")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=48, help="training steps per variant and round")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--augment-only", action="store_true", help="time the batch alone (both paths)")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    n = args.steps * args.batch_size
    if args.augment_only:
        print(f"batch of {args.batch_size} x {args.size}x{args.size}, {torch.get_num_threads()} threads, "
              f"thread CPU time, median of {args.rounds} x {args.steps} batches:")
        result = augment_only(args, n)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
        return 0
    batches = epoch_batches(n, args.batch_size, 0, 0)
    times = {k: [] for k in args.policies}
    with tempfile.TemporaryDirectory() as tmp:
        base = make_data(n, args.size, args.policies[0])
        trainers = {k: make_trainer(dataclasses.replace(base, augment=k), args.model, args.batch_size,
                                    Path(tmp) / k) for k in args.policies}
        time_round(trainers, batches[:4], 1)        # warm-up: build the native library, fill caches
        for r in range(args.rounds):
            for k, t in time_round(trainers, batches, r).items():
                times[k].append(t)
    result = {"model": args.model, "size": args.size, "batch": args.batch_size, "steps": args.steps,
              "rounds": args.rounds, "threads": torch.get_num_threads(), "torch": str(torch.__version__),
              "native": native.status(), "policies": args.policies}
    print(f"{args.model} {args.size}x{args.size}, batch {args.batch_size}, {result['threads']} threads, "
          f"{args.rounds} rounds of {args.steps} steps ({result['native']}):")
    for clock, i in (("wall", 0), ("cpu", 1)):
        result[clock] = summarise({k: [t[i] for t in v] for k, v in times.items()}, args.policies, n)
        print(f"  {clock:4s}: " + format_line(result[clock], args.policies))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
