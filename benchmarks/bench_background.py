"""Cost of the per-frame tile threshold: on the runtime, reading a frame's threshold off the
model's background (``DecisionRule.tile_threshold``) against judging a heatmap frame; in training,
the background's share of the test pass (p(crowd) of the crowd-free images kept and their 1001
quantiles taken) against the test pass alone.

crowd_fcn at 128x128 (the built-in model's shape), random weights. The runtime part judges a
720p frame in tiles at the default camera through PyTorch. The training part times the eval loop over 3,000 random test images of two
classes, with and without collecting the scores; the two variants alternate within every repeat
in a fresh random order, and the ratio is the median of the paired ratios.

    OMP_NUM_THREADS=2 python -m benchmarks.bench_background
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch

from edge.bench import git_commit
from edge.contract import Background, DecisionRule, GroundScale, ModelInfo, Preprocess
from edge.judge import Camera, Judge
from train.models import build_model


def _eval_pass(model, xs, ys, positive, collect: bool) -> float:
    t = time.perf_counter()
    kept = []
    with torch.no_grad():
        for x, y in zip(xs, ys):
            logits = model(x).float()
            torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            (logits.argmax(1) == y).sum()
            if collect:
                keep = y != positive
                kept.append(torch.softmax(logits[keep], 1)[:, positive].double().cpu())
    if collect:
        Background.from_scores(torch.cat(kept).numpy(), "crowd")
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--test-images", type=int, default=3000)
    p.add_argument("--frames", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model("crowd_fcn", num_classes=2, input_size=128).eval()
    rng = np.random.default_rng(0)
    rule = DecisionRule(background=Background.from_scores(rng.beta(1.2, 6.0, 3000), "crowd"))

    # runtime: the threshold lookup against one heatmap frame
    info = ModelInfo(["crowd", "no_crowd"], Preprocess((128, 128), (0.5,) * 3, (0.25,) * 3, "RGB", "stretch"),
                     scale=GroundScale(33.05, (12.8, 85.33), 128), decision=rule)
    judge = Judge(info, "heatmap", camera=Camera())
    frame = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)

    def predict(x):
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    judge.judge(frame, predict)
    t = time.perf_counter()
    for _ in range(args.frames):
        res = judge.judge(frame, predict)
    frame_s = (time.perf_counter() - t) / args.frames
    k = res.heat.patches
    n = 2000
    t = time.perf_counter()
    for _ in range(n):
        rule.tile_threshold(k)
    lookup_s = (time.perf_counter() - t) / n

    # training: the test pass with and without the background
    xs = list(torch.randn(args.test_images, 3, 128, 128).split(256))
    ys = list(torch.randint(0, 2, (args.test_images,)).split(256))
    _eval_pass(model, xs, ys, 0, True)
    times = {False: [], True: []}
    ratios = []
    for _ in range(args.repeats):
        order = [False, True]
        random.shuffle(order)
        got = {v: _eval_pass(model, xs, ys, 0, v) for v in order}
        for v, s in got.items():
            times[v].append(s)
        ratios.append(got[True] / got[False])

    print(f"commit {git_commit()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"runtime: 1280x720 heatmap frame at the default camera ({k} patches, tile "
          f"{res.tile_px} px, PyTorch) {frame_s * 1e3:.1f} ms; its tile threshold "
          f"{lookup_s * 1e6:.1f} us ({lookup_s / frame_s * 100:.3f} % of the frame)")
    print(f"training: test pass over {args.test_images} images {statistics.median(times[False]):.3f} s, "
          f"with the background {statistics.median(times[True]):.3f} s; ratio (median of paired "
          f"ratios) {statistics.median(ratios):.4f}x")


if __name__ == "__main__":
    main()
