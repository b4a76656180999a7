"""Probes of ``edge.run`` and ``edge.bench`` as a hostile, careful user: every bad value, path and
model exits 2 (3 for a lost live source) with ONE line on stderr naming the bad value and what is
allowed, no traceback, and no output file created or changed. Then the failures that must NOT
stop a run: a full disk under the JSONL, an image folder that stops taking files, NaN outputs,
and the display window's q (one stopping path)."""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")

from edge import bench as edge_bench  # noqa: E402
from edge import run as edge_run  # noqa: E402
from edge.contract import META_CLASS_NAMES, META_INPUT_SIZE, META_PREPROCESS  # noqa: E402
from edge.files import current_umask  # noqa: E402

try:
    from edge_helpers import build_crowd_model, export_crowd_onnx
except ImportError:
    from tests.edge_helpers import build_crowd_model, export_crowd_onnx

SOURCE = "synthetic://64x48?frames=3"


# --- fixtures: one tiny model, and bad variants made from it --------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    good = export_crowd_onnx(d / "good.onnx", size=32, dense=False)
    data = good.read_bytes()
    out = {"good": good}

    def write(name, blob):
        out[name] = d / name
        out[name].write_bytes(blob)

    write("truncated.onnx", data[: len(data) // 2])
    write("random.onnx", np.random.default_rng(0).bytes(4096))
    write("empty.onnx", b"")
    import torch

    torch.save({"state_dict": {}}, d / "model.pt")
    out["model.pt"] = d / "model.pt"
    out["size.onnx"] = _with_metadata(good, d / "size.onnx", {
        META_INPUT_SIZE: [64, 64],
        META_PREPROCESS: {"size": [64, 64], "mean": [0.5] * 3, "std": [0.25] * 3,
                          "channel_order": "RGB", "resize": "stretch"}})
    out["gray.onnx"] = _with_metadata(good, d / "gray.onnx", {
        META_PREPROCESS: {"size": [32, 32], "mean": [0.5], "std": [0.25], "channel_order": "GRAY",
                          "resize": "stretch"}})
    out["fewer.onnx"] = _with_metadata(good, d / "fewer.onnx", {META_CLASS_NAMES: ["crowd"]})
    out["more.onnx"] = _with_metadata(good, d / "more.onnx",
                                      {META_CLASS_NAMES: ["crowd", "no_crowd", "other"]})
    out["nometa.onnx"] = _with_metadata(good, d / "nometa.onnx", None)
    nan_net = build_crowd_model(0)
    with torch.no_grad():
        next(nan_net.parameters()).fill_(float("nan"))
    out["nan.onnx"] = export_crowd_onnx(d / "nan.onnx", size=32, dense=False, model=nan_net)
    return out


def _with_metadata(src: Path, dst: Path, changes) -> Path:
    m = onnx.load(str(src))
    props = {p.key: p.value for p in m.metadata_props}
    if changes is None:
        props = {}
    else:
        props.update({k: json.dumps(v) for k, v in changes.items()})
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(dst))
    return dst


def _snapshot(root: Path) -> dict:
    """Every file and folder under ``root`` with its size and content hash."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _unwritable(tmp_path: Path) -> Path:
    """A folder no file can be created in: a read-only folder, or /sys for root (root ignores
    permission bits; /sys refuses new files to everyone)."""
    if os.geteuid() == 0:
        return Path("/sys")
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    return d


def _call(main, argv):
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:                 # argparse's own errors
        return e.code


def _assert_one_clear_line(err: str, *needles: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0], err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# --- edge.run: bad values ----------------------------------------------------------------------
RUN_VALUES = [
    (["--max-frames", "-1"], ["--max-frames -1", "integer >= 1"]),
    (["--max-frames", "0"], ["--max-frames 0", "integer >= 1"]),
    (["--threshold", "nan"], ["--threshold nan", "(0, 1)"]),
    (["--threshold", "1.5"], ["--threshold 1.5", "(0, 1)"]),
    (["--threshold", "0"], ["--threshold 0", "(0, 1)"]),
    (["--tile", "0"], ["--tile 0", "integer >= 1"]),
    (["--tile", "-3"], ["--tile -3", "integer >= 1"]),
    (["--stride", "0"], ["--stride 0", "integer >= 1"]),
    (["--threads", "-1"], ["--threads -1", "integer >= 1"]),
    (["--threads", "0"], ["--threads 0", "integer >= 1"]),
    (["--threads", "two"], ["--threads", "invalid int value: 'two'"]),
    (["--batch", "0"], ["--batch 0", "integer >= 1"]),
    (["--tile-batch", "0"], ["--tile-batch 0", "integer >= 1"]),
    (["--queue-size", "0"], ["--queue-size 0", "integer >= 1"]),
    (["--hold", "0"], ["--hold 0", "integer >= 1"]),
    (["--smooth", "0"], ["--smooth 0", "(0, 1]"]),
    (["--smooth", "nan"], ["--smooth nan", "(0, 1]"]),
    (["--unsafe-above", "2"], ["--unsafe-above 2", "[0, 1]"]),
    (["--safe-below", "-0.1"], ["--safe-below -0.1", "[0, 1]"]),
    (["--safe-below", "0.9"], ["--safe-below 0.9", "--unsafe-above 0.5"]),
    (["--reconnect-timeout", "nan"], ["--reconnect-timeout nan", "> 0"]),
    (["--reconnect-timeout", "inf"], ["--reconnect-timeout inf", "> 0"]),
    (["--reconnect-timeout", "0"], ["--reconnect-timeout 0", "> 0"]),
    (["--reconnect-timeout", "-5"], ["--reconnect-timeout -5", "> 0"]),
    (["--csi-size", "0", "720"], ["--csi-size 0 720", "integers in 1..8192"]),
    (["--csi-fps", "0"], ["--csi-fps 0", "integer >= 1"]),
    (["--video-fps", "0"], ["--video-fps 0", "> 0"]),
    (["--video-fps", "nan"], ["--video-fps nan", "> 0"]),
    (["--mode", "bogus"], ["--mode", "invalid choice: 'bogus'"]),
    (["--source", "synthetic://0x0"], ["synthetic://0x0", "1..8192"]),
    (["--source", "synthetic://100000x10"], ["synthetic://100000x10", "1..8192"]),
    (["--source", "synthetic://32x32?frames=0"], ["frames=0", "frames must be >= 1"]),
    (["--source", "nowhere/*.png"], ["nowhere/*.png", "no images match"]),
    (["--positive-class", "tree"], ["'tree'", "--positive-class"]),
]


@pytest.fixture
def run_base(models, tmp_path):
    """A valid edge.run command writing every kind of output under tmp_path/out."""
    out = tmp_path / "out"
    out.mkdir()
    return ["--model", models["good"], "--source", SOURCE, "--threads", "1", "--no-fsync",
            "--output", out / "flight.jsonl", "--summary-json", out / "summary.json",
            "--save-images", out / "frames"]


def test_the_base_command_works_and_writes(run_base, tmp_path, capsys):
    """The probes below change one value of this command: it runs and creates every output,
    so a probe that leaves the folder unchanged really wrote nothing."""
    assert _call(edge_run.main, run_base) == 0, capsys.readouterr().err
    names = set(_snapshot(tmp_path / "out"))
    assert {"flight.jsonl", "summary.json", "frames"} <= names and len(names) == 3 + 3


@pytest.mark.parametrize("extra,needles", RUN_VALUES, ids=[" ".join(e) for e, _ in RUN_VALUES])
def test_run_bad_values(run_base, extra, needles, tmp_path, capsys):
    before = _snapshot(tmp_path)
    assert _call(edge_run.main, run_base + extra) == 2
    _assert_one_clear_line(capsys.readouterr().err, *needles)
    assert _snapshot(tmp_path) == before


def _path_cases(tmp_path: Path):
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me\n")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    ro = _unwritable(tmp_path)
    return {
        "output-is-folder": (["--output", folder], [f"--output {folder} is a folder"]),
        "output-under-file": (["--output", a_file / "x.jsonl"], [str(a_file), "is a file"]),
        "output-unwritable": (["--output", ro / "x.jsonl"], [f"cannot create files in {ro}"]),
        "summary-is-folder": (["--summary-json", folder], [f"--summary-json {folder} is a folder"]),
        "summary-under-file": (["--summary-json", a_file / "s" / "s.json"], [str(a_file), "is a file"]),
        "summary-unwritable": (["--summary-json", ro / "s.json"], [f"cannot create files in {ro}"]),
        "images-is-file": (["--save-images", a_file], [f"--save-images {a_file} is a file"]),
        "images-under-file": (["--save-images", a_file / "frames"], [str(a_file), "is a file"]),
        "images-unwritable": (["--save-images", ro / "frames"], [f"cannot create files in {ro}"]),
        "video-is-folder": (["--save-video", folder], [f"--save-video {folder} is a folder"]),
    }


PATH_CASES = ["output-is-folder", "output-under-file", "output-unwritable", "summary-is-folder",
              "summary-under-file", "summary-unwritable", "images-is-file", "images-under-file",
              "images-unwritable", "video-is-folder"]


@pytest.mark.parametrize("case", PATH_CASES)
def test_run_bad_output_paths(run_base, case, tmp_path, capsys):
    extra, needles = _path_cases(tmp_path)[case]
    before = _snapshot(tmp_path)
    assert _call(edge_run.main, run_base + extra) == 2
    _assert_one_clear_line(capsys.readouterr().err, *needles)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("flag", ["--output", "--summary-json", "--save-video"])
@pytest.mark.parametrize("target", ["model", "source"])
def test_run_outputs_never_overwrite_the_model_or_the_source(models, flag, target, tmp_path,
                                                             capsys):
    """An output given the model's or the source image's name is refused (it used to append
    the JSONL to the ONNX, or replace it or the image with the summary or the video)."""
    model = tmp_path / "model.onnx"
    model.write_bytes(models["good"].read_bytes())
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((48, 64, 3), np.uint8))
    path = model if target == "model" else image
    before = _snapshot(tmp_path)
    argv = ["--model", model, "--source", image, "--threads", "1", flag, path]
    assert _call(edge_run.main, argv) == 2
    _assert_one_clear_line(capsys.readouterr().err, f"{flag} {path} is --{target}", "destroy")
    assert _snapshot(tmp_path) == before


def test_run_save_images_never_overwrites_frames_or_the_source_folder(models, tmp_path, capsys):
    """--save-images into a folder that already holds frames of an earlier run (000001.jpg...),
    or into the folder of frames being read, is refused before any frame is written (it used to
    replace them one by one); an empty folder takes whole JPEGs and no temporary file stays."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in (0, 1):
        cv2.imwrite(str(frames / f"{i:06d}.jpg"), np.full((48, 64, 3), 40 * (i + 1), np.uint8))
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "000001.jpg").write_bytes((frames / "000001.jpg").read_bytes())
    (earlier / "notes.txt").write_text("mine\n")
    base = ["--model", models["good"], "--source", frames, "--threads", "1", "--no-fsync",
            "--output", tmp_path / "flight.jsonl"]
    before = _snapshot(tmp_path)
    assert _call(edge_run.main, base + ["--save-images", earlier]) == 2
    _assert_one_clear_line(capsys.readouterr().err, f"--save-images {earlier} already holds frames",
                           "000001.jpg")
    assert _call(edge_run.main, base + ["--save-images", frames]) == 2
    _assert_one_clear_line(capsys.readouterr().err, f"--save-images {frames} is --source")
    assert _snapshot(tmp_path) == before

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "notes.txt").write_text("mine\n")           # other files do not count as frames
    assert _call(edge_run.main, base + ["--save-images", fresh]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in fresh.iterdir()) == ["000000.jpg", "000001.jpg", "notes.txt"]
    for name in ("000000.jpg", "000001.jpg"):
        assert cv2.imread(str(fresh / name)).shape == (48, 64, 3)
        assert oct((fresh / name).stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


# --- bad models: edge.run and edge.bench -------------------------------------------------------
MODEL_CASES = [
    ("truncated.onnx", "is not a readable ONNX model"),
    ("random.onnx", "is not a readable ONNX model"),
    ("empty.onnx", "is empty"),
    ("model.pt", "is a PyTorch checkpoint"),
    ("size.onnx", "graph takes 3x32x32 (height 32 != 64)"),
    ("gray.onnx", "graph takes 3x32x32 (channels 3 != 1)"),
    ("fewer.onnx", "metadata names 1 classes"),
    ("more.onnx", "metadata names 3 classes"),
    ("nometa.onnx", "metadata lacks"),
    ("missing.onnx", "model not found"),
]


@pytest.mark.parametrize("name,needle", MODEL_CASES)
@pytest.mark.parametrize("cli", ["run", "bench"])
def test_bad_models(models, name, needle, cli, run_base, tmp_path, capfd):
    model = models.get(name, tmp_path / name)
    if cli == "run":
        argv, main = ["--model", model] + run_base[2:], edge_run.main
    else:
        argv, main = ["--model", model, "--iters", "1", "--json", tmp_path / "out" / "b.json"], \
            edge_bench.main
    before = _snapshot(tmp_path)
    assert _call(main, argv) == 2
    err = capfd.readouterr().err              # fd level: the runtime's own logging counts too
    _assert_one_clear_line(err, str(model), needle)
    assert _snapshot(tmp_path) == before


# --- edge.bench: bad values ----------------------------------------------------------------------
BENCH_VALUES = [
    (["--batch", "0"], ["--batch 0", "integers in 1..4096"]),
    (["--batch", "1", "-8"], ["--batch 1 -8", "integers in 1..4096"]),
    (["--iters", "0"], ["--iters 0", "integer >= 1"]),
    (["--iters", "-1"], ["--iters -1", "integer >= 1"]),
    (["--warmup", "-1"], ["--warmup -1", "integer >= 0"]),
    (["--threads", "-1"], ["--threads -1", "integer >= 1"]),
    (["--pipeline-frames", "-1"], ["--pipeline-frames -1", "integer >= 0"]),
    (["--pipeline-size", "0", "10"], ["--pipeline-size 0 10", "integers in 1..8192"]),
    (["--backend", "cuda"], ["--backend", "invalid choice: 'cuda'"]),
]


@pytest.fixture
def bench_base(models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return ["--model", models["good"], "--backend", "ort-cpu", "--threads", "1", "--warmup", "0",
            "--iters", "2", "--pipeline-frames", "0", "--json", out / "bench.json"]


def test_bench_base_command_works(bench_base, tmp_path, capsys):
    assert _call(edge_bench.main, bench_base) == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert doc["batches"][0]["throughput_ips"] > 0


@pytest.mark.parametrize("extra,needles", BENCH_VALUES, ids=[" ".join(e) for e, _ in BENCH_VALUES])
def test_bench_bad_values(bench_base, extra, needles, tmp_path, capsys):
    before = _snapshot(tmp_path)
    assert _call(edge_bench.main, bench_base + extra) == 2
    _assert_one_clear_line(capsys.readouterr().err, *needles)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["is-folder", "under-file", "unwritable"])
def test_bench_bad_json_path(bench_base, case, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    path = {"is-folder": tmp_path / "out", "under-file": a_file / "b.json",
            "unwritable": _unwritable(tmp_path) / "b.json"}[case]
    before = _snapshot(tmp_path)
    assert _call(edge_bench.main, bench_base + ["--json", path]) == 2
    _assert_one_clear_line(capsys.readouterr().err, "--json")
    assert _snapshot(tmp_path) == before


def test_bench_json_never_overwrites_the_model(models, tmp_path, capsys):
    model = tmp_path / "model.onnx"
    model.write_bytes(models["good"].read_bytes())
    before = _snapshot(tmp_path)
    assert _call(edge_bench.main, ["--model", model, "--iters", "1", "--json", model]) == 2
    _assert_one_clear_line(capsys.readouterr().err, f"--json {model} is --model", "destroy")
    assert _snapshot(tmp_path) == before


# --- failures that must not stop the decisions ---------------------------------------------------
def _summary(err: str) -> dict:
    return json.loads([l for l in err.splitlines() if l.startswith('{"summary"')][-1])["summary"]


def test_full_disk_under_the_jsonl_mid_run(models, tmp_path, capsys, monkeypatch):
    """ENOSPC after 5 records, with half a line already on disk: all 20 frames are still
    decided, logging stops once with one warning, the log is cut back to whole lines, and the
    15 lost records are counted."""
    out = tmp_path / "flight.jsonl"
    real_write, written = os.write, []

    def full_disk(fd, data):
        if os.path.realpath(f"/proc/self/fd/{fd}") != str(out.resolve()):
            return real_write(fd, data)
        if len(written) >= 5:
            real_write(fd, bytes(data[:17]))          # a partial line, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(1)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    rc = edge_run.main(["--model", str(models["good"]), "--source", "synthetic://64x48?frames=20",
                        "--threads", "1", "--output", str(out)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert rc == 0, err
    s = _summary(err)
    assert s["frames"] == 20 and s["records_lost"] == 15
    assert "No space left on device" in s["output_errors"][0]
    assert sum("logging stopped" in l for l in err.splitlines()) == 1
    lines = out.read_text().splitlines()
    assert len(lines) == 5 and [json.loads(l)["frame"] for l in lines] == [0, 1, 2, 3, 4]


def test_full_disk_from_the_start(models, capsys):
    """/dev/full: every write is ENOSPC."""
    rc = edge_run.main(["--model", str(models["good"]), "--source", "synthetic://64x48?frames=6",
                        "--threads", "1", "--output", "/dev/full"])
    err = capsys.readouterr().err
    assert rc == 0, err
    s = _summary(err)
    assert s["frames"] == 6 and s["records_lost"] == 6
    assert sum("logging stopped" in l for l in err.splitlines()) == 1


def test_a_device_as_output_is_written_without_fsync(models, capsys):
    """/dev/null takes writes but refuses fsync (EINVAL): that is not a logging failure."""
    rc = edge_run.main(["--model", str(models["good"]), "--source", "synthetic://64x48?frames=4",
                        "--threads", "1", "--output", "/dev/null"])
    err = capsys.readouterr().err
    assert rc == 0 and "warning" not in err, err
    assert _summary(err)["records_lost"] == 0


def test_image_folder_failing_mid_run_keeps_deciding(models, tmp_path, capsys, monkeypatch):
    real, calls = cv2.imencode, []

    def flaky(ext, img, *a):
        calls.append(ext)
        return real(ext, img, *a) if len(calls) <= 2 else (False, None)

    monkeypatch.setattr(cv2, "imencode", flaky)
    out = tmp_path / "flight.jsonl"
    rc = edge_run.main(["--model", str(models["good"]), "--source", "synthetic://64x48?frames=8",
                        "--threads", "1", "--output", str(out), "--no-fsync",
                        "--save-images", str(tmp_path / "frames")])
    err = capsys.readouterr().err
    assert rc == 0, err
    s = _summary(err)
    assert s["frames"] == 8 and len(out.read_text().splitlines()) == 8
    assert any(e.startswith("--save-images") for e in s["output_errors"])
    assert sum("--save-images stopped" in l for l in err.splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["000000.jpg", "000001.jpg"]


def test_nan_outputs_are_recorded_as_invalid_frames(models, tmp_path, capsys):
    out = tmp_path / "flight.jsonl"
    rc = edge_run.main(["--model", str(models["nan.onnx"]), "--source", "synthetic://64x48?frames=5",
                        "--threads", "1", "--output", str(out), "--no-fsync"])
    err = capsys.readouterr().err
    assert rc == 0, err
    recs = [json.loads(l) for l in out.read_text().splitlines()]       # valid JSON, no NaN
    assert len(recs) == 5 and all(r["skipped"] and "NaN" in r["error"] for r in recs)
    s = _summary(err)
    assert s["invalid_outputs"] == 5 and s["frames"] == 0
    assert s["final_decision"] == {"safe_to_overfly": False}            # nothing was decided


class FakeWindow:
    """--display without a screen: the user presses q on the third frame."""

    shown = 0

    def __init__(self, *a) -> None:
        FakeWindow.shown = 0

    def show(self, frame) -> bool:
        FakeWindow.shown += 1
        return FakeWindow.shown < 3

    def close(self) -> None:
        return None


def test_window_q_stops_an_endless_live_run(models, capsys, monkeypatch):
    monkeypatch.setattr(edge_run, "Window", FakeWindow)
    # --max-frames only bounds the test if q were ignored (the stream is endless)
    rc = edge_run.main(["--model", str(models["good"]), "--source", "synthetic://64x48",
                        "--threads", "1", "--display", "--max-frames", "300"])
    err = capsys.readouterr().err
    assert rc == 0, err
    s = _summary(err)
    assert s["stopped_by"] == "window closed"
    assert 3 <= s["frames"] <= 3 + 2 * 4 + 2       # what was already queued still finishes
