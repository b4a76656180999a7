"""The paper's recipe per model: `python -m train --model M` takes the settings of the table that
trains M (POSD paper, sec. 4.3-4.4), and config.json names the preset."""
from __future__ import annotations

import json

import pytest

from train.cli import build_parser, config_from_args, main
from train.config import MODEL_PRESETS, PRESET_TABLES, PRESETS
from train.models import list_models

# (preset, batch, optimiser, lr, nesterov, epochs, schedule, milestones, gamma), from the paper's text
PAPER = {
    "cifar_cnn": ("lightweight", 64, "sgd", 1e-3, False, 100, "none", (), 0.1),      # Tables 1-4
    "fashion_cnn": ("lightweight", 64, "sgd", 1e-3, False, 100, "none", (), 0.1),
    "resnet50": ("lightweight", 64, "sgd", 1e-3, False, 100, "none", (), 0.1),       # Table 5
    "crowd_fcn": ("crowd", 32, "sgd", 1e-3, False, 100, "none", (), 0.1),            # Table 6
    "wrn_16_2": ("wrn", 128, "sgd", 0.1, True, 200, "step", (60, 120, 160), 0.2),    # Table 7
    "wrn_40_2": ("wrn", 128, "sgd", 0.1, True, 200, "step", (60, 120, 160), 0.2),
    "resnet32": ("resnet", 64, "sgd", 0.1, True, 200, "step", (60, 120, 180), 0.1),  # Tables 8-9
    "resnet110": ("resnet", 64, "sgd", 0.1, True, 200, "step", (60, 120, 180), 0.1),
    "resnet20": ("resnet", 64, "sgd", 0.1, True, 200, "step", (60, 120, 180), 0.1),
    "resnet56": ("resnet", 64, "sgd", 0.1, True, 200, "step", (60, 120, 180), 0.1),
    "wrn_28_10": ("wrn_28_10", 128, "sgd", 0.1, True, 200, "step", (60, 120, 180), 0.1),  # 10-11
    "wrn_20_8": ("wrn_20_8", 128, "sgd", 0.1, True, 300, "step", (150, 225), 0.1),        # 12-13
}


def _cfg(*argv):
    return config_from_args(build_parser().parse_args(list(argv)))


@pytest.mark.parametrize("model", sorted(PAPER))
def test_the_direct_command_takes_the_papers_recipe_for_the_model(model):
    cfg = _cfg("--model", model)
    got = (cfg.preset, cfg.batch_size, cfg.optimizer, cfg.lr, cfg.nesterov, cfg.epochs,
           cfg.schedule, cfg.milestones, cfg.gamma)
    assert got == PAPER[model]
    assert cfg.momentum == 0.9


def test_every_registered_model_has_a_preset_and_every_preset_a_table():
    assert set(list_models()) == set(MODEL_PRESETS) == set(PAPER)
    assert set(MODEL_PRESETS.values()) < set(PRESETS)
    assert set(PRESET_TABLES) == set(PRESETS)


def test_flags_and_an_explicit_preset_win_over_the_models_preset():
    cfg = _cfg("--model", "resnet32", "--batch-size", "128", "--gamma", "0.5")
    assert (cfg.preset, cfg.batch_size, cfg.gamma, cfg.milestones) == ("resnet", 128, 0.5, (60, 120, 180))
    cfg = _cfg("--model", "resnet32", "--preset", "wrn")
    assert (cfg.preset, cfg.batch_size, cfg.milestones, cfg.gamma) == ("wrn", 128, (60, 120, 160), 0.2)
    cfg = _cfg("--model", "resnet32", "--preset", "none")
    assert (cfg.preset, cfg.lr, cfg.schedule) == ("none", 1e-3, "none")


@pytest.mark.parametrize("table", ["table8", "table9", "table10", "table11", "table12", "table13"])
def test_the_sweep_presets_resolve_to_the_direct_commands_recipe(table):
    """A table's sweep job and `python -m train --model M` train the same recipe."""
    from train.experiments.grid import Grid, expand
    from train.experiments.presets import PRESETS as SWEEPS

    spec = SWEEPS[table]
    grid = Grid(pairs=spec["pairs"], methods=("ce",), batch_size=spec["batch_size"], seeds=(0,),
                epochs=spec.get("epochs"), train_args=spec.get("train_args", ()))
    (job,) = expand(grid)
    dataset, model = spec["pairs"][0]
    swept = config_from_args(build_parser().parse_args(list(job.argv) + ["--out", "x"]))
    direct = _cfg("--dataset", dataset, "--model", model, "--method", "ce", "--seed", "0", "--out", "x")
    assert swept == direct


def test_config_json_names_the_preset(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--dataset", "digits", "--model", "cifar_cnn", "--preset", "resnet", "--epochs", "1",
                 "--lr", "0.05", "--out", str(out), "--no-progress"])
    assert code == 0
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["preset"], saved["batch_size"], saved["nesterov"], saved["milestones"]) == \
        ("resnet", 64, True, [60, 120, 180])
    assert "(preset resnet," in capsys.readouterr().out


def test_help_gives_each_default_once_and_never_none():
    from train.crowd_drone import DEFAULTS

    text = "".join(build_parser("python -m train.crowd_drone", preset="crowd",
                                defaults=DEFAULTS).format_help().split())
    assert "(default:None)" not in text
    assert text.count("(default:crowd_synth)") == 1
    assert text.count("(default:0.9998)") == 1          # a default the parser holds is still shown
