"""Quick OSKD lambda sweep behind ``train.losses.oskd.DEFAULT_LAM`` (CPU, a few minutes).

sklearn's digits upscaled to 32x32 gray with the 70/30 stratified split (seed 0) that
``train.data``'s "digits" uses, ``cifar_cnn(in_channels=1)``, k=2, SGD lr 0.01, momentum 0.9,
batch 64; prints best and final test accuracy, mean +- std over seeds. lam=0 is plain CE.

    OMP_NUM_THREADS=1 python -m benchmarks.sweep_oskd_lambda --lams 0 1e-4 0.3 1 --seeds 6
"""
from __future__ import annotations

import argparse
import statistics
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from train.losses import build_loss
from train.models import build_model


def digits_splits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0,
                      size=32, mode="bilinear", align_corners=False)   # [N, 1, 32, 32]
    y = torch.tensor(d.target)
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, random_state=0, stratify=d.target)
    x = (x - x[tr].mean()) / x[tr].std()
    return x[tr], y[tr], x[te], y[te]


def train_once(splits, lam: float, seed: int, epochs: int, lr: float) -> Tuple[float, float]:
    xtr, ytr, xte, yte = splits
    torch.manual_seed(seed)
    model = build_model("cifar_cnn", num_classes=10, in_channels=1, input_size=32)
    loss = build_loss("ce") if lam == 0 else build_loss("oskd", knn=2, lam=lam)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    best = acc = 0.0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(ytr))
        for i in range(0, len(perm), 64):
            batch = perm[i:i + 64]
            terms = loss(model(xtr[batch]), ytr[batch])
            opt.zero_grad(set_to_none=True)
            sum(terms.values()).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        best = max(best, acc)
    return best, acc


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lams", type=float, nargs="+", default=[0.0, 1e-4, 0.3, 1.0],
                    help="lambda values (0 = plain CE)")
    ap.add_argument("--seeds", type=int, default=6, help="runs per lambda")
    ap.add_argument("--epochs", type=int, default=12, help="epochs per run")
    ap.add_argument("--lr", type=float, default=0.01, help="SGD learning rate")
    args = ap.parse_args(argv)
    splits = digits_splits()
    for lam in args.lams:
        runs = [train_once(splits, lam, s, args.epochs, args.lr) for s in range(args.seeds)]
        best, final = [100 * r[0] for r in runs], [100 * r[1] for r in runs]
        print(f"lam={lam:<8g} best={statistics.mean(best):.2f} +- {statistics.pstdev(best):.2f}  "
              f"final={statistics.mean(final):.2f} +- {statistics.pstdev(final):.2f}", flush=True)


if __name__ == "__main__":
    main()
