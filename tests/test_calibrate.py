"""python -m train.calibrate: thresholds chosen where the right ones are known, written safely."""
from __future__ import annotations

import numpy as np
import pytest
import torch

cv2 = pytest.importorskip("cv2")

from edge.contract import Preprocess  # noqa: E402
from train.calibrate import main  # noqa: E402
from edge.files import file_sha256  # noqa: E402
from train.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint  # noqa: E402

try:
    from edge_helpers import MEAN, STD, brightness_crowd_model
except ImportError:
    from tests.edge_helpers import MEAN, STD, brightness_crowd_model

CROWD, EMPTY = (150, 170, 200), (60, 90, 115)      # frame brightness per class


def p_crowd(model, v):
    """p(crowd) of a uniform frame of brightness v: every tile and the whole frame look alike."""
    x = torch.full((1, 3, 64, 64), (v / 255 - MEAN[0]) / STD[0])
    x[:, 1] = (v / 255 - MEAN[1]) / STD[1]
    x[:, 2] = (v / 255 - MEAN[2]) / STD[2]
    with torch.no_grad():
        return float(torch.softmax(model(x), 1)[0, 0])


@pytest.fixture()
def ckpt(tmp_path):
    model = brightness_crowd_model()
    pre = Preprocess((64, 64), MEAN, STD, "RGB")
    c = build_checkpoint(model, arch="crowd_fcn", arch_kwargs={"in_channels": 3, "input_size": 64},
                         class_names=["crowd", "no_crowd"], input_size=(64, 64), in_channels=3,
                         preprocess=pre.to_dict(), method="ce",
                         scale={"patch_m": 25.6, "patch_m_range": [16, 40], "input_width": 64})
    return save_checkpoint(c, tmp_path / "model.pt"), model


@pytest.fixture()
def frames(tmp_path):
    root = tmp_path / "val"
    for cls, values in (("crowd", CROWD), ("no_crowd", EMPTY)):
        (root / cls).mkdir(parents=True)
        for v in values:
            cv2.imwrite(str(root / cls / f"{v}.png"), np.full((120, 200, 3), v, np.uint8))
    return root


def test_known_thresholds_are_found_and_stored(ckpt, frames, tmp_path, capsys):
    path, model = ckpt
    before = load_checkpoint(path)
    assert main([str(path), "--val-data", str(frames), "--gsd", "0.2"]) == 0
    after = load_checkpoint(path)
    rule = after["decision"]
    # classify: midway between the brightest empty frame and the darkest crowd
    lo, hi = p_crowd(model, max(EMPTY)), p_crowd(model, min(CROWD))
    assert 0.5 <= lo < hi               # the default rule (0.5) calls the brightest empty frame a crowd
    assert rule["classify_threshold"] == pytest.approx((lo + hi) / 2, abs=1e-5)
    # heatmap: each frame is all-crowd or all-empty above any threshold in (lo, hi); of those on
    # the 0.05 grid the one nearest 0.5 is kept, and the area gap (0 .. 1) is split in the middle
    grid = [t for t in np.round(np.arange(0.05, 0.96, 0.05), 2) if lo < t < hi]
    assert rule["threshold"] == min(grid, key=lambda t: (abs(t - 0.5), t))
    assert rule["min_area"] == pytest.approx(0.5)
    assert rule["source"].startswith(f"calibrated on {frames}: 6 frames (3 crowd)")
    for k in before["state_dict"]:                                  # only the rule changed
        assert torch.equal(before["state_dict"][k], after["state_dict"][k])
    assert after["scale"] == before["scale"] and "decision" not in before
    out = capsys.readouterr().out
    assert "with the rule it had: heatmap balanced 0.833" in out
    assert "with the chosen rule: heatmap balanced 1.000" in out and "classify balanced 1.000" in out


def test_out_leaves_the_source_alone_and_keeps_other_thresholds(ckpt, frames, tmp_path):
    path, _ = ckpt
    sha = file_sha256(path)
    out = tmp_path / "cal" / "model_cal.pt"
    assert main([str(path), "--val-data", str(frames), "--mode", "classify", "--out", str(out)]) == 0
    assert file_sha256(path) == sha
    rule = load_checkpoint(out)["decision"]
    assert rule["threshold"] == 0.5 and rule["min_area"] == 0.02        # heatmap not judged: defaults
    assert "--mode classify" in rule["source"]


@pytest.mark.parametrize("case,needle", [
    ("missing", "checkpoint not found"),
    ("oneclass", "needs frames of both classes"),
    ("camera", "--altitude and --hfov go together"),
    ("dense-cnn", "not one"),
    ("out-under-file", "is a file, not a folder"),
    ("out-unwritable", "cannot create files in"),
    ("out-is-a-frame", "is the --val-data frame"),
    ("no-cuda", "no CUDA device is available"),
])
def test_bad_inputs_exit_2_and_write_nothing(ckpt, frames, tmp_path, capsys, case, needle):
    path, _ = ckpt
    sha = file_sha256(path)
    argv = [str(path), "--val-data", str(frames)]
    if case == "missing":
        argv[0] = str(tmp_path / "nope.pt")
    elif case == "oneclass":
        import shutil

        shutil.rmtree(frames / "no_crowd")
    elif case == "camera":
        argv += ["--altitude", "30"]
    elif case == "out-under-file":
        argv += ["--out", str(path / "cal.pt")]
    elif case == "out-unwritable":
        import os

        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        argv += ["--out", str(ro / "cal.pt") if os.geteuid() else "/sys/cal.pt"]
    elif case == "out-is-a-frame":
        frame = next((frames / "crowd").iterdir())
        png = frame.read_bytes()
        argv += ["--out", str(frame)]
    elif case == "no-cuda":
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
        argv += ["--device", "cuda"]
    else:
        from train.models import build_model

        m = build_model("cifar_cnn", num_classes=2)
        c = build_checkpoint(m, arch="cifar_cnn", arch_kwargs={}, class_names=["crowd", "no_crowd"],
                             input_size=(32, 32), in_channels=3,
                             preprocess=Preprocess((32, 32), MEAN, STD).to_dict(), method="ce")
        argv[0] = str(save_checkpoint(c, tmp_path / "cnn.pt"))
        argv += ["--heatmap-impl", "dense"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert file_sha256(path) == sha
    if case == "out-is-a-frame":
        assert frame.read_bytes() == png


def test_cameras_file_judges_each_frame_at_its_own_scale(ckpt, tmp_path, capsys):
    """Crowds are a bright corner of a dark frame, empty frames a brighter grey all over. Judged as
    one tile (--tile 200), a crowd frame's mean is the darker one and no threshold separates them;
    judged on 60-px tiles (each frame's own camera in --cameras), the corner tile does."""
    path, _ = ckpt
    root = tmp_path / "scale"
    for cls, n in (("crowd", 3), ("no_crowd", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            img = np.full((120, 200, 3), 100 + 5 * i, np.uint8) if cls == "no_crowd" else \
                np.full((120, 200, 3), 20 + 5 * i, np.uint8)
            if cls == "crowd":
                img[:60, :60] = 240
            cv2.imwrite(str(root / cls / f"{i}.png"), img)
    rows = [f"{cls}/{i}.png,60" for cls in ("crowd", "no_crowd") for i in range(3)]
    cams = tmp_path / "cameras.csv"
    cams.write_text("path,tile\n" + "\n".join(rows) + "\n")
    base = [str(path), "--val-data", str(root), "--mode", "heatmap", "--tile", "200"]
    assert main([*base, "--out", str(tmp_path / "one_scale.pt")]) == 0
    one = capsys.readouterr().out
    assert main([*base, "--cameras", str(cams), "--out", str(tmp_path / "own.pt")]) == 0
    own = capsys.readouterr().out
    assert "with the chosen rule: heatmap balanced 1.000" in own
    assert "with the chosen rule: heatmap balanced 1.000" not in one
    rule = load_checkpoint(tmp_path / "own.pt")["decision"]
    assert "6 frames at their own camera" in rule["source"]


@pytest.mark.parametrize("extra,needle", [
    (["--cameras", "CAMS", "--mode", "classify"], "--mode classify judges whole frames"),
    (["--cameras", "NOPE"], "--cameras file not found"),
    (["--cameras", "BAD"], "line 3: crowd/150.png is given a camera twice"),
    (["--cameras", "CAMS", "--out", "CAMS"], "is the --cameras file"),
])
def test_bad_cameras_exit_2_and_write_nothing(ckpt, frames, tmp_path, capsys, extra, needle):
    path, _ = ckpt
    sha = file_sha256(path)
    cams, bad = tmp_path / "cams.csv", tmp_path / "bad.csv"
    cams.write_text("path,gsd\ncrowd/150.png,0.1\n")
    bad.write_text("path,gsd\ncrowd/150.png,0.1\ncrowd/150.png,0.2\n")
    names = {"CAMS": str(cams), "BAD": str(bad), "NOPE": str(tmp_path / "nope.csv")}
    assert main([str(path), "--val-data", str(frames), *[names.get(a, a) for a in extra]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert file_sha256(path) == sha and cams.read_text() == "path,gsd\ncrowd/150.png,0.1\n"
