"""``python -m train.crowd_drone`` end to end on a tiny built-in crowd_synth set."""
from __future__ import annotations

import json

import pytest

from train.checkpoint import load_model
from train.crowd_drone import main
from train.losses import list_losses


@pytest.mark.skipif("posd" not in list_losses(), reason="posd loss not registered")
def test_crowd_drone_posd_quick_run_writes_model_and_metrics(tmp_path, capsys):
    out = tmp_path / "quick"
    code = main(["--posd", "--knn", "2", "--epochs", "1", "--synth-size", "100", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["method"] == "posd" and summary["epochs_done"] == 1
    assert 0.0 <= summary["best_test_acc"] <= 1.0
    config = json.loads((out / "config.json").read_text())
    # the paper's Crowd-drone preset, with the two overrides given
    c = config["config"]
    assert (c["model"], c["batch_size"], c["lr"], c["momentum"], c["knn"]) == ("crowd_fcn", 32, 1e-3, 0.9, 2)
    assert config["resolved"]["train_size"] == 200 and config["resolved"]["test_size"] == 2 * 43
    assert config["resolved"]["loss_kwargs"]["lam"] == 1e-4 and config["resolved"]["loss_kwargs"]["knn"] == 2
    model, ckpt = load_model(out / "model.pt")
    assert ckpt["class_names"] == ["crowd", "no_crowd"] and ckpt["input_size"] == [128, 128]
    assert ckpt["method"] == "posd" and ckpt["arch"] == "crowd_fcn"
    from train.data.crowd_synth import ground_scale

    # the scenes' scale travels with the model; aerial-mosaic (v10's default) widens the range 3x
    scenes = ground_scale()
    trained = {**scenes.to_dict(), "patch_m_range": [scenes.patch_m_range[0], 255.99]}
    assert ckpt["scale"] == config["resolved"]["scale"] == trained
