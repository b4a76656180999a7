"""``python -m edge.selftest`` on a machine without a GPU: the CPU parts run, every GPU part is
skipped with its reason, the report (JSON + Markdown) is written, failures are counted.
The GPU parts run where a GPU is (the device acceptance run itself)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edge import selftest as T

try:
    from test_ort_backend import tiny_onnx
except ImportError:
    from tests.test_ort_backend import tiny_onnx

pytestmark = pytest.mark.skipif(T.engines_possible(T.gpu_status()) is None,
                                reason="TensorRT and a GPU are here: run the real self-test")
QUICK = ["--batches", "1", "2", "--warmup", "0", "--iters", "2", "--video-frames", "2",
         "--cpu-frames", "2", "--video-size", "64", "48"]


def test_cpu_run_skips_gpu_parts_with_reasons(tmp_path):
    fp32 = tiny_onnx(tmp_path / "crowd.onnx")
    q = tiny_onnx(tmp_path / "crowd.int8.onnx", qdq=True, precision="int8")
    out = tmp_path / "r" / "report.json"
    assert T.main(["--out", str(out), "--model", str(fp32), "--model", str(q), *QUICK]) == 0
    doc = json.loads(out.read_text())
    status = {s["step"]: s["status"] for s in doc["steps"]}
    assert status["models"] == "ok" and status["latency crowd"] == "ok"
    assert status["heatmap crowd"] == "ok" and status["video"] == "ok"
    reasons = {s["step"]: s.get("reason", "") for s in doc["steps"]}
    assert "TensorRT" in reasons["pytest -m trt"] and status["pytest -m trt"] == "skipped"
    assert status["memory table"] == "skipped" and reasons["memory table"]
    assert all(e["status"] == "skipped" and e["reason"] for e in doc["engines"]["crowd"].values())
    rows = {(r["backend"], r["precision"]): r for r in doc["latency"]}
    cpu = rows[("ORT-CPU", "fp32")]
    assert cpu["status"] == "ok" and [r["batch"] for r in cpu["rows"]] == [1, 2]
    assert cpu["describe"]["provider"] == "CPUExecutionProvider"
    for key in (("TensorRT", "fp16"), ("ORT-TensorRT", "int8"), ("ORT-CUDA", "fp32")):
        assert rows[key]["status"] == "skipped" and rows[key]["reason"], key
    heat = {(r["backend"], r["precision"]): r for r in doc["heatmap"]}[("ORT-CPU", "fp32")]
    assert heat["frames"] == 2 and heat["fps"] > 0 and heat["frame_size"] == [64, 48]
    md = out.with_suffix(".md").read_text()
    assert "| ORT-CPU | fp32 | 2 |" in md and "## End-to-end heatmap" in md and "skipped" in md
    assert doc["failed"] == [] and doc["environment"]["onnxruntime"] != "n/a"
    assert (tmp_path / "crowd.onnx").read_bytes() == (tmp_path / "r" / "report.selftest" / "crowd"
                                                      / "crowd.onnx").read_bytes()  # a copy


def test_a_failure_is_reported_and_exits_1(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\xff" * 16)
    out = tmp_path / "report.json"
    assert T.main(["--out", str(out), "--model", str(junk), *QUICK]) == 1
    doc = json.loads(out.read_text())
    step = doc["steps"][0]
    assert step["step"] == "models" and step["status"] == "failed" and "junk.onnx" in step["reason"]
    assert doc["failed"] == ["step models"]


def test_time_budget_skips_what_is_left(tmp_path):
    out = tmp_path / "report.json"
    assert T.main(["--out", str(out), "--model", str(tiny_onnx(tmp_path / "m.onnx")),
                   "--budget-s", "0", *QUICK]) == 0
    doc = json.loads(out.read_text())
    assert {s["status"] for s in doc["steps"]} == {"skipped"}
    assert all("time budget" in s["reason"] for s in doc["steps"])


@pytest.mark.parametrize("argv,needle", [
    (["--model", "absent.onnx"], "absent.onnx"),
    (["--model", "m.txt"], "m.txt"),
    (["--batches", "64"], "--batches"),
    (["--iters", "0"], "--iters"),
    (["--calib-data", "nowhere"], "--calib-data"),
    (["--out", "/proc/report.json"], "--out /proc/report.json: cannot create files in /proc"),
    (["--work", "m.txt"], "is a file; give a folder"),
])
def test_bad_arguments_exit_2_and_create_nothing(tmp_path, capsys, argv, needle):
    (tmp_path / "m.txt").write_text("x")
    out = tmp_path / "sub" / "report.json"
    args = ["--out", str(out)] + [str(tmp_path / a) if a.endswith((".onnx", ".txt")) else a
                                  for a in argv]
    assert T.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert not (tmp_path / "sub").exists()


def test_recipes_and_export_plan(tmp_path):
    cmd = T.train_command("crowd_fcn", tmp_path / "c")
    assert cmd[:3] == [sys.executable, "-m", "train"] and "crowd_synth" in cmd and "--overwrite" in cmd
    pt = T.Model("crowd", tmp_path / "model.pt")
    assert [p for p, _ in T.export_plan(pt, None)] == ["int8", "fp32", "fp16"]   # .pt first
    onnx = T.Model("crowd", tmp_path / "m.onnx", onnx=tmp_path / "m.onnx")
    assert T.export_plan(onnx, None)[-1] == ("int8", None)        # needs --calib-data
    assert T.export_plan(onnx, "DIR")[-1] == ("int8", tmp_path / "m.onnx")
    cmd = T.export_command(tmp_path / "m.onnx", "int8", tmp_path / "e.engine", "DIR")
    i = cmd.index("--min-batch")
    assert cmd[i:i + 6] == ["--min-batch", "1", "--opt-batch", "8", "--max-batch", "32"]
    assert cmd[-2:] == ["--calib-data", "DIR"]


def test_gate_lines_from_export_output():
    out = ("wrote m.onnx\n[PASS] ONNX Runtime CPU vs PyTorch: 64 samples\n    max |delta| 1e-7\n"
           "building ...\n[FAIL] TensorRT fp16 engine vs ONNX Runtime fp32 (logits): 64\n    max |delta| 0.2\n")
    assert T.gate_lines(out) == ["[PASS] ONNX Runtime CPU vs PyTorch: 64 samples max |delta| 1e-7",
                                 "[FAIL] TensorRT fp16 engine vs ONNX Runtime fp32 (logits): 64 max |delta| 0.2"]


def test_selftest_imports_neither_torch_nor_train():
    import subprocess

    code = ("import sys, edge.selftest; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'train', 'export', 'profiling')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(Path(T.__file__).parents[1]))
