"""The project's TensorRT code against TensorRT's real Python bindings, per version, on CPU.

For 8.6.1 (JetPack 6.0's line), 10.3.0 (JetPack 6.1/6.2), 10.16.1 (a recent 10.x) and 11.4.0 the
real bindings are installed and imported over a stand-in for the native libraries
(tests/trt_bindings.py, tests/trt_standin.c; docs/tensorrt.md, "Tests without a GPU"). Checked:

* every TensorRT name used in edge/ and export/ (found by tests/trt_api_scan.py in the syntax
  trees, not listed by hand) exists on the class it is used on;
* ``plan_build`` picks the right network and builder flags per precision from the real enums;
* the I/O dtype map agrees with the bindings' own ``trt.nptype``;
* a Builder/Runtime that cannot be created (what the stand-in, like a machine without a usable
  GPU, gives) ends in our one-line message from the runtime class, edge.run, edge.bench,
  ``edge.sidecar adopt`` and export.trt, never in pybind11's TypeError traceback.

Every probe also scans a file with deliberately misspelt names, which must come out missing:
the check is shown to fail where it should on every run.
"""
from __future__ import annotations

import json
import textwrap

import pytest

try:
    from trt_bindings import VERSIONS, start_probe
except ImportError:
    from tests.trt_bindings import VERSIONS, start_probe

MISSPELT = textwrap.dedent("""
    def build(logger):
        import tensorrt as trt
        builder = trt.Builder(logger)
        network = builder.create_netwrok(0)            # misspelt method
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.GPU_FALBACK)   # misspelt enum member
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 20)
        return trt.Runtim(logger)                      # misspelt class
""")
MISSPELT_NAMES = {"create_netwrok", "GPU_FALBACK", "Runtim"}

# the plan each line must get: (ONNX kind, builder flags, cleared flags, network flags)
EXPECTED_PLANS = {
    8: {"fp32": ("fp32", [], ["TF32"], ["EXPLICIT_BATCH"]),
        "fp16": ("fp32", ["FP16"], [], ["EXPLICIT_BATCH"]),
        "int8": ("int8", ["INT8", "FP16"], [], ["EXPLICIT_BATCH"])},
    10: {"fp32": ("fp32", [], ["TF32"], []),
         "fp16": ("fp32", ["FP16"], [], []),
         "int8": ("int8", ["INT8", "FP16"], [], [])},
    11: {"fp32": ("fp32", [], ["TF32"], []),
         "fp16": ("fp16", [], [], []),                 # mixed-precision ONNX; strongly typed always
         "int8": ("int8", [], [], [])},                # Q/DQ ONNX, no flags left to set
}


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """version -> the probe's findings, or the reason it could not run (a skip)."""
    bad = tmp_path_factory.mktemp("misspelt") / "misspelt.py"
    bad.write_text(MISSPELT)
    started, results = {}, {}
    for dist, version in VERSIONS:
        work = tmp_path_factory.mktemp(f"trt-{version}")
        try:
            started[version] = (start_probe(dist, version, work, str(bad)), work)
        except pytest.skip.Exception as e:
            results[version] = str(e)
    for version, (proc, work) in started.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            raise AssertionError(f"the probe for TensorRT {version} failed:\n{err[-3000:]}")
        results[version] = json.loads((work / "result.json").read_text())
    return results


@pytest.fixture(params=[v for _, v in VERSIONS])
def probe(request, probes):
    found = probes[request.param]
    if isinstance(found, str):
        pytest.skip(found)
    assert found["version"] == request.param
    return found


def project_uses(probe):
    return [u for u in probe["api"] if not u["file"].endswith("misspelt.py")]


def test_every_tensorrt_name_used_exists(probe):
    missing = [f"{u['file']}:{u['line']}: {''.join(u['chain'])}: {u['detail']}"
               for u in project_uses(probe) if u["status"] == "missing" and not u["guarded"]]
    assert not missing, f"TensorRT {probe['version']} lacks:\n" + "\n".join(missing)


def test_the_scan_reaches_the_build_and_the_runtime(probe):
    """The scan follows builder, config, engine and context objects, not just ``trt.X``."""
    ok = {u["chain"][-1][1:] for u in project_uses(probe) if u["status"] == "ok"}
    for name in ("create_network", "set_memory_pool_limit", "build_serialized_network",
                 "create_timing_cache", "deserialize_cuda_engine", "num_io_tensors",
                 "get_tensor_profile_shape", "set_input_shape", "set_tensor_address",
                 "execute_async_v3"):
        assert name in ok, name
    assert len(ok) >= 40


def test_a_misspelt_name_is_caught(probe):
    bad = [u for u in probe["api"] if u["file"].endswith("misspelt.py")]
    missing = {u["chain"][-1][1:] for u in bad if u["status"] == "missing"}
    assert missing == MISSPELT_NAMES
    ok = {u["chain"][-1][1:] for u in bad if u["status"] == "ok"}
    assert {"create_builder_config", "set_memory_pool_limit", "WORKSPACE"} <= ok


def test_guarded_names_exist_in_some_version(probes):
    """A name used only under hasattr()/getattr(..., default) may be absent from a version, but a
    name no version has is a typo that silently turns a feature off."""
    found = [p for p in probes.values() if not isinstance(p, str)]
    if not found:
        pytest.skip("no TensorRT bindings could be installed")
    status = {}
    for p in found:
        for u in project_uses(p):
            if u["guarded"]:
                key = (u["file"], u["line"], "".join(u["chain"]))
                status[key] = status.get(key, False) or u["status"] != "missing"
    assert status and all(status.values()), [k for k, v in status.items() if not v]


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_plan_per_precision(probe, precision):
    major = int(probe["version"].split(".")[0])
    got = probe["plans"][precision]
    assert (got["onnx_kind"], got["builder_flags"], got["clear_flags"],
            got["network_flags"]) == EXPECTED_PLANS[major][precision]
    assert (got["network_bits"] != 0) == bool(got["network_flags"])


def test_io_dtypes_agree_with_the_bindings(probe):
    assert {"FLOAT", "HALF", "INT8", "INT32"} <= set(probe["dtypes"])
    for name, (ours, theirs) in probe["dtypes"].items():
        assert ours == theirs, name


@pytest.mark.parametrize("entry,prefix,code", [
    ("edge.run", "edge.run: error: ", 2),
    ("edge.bench", "edge.bench: error: ", 2),
    ("adopt", "edge.sidecar adopt: error: ", 3),
])
def test_no_usable_gpu_is_one_line_in_the_clis(probe, entry, prefix, code):
    got = probe["errors"][entry]
    assert got["escaped"] is None, got["traceback"]
    lines = got["stderr"].strip().splitlines()
    assert got["rc"] == code and len(lines) == 1, got["stderr"]
    assert lines[0].startswith(prefix) and "cannot create a Runtime" in lines[0]
    assert probe["version"] in lines[0] and not got.get("wrote")


def test_no_usable_gpu_in_the_runtime_class(probe):
    got = probe["errors"]["backend"]
    assert got["escaped"].startswith("TensorRTUnusable: ")
    assert "\n" not in got["escaped"] and "nullptr" not in got["escaped"]


def test_no_usable_gpu_in_the_export(probe):
    got = probe["errors"]["export.trt"]
    assert got["escaped"] is None, got["traceback"]
    assert got["rc"] == 3 and "Traceback" not in got["stderr"]
    first = got["stderr"].splitlines()[0]
    assert "cannot create a Builder" in first and "python -m export.trt" in got["stderr"]
