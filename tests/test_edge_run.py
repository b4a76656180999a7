"""python -m edge.run end to end on CPU with ONNX Runtime: images, video, JSONL, robustness."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge import run as edge_run  # noqa: E402
from edge.sources import SourceLost, live_frames, open_source, video_frames  # noqa: E402

try:
    from edge_helpers import export_crowd_onnx, write_video
except ImportError:
    from tests.edge_helpers import export_crowd_onnx, write_video

ROOT = Path(__file__).resolve().parents[1]
RECORD_KEYS = {"source", "frame", "timestamp", "mode", "decision", "latency_ms"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_crowd_onnx(tmp_path_factory.mktemp("m") / "crowd.onnx", size=64, dense=True)


def _read(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _photos(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "a.png"), img)
    cv2.imwrite(str(folder / "b.jpg"), img[:33, :47])
    cv2.imwrite(str(folder / "c.bmp"), img[:, :, 0])                       # grayscale
    cv2.imwrite(str(folder / "d.png"), np.dstack([img, img[:, :, 0]]))      # RGBA
    (folder / "e.jpg").write_bytes(b"\xff\xd8 truncated")                    # corrupt
    (folder / "f.png").write_bytes(b"")                                      # empty
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_folder_of_images_jsonl_schema(model, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    rc = edge_run.main(["--model", str(model), "--source", str(_photos(tmp_path / "photos")),
                        "--output", str(out), "--threads", "1", "--summary-json", str(tmp_path / "s.json")])
    assert rc == 0
    recs = _read(out)
    assert [Path(r["source"]).name for r in recs] == ["a.png", "b.jpg", "c.bmp", "d.png", "e.jpg", "f.png"]
    good = [r for r in recs if not r.get("skipped")]
    assert len(good) == 4 and sum(bool(r.get("skipped")) for r in recs) == 2
    for r in good:
        assert RECORD_KEYS <= set(r)
        assert set(r["probabilities"]) == {"crowd", "no_crowd"}
        assert abs(sum(r["probabilities"].values()) - 1) < 1e-4
        assert {"decode", "preprocess", "infer", "total"} <= set(r["latency_ms"])
        assert set(r["decision"]) == {"safe_to_overfly", "score", "smoothed", "changed"}
        assert r["decision"]["score"] == pytest.approx(r["probabilities"]["crowd"], abs=1e-3)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 4 and summary["skipped"] == 2
    assert {"p50", "p90", "p99"} <= set(summary["latency_ms"]["total"])
    assert "summary" in capsys.readouterr().err


def test_single_image_glob_and_positive_class(model, tmp_path):
    photos = _photos(tmp_path / "p")
    out = tmp_path / "o.jsonl"
    assert edge_run.main(["--model", str(model), "--source", str(photos / "*.png"), "--output", str(out),
                          "--positive-class", "no_crowd"]) == 0
    recs = [r for r in _read(out) if not r.get("skipped")]
    assert len(recs) == 2 and recs[0]["decision"]["score"] == pytest.approx(recs[0]["probabilities"]["no_crowd"], abs=1e-3)
    assert edge_run.main(["--model", str(model), "--source", str(photos / "a.png"),
                          "--positive-class", "people"]) == 2


def test_video_with_annotated_output_and_batching(model, tmp_path):
    video = write_video(tmp_path / "footage.avi", frames=12, size=(160, 120))
    out, ann = tmp_path / "v.jsonl", tmp_path / "annotated.mp4"
    rc = edge_run.main(["--model", str(model), "--source", str(video), "--output", str(out),
                        "--save-video", str(ann), "--batch", "4", "--no-fsync"])
    assert rc == 0
    recs = _read(out)
    assert [r["frame"] for r in recs] == list(range(12))
    assert all("video_ms" in r for r in recs)
    cap = cv2.VideoCapture(str(ann))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()


def test_heatmap_mode_cli_with_overlay_images(model, tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), img)
    out = tmp_path / "h.jsonl"
    rc = edge_run.main(["--model", str(model), "--source", str(tmp_path / "frame.png"), "--mode", "heatmap",
                        "--output", str(out), "--save-images", str(tmp_path / "ann"), "--heatmap-impl", "tiles",
                        "--tile", "160", "--stride", "160"])
    assert rc == 0
    heat = _read(out)[0]["heat"]
    assert heat["impl"] == "tiles" and heat["grid_shape"] == [5, 8]
    assert (tmp_path / "ann" / "000000.jpg").is_file()
    out2 = tmp_path / "h2.jsonl"
    assert edge_run.main(["--model", str(model), "--source", str(tmp_path / "frame.png"), "--mode", "heatmap",
                          "--output", str(out2), "--no-grid"]) == 0
    heat2 = _read(out2)[0]["heat"]
    assert "grid" not in heat2 and heat2["impl"] == "dense" and heat2["grid_shape"] == [45, 80]


SCALE = {"patch_m": 25.6, "patch_m_range": [16.0, 40.0], "input_width": 64}


@pytest.fixture(scope="module")
def scaled_model(tmp_path_factory):
    """A model whose metadata records its ground scale and a calibrated decision rule."""
    from edge.contract import META_DECISION, META_SCALE

    rule = {"threshold": 0.45, "min_area": 0.3, "classify_threshold": 0.9, "source": "calibrated on val"}
    return export_crowd_onnx(tmp_path_factory.mktemp("s") / "scaled.onnx", size=64, dense=True,
                             extra_meta={META_SCALE: SCALE, META_DECISION: rule})


def _frame(tmp_path, h=720, w=1280):
    img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "frame.png"), img)
    return tmp_path / "frame.png"


def test_heatmap_tiles_from_the_camera_and_the_models_rule(scaled_model, tmp_path, capsys):
    frame, out, summ = _frame(tmp_path), tmp_path / "g.jsonl", tmp_path / "s.json"
    assert edge_run.main(["--model", str(scaled_model), "--source", str(frame), "--mode", "heatmap",
                          "--heatmap-impl", "tiles", "--gsd", "0.1", "--output", str(out),
                          "--summary-json", str(summ)]) == 0
    rec = _read(out)[0]
    assert rec["verdict"]["tile_px"] == 256                      # 25.6 m / 0.1 m per px
    assert rec["heat"]["threshold"] == 0.45                       # from the metadata
    assert rec["verdict"]["crowd"] == (rec["heat"]["area_over_threshold"] >= 0.3)
    assert rec["decision"]["score"] == rec["verdict"]["score"]
    judge = json.loads(summ.read_text())["judge"]
    assert judge["tiling"] == {"source": "gsd", "gsd": 0.1, "patch_m": 25.6}
    assert judge["rule"]["source"] == "calibrated on val"
    assert "no camera given" not in capsys.readouterr().err
    # altitude + HFOV: the tile follows the frame width; flags override the model's thresholds
    out2 = tmp_path / "a.jsonl"
    assert edge_run.main(["--model", str(scaled_model), "--source", str(frame), "--mode", "heatmap",
                          "--altitude", "30", "--hfov", "70", "--threshold", "0.6", "--min-area",
                          "0.05", "--output", str(out2)]) == 0
    rec2 = _read(out2)[0]
    assert rec2["verdict"]["tile_px"] == round(25.6 / (2 * 30 * np.tan(np.radians(35)) / 1280))
    assert rec2["heat"]["threshold"] == 0.6 and rec2["heat"]["impl"] == "dense"
    assert rec2["verdict"]["crowd"] == (rec2["heat"]["area_over_threshold"] >= 0.05)


def test_default_camera_is_said_once_and_recorded(scaled_model, tmp_path, capsys):
    frame, summ = _frame(tmp_path, 360, 640), tmp_path / "s.json"
    assert edge_run.main(["--model", str(scaled_model), "--source", str(tmp_path), "--mode", "heatmap",
                          "--loop", "--max-frames", "3", "--output", str(tmp_path / "o.jsonl"),
                          "--summary-json", str(summ)]) == 0
    assert capsys.readouterr().err.count("no camera given") == 1
    tiling = json.loads(summ.read_text())["judge"]["tiling"]
    assert tiling == {"source": "default camera", "altitude_m": 40.0, "hfov_deg": 82.0, "patch_m": 25.6}


def test_classify_rule_and_resize_from_flags(scaled_model, tmp_path):
    frame = _frame(tmp_path, 200, 600)
    runs = {}
    for policy in ("stretch", "letterbox", "center-crop"):
        out = tmp_path / f"{policy}.jsonl"
        assert edge_run.main(["--model", str(scaled_model), "--source", str(frame), "--resize", policy,
                              "--output", str(out), "--summary-json", str(tmp_path / "s.json")]) == 0
        runs[policy] = _read(out)[0]
        assert json.loads((tmp_path / "s.json").read_text())["judge"]["resize"] == policy
    assert len({r["probabilities"]["crowd"] for r in runs.values()}) == 3     # three different inputs
    for r in runs.values():                       # the model's classify threshold (0.9) decides
        p = r["probabilities"]["crowd"]
        assert r["verdict"]["crowd"] == (p >= 0.9)
        want = 0.5 * p / 0.9 if p < 0.9 else 0.5 + 0.5 * (p - 0.9) / 0.1
        assert r["verdict"]["score"] == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("flags,needle", [
    (["--altitude", "40"], "--altitude and --hfov go together"),
    (["--gsd", "0.1", "--tile", "100"], "give one of"),
    (["--threshold", "1.5"], "--threshold 1.5: must be a number in (0, 1)"),
    (["--min-area", "0"], "min_area must be in (0, 1)"),
    (["--tile", "0"], "--tile 0: must be an integer >= 1"),
])
def test_bad_scale_and_decision_flags_exit_2(scaled_model, tmp_path, capsys, flags, needle):
    out = tmp_path / "never.jsonl"
    assert edge_run.main(["--model", str(scaled_model), "--source", str(_frame(tmp_path)), "--mode",
                          "heatmap", "--output", str(out)] + flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_gsd_needs_a_model_with_a_scale(model, tmp_path, capsys):
    assert edge_run.main(["--model", str(model), "--source", str(_frame(tmp_path)), "--mode", "heatmap",
                          "--gsd", "0.05"]) == 2
    assert "records no ground scale" in capsys.readouterr().err


def test_missing_source_and_model_exit_2(model, tmp_path, capsys):
    assert edge_run.main(["--model", str(model), "--source", str(tmp_path / "nope.mp4")]) == 2
    assert "source not found" in capsys.readouterr().err
    assert edge_run.main(["--model", str(tmp_path / "none.onnx"), "--source", "x"]) == 2
    assert edge_run.main(["--model", str(model), "--source", "x", "--backend", "ort-cuda"]) == 2
    assert "CUDAExecutionProvider" in capsys.readouterr().err


class FakeCapture:
    """A VideoCapture stand-in that plays a script of read() results."""

    def __init__(self, script, opened=True, total=0):
        self.script, self.opened, self.total = list(script), opened, total

    def isOpened(self):
        return self.opened

    def read(self):
        return self.script.pop(0) if self.script else (False, None)

    def get(self, prop):
        return self.total if prop == cv2.CAP_PROP_FRAME_COUNT else 0.0

    def release(self):
        self.opened = False


def test_corrupt_video_frames_are_skipped_and_counted():
    img = np.zeros((8, 8, 3), np.uint8)
    script = [(True, img), (False, None), (True, None), (True, np.zeros((0, 8, 3), np.uint8)), (True, img)]
    frames = list(video_frames("v.mp4", capture_factory=lambda s: FakeCapture(script, total=5)))
    assert [f.image is None for f in frames] == [False, True, True, True, False]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]


def test_truncated_video_file_ends_cleanly(model, tmp_path):
    video = write_video(tmp_path / "cut.avi", frames=20, size=(160, 120))
    data = video.read_bytes()
    video.write_bytes(data[: len(data) // 2])
    out = tmp_path / "t.jsonl"
    assert edge_run.main(["--model", str(model), "--source", str(video), "--output", str(out), "--no-fsync"]) == 0
    assert 1 <= len([r for r in _read(out) if not r.get("skipped")]) < 20


def test_live_source_reconnects_then_gives_up():
    img = np.zeros((8, 8, 3), np.uint8)
    opens = []

    def open_capture():
        opens.append(1)
        if len(opens) == 1:
            return FakeCapture([(True, img), (True, img)])      # then drops
        if len(opens) == 3:
            return FakeCapture([(True, img)])                   # comes back once, drops again
        return FakeCapture([], opened=False)

    sleeps = []
    it = live_frames("rtsp://cam", open_capture, reconnect_timeout=0.05, backoff=0.01,
                     sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    got = []
    with pytest.raises(SourceLost, match="did not come back"):
        for f in it:
            got.append(f)
    good = [f for f in got if f.image is not None]
    assert len(good) == 3 and len(opens) >= 4
    assert [f.error for f in got if f.image is None] == ["source dropped; reconnecting"] * 2
    assert sleeps and all(a <= b for a, b in zip(sleeps, sleeps[1:]))   # back-off never shrinks


def test_camera_that_never_opens_exits_3(model, capsys):
    # no /dev/video99 here: V4L2 cannot open it, so after the timeout the run fails with status 3
    rc = edge_run.main(["--model", str(model), "--source", "/dev/video99", "--reconnect-timeout", "0.3"])
    assert rc == 3
    assert "reconnect-timeout" in capsys.readouterr().err


def test_sigterm_ends_cleanly_with_summary(model, tmp_path):
    out = tmp_path / "live.jsonl"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "edge.run", "--model", str(model), "--source",
                             "synthetic://320x240", "--output", str(out), "--no-fsync", "--threads", "1"],
                            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 30
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 5):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    summary = json.loads([l for l in err.splitlines() if l.startswith('{"summary"')][-1])["summary"]
    assert summary["stopped_by"] == "signal SIGTERM" and summary["frames"] >= 5
    lines = out.read_text().splitlines()
    json.loads(lines[-1])                  # the last record is complete
    assert len(lines) == summary["frames"] + summary["skipped"]


def test_open_source_dispatch(tmp_path):
    from edge.sources import SourceError

    with pytest.raises(SourceError, match="not found"):
        open_source(str(tmp_path / "missing"))
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "*.png"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="has no images"):
        open_source(str(tmp_path / "empty"))
    frames = list(open_source("synthetic://32x24?frames=3"))
    assert len(frames) == 3 and frames[0].image.shape == (24, 32, 3)
