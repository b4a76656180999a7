"""||grad distillation term|| / ||grad CE|| per epoch, and --ce-reduction: measured right, logged,
and without any effect on the run."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from train.cli import main
from train.config import TrainConfig
from train.engine import Trainer
from train.features import FeatureTap
from train.grad_ratio import summarise, term_grad_ratios
from train.losses import build_loss
from train.models import MODELS, build_model


class _BNDropNet(nn.Module):
    """Small net with the state a careless measurement would disturb: BatchNorm running
    statistics (buffers) and dropout (the global random generator)."""

    head_name = "fc"

    def __init__(self, num_classes=10, in_channels=3, input_size=32):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.3)
        self.hidden = nn.Linear(8, 16)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return self.fc(torch.relu(self.hidden(self.drop(x))))


if "_bn_drop" not in MODELS:
    MODELS.register("_bn_drop")(_BNDropNet)


def _batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % 4


def _reference_ratio(model, loss_name, x, y, **kw):
    """The same ratio the slow way: one backward per term on a copy, through .grad."""
    norms = {}
    for term in ("ce", loss_name):
        m = copy.deepcopy(model).train()
        loss = build_loss(loss_name, **kw)
        tap = FeatureTap(m, loss.feature_layer) if loss.needs_features else None
        torch.manual_seed(5)                       # the same dropout mask for both terms
        logits = m(x)
        terms = loss(logits, y, features=tap.read(logits) if tap else None)
        terms[term].backward()
        norms[term] = math.sqrt(sum(float(p.grad.double().square().sum())
                                    for p in m.parameters() if p.grad is not None))
    return norms[loss_name] / norms["ce"]


@pytest.mark.parametrize("method", ["posd", "oskd"])
def test_ratio_matches_two_separate_backwards_and_leaves_no_trace(method):
    model = build_model("_bn_drop", num_classes=4)
    x, y = _batch()
    loss = build_loss(method, knn=2, lam=0.05)
    tap = FeatureTap(model, loss.feature_layer) if loss.needs_features else None
    before = copy.deepcopy(model.state_dict())
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    got = term_grad_ratios(model, loss, x, y, tap)
    # nothing moved: buffers (BN statistics, num_batches_tracked), weights, .grad, the RNG
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    want = _reference_ratio(model, method, x, y, knn=2, lam=0.05)
    assert set(got) == {method}
    assert got[method] == pytest.approx(want, rel=1e-5)
    assert 0 < got[method] < math.inf


def test_ce_reduction_sum_is_eq2_and_scales_the_ratio_by_the_batch():
    model = build_model("cifar_cnn")
    x, y = _batch(n=24)
    mean, total = build_loss("posd", knn=2), build_loss("posd", knn=2, ce_reduction="sum")
    tm, ts = mean(model(x), y, features=torch.randn(24, 5)), total(model(x), y, features=torch.randn(24, 5))
    assert ts["ce"].item() == pytest.approx(24 * tm["ce"].item(), rel=1e-6)
    tap = FeatureTap(model)
    r_mean = term_grad_ratios(model, mean, x, y, tap)["posd"]
    r_sum = term_grad_ratios(model, total, x, y, tap)["posd"]
    assert r_mean / r_sum == pytest.approx(24, rel=1e-4)
    for name in ("ce", "oskd"):
        with pytest.raises(ValueError, match="ce_reduction must be one of mean, sum, got 'avg'"):
            build_loss(name, ce_reduction="avg")


def test_no_ratio_for_plain_ce():
    model = build_model("cifar_cnn")
    assert term_grad_ratios(model, build_loss("ce"), *_batch()) == {}


def _cfg(tmp_path, out, **kw):
    base = dict(dataset="digits", model="_bn_drop", method="posd", knn=2, lam=0.01, epochs=2,
                batch_size=128, lr=0.05, out=str(tmp_path / out), seed=4)
    base.update(kw)
    return TrainConfig(**base)


def test_the_measurement_does_not_change_the_run(tmp_path, digits, monkeypatch):
    measured = Trainer(_cfg(tmp_path, "with"), data=digits, progress=False)
    measured.fit()
    lines = [json.loads(ln) for ln in (tmp_path / "with" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 < r["grad_ratio"]["posd"] < 1 for r in lines)
    monkeypatch.setattr(Trainer, "grad_ratios", lambda self, epoch: {})
    plain = Trainer(_cfg(tmp_path, "without"), data=digits, progress=False)
    plain.fit()
    for (n, p), (_, q) in zip(measured.model.state_dict().items(), plain.model.state_dict().items()):
        assert torch.equal(p, q), n   # weights and BN statistics, bit for bit
    assert [r["test_acc"] for r in measured.state.history] == [r["test_acc"] for r in plain.state.history]


def test_summary_epoch_line_and_ce_reduction_through_the_cli(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--dataset", "digits", "--model", "cifar_cnn", "--oskd", "--lambda", "1e-4",
                 "--ce-reduction", "sum", "--epochs", "1", "--batch-size", "256", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "|grad oskd|/|grad ce|=" in printed and "|grad oskd| / |grad ce|:" in printed
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["grad_ratio"]["oskd"]) == {"first", "last", "min", "max"}
    assert json.loads((out / "config.json").read_text())["config"]["ce_reduction"] == "sum"


def test_ce_reduction_bad_values_exit_2_and_create_nothing(tmp_path, capsys):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "digits", "--ce-reduction", "avg", "--out", str(out)])
    assert e.value.code == 2 and "--ce-reduction" in capsys.readouterr().err
    code = main(["--dataset", "digits", "--model", "cifar_cnn", "--dml", "--ce-reduction", "sum",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "--ce-reduction sum: dml averages its CE" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_summarise_and_report_grouping():
    hist = [{"grad_ratio": {"posd": 3e-5}}, {}, {"grad_ratio": {"posd": 7e-4}}, {"grad_ratio": {"posd": 1e-4}}]
    assert summarise(hist) == {"posd": {"first": 3e-5, "last": 1e-4, "min": 3e-5, "max": 7e-4}}
    assert summarise([{}]) is None
    from train.experiments.report import setting_keys

    old = TrainConfig(method="posd").to_dict()
    old.pop("ce_reduction")                      # a run recorded before the option existed
    new = TrainConfig(method="posd").to_dict()
    assert setting_keys(old) == setting_keys(new)
    assert setting_keys(dict(new, ce_reduction="sum")) != setting_keys(new)
