"""The one engine runner (edge.backends.trt.TrtBackend) without a GPU: how a batch is cut into
calls inside the engine's profile (chunks of its maximum, the last padded up to its minimum,
padding dropped), and export's engine gate comparing every named output through that class.

No TensorRT result is imitated here: ``_run`` (the single call that needs a GPU) is replaced by
a per-sample function, so what is tested is the batching around it; and the gate test checks
the gate's bookkeeping (every output compared, a bad one named), not an engine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.backends.trt import TrtBackend, batch_chunks, pad_batch

CHW = (3, 4, 4)


def per_sample(x: np.ndarray) -> dict:
    """A stand-in for one engine call whose outputs depend on each sample alone."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    return {"logits": np.stack([flat.sum(1), flat.max(1)], 1).astype(np.float32),
            "probabilities": flat[:, :5].astype(np.float32)}


def fake_runner(min_batch: int, max_batch: int):
    b = object.__new__(TrtBackend)          # no __init__: nothing of TensorRT or CUDA is touched
    b.path, b.input_shape_chw = Path("x.engine"), CHW
    b.min_batch, b.max_batch, b.outputs = min_batch, max_batch, ["logits", "probabilities"]
    b.calls = []

    def run(x, names):
        assert min_batch <= len(x) <= max_batch, f"batch {len(x)} sent outside the profile"
        b.calls.append(len(x))
        out = per_sample(x)
        return {n: out[n] for n in names}

    b._run = run
    return b


@pytest.mark.parametrize("min_batch,max_batch", [(1, 1), (1, 8), (4, 4), (2, 5), (8, 32)])
def test_any_batch_runs_inside_the_profile(min_batch, max_batch):
    rng = np.random.default_rng(0)
    for n in range(1, 2 * max_batch + 2):
        b = fake_runner(min_batch, max_batch)
        x = rng.standard_normal((n, *CHW)).astype(np.float32)
        got = b.run_all(x)
        want = per_sample(x)
        for name in b.outputs:
            np.testing.assert_array_equal(got[name], want[name])
        np.testing.assert_array_equal(b(x), want["logits"])       # __call__: logits only
        assert sum(min(c, max_batch) for c in b.calls) >= 2 * n   # every sample sent (twice)


def test_chunk_plan():
    assert batch_chunks(10, 1, 4) == [(0, 4, 4), (4, 8, 4), (8, 10, 2)]
    assert batch_chunks(10, 4, 4) == [(0, 4, 4), (4, 8, 4), (8, 10, 4)]      # last one padded
    assert batch_chunks(3, 8, 32) == [(0, 3, 8)]
    assert batch_chunks(1, 1, 1) == [(0, 1, 1)]
    for bad in ((0, 1, 4), (5, 0, 4), (5, 5, 4)):
        with pytest.raises(ValueError):
            batch_chunks(*bad)


def test_padding_repeats_a_real_sample():
    x = np.arange(2 * 3, dtype=np.float32).reshape(2, 3)
    p = pad_batch(x, 5)
    assert p.shape == (5, 3)
    np.testing.assert_array_equal(p[:2], x)
    np.testing.assert_array_equal(p[2:], np.repeat(x[-1:], 3, 0))
    assert pad_batch(x, 2) is x


def test_runner_refuses_wrong_shapes_and_outputs():
    b = fake_runner(1, 4)
    with pytest.raises(ValueError, match="takes"):
        b(np.zeros((2, 3, 5, 5), np.float32))
    with pytest.raises(ValueError, match="no output"):
        b.run_all(np.zeros((2, *CHW), np.float32), ["score_map"])
    assert b.calls == []


# ------------------------------------------------------------------------- export's gate
def two_output_onnx(path):
    """input [N,3,4,4] -> logits (linear) and probabilities (softmax), with contract metadata."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edge import contract as C

    w = np.random.default_rng(1).standard_normal((48, 3)).astype(np.float32)
    nodes = [helper.make_node("Flatten", ["input"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *CHW])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {C.META_CLASS_NAMES: ["a", "b", "c"], C.META_INPUT_SIZE: [4, 4], C.META_IN_CHANNELS: 3,
            C.META_PREPROCESS: C.Preprocess((4, 4), (0.5,) * 3, (0.2,) * 3).to_dict(),
            C.META_ARCH: "linear", C.META_OUTPUTS: ["logits", "probabilities"]}
    for k, v in C.encode_metadata(meta).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path, C.decode_metadata({p.key: p.value for p in model.metadata_props})


class OrtEngine:
    """A backend object with TrtBackend's interface computing with ONNX Runtime, so the gate's
    bookkeeping can be tested; ``bend`` shifts one output to make the gate fail on it."""

    def __init__(self, onnx_path, bend=None):
        from export.parity import ort_run

        self.onnx, self.bend, self.ort_run, self.closed = onnx_path, bend, ort_run, False

    def run_all(self, x, names):
        out = {n: self.ort_run(self.onnx, x, n) for n in names}
        if self.bend:
            out[self.bend] = out[self.bend] + 0.1
        return out

    def close(self):
        self.closed = True


@pytest.mark.parametrize("bend,rc", [(None, 0), ("probabilities", 1), ("logits", 1)])
def test_engine_gate_checks_every_named_output(tmp_path, monkeypatch, capsys, bend, rc):
    from edge import contract as C
    from export import trt as T
    from export.parity import random_samples

    onnx_path, meta = two_output_onnx(tmp_path / "m.onnx")
    args = T.build_parser().parse_args([str(onnx_path)])
    model = T.OnnxStage(onnx_path, onnx_path, meta,
                        random_samples(C.Preprocess.from_dict(meta[C.META_PREPROCESS]), 16, 0, "test"))
    engine = OrtEngine(onnx_path, bend)
    monkeypatch.setattr(T, "open_engine", lambda path: engine)
    assert T.engine_parity(args, tmp_path / "m.engine", model) == rc
    out = capsys.readouterr().out
    assert "(logits)" in out and "(probabilities)" in out and engine.closed
    if bend:
        failed = [line for line in out.splitlines() if line.startswith("[FAIL]")]
        assert len(failed) == 1 and f"({bend})" in failed[0]
