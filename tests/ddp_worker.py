"""One rank of the DDP equivalence test (tests/test_ddp.py launches two of these with torchrun's
environment variables, on 127.0.0.1). Also imported by the test for the single-process reference.

The model is ``cifar_cnn``: no BatchNorm, so a rank's forward does not depend on the other rank's
half of the batch (with BatchNorm each rank would normalise over its local half; use SyncBatchNorm
for that). ``_batch_pull`` is a stand-in batch-relational loss registered here only (not in the
package): each sample is pulled towards its nearest neighbour in the batch, like POSD's latent
labels, so the global-scope gather is tested before POSD/OSKD land; they are used too when
registered.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edge.contract import Preprocess  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.data import DataSplits  # noqa: E402
from train.losses import LOSSES, Distiller, register_loss  # noqa: E402

EPOCHS = 2


class BatchPull(Distiller):
    needs_features = True

    def forward(self, logits, targets, features=None, inputs=None):
        with torch.no_grad():
            d = torch.cdist(features, features)
            d.fill_diagonal_(float("inf"))
            nn_idx = d.argmin(1)                                            # [N]
        pull = ((features - features[nn_idx]) ** 2).sum(1).mean()
        return {"ce": F.cross_entropy(logits, targets), "pull": 0.05 * pull}


if "_batch_pull" not in LOSSES:
    register_loss("_batch_pull")(lambda: BatchPull())


def make_data() -> DataSplits:
    """52 training and 41 test images of 4 classes; the first is "crowd", so the run measures its
    background on the test split's other ~30 images, gathered from both ranks."""
    g = torch.Generator().manual_seed(123)
    x = torch.randint(0, 256, (52 + 41, 1, 16, 16), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 4, (52 + 41,), generator=g)
    pre = Preprocess(size=(16, 16), mean=(0.5,), std=(0.25,), channel_order="GRAY")
    return DataSplits("tiny", x[:52], y[:52], x[52:], y[52:], ["crowd", "b", "c", "d"], pre, "crop", "test")


def cases():
    """name -> (method, knn_scope). Batch 15 on 52 samples: slices of 8/7 and a last batch of 7 (4/3)."""
    out = {"ce_local": ("ce", "local"), "pull_global": ("_batch_pull", "global"),
           "pull_local": ("_batch_pull", "local")}
    for m in ("posd", "oskd"):
        if m in LOSSES:
            out[f"{m}_global"] = (m, "global")
    return out


def config(name: str, root: Path, epochs: int = EPOCHS, **kw) -> TrainConfig:
    method, scope = cases()[name]
    lam = {"posd": 0.1, "oskd": 1.0}.get(method)
    return TrainConfig(dataset="tiny", model="cifar_cnn", method=method, knn=2, lam=lam,
                       knn_scope=scope, epochs=epochs, batch_size=15, lr=0.05, momentum=0.9,
                       seed=7, device="cpu", out=str(root / name), **kw)


def run_case(name: str, root: Path) -> None:
    from train.engine import Trainer

    Trainer(config(name, root), data=make_data(), progress=False).fit()


def main() -> int:
    torch.set_num_threads(1)
    root = Path(sys.argv[1])
    import torch.distributed as dist

    dist.init_process_group("gloo")           # env: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    from train.engine import Trainer

    for name in cases():
        run_case(name, root)
    # resume under DDP: 1 epoch, then continue to EPOCHS with --resume
    cfg = config("ce_local", root / "resumed", epochs=1)
    Trainer(cfg, data=make_data(), progress=False).fit()
    Trainer(cfg.replace(epochs=EPOCHS, resume=True), data=make_data(), progress=False).fit()
    if dist.get_rank() == 0:
        (root / "cases.json").write_text(json.dumps(sorted(cases())))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
