"""Data-path overhead: a real training epoch vs forward+backward alone on the same tensors.

    python benchmarks/bench_data_path.py                 # cifar_cnn, 20,000 CIFAR-sized images
    python benchmarks/bench_data_path.py --model crowd_fcn --size 128 --n 4000 --batch-size 32

The epoch is ``Trainer.fit`` for one epoch (batched augmentation, normalisation, loss terms,
logging, a 256-image evaluation and the checkpoint writes included). The reference runs the
same model over the same preloaded batches, already normalised, with no augmentation: forward,
cross-entropy, backward and the SGD step. The epoch is timed twice: as training runs it (on CPU
the batch gather, augmentation and normalisation are one native call, train/native.py) and
with the pure-PyTorch ops (``epoch_pt``). All run in this process; every round times the
three in a shuffled order, and the ratio is the median over ``--repeats`` rounds of the
per-round ratio (the machine's speed drifts between rounds). Target (issue #2): ratio <= 1.3.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from edge.contract import Preprocess
from train import native
from train.config import TrainConfig
from train.data import DataSplits
from train.data.augment import Normalizer
from train.engine import Trainer, epoch_batches
from train.models import build_model


def make_data(n: int, size: int, channels: int = 3) -> DataSplits:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, size, size), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen)
    pre = Preprocess(size=(size, size), mean=(0.5,) * channels, std=(0.25,) * channels)
    return DataSplits("bench", x, y, x[:256].clone(), y[:256].clone(), [str(i) for i in range(10)],
                      pre, "cifar")


def time_epoch(data: DataSplits, model: str, batch: int, method: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(dataset="bench", model=model, method=method, epochs=1, batch_size=batch,
                          lr=1e-3, out=str(Path(tmp) / "run"))
        trainer = Trainer(cfg, data=data, progress=False)
        trainer.fit()
        return trainer.state.history[-1]["epoch_time_s"]


def time_fwd_bwd(data: DataSplits, model_name: str, batch: int) -> float:
    model = build_model(model_name, num_classes=10, in_channels=data.in_channels,
                        input_size=data.input_size[0]).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    norm = Normalizer(data.preprocess.mean, data.preprocess.std, "cpu")
    batches = [(norm(data.train_x[i]), data.train_y[i])
               for i in epoch_batches(len(data.train_y), batch, 0, 0)]   # preloaded, normalised
    t0 = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def _paused(fn, *args):
    with native.paused():
        return fn(*args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="cifar_cnn")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--method", default="ce")
    p.add_argument("--repeats", type=int, default=5, help="rounds; the ratio is the median of per-round ratios")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    data = make_data(args.n, args.size)
    runs = {"ref": lambda: time_fwd_bwd(data, args.model, args.batch_size),
            "epoch": lambda: time_epoch(data, args.model, args.batch_size, args.method),
            "epoch_pt": lambda: _paused(time_epoch, data, args.model, args.batch_size, args.method)}
    times = {k: [] for k in runs}
    order, rng = list(runs), random.Random(0)
    for _ in range(args.repeats):            # every round times all three, in a shuffled order
        rng.shuffle(order)
        for k in order:
            times[k].append(runs[k]())
    ratio = statistics.median(e / r for e, r in zip(times["epoch"], times["ref"]))
    ratio_pt = statistics.median(e / r for e, r in zip(times["epoch_pt"], times["ref"]))
    result = {"model": args.model, "images": args.n, "batch": args.batch_size, "method": args.method,
              "threads": torch.get_num_threads(), "torch": str(torch.__version__),
              "native": native.status(), "rounds": args.repeats,
              "epoch_s": statistics.median(times["epoch"]), "epoch_pt_s": statistics.median(times["epoch_pt"]),
              "fwd_bwd_step_s": statistics.median(times["ref"]), "ratio": ratio, "ratio_pt": ratio_pt,
              "ratios": [e / r for e, r in zip(times["epoch"], times["ref"])],
              "ratios_pt": [e / r for e, r in zip(times["epoch_pt"], times["ref"])]}
    print(f"{args.model} {args.n} images, batch {args.batch_size}, {result['threads']} threads, "
          f"{args.repeats} rounds (medians): epoch {result['epoch_s']:.2f}s, forward+backward+step alone "
          f"{result['fwd_bwd_step_s']:.2f}s, ratio {ratio:.3f} (target <= 1.3); pure-PyTorch "
          f"augmentation: epoch {result['epoch_pt_s']:.2f}s, ratio {ratio_pt:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
