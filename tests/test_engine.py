"""The training loop: outputs, determinism, exact resume, and clear failures."""
from __future__ import annotations

import json

import pytest
import torch

from train.cli import main
from train.config import TrainConfig
from train.engine import NonFiniteLoss, Trainer, epoch_batches
from train.rundir import RunExists


def _cfg(tmp_path, **kw):
    base = dict(dataset="digits", model="cifar_cnn", method="ce", epochs=2, batch_size=64,
                lr=0.05, out=str(tmp_path / "run"), seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_a_run_writes_its_files(tmp_path, digits):
    summary = Trainer(_cfg(tmp_path), data=digits).fit()
    out = tmp_path / "run"
    for name in ("config.json", "metrics.jsonl", "metrics.json", "model.pt", "best.pt", "state.pt"):
        assert (out / name).is_file(), name
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"train", "train_acc", "test_acc", "best_test_acc", "best_epoch", "epoch_time_s"} <= set(lines[0])
    assert summary["best_test_acc"] == max(r["test_acc"] for r in lines)
    assert json.loads((out / "metrics.json").read_text())["final_test_acc"] == lines[-1]["test_acc"]
    saved = json.loads((out / "config.json").read_text())
    assert saved["config"]["lr"] == 0.05 and saved["resolved"]["num_classes"] == 10


def test_patch_metres_is_recorded_as_the_scale(tmp_path, digits):
    from edge.contract import GroundScale
    from train.checkpoint import load_checkpoint, model_info

    Trainer(_cfg(tmp_path, epochs=1, patch_metres=12.5), data=digits).fit()
    ckpt = load_checkpoint(tmp_path / "run" / "model.pt")
    assert ckpt["scale"] == {"patch_m": 12.5, "patch_m_range": [12.5, 12.5], "input_width": 32}
    assert model_info(ckpt).scale == GroundScale(12.5, (12.5, 12.5), 32)
    Trainer(_cfg(tmp_path, epochs=1, out=str(tmp_path / "plain")), data=digits).fit()
    plain = load_checkpoint(tmp_path / "plain" / "model.pt")
    assert "scale" not in plain and model_info(plain).scale is None    # digits: no ground scale


def test_training_scale_follows_the_input_size():
    from types import SimpleNamespace

    from edge.contract import GroundScale
    from train.engine import training_scale

    data = SimpleNamespace(scale=GroundScale(26.0, (16.0, 43.0), 128), input_size=(96, 96), augment="aerial")
    assert training_scale(TrainConfig(), data) == GroundScale(26.0, (16.0, 43.0), 96)   # same ground
    assert training_scale(TrainConfig(patch_metres=10.0), data) == GroundScale(10.0, (10.0, 10.0), 96)
    assert training_scale(TrainConfig(), SimpleNamespace(scale=None, input_size=(32, 32), augment="aerial")) is None
    # aerial-mosaic also shows views of up to 3 x 3 images: the range reaches 3x the widest
    mosaic = SimpleNamespace(scale=GroundScale(26.0, (16.0, 43.0), 128), input_size=(128, 128),
                             augment="aerial-mosaic")
    assert training_scale(TrainConfig(), mosaic) == GroundScale(26.0, (16.0, 129.0), 128)
    assert training_scale(TrainConfig(patch_metres=10.0), mosaic) == GroundScale(10.0, (10.0, 30.0), 128)


def test_seeded_cpu_runs_are_deterministic(tmp_path, digits):
    a = Trainer(_cfg(tmp_path, out=str(tmp_path / "a"), epochs=1), data=digits)
    a.fit()
    b = Trainer(_cfg(tmp_path, out=str(tmp_path / "b"), epochs=1), data=digits)
    b.fit()
    for (n, p), (_, q) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(p, q), n


def test_resume_after_an_interrupt_is_bit_identical(tmp_path, digits):
    ref = Trainer(_cfg(tmp_path, out=str(tmp_path / "ref")), data=digits)
    ref.fit()

    def interrupt(trainer, epoch, step):
        if epoch == 0 and step == 7:
            raise KeyboardInterrupt

    cut = _cfg(tmp_path, out=str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, data=digits, on_step=interrupt).fit()
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=True)
    assert state["train_state"]["run"]["step"] == 8 and state["train_state"]["run"]["epoch"] == 0

    resumed = Trainer(cut.replace(resume=True), data=digits)
    resumed.fit()
    for (n, p), (_, q) in zip(ref.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(p, q), f"{n} differs after resume"
    ref_lines = (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()
    cut_lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    strip = lambda ln: {k: v for k, v in json.loads(ln).items() if k != "epoch_time_s"}
    assert [strip(a) for a in ref_lines] == [strip(b) for b in cut_lines]


def test_resume_with_other_settings_is_refused(tmp_path, digits):
    cfg = _cfg(tmp_path, epochs=1)
    Trainer(cfg, data=digits).fit()
    with pytest.raises(ValueError, match="differs.*lr"):
        Trainer(cfg.replace(resume=True, lr=0.1), data=digits).fit()


def test_an_existing_run_is_not_overwritten_silently(tmp_path, digits):
    cfg = _cfg(tmp_path, epochs=1)
    Trainer(cfg, data=digits).fit()
    before = (tmp_path / "run" / "model.pt").read_bytes()
    with pytest.raises(RunExists, match="--resume"):
        Trainer(cfg, data=digits).fit()
    assert (tmp_path / "run" / "model.pt").read_bytes() == before


def test_non_finite_loss_names_epoch_and_step(tmp_path, digits):
    # an infinite learning rate: step 1's loss is finite, its update is not, step 2 stops
    with pytest.raises(NonFiniteLoss, match="epoch 1, step 2"):
        Trainer(_cfg(tmp_path, lr=float("inf")), data=digits).fit()


def test_epoch_batches_cover_the_data_once_and_drop_a_lone_sample():
    batches = epoch_batches(129, 64, seed=1, epoch=0)
    assert [len(b) for b in batches] == [64, 64]
    assert len(torch.cat(batches).unique()) == 128
    assert torch.equal(torch.cat(epoch_batches(130, 64, 1, 0)).sort().values, torch.arange(130))
    assert not torch.equal(epoch_batches(130, 64, 1, 0)[0], epoch_batches(130, 64, 1, 1)[0])


# ------------------------------------------------------------------ command line
def test_cli_trains_digits(tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["--dataset", "digits", "--model", "cifar_cnn", "--epochs", "1", "--lr", "0.05",
                 "--out", str(out)])
    assert code == 0
    assert (out / "model.pt").is_file() and "best test accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--model", "resnet33"], "invalid choice: 'resnet33'"),
    (["--method", "posd2"], "invalid choice: 'posd2'"),
    (["--dataset", "mnist2"], "invalid choice: 'mnist2'"),
])
def test_cli_unknown_names_list_the_valid_ones(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "choose from" in err


@pytest.mark.parametrize("argv,message", [
    (["--data", "/definitely/not/here"], "data folder not found"),
    (["--dataset", "digits", "--epochs", "0"], "--epochs must be >= 1"),
    (["--dataset", "digits", "--method", "ce", "--kd", "x.pt"], "conflicts"),
    (["--dataset", "cifar10"], "not found under"),
    (["--dataset", "digits", "--patch-metres", "-3"], "--patch-metres must be a positive"),
    (["--dataset", "digits", "--ema", "1.5"], "--ema must be 0 (off) or a decay between 0 and 1"),
    (["--dataset", "digits", "--ema", "-0.1"], "--ema must be 0 (off) or a decay between 0 and 1"),
    (["--dataset", "digits", "--ema", "nan"], "--ema must be 0 (off) or a decay between 0 and 1"),
])
def test_cli_bad_inputs_exit_non_zero_with_a_message(tmp_path, argv, message, capsys):
    code = main(argv + ["--out", str(tmp_path / "o"), "--data-root", str(tmp_path / "nodata")])
    assert code != 0
    assert message in capsys.readouterr().err


def test_cli_presets_and_explicit_flags(tmp_path):
    from train.cli import build_parser, config_from_args

    cfg = config_from_args(build_parser().parse_args(["--model", "wrn_16_2", "--posd"]))
    assert (cfg.preset, cfg.lr, cfg.nesterov, cfg.epochs, cfg.method) == ("wrn", 0.1, True, 200, "posd")
    cfg = config_from_args(build_parser(preset="crowd").parse_args(["--posd", "--knn", "2", "--lr", "0.01"]))
    assert (cfg.model, cfg.batch_size, cfg.lr, cfg.epochs, cfg.dataset) == ("crowd_fcn", 32, 0.01, 100, "crowd_synth")
    assert cfg.out == "runs/crowd_synth_crowd_fcn_posd_k2_s0"


def test_ctrl_c_in_a_real_process_saves_a_resumable_state(tmp_path):
    """SIGINT to `python -m train`: the step in flight finishes, state.pt is written, exit 130;
    the same command plus --resume then finishes the run."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "sig"
    cmd = [sys.executable, "-m", "train", "--dataset", "digits", "--model", "cifar_cnn",
           "--epochs", "40", "--lr", "0.05", "--out", str(out), "--no-progress"]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                           os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err
    state = torch.load(out / "state.pt", weights_only=True)["train_state"]["run"]
    assert 1 <= state["epoch"] < 40
    done = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 40


# --- --ema: an average of the weights -----------------------------------------------------------

def test_weight_average_follows_the_documented_rule():
    """Against a float64 loop over the rule in train/ema.py: avg <- d avg + (1 - d) w with
    d = min(DECAY, (1 + n) / (10 + n)); BatchNorm's statistics averaged, its counter copied."""
    from train.ema import WeightAverage

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    avg = WeightAverage(model, 0.8)
    ref = {k: v.double().clone() for k, v in model.state_dict().items()}
    for n in range(1, 31):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model.train()
        model(torch.randn(8, 3))                      # moves the running statistics, counts a batch
        d = min(0.8, (1 + n) / (10 + n))
        assert avg.rate() == d                        # the decay of this update
        avg.update(model)
        for k, v in model.state_dict().items():
            ref[k] = ref[k] * d + v.double() * (1 - d) if v.dtype.is_floating_point else v.double()
    for k, v in avg.model.state_dict().items():
        assert torch.allclose(v.double(), ref[k], atol=1e-5), k
    assert int(avg.model[1].num_batches_tracked) == 30 and avg.updates == 30
    assert not any(p.requires_grad for p in avg.model.parameters()) and not avg.model.training
    assert not torch.equal(avg.model[0].weight, model[0].weight)


def test_ema_trains_the_same_weights_and_evaluates_and_saves_the_average(tmp_path, digits):
    from train.checkpoint import load_checkpoint

    plain = Trainer(_cfg(tmp_path, out=str(tmp_path / "plain")), data=digits)
    plain.fit()
    ema = Trainer(_cfg(tmp_path, out=str(tmp_path / "ema"), ema=0.9), data=digits)
    summary = ema.fit()
    for (n, p), (_, q) in zip(plain.model.state_dict().items(), ema.model.state_dict().items()):
        assert torch.equal(p, q), f"{n}: --ema changed training"
    state = torch.load(tmp_path / "ema" / "state.pt", weights_only=True)
    final = load_checkpoint(tmp_path / "ema" / "model.pt")
    averaged = ema.ema.model.state_dict()
    for n, p in ema.model.state_dict().items():
        assert torch.equal(state["state_dict"][n], p)                  # state.pt: trained weights
        assert torch.equal(final["state_dict"][n], averaged[n])       # model.pt: the average
        assert torch.equal(state["train_state"]["ema"]["weights"][n], averaged[n])
    assert any(not torch.equal(averaged[n], p) for n, p in ema.model.state_dict().items()
               if p.dtype.is_floating_point)
    lines = [json.loads(ln) for ln in (tmp_path / "ema" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["test_acc"] == ema.evaluate(ema.ema.model)["acc"]   # the average is what is logged
    assert summary["weights"] == "exponential moving average, decay 0.9"
    assert "weights" not in plain.summary()


def test_ema_resume_after_an_interrupt_is_bit_identical(tmp_path, digits):
    ref = Trainer(_cfg(tmp_path, out=str(tmp_path / "ref"), ema=0.95), data=digits)
    ref.fit()

    def interrupt(trainer, epoch, step):
        if epoch == 1 and step == 3:
            raise KeyboardInterrupt

    cut = _cfg(tmp_path, out=str(tmp_path / "cut"), ema=0.95)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, data=digits, on_step=interrupt).fit()
    resumed = Trainer(cut.replace(resume=True), data=digits)
    resumed.fit()
    assert resumed.ema.updates == ref.ema.updates
    for (n, p), (_, q) in zip(ref.ema.model.state_dict().items(), resumed.ema.model.state_dict().items()):
        assert torch.equal(p, q), f"{n} of the average differs after resume"
    strip = lambda ln: {k: v for k, v in json.loads(ln).items() if k != "epoch_time_s"}
    assert ([strip(a) for a in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
            == [strip(b) for b in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()])
    with pytest.raises(ValueError, match=r"differs from the saved run in ema \(saved 0.95, now 0.9\)"):
        Trainer(cut.replace(resume=True, ema=0.9, epochs=3), data=digits).fit()


def test_crowd_drone_averages_by_default_and_ema_0_turns_it_off(tmp_path, digits):
    from train.cli import build_parser, config_from_args
    from train.crowd_drone import DEFAULTS

    parse = lambda *argv: config_from_args(build_parser("p", "crowd", DEFAULTS).parse_args(["--posd", *argv]))
    assert parse().ema == 0.9998 and parse("--ema", "0.99").ema == 0.99
    assert parse("--ema", "0").ema is None                       # off: as a run from before --ema
    assert config_from_args(build_parser("p").parse_args(["--dataset", "digits"])).ema is None  # python -m train
    off = Trainer(_cfg(tmp_path, epochs=1, ema=0.0), data=digits)
    assert off.ema is None and off.eval_model is off.model
    assert "weights" not in off.fit()


def test_a_run_from_before_ema_resumes_with_ema_0_and_says_why_otherwise(tmp_path, capsys):
    """A run saved without --ema, resumed under a command that averages by default (crowd_drone):
    refused in one line naming both values; with --ema 0 it resumes."""
    from train.crowd_drone import DEFAULTS

    argv = ["--dataset", "digits", "--model", "cifar_cnn", "--lr", "0.05", "--out", str(tmp_path / "r")]
    assert main(argv + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(argv + ["--epochs", "2", "--resume"], defaults=DEFAULTS) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ema (saved None, now 0.9998)" in err
    assert main(argv + ["--epochs", "2", "--resume", "--ema", "0"], defaults=DEFAULTS) == 0
    lines = (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
