"""Shared fixtures: one small trained digits checkpoint per session (real data, offline)."""
import pytest


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory):
    from train.config import TrainConfig
    from train.engine import Trainer

    out = tmp_path_factory.mktemp("digits_run")
    cfg = TrainConfig(dataset="digits", model="cifar_cnn", epochs=8, batch_size=32, lr=0.05,
                      out=str(out), overwrite=True, seed=0)
    Trainer(cfg).fit()
    return out / "model.pt"
