"""Training measures the model's background (its p(crowd) on the test split's crowd-free images)
on the test pass, stores it in both model files, and export carries it to the runtime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from edge.contract import MIN_BACKGROUND_PATCHES, Background, DecisionRule, Preprocess  # noqa: E402
from train.checkpoint import load_checkpoint, load_model  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.engine import Trainer  # noqa: E402

try:
    from edge_helpers import image_folder
except ImportError:
    from tests.edge_helpers import image_folder


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Bright (crowd) vs dark (no_crowd) 32-px images, overlapping so scores spread."""
    return image_folder(tmp_path_factory.mktemp("bgdata"), {"train": 24, "test": 30},
                        {"crowd": 110, "no_crowd": 40}, spread=110)


def _cfg(tmp_path, data, **kw):
    base = dict(data=str(data), model="crowd_fcn", input_size=32, method="ce", epochs=3, batch_size=16,
                lr=0.05, out=str(tmp_path / "run"), seed=1, patch_metres=20.0)
    base.update(kw)
    return TrainConfig(**base)


def reference_scores(path, data):
    """p(crowd) of every no_crowd test image, one at a time from its file (the slow way)."""
    model, ck = load_model(path)
    model.eval()
    pre = Preprocess.from_dict(ck["preprocess"])
    out = []
    for f in sorted((data / "test" / "no_crowd").iterdir()):
        img = cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB).astype(np.float64) / 255.0
        x = (img - np.array(pre.mean)) / np.array(pre.std)
        with torch.no_grad():
            logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None]).float())
        out.append(float(torch.softmax(logits.double(), 1)[0, ck["class_names"].index("crowd")]))
    return np.array(out)


def test_both_model_files_carry_their_own_background(tmp_path, data):
    summary = Trainer(_cfg(tmp_path, data), progress=False).fit()
    run = tmp_path / "run"
    for name in ("model.pt", "best.pt"):
        ck = load_checkpoint(run / name)
        rule = DecisionRule.from_dict(ck["decision"])
        assert rule.threshold == 0.5 and rule.min_area == 0.02 and rule.source == "default"
        bg = rule.background
        assert bg.positive == "crowd" and bg.n == 30 and "test split: 30 images not of class crowd" in bg.source
        want = Background.from_scores(reference_scores(run / name, data), "crowd")
        np.testing.assert_allclose(bg.quantiles, want.quantiles, atol=2e-6)
    assert summary["best_pt_epoch"] >= 1


def test_resume_keeps_the_background(tmp_path, data):
    ref = Trainer(_cfg(tmp_path, data, out=str(tmp_path / "ref"), epochs=2), progress=False)
    ref.fit()
    half = Trainer(_cfg(tmp_path, data, out=str(tmp_path / "res"), epochs=1), progress=False)
    half.fit()
    Trainer(_cfg(tmp_path, data, out=str(tmp_path / "res"), epochs=2, resume=True), progress=False).fit()
    for name in ("model.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / r / name) for r in ("ref", "res"))
        assert a["decision"] == b["decision"] and "background" in a["decision"]


def test_too_few_crowd_free_images_record_no_background(tmp_path, data, monkeypatch):
    import train.engine as engine

    monkeypatch.setattr(engine, "MIN_BACKGROUND_PATCHES", 31)
    Trainer(_cfg(tmp_path, data, epochs=1), progress=False).fit()
    assert load_checkpoint(tmp_path / "run" / "model.pt").get("decision") is None
    assert MIN_BACKGROUND_PATCHES == 20


def test_export_carries_the_background_to_the_runtime(tmp_path, data):
    pytest.importorskip("onnxruntime")
    from edge.backends import open_backend
    from export.onnx import main as export_main

    Trainer(_cfg(tmp_path, data, epochs=1), progress=False).fit()
    ck = load_checkpoint(tmp_path / "run" / "model.pt")
    out = tmp_path / "m.onnx"
    assert export_main([str(tmp_path / "run" / "model.pt"), "--out", str(out)]) == 0
    info = open_backend(out, "ort-cpu").info
    assert info.decision == DecisionRule.from_dict(ck["decision"])
    assert info.decision.background.n == 30


def test_evaluate_judges_with_the_background_unless_fixed(tmp_path, data, capsys):
    pytest.importorskip("onnxruntime")
    import json

    from edge.evaluate import main as evaluate_main
    from export.onnx import main as export_main

    Trainer(_cfg(tmp_path, data, epochs=1), progress=False).fit()
    onnx = tmp_path / "m.onnx"
    assert export_main([str(tmp_path / "run" / "model.pt"), "--out", str(onnx)]) == 0
    frames = tmp_path / "frames"
    rng = np.random.default_rng(5)
    for cls, lo in (("crowd", 110), ("no_crowd", 40)):
        for i in range(2):        # 96 x 160 frames of 32-px tiles: 5 x 9 patches each
            (frames / cls).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(frames / cls / f"{i}.png"), rng.integers(lo, lo + 110, (96, 160, 3), dtype=np.uint8))
    reports = {}
    for name, extra in (("sidak", []), ("fixed", ["--fixed-threshold"])):
        out = tmp_path / f"{name}.json"
        args = ["--model", str(onnx), "--data", str(frames), "--mode", "heatmap", "--tile", "32",
                "--json", str(out)] + extra
        assert evaluate_main(args) == 0, capsys.readouterr().err
        reports[name] = json.loads(out.read_text())["judge"]["rule"]
    assert reports["sidak"]["background"]["n"] == 30 and "background" not in reports["fixed"]
    assert reports["fixed"]["source"].endswith("--fixed-threshold from the command line")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data):
    """One epoch's model.pt, with the background training stored."""
    out = tmp_path_factory.mktemp("bgrun")
    Trainer(TrainConfig(data=str(data), model="crowd_fcn", input_size=32, method="ce", epochs=1,
                        batch_size=16, lr=0.05, out=str(out / "run"), seed=1, patch_metres=20.0),
            progress=False).fit()
    return load_checkpoint(out / "run" / "model.pt")


def test_calibrate_measures_the_background_of_an_older_checkpoint(tmp_path, trained, capsys):
    """A model saved without a background (as before models carried one) gets the same record
    from ``train.calibrate --background`` as training would have stored."""
    from train.calibrate import main as calibrate_main
    from train.checkpoint import save_checkpoint

    old = tmp_path / "old.pt"
    save_checkpoint({k: v for k, v in trained.items() if k != "decision"}, old)
    before = old.read_bytes()
    assert calibrate_main([str(old), "--background", "--out", str(tmp_path / "new.pt")]) == 0
    assert old.read_bytes() == before
    out = capsys.readouterr()
    assert "measuring the background on the test split of" in out.err and "raised per frame" in out.out
    got = DecisionRule.from_dict(load_checkpoint(tmp_path / "new.pt")["decision"])
    want = DecisionRule.from_dict(trained["decision"])
    assert (got.threshold, got.min_area, got.source) == (0.5, 0.02, "default")
    assert got.background.n == want.background.n == 30 and got.background.source == want.background.source
    np.testing.assert_allclose(got.background.quantiles, want.background.quantiles, atol=2e-6)


@pytest.mark.parametrize("case,needle", [
    ("neither", "give --val-data DIR"),
    ("no_config", "needs the training configuration"),
    ("no_crowd_class", "does not have"),
    ("data_gone", "not found"),
    ("other_classes", "are not the model's"),
])
def test_calibrate_background_refusals_exit_2(tmp_path, data, trained, capsys, case, needle):
    import shutil

    from train.calibrate import main as calibrate_main
    from train.checkpoint import save_checkpoint

    ck = dict(trained)
    path = tmp_path / "m.pt"
    args = [str(path), "--background"]
    if case == "neither":
        args = [str(path)]
    elif case == "no_config":
        ck = {k: v for k, v in ck.items() if k != "config"}
    elif case == "no_crowd_class":
        ck = dict(ck, class_names=["people", "no_crowd"])
    elif case == "other_classes":
        ck = dict(ck, class_names=["crowd", "empty"])
    elif case == "data_gone":
        moved = tmp_path / "copy"
        shutil.copytree(data, moved)
        ck = dict(ck, config=dict(ck["config"], data=str(moved)))
        shutil.rmtree(moved)
    save_checkpoint(ck, path)
    before = path.read_bytes()
    capsys.readouterr()
    assert calibrate_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert path.read_bytes() == before
