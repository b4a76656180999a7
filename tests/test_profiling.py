"""profiling/: the paper's Tables 14-17 reproduced, memory accounting, errors, the CLI."""
import json
import warnings

import pytest
import torch

from profiling import report
from profiling.builders import complexity_table, storage_table
from profiling.complexity import count_macs, count_params
from profiling.paper_counter import count_paper_flops
from profiling.memory import LiveTensorTracker, training_memory
from profiling.specs import Pair, build
from profiling.steps import METHODS, make_step, save_teacher, step_config
from profiling.storage import storage_report
from profiling.tables import main
from profiling.timing import ratios, step_times
from train.losses.posd import posd_loss

RESNET = Pair("resnet32", "resnet110")
WRN = Pair("wrn_16_2", "wrn_40_2")
KIB, MIB = 1024, 2 ** 20


def _g(n):
    return f"{n / 1e9:.2f}"


@pytest.fixture(scope="module")
def macs():
    out = {}
    for name in ("resnet32", "resnet110", "wrn_16_2", "wrn_40_2"):
        m = build(name, RESNET)
        out[name] = {mode: count_macs(m, 32, 3, mode).total for mode in ("eval", "train")}
    return out


@pytest.fixture(scope="module")
def paper_ops():
    """The paper's counter on its four models (~0.2 s for all four, ResNet-110 the slowest)."""
    return {n: count_paper_flops(build(n, RESNET), 32, 3).total
            for n in ("resnet32", "resnet110", "wrn_16_2", "wrn_40_2")}


def test_table14_with_the_papers_counter_gives_its_four_figures(paper_ops):
    p = paper_ops
    assert _g(p["resnet32"]) == "0.07"
    assert _g(p["resnet110"] + p["resnet32"]) == "0.33"
    assert _g(p["wrn_16_2"]) == "0.10"
    assert _g(p["wrn_40_2"] + p["wrn_16_2"]) == "0.43"
    # the figures pytorch-estimate-flops 0.4.2 prints for these models (count_ops, FX mode)
    assert p == {"resnet32": 69_759_626, "resnet110": 256_021_130, "wrn_16_2": 101_836_042,
                 "wrn_40_2": 329_704_714}


def test_table14_students_fvcore(macs):
    assert _g(macs["resnet32"]["eval"]) == "0.07"
    assert _g(macs["wrn_16_2"]["eval"]) == "0.10"


def test_table14_kd_pairs_fvcore(macs):
    for mode in ("eval", "train"):
        assert _g(macs["wrn_40_2"][mode] + macs["wrn_16_2"][mode]) == "0.43"
    # fvcore leaves residual adds and ReLU out: ResNet-110 + ResNet-32 is 0.3245 G -> 0.32 G in
    # eval mode (batch norm in training mode, 5 ops per element, would add 0.004 G)
    assert _g(macs["resnet110"]["eval"] + macs["resnet32"]["eval"]) == "0.32"
    assert _g(macs["resnet110"]["train"] + macs["resnet32"]["train"]) == "0.33"


class _EveryRule(torch.nn.Module):
    """One of each operator the paper's counter has a rule for, and some it gives 0."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 6, 3, padding=1, groups=2)      # bias
        self.relu = torch.nn.ReLU()
        self.max = torch.nn.MaxPool2d((2, 3))
        self.avg = torch.nn.AvgPool2d(2)
        self.gap = torch.nn.AdaptiveAvgPool2d(1)
        self.bn = torch.nn.BatchNorm1d(6)
        self.fc = torch.nn.Linear(6, 5)

    def forward(self, x):
        y = self.relu(self.conv(x))                    # [B, 6, 12, 12]
        y = y * 2 + torch.nn.functional.relu(y)        # mul, add; F.relu counts 0
        z = self.gap(self.avg(y)).flatten(1) + self.gap(self.max(y)).flatten(1)
        z = self.bn(z)
        return torch.matmul(z, torch.ones(6, 5)) + self.fc(z)


def _every_rule_by_hand(b):
    conv = 3 * 3 * 4 * (6 // 2) * b * 144 + 6 * b * 144   # the package's grouped-conv formula
    relu, mul, add = 2 * b * 6 * 144, 2 * b * 6 * 144, 2 * b * 6 * 144
    avg, mx = 4 * b * 6 * 36, 5 * b * 6 * 24
    gap = 36 * b * 6 + 24 * b * 6
    add2, bn, matmul, fc, add3 = 2 * b * 6, 2 * b * 6, b * 6 * 5, b * 6 * 5 + 5, 2 * b * 5
    return conv + relu + mul + add + avg + mx + gap + add2 + bn + matmul + fc + add3


@pytest.mark.parametrize("batch", [1, 3])
def test_paper_counter_rules_by_hand(batch):
    model = _EveryRule().train()
    got = count_paper_flops(model, 12, 4, batch_size=batch)
    assert got.total == _every_rule_by_hand(batch)
    assert model.training   # mode restored
    assert got.by_operator["relu"] == 2 * batch * 6 * 144   # the module only


@pytest.mark.parametrize("name", ["resnet32", "wrn_16_2", "cifar_cnn", "crowd_fcn", "_every_rule"])
def test_paper_counter_agrees_with_pthflops(name):
    pthflops = pytest.importorskip("pthflops")
    if name == "_every_rule":
        model, size, chans = _EveryRule(), 12, 4
    else:
        size = 128 if name == "crowd_fcn" else 32
        model, chans = build(name, Pair(name, name, size, 2 if name == "crowd_fcn" else 10)), 3
    for batch in (1, 2):
        x = torch.zeros(batch, chans, size, size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref, _ = pthflops.count_ops(model, x, print_readable=False, verbose=False)
        assert count_paper_flops(model, size, chans, batch).total == ref


def test_paper_counter_bad_input():
    with pytest.raises(ValueError, match="positive"):
        count_paper_flops(build("resnet32", RESNET), 0)


def test_table14_params():
    p = {n: count_params(build(n, RESNET)) for n in ("resnet32", "resnet110", "wrn_16_2", "wrn_40_2")}
    assert f"{p['resnet32'] / 1e6:.1f}" == "0.5"
    assert f"{p['resnet110'] / 1e6:.1f}" == "1.7"
    assert f"{p['wrn_16_2'] / 1e6:.1f}" == "0.7"
    assert f"{p['wrn_40_2'] / 1e6:.2f}" == "2.24"  # 10-class head
    assert f"{count_params(build('wrn_40_2', RESNET, num_classes=100)) / 1e6:.2f}" == "2.26"


def test_complexity_table_prints_paper_figures():
    t = complexity_table((RESNET,))
    paper_counter = t.column("pytorch-estimate-flops: ops / image (the paper's counter)")
    assert paper_counter[0].startswith("0.07 G") and paper_counter[1].startswith("0.33 G")
    assert t.column("fvcore: MACs / image (eval)")[1].startswith("0.32 G")
    assert t.column("Paper (Table 14)")[1].startswith("0.33 G")
    assert "aten::add" in t.column("fvcore: not counted (operator × calls)")[0]  # listed, not zero
    assert "2.26 M" in t.note and "100-class" in t.note
    fl = t.raw[0]
    assert t.raw[1]["pthflops_ops"] == 256_021_130 + fl["pthflops_ops"]
    assert fl["flops_eval"] == 2 * fl["macs_eval"]
    assert fl["training_macs_per_image_step"] == 3 * fl["macs_eval"]
    kd = t.raw[1]
    assert kd["training_macs_per_image_step"] == 3 * t.raw[0]["macs_eval"] + (
        kd["macs_eval"] - t.raw[0]["macs_eval"])


@pytest.mark.parametrize("name,size,chans,paper_kib", [("cifar_cnn", 32, 3, 248.0),
                                                        ("fashion_cnn", 28, 1, 303.9)])
def test_table16_state_dict_files(name, size, chans, paper_kib):
    r = storage_report(build(name, Pair(name, name, size, in_channels=chans)), size, chans,
                       onnx=False)
    assert f"{r['state_dict_file_legacy'] / KIB:.1f}" == f"{paper_kib:.1f}"
    # the current zip format adds a few KiB of alignment and headers: reported, not hidden
    assert 0 < r["state_dict_file"] - r["state_dict_file_legacy"] < 5 * KIB


# (paper MiB, current-format checkpoint, legacy-format checkpoint), rounded as the paper does:
# what profiling/notes.py and docs/profiling.md claim, matches and misses alike
TABLE17 = {"resnet32": ("3.6", "3.6", "3.6"), "resnet110": ("13.4", "13.5", "13.4"),
           "wrn_16_2": ("5.4", "5.3", "5.3"), "wrn_40_2": ("17.2", "17.2", "17.2")}


@pytest.mark.parametrize("name", sorted(TABLE17))
def test_table17_checkpoints_with_momentum(name):
    paper, current, legacy = TABLE17[name]
    r = storage_report(build(name, RESNET), 32, 3, 10, onnx=False)
    assert f"{r['checkpoint_sgd_file'] / MIB:.1f}" == current
    assert f"{r['checkpoint_sgd_file_legacy'] / MIB:.1f}" == legacy
    assert abs(r["checkpoint_sgd_file"] / MIB - float(paper)) <= 0.1
    assert 1.9 < r["checkpoint_sgd_file"] / r["fp32_weight_bytes"] < 2.1  # weights alone: half
    # float64 weights of the 100-class head: 3 of 4 (ResNet-110 13.2, not 13.4)
    p100 = count_params(build(name, RESNET, num_classes=100))
    assert (f"{8 * p100 / MIB:.1f}" == paper) == (name != "resnet110")


def test_storage_table_names_definitions():
    t = storage_table((Pair("cifar_cnn", "cifar_cnn"),), onnx=True)
    assert "SGD momentum" in t.note and "half" in t.note
    onnx_bytes = t.raw[0]["onnx_file"]
    assert isinstance(onnx_bytes, int) and onnx_bytes > 4 * 63106  # weights + graph
    assert t.raw[0]["fp16_weight_bytes"] == 2 * 63106 and t.raw[0]["int8_weight_bytes"] == 63106


def test_tracker_counts_live_bytes():
    with LiveTensorTracker() as tr:
        a = torch.ones(1000)          # 4000 B
        b = torch.ones(1000)          # 8000 live
        del a
        c = b.view(10, 100) * 2       # 8000 live again, the view adds nothing
        del b, c
    assert tr.peak == 8000 and tr.current == 0


@pytest.mark.parametrize("pair,batch", [(Pair("resnet32", "resnet20"), 8),
                                        (Pair("crowd_fcn", "resnet20", 128, 2), 4)])
@pytest.mark.parametrize("method", ["ce", "posd", "dml"])
def test_analytic_matches_measured(pair, batch, method):
    r = training_memory(make_step(method, pair, batch))
    assert abs(r["measured_over_analytic"] - 1) < 0.10, r
    assert r["saved_activations"] > 0 and r["optimizer_state"] == r["gradients"]
    assert (r["batch_size"], r["dtype"], r["device"]) == (batch, "float32", "cpu")


def test_kd_phase2_holds_frozen_teacher():
    r = training_memory(make_step("kd_student", Pair("cifar_cnn", "resnet20"), 4))
    teacher = count_params(build("resnet20", Pair("cifar_cnn", "resnet20")))
    assert r["params"] >= 4 * teacher and r["gradients"] < 4 * teacher  # no teacher gradients
    assert r["teacher_forward_working_set"] > 0


def test_v_in_matches_loop():
    torch.manual_seed(0)
    y = torch.randn(6, 3)
    k, n = 2, 6
    d = torch.cdist(y, y)
    total = 0.0
    for p in range(n):
        group = d[p].argsort()[: k + 1]
        for a in group:
            for b in group:
                total += -float(((y[a] - y[b]) ** 2).sum())
    assert abs(float(posd_loss(y, k=k)) - total / n ** 2) < 1e-4   # the V_IN the posd step runs


@pytest.mark.parametrize("method", METHODS)
def test_steps_are_built_as_the_trainer_builds_its_run(method, digits, tmp_path):
    """The profiled step holds the objects the Trainer trains for the same configuration: the
    same builder, student, loss (class, settings, networks), tap and optimiser."""
    import profiling.steps
    import train.engine
    from train.engine import Trainer

    assert profiling.steps.build_parts is train.engine.build_parts
    pair = Pair("cifar_cnn", "resnet20", input_size=32, num_classes=10, in_channels=1)   # digits
    step = make_step(method, pair, 4)
    cfg = step_config(method, pair).replace(device="cpu", out=str(tmp_path / "run"))
    if method == "kd_student":
        cfg = cfg.replace(teacher=str(save_teacher(pair, tmp_path / "teacher.pt")))
    trainer = Trainer(cfg, data=digits, progress=False)
    ours, theirs = step.parts, trainer.parts
    assert type(ours.model) is type(theirs.model)
    assert {k: v.shape for k, v in ours.model.state_dict().items()} == \
        {k: v.shape for k, v in theirs.model.state_dict().items()}
    assert type(ours.loss) is type(theirs.loss) and repr(ours.loss) == repr(theirs.loss)
    assert (ours.tap is None) == (theirs.tap is None)
    assert type(ours.optimizer) is type(theirs.optimizer)
    assert [{k: v for k, v in g.items() if k != "params"} for g in ours.optimizer.param_groups] == \
        [{k: v for k, v in g.items() if k != "params"} for g in theirs.optimizer.param_groups]
    assert [[p.shape for p in g["params"]] for g in ours.optimizer.param_groups] == \
        [[p.shape for p in g["params"]] for g in theirs.optimizer.param_groups]
    assert step.trained[0] is ours.model and all(m in ours.loss.children() for m in step.frozen)


def test_step_times_and_ratios():
    steps = [make_step(m, Pair("cifar_cnn", "cifar_cnn"), 4)
             for m in ("ce", "posd", "kd_teacher", "kd_student", "dml")]
    t = step_times(steps, repeats=1)
    assert all(v > 0 for v in t.values())
    assert set(ratios(t)) == {"posd_over_ce", "kd_over_posd", "dml_over_posd"}


def test_unknown_model_and_impossible_size(capsys):
    with pytest.raises(ValueError, match="unknown model 'resnet7'.*resnet32"):
        build("resnet7", RESNET)
    with pytest.raises(ValueError, match="too small|impossible"):
        build("cifar_cnn", Pair("cifar_cnn", "cifar_cnn", input_size=8))
    with pytest.raises(ValueError, match="at least 16"):
        build("crowd_fcn", Pair("crowd_fcn", "crowd_fcn", input_size=8))
    with pytest.raises(SystemExit):
        main(["--student", "resnet7"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["--student", "cifar_cnn", "--teacher", "resnet20", "--input-size", "4",
              "--tables", "complexity"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("impossible" in err[0] or "too small" in err[0])


def test_cli_all_formats(tmp_path, capsys):
    args = ["--student", "cifar_cnn", "--teacher", "resnet20", "--batch-size", "4",
            "--repeats", "1", "--no-onnx"]
    tables = main(args + ["--format", "json", "--out", str(tmp_path), "--plot"])
    assert [t.key for t in tables] == ["complexity", "storage", "memory", "time"]
    doc = json.loads((tmp_path / "profiling_tables.json").read_text())
    assert len(doc["tables"]) == 4 and "torch" in doc["header"]
    assert (tmp_path / "memory.png").stat().st_size > 0
    for fmt in ("csv", "latex"):
        main(args + ["--tables", "complexity", "--format", fmt, "--out", str(tmp_path)])
    assert (tmp_path / "complexity.csv").read_text().startswith("Method,")
    assert "\\begin{tabular}" in (tmp_path / "complexity.tex").read_text()
    capsys.readouterr()
    main(["--student", "cifar_cnn", "--tables", "complexity"])
    out = capsys.readouterr().out
    assert "### Complexity" in out and "*Counted:*" in out


def test_render_rejects_unknown_format():
    with pytest.raises(ValueError, match="unknown format"):
        report.render([], "xml")
