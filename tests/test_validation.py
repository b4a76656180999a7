"""Training with --val-data: real-frame validation per epoch, best.pt by it, calibration, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from train.checkpoint import load_checkpoint  # noqa: E402
from train.cli import main  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.engine import Trainer  # noqa: E402


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A bright-vs-dark image folder to train on, and full frames of other sizes to validate on."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 8)):
        for cls, lo in (("crowd", 150), ("no_crowd", 20)):
            for i in range(n):
                _write(root / "d" / split / cls / f"{i}.png", rng.integers(lo, lo + 90, (32, 32, 3), dtype=np.uint8))
    val = root / "val"
    for cls, lo, n in (("crowd", 140, 3), ("no_crowd", 30, 3), ("crowd_ground", 160, 1)):
        for i in range(n):
            frame = rng.integers(lo, lo + 80, (90 + 10 * i, 160, 3), dtype=np.uint8)
            frame[: 20] = rng.integers(0, 255, (20, 160, 3), dtype=np.uint8)   # clutter strip
            _write(val / cls / f"f{i}.png", frame)
    _write(val / "borderline" / "b.png", np.full((50, 50, 3), 128, np.uint8))
    return root / "d", val


def _cfg(tmp_path, folders, **kw):
    data, val = folders
    base = dict(data=str(data), model="crowd_fcn", input_size=32, method="ce", epochs=3, batch_size=16,
                lr=0.05, out=str(tmp_path / "run"), seed=1, val_data=str(val), val_map=("crowd_ground=crowd",),
                patch_metres=20.0, val_gsd=0.25)
    base.update(kw)
    return TrainConfig(**base)


def test_val_is_logged_best_pt_follows_it_and_both_models_are_calibrated(tmp_path, folders, capsys):
    summary = Trainer(_cfg(tmp_path, folders), progress=False).fit()
    out = tmp_path / "run"
    lines = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    for r in lines:
        assert set(r["val"]) == {"heatmap", "classify"}
        for m in r["val"].values():
            assert m["n"] == 7 and 0.0 <= m["balanced_accuracy"] <= 1.0
    printed = capsys.readouterr()
    assert "val_heatmap=" in printed.out and "val_classify=" in printed.out
    assert "skipped folder borderline/" in printed.err
    # best.pt is the first epoch with the best (mean balanced accuracy, mean ROC-AUC)
    key = [(np.mean([m["balanced_accuracy"] for m in r["val"].values()]),
            np.mean([m["roc_auc"] for m in r["val"].values()])) for r in lines]
    want = 1 + max(range(len(key)), key=lambda i: (key[i], -i))
    assert summary["select_best"] == "val" and summary["best_pt_epoch"] == want
    assert lines[-1]["best_pt_epoch"] == want
    best, final = load_checkpoint(out / "best.pt"), load_checkpoint(out / "model.pt")
    for ck in (best, final):
        rule = ck["decision"]
        assert rule["source"].startswith(f"calibrated on {folders[1]}: 7 frames (4 crowd)")
        assert 0 < rule["threshold"] < 1 and 0 < rule["min_area"] < 1 and 0 < rule["classify_threshold"] < 1
        assert ck["scale"]["patch_m"] == 20.0
    assert f"epoch {want}" in best["decision"]["source"] and "final weights" in final["decision"]["source"]
    assert json.loads((out / "metrics.json").read_text())["decision"] == final["decision"]


def test_the_calibrated_rule_is_the_best_one_on_the_frames(tmp_path, folders):
    """Re-judge the frames with the final model: no classify threshold does better than the stored one."""
    from edge.metrics import balanced_accuracy
    from train.checkpoint import load_model, model_info
    from train.validation import RealValidation

    Trainer(_cfg(tmp_path, folders, epochs=1, val_mode="classify"), progress=False).fit()
    model, ckpt = load_model(tmp_path / "run" / "model.pt")
    val = RealValidation(folders[1], model_info(ckpt), "classify", mapping=("crowd_ground=crowd",))
    res = val.run(model, torch.device("cpu"))
    p = np.array([j.evidence for j in res.judgements["classify"]])
    y = res.truth
    t = ckpt["decision"]["classify_threshold"]
    got = balanced_accuracy(y, p >= t)
    assert all(balanced_accuracy(y, p >= c) <= got + 1e-12 for c in np.linspace(0.001, 0.999, 999))
    assert [j.crowd for j in res.judgements["classify"]] == list(p >= t)   # the stored rule is used
    assert ckpt["decision"]["threshold"] == 0.5 and ckpt["decision"]["min_area"] == 0.02   # not judged


def test_resume_with_val_data_is_bit_identical(tmp_path, folders):
    ref = Trainer(_cfg(tmp_path, folders, out=str(tmp_path / "ref"), epochs=2), progress=False)
    ref.fit()

    def interrupt(trainer, epoch, step):
        if epoch == 1 and step == 1:
            raise KeyboardInterrupt

    cut = _cfg(tmp_path, folders, out=str(tmp_path / "cut"), epochs=2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cut, on_step=interrupt, progress=False).fit()
    Trainer(cut.replace(resume=True), progress=False).fit()
    a, b = torch.load(tmp_path / "ref" / "model.pt", weights_only=True), torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    strip = lambda ln: {k: v for k, v in json.loads(ln).items() if k != "epoch_time_s"}  # noqa: E731
    assert [strip(x) for x in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()] == \
           [strip(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert a["decision"] == b["decision"]


@pytest.mark.parametrize("extra,needle", [
    (["--select-best", "val"], "--select-best val needs --val-data"),
    (["--val-data", "/no/such/folder"], "--val-data /no/such/folder: folder not found"),
    (["--val-data", "VAL", "--val-altitude", "40"], "--val-altitude and --val-hfov go together"),
    (["--val-data", "ONECLASS"], "needs frames of both classes"),
    (["--val-cameras", "CAMS"], "--val-cameras needs --val-data"),
    (["--val-data", "VAL", "--val-cameras", "CAMS", "--val-mode", "classify"], "judges whole frames"),
    (["--val-data", "VAL", "--val-cameras", "BADCAMS"], "line 2: crowd/nope.png is not a file in"),
])
def test_bad_validation_flags_exit_2(tmp_path, folders, capsys, extra, needle):
    one = tmp_path / "one" / "crowd"
    _write(one / "a.png", np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "cams.csv").write_text("path,gsd\ncrowd/f0.png,0.1\n")
    (tmp_path / "bad.csv").write_text("path,gsd\ncrowd/nope.png,0.1\n")
    extra = [{"VAL": str(folders[1]), "ONECLASS": str(tmp_path / "one"), "CAMS": str(tmp_path / "cams.csv"),
              "BADCAMS": str(tmp_path / "bad.csv")}.get(a, a) for a in extra]
    code = main(["--data", str(folders[0]), "--model", "crowd_fcn", "--input-size", "32", "--epochs", "1",
                 "--out", str(tmp_path / "o"), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_monitoring_only_leaves_the_weights_and_thresholds_alone(tmp_path, folders):
    """--select-best test --no-calibrate: the real frames are logged, and the run is the run
    without them (same weights, same best.pt, default decision rule)."""
    plain = _cfg(tmp_path, folders, out=str(tmp_path / "plain"), val_data=None, val_map=(), epochs=2)
    Trainer(plain, progress=False).fit()
    watched = _cfg(tmp_path, folders, out=str(tmp_path / "watched"), epochs=2, select_best="test",
                   calibrate=False)
    Trainer(watched, progress=False).fit()
    for name in ("model.pt", "best.pt"):
        a, b = (load_checkpoint(tmp_path / run / name) for run in ("plain", "watched"))
        assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
        assert "decision" not in b or b["decision"] is None or b["decision"]["source"] == "default"
    lines = [json.loads(ln) for ln in (tmp_path / "watched" / "metrics.jsonl").read_text().splitlines()]
    assert all("val" in r for r in lines)


def test_val_cameras_give_the_listed_frames_their_own_heatmap_tiles(tmp_path, folders):
    """--val-cameras reaches the judges: listed frames are tiled at their own scale (20 m of
    ground: 100 px at 0.2 m/px, 40 px as given), the rest at --val-gsd's (0.25 m/px: 80 px)."""
    cams = tmp_path / "cams.csv"
    cams.write_text("path,gsd,tile\ncrowd/f0.png,0.2,\nno_crowd/f1.png,,40\n")
    trainer = Trainer(_cfg(tmp_path, folders, val_cameras=str(cams)), progress=False)
    result = trainer.val.run(trainer.model, torch.device("cpu"))
    tiles = {im.rel: j.tile_px for im, j in zip(trainer.val.images, result.judgements["heatmap"])}
    assert tiles.pop("crowd/f0.png") == 100 and tiles.pop("no_crowd/f1.png") == 40
    assert set(tiles.values()) == {80}
    assert {j.tile_px for j in result.judgements["classify"]} == {None}
