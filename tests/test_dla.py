"""DLA honesty (docs/tensorrt.md, "DLA"): requests no device can honour are refused before
anything is written, and the sidecar records which layers run where as far as TensorRT tells."""
from __future__ import annotations

import json

import pytest

from export.trt_build import dla_allowed, dla_layer_report, dla_request_problem


@pytest.mark.parametrize("precision,batches,version,qdq,needle", [
    ("fp16", (1, 8, 8), None, False, "static shape"),            # dynamic profile
    ("fp16", (1, 1, 8), "10.3.0", False, "--min-batch 8 --opt-batch 8 --max-batch 8"),
    ("int8", (4, 4, 4), "8.5.2", True, "Q/DQ"),                   # JetPack 5.1
    ("int8", (4, 4, 4), "8.6.2", True, "Q/DQ"),                   # JetPack 6.0
    ("fp32", (1, 1, 1), None, False, "fp16 or int8"),
    ("fp16", (8, 8, 8), "11.1.0", False, "11.0-11.3"),
    ("fp16", (8, 8, 8), "10.2.0", False, "10.2.0"),
])
def test_refused_requests(precision, batches, version, qdq, needle):
    problem = dla_request_problem(precision, batches, version, qdq)
    assert problem and needle in problem


@pytest.mark.parametrize("precision,batches,version,qdq", [
    ("fp16", (8, 8, 8), "8.5.2", False),     # fp16 on 8.x is fine
    ("int8", (1, 1, 1), "10.3.0", True),     # Q/DQ on DLA from 10
    ("int8", (4, 4, 4), None, True),         # TensorRT unknown here: decided on the target
])
def test_honourable_requests(precision, batches, version, qdq):
    assert dla_request_problem(precision, batches, version, qdq) is None


def test_device_gate_includes_the_request():
    assert dla_allowed("10.3.0", 2, 1, "fp16", batches=(8, 8, 8)) == (True, "DLA core 1 with GPU fallback")
    ok, why = dla_allowed("10.3.0", 2, 0, "fp16", batches=(1, 8, 8))
    assert not ok and "static shape" in why
    ok, why = dla_allowed("8.6.2", 2, 0, "int8", batches=(1, 1, 1), qdq=True)
    assert not ok and "Q/DQ" in why


def test_cli_refuses_before_writing_anything(tmp_path, capsys):
    from export.trt import main

    src = tmp_path / "model.onnx"
    src.write_bytes(b"never read")
    assert main([str(src), "--precision", "fp16", "--dla", "0", "--max-batch", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--dla 0: DLA needs a static shape" in err[0]
    assert main([str(src), "--precision", "fp32", "--dla", "1"]) == 2
    assert "fp16 or int8" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


BUILDER = {"conv1": True, "relu1": True, "softmax": False}


def test_layer_report_from_a_detailed_inspector():
    info = json.dumps({"Layers": [{"Name": "{ForeignNode[conv1...relu1]}", "LayerType": "DLA"},
                                  {"Name": "softmax", "LayerType": "SoftMax"}],
                       "Bindings": ["input", "logits"]})
    r = dla_layer_report(BUILDER, info)
    assert r["builder"] == {"layers": 3, "dla": 2, "gpu_fallback": ["softmax"]}
    assert r["engine"]["known"] and r["engine"]["dla"] == ["{ForeignNode[conv1...relu1]}"]
    assert r["engine"]["gpu"] == ["softmax"] and r["engine"]["layers"] == 2


@pytest.mark.parametrize("info,why", [
    (json.dumps({"Layers": ["conv1", "softmax"], "Bindings": []}), "layer names only"),
    (None, "no engine inspector output"),
    ("not json", "no engine inspector output"),
])
def test_layer_report_never_guesses(info, why):
    r = dla_layer_report(BUILDER, info)
    assert r["engine"]["known"] is False and why in r["engine"]["why"]
    assert "dla" not in r["engine"]


def test_placement_is_printed_with_warnings(capsys):
    from export.trt import print_dla_placement

    print_dla_placement("DLA core 0 with GPU fallback", dla_layer_report(BUILDER, None))
    out, err = capsys.readouterr()
    assert "2 of 3 layers on DLA" in out and "placement unknown" in out
    assert "1 layer(s) fall back to the GPU: softmax" in err
    print_dla_placement("DLA core 0 with GPU fallback", dla_layer_report({"a": False}, None))
    assert "runs entirely on the GPU" in capsys.readouterr().err
