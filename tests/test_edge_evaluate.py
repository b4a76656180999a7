"""python -m edge.evaluate on photos the test makes, with a model whose verdicts are known."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge import evaluate as ev  # noqa: E402
from edge.contract import META_SCALE  # noqa: E402

try:
    from edge_helpers import brightness_crowd_model, export_crowd_onnx
except ImportError:
    from tests.edge_helpers import brightness_crowd_model, export_crowd_onnx

SCALE = {"patch_m": 25.6, "patch_m_range": [16.0, 40.0], "input_width": 64}
# (file, brightness): bright = the model says crowd, dark = it says no crowd
PHOTOS = {
    "crowd/site1_day_a.png": 200, "crowd/site1_day_b.png": 220, "crowd/night/site2_dusk_c.png": 40,
    "no_crowd/site1_day_d.png": 30, "no_crowd/site3_lot_e.png": 60, "no_crowd/site3_lot_decoy.png": 210,
    "crowd_ground/street.jpg": 230, "borderline/odd.png": 128,
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_crowd_onnx(tmp_path_factory.mktemp("m") / "bright.onnx", size=64, dense=True,
                             model=brightness_crowd_model(), extra_meta={META_SCALE: SCALE})


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "photos"
    for rel, v in PHOTOS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), np.full((90, 160, 3), v, np.uint8))
    (root / "no_crowd" / "broken.png").write_bytes(b"\x89PNG broken")
    cv2.imwrite(str(root / "loose.png"), np.zeros((8, 8, 3), np.uint8))
    return root


def _run(model, photos, tmp_path, *extra):
    out = {k: tmp_path / f"out.{k}" for k in ("json", "csv", "png")}
    rc = ev.main(["--model", str(model), "--data", str(photos), "--map", "crowd_ground=crowd",
                  "--json", str(out["json"]), "--csv", str(out["csv"]), "--errors-sheet", str(out["png"]),
                  "--threads", "1", *extra])
    return rc, out


@pytest.mark.parametrize("mode", ["classify", "heatmap"])
def test_report_csv_and_errors_sheet(model, photos, tmp_path, capsys, mode):
    rc, out = _run(model, photos, tmp_path, "--mode", mode, "--gsd", "0.2")
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipped folder borderline/ (1 images)" in err and "directly in" in err
    rep = json.loads(out["json"].read_text())
    m = rep["metrics"]
    # crowd: 3 bright (right) + 1 dark (missed); no_crowd: 2 dark (right) + 1 bright decoy (false alarm)
    assert m["confusion"] == [[3, 1], [1, 2]] and rep["confusion_labels"] == ["crowd", "no_crowd"]
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2, abs=1e-6)
    assert rep["per_class"] == {"crowd": {"n": 4, "accuracy": 0.75}, "no_crowd": {"n": 3, "accuracy": pytest.approx(2 / 3, abs=1e-6)}}
    assert set(rep["groups"]) == {"crowd", "crowd/night", "crowd_ground", "no_crowd"}
    assert rep["groups"]["crowd/night"]["accuracy"] == 0.0 and rep["groups"]["crowd_ground"]["n"] == 1
    assert rep["unreadable"] == {"no_crowd/broken.png": "undecodable"}
    assert sorted(rep["errors"]) == ["crowd/night/site2_dusk_c.png", "no_crowd/site3_lot_decoy.png"]
    assert rep["judge"]["mode"] == mode and rep["map"] == {"crowd_ground": "crowd"}
    rows = list(csv.DictReader(out["csv"].open()))
    assert len(rows) == 8 and {r["path"] for r in rows} >= {"crowd_ground/street.jpg", "no_crowd/broken.png"}
    good = [r for r in rows if not r["error"]]
    # the reported AUC is the AUC of the per-image scores in the CSV (scikit-learn as the reference)
    sk = pytest.importorskip("sklearn.metrics")
    auc = sk.roc_auc_score([int(r["truth"]) for r in good], [float(r["score"]) for r in good])
    assert m["roc_auc"] == pytest.approx(auc, abs=1e-6)
    if mode == "heatmap":
        assert {r["tile_px"] for r in good} == {"128"}                     # 25.6 m at 0.2 m/px
    else:
        assert all(abs(float(r["p_crowd"]) + float(r["p_no_crowd"]) - 1) < 1e-4 for r in good)
    sheet = cv2.imread(str(out["png"]))
    assert sheet.shape[:2] == (180 + 34 + 4, 2 * 244)                    # two wrong verdicts


def test_group_by_prefix_and_no_outputs_by_default(model, photos, capsys):
    assert ev.main(["--model", str(model), "--data", str(photos), "--group-by", "prefix"]) == 0
    text = capsys.readouterr().out
    for group in ("site1_day", "site2_dusk", "site3_lot"):
        assert group in text
    assert "crowd_ground" not in text                     # not mapped this time: skipped


def test_nothing_to_fix_gives_a_note_sheet(model, tmp_path):
    root = tmp_path / "easy"
    for cls, v in (("crowd", 240), ("no_crowd", 10)):
        (root / cls).mkdir(parents=True)
        cv2.imwrite(str(root / cls / "x.png"), np.full((40, 40, 3), v, np.uint8))
    sheet = tmp_path / "s.png"
    assert ev.main(["--model", str(model), "--data", str(root), "--errors-sheet", str(sheet)]) == 0
    assert cv2.imread(str(sheet)) is not None


@pytest.mark.parametrize("extra,needle", [
    (["--map", "crowd_ground"], "expected FOLDER=CLASS"),
    (["--map", "crowd_ground=people"], "not one of the model's classes"),
    (["--map", "nowhere=crowd"], "does not have"),
    (["--errors-sheet", "x.jpg"], "must end in .png"),
    (["--mode", "heatmap", "--altitude", "50"], "go together"),
    (["--classify-threshold", "2"], "classify_threshold must be in (0, 1)"),
])
def test_bad_input_exits_2_with_one_line(model, photos, tmp_path, capsys, extra, needle):
    js = tmp_path / "never.json"
    assert ev.main(["--model", str(model), "--data", str(photos), "--json", str(js), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not js.exists()


@pytest.mark.parametrize("flag", ["--json", "--csv", "--errors-sheet"])
@pytest.mark.parametrize("case", ["under-file", "unwritable", "the-model", "a-photo"])
def test_bad_output_paths_exit_2_before_judging(model, photos, tmp_path, capsys, flag, case):
    """An output that cannot be written, or that is an input, is refused at start with one line
    (it was a traceback after every photo was judged, or the model or a photo replaced)."""
    import os

    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    copy = tmp_path / "model.png"                         # the sheet must end in .png
    copy.write_bytes(model.read_bytes())
    photo = photos / "crowd" / "site1_day_a.png"
    ro = Path("/sys") if os.geteuid() == 0 else tmp_path / "ro"
    if ro != Path("/sys"):
        ro.mkdir(mode=0o555)
    path, needle = {"under-file": (a_file / "x.png", "is a file, not a folder"),
                    "unwritable": (ro / "x.png", "cannot create files in"),
                    "the-model": (copy, "is --model"),
                    "a-photo": (photo, "is the --data image")}[case]
    before = {p: p.read_bytes() for p in (a_file, copy, photo)}
    assert ev.main(["--model", str(copy), "--data", str(photos), flag, str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{flag} {path}" in err[0] and needle in err[0], err
    assert {p: p.read_bytes() for p in before} == before


def test_bad_threads_exit_2(model, photos, capsys):
    assert ev.main(["--model", str(model), "--data", str(photos), "--threads", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads 0: must be an integer >= 1" in err[0], err


def test_bad_data_folders_exit_2(model, tmp_path, capsys):
    assert ev.main(["--model", str(model), "--data", str(tmp_path / "missing")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    assert ev.main(["--model", str(model), "--data", str(tmp_path)]) == 2
    assert "no labelled images" in capsys.readouterr().err
    assert ev.main(["--model", str(tmp_path / "none.onnx"), "--data", str(tmp_path)]) == 2


# ------------------------------------------------------------------------------ --cameras
def _cameras(tmp_path, text: str) -> Path:
    f = tmp_path / "cameras.csv"
    f.write_text(text)
    return f


def test_cameras_file_gives_each_listed_photo_its_own_tiles(model, photos, tmp_path, capsys):
    cams = _cameras(tmp_path, "path,gsd,altitude,hfov,tile\n"
                              "crowd/site1_day_a.png,,,,40\n"
                              "\n"
                              "no_crowd/site3_lot_e.png,0.1,,,\n"
                              "crowd/night/site2_dusk_c.png,,100,90,\n"
                              "borderline/odd.png,0.5,,,\n")             # skipped folder: allowed
    rc, out = _run(model, photos, tmp_path, "--mode", "heatmap", "--gsd", "0.2", "--cameras", str(cams))
    assert rc == 0
    tiles = {r["path"]: r["tile_px"] for r in csv.DictReader(out["csv"].open()) if not r["error"]}
    # 25.6 m of ground: 40 px as given; at 0.1 m/px 256 px; 200 m across 160 px (100 m up, 90 deg)
    # is 1.25 m/px, so 20 px; the rest at the command line's 0.2 m/px, 128 px
    assert tiles.pop("crowd/site1_day_a.png") == "40"
    assert tiles.pop("no_crowd/site3_lot_e.png") == "256"
    assert tiles.pop("crowd/night/site2_dusk_c.png") == "20"
    assert set(tiles.values()) == {"128"} and len(tiles) == 4
    rep = json.loads(out["json"].read_text())
    assert rep["judge"]["cameras"] == {"file": str(cams), "photos": 3, "others": 5}
    assert "no camera given" not in capsys.readouterr().err


def test_cameras_file_decides_the_verdict_where_the_scale_matters(model, tmp_path, capsys):
    """A dark frame with one bright corner: judged on small tiles the corner is a crowd; judged
    as one tile, the frame's mean is dark. The same pixels get both verdicts by their rows (the
    tiled heatmap: each tile is one look at its ground)."""
    root = tmp_path / "scale"
    img = np.full((90, 160, 3), 20, np.uint8)
    img[:45, :45] = 240
    for rel in ("crowd/near.png", "no_crowd/far.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / rel), img)
    cams = _cameras(tmp_path, "path,tile\ncrowd/near.png,40\nno_crowd/far.png,160\n")
    out = tmp_path / "rows.csv"
    args = ["--model", str(model), "--data", str(root), "--mode", "heatmap", "--csv", str(out),
            "--heatmap-impl", "tiles"]
    assert ev.main([*args, "--cameras", str(cams)]) == 0
    verdicts = {r["path"]: r["verdict"] for r in csv.DictReader(out.open())}
    assert verdicts == {"crowd/near.png": "1", "no_crowd/far.png": "0"}
    assert "balanced accuracy 1.000" in capsys.readouterr().out
    # without the file both photos share one camera, so one of them must be wrong
    assert ev.main([*args, "--tile", "40"]) == 0
    assert len({r["verdict"] for r in csv.DictReader(out.open())}) == 1


@pytest.mark.parametrize("text,needle", [
    (None, "--cameras file not found"),
    ("gsd\n0.1\n", "with 'path' among them"),
    ("path,gsd,zoom\ncrowd/site1_day_a.png,0.1,2\n", "unknown column 'zoom'"),
    ("path,gsd,gsd\ncrowd/site1_day_a.png,0.1,0.1\n", "a column named twice"),
    ("path,gsd\n", "no rows"),
    ("path,gsd\ncrowd/nope.png,0.1\n", "line 2: crowd/nope.png is not a file in"),
    ("path,gsd\n../photos/crowd/site1_day_a.png,0.1\n", "must be relative to the data folder"),
    ("path,gsd\n/etc/passwd,0.1\n", "must be relative to the data folder"),
    ("path,gsd\ncrowd/site1_day_a.png,0.1\ncrowd/site1_day_a.png,0.2\n",
     "line 3: crowd/site1_day_a.png is given a camera twice"),
    ("path,gsd,tile\ncrowd/site1_day_a.png,0.1,64\n",
     "line 2: give one of tile, gsd, altitude+hfov, not tile and gsd"),
    ("path,altitude\ncrowd/site1_day_a.png,50\n", "line 2: altitude and hfov go together"),
    ("path,gsd\ncrowd/site1_day_a.png,fast\n", "line 2: gsd 'fast' is not a number"),
    ("path,gsd\ncrowd/site1_day_a.png,-1\n", "line 2: gsd must be a positive number"),
    ("path,tile\ncrowd/site1_day_a.png,40.5\n", "line 2: tile 40.5 is not a whole number"),
    ("path,gsd\ncrowd/site1_day_a.png,\n", "line 2: no camera given"),
    ("path,gsd\ncrowd/site1_day_a.png,0.1,7\n", "line 2: more values than columns"),
])
def test_bad_cameras_file_exits_2_with_one_line(model, photos, tmp_path, capsys, text, needle):
    cams = tmp_path / "cameras.csv" if text is None else _cameras(tmp_path, text)
    js = tmp_path / "never.json"
    rc = ev.main(["--model", str(model), "--data", str(photos), "--mode", "heatmap",
                  "--cameras", str(cams), "--json", str(js)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not js.exists()


def test_cameras_file_is_for_the_heatmap_and_never_overwritten(model, photos, tmp_path, capsys):
    cams = _cameras(tmp_path, "path,gsd\ncrowd/site1_day_a.png,0.1\n")
    before = cams.read_bytes()
    base = ["--model", str(model), "--data", str(photos), "--cameras", str(cams)]
    assert ev.main([*base, "--mode", "classify"]) == 2
    assert "use it with --mode heatmap" in capsys.readouterr().err
    assert ev.main([*base, "--mode", "heatmap", "--csv", str(cams)]) == 2
    assert "is the --cameras file" in capsys.readouterr().err
    assert cams.read_bytes() == before
