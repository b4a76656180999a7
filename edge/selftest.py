"""Device acceptance run: build, check and time the GPU path end to end on this machine.

    python -m edge.selftest --out report.json                       # trains two tiny models first (PyTorch)
    python -m edge.selftest --out report.json --model crowd.pt --model cifar.pt
    python -m edge.selftest --out report.json --model crowd.onnx --model crowd.int8.onnx   # no PyTorch (Jetson)

Steps, each recorded as ok / failed / skipped with the reason:

1. models: the given ``--model`` files (copied into the work folder, never written beside), or a
   tiny crowd_fcn (crowd_synth) and cifar_cnn (digits) trained for seconds with ``python -m train``;
2. engines: ``python -m export.trt`` per model at fp32, fp16 and int8 (profile 1/8/32 batch), each
   with its own parity gate (the model's test split), then this run's own check: engine against
   ONNX Runtime fp32 on CPU, max |delta| and top-1 agreement per precision;
3. ``pytest -m trt`` (the tests that build and run real engines);
4. latency p50/p90/p99 and throughput at batch 1/8/32 for TensorRT, ORT-TensorRT, ORT-CUDA and
   ORT-CPU (``edge.bench``'s measurement);
5. end-to-end heatmap FPS of the crowd model on a generated 1080p video (``edge.pipeline``);
6. the training-memory table on the GPU (``python -m profiling.tables --tables memory --device cuda``).

It writes ``--out`` (JSON) and a Markdown table beside it (``report.md``). On a machine without a
GPU, TensorRT or PyTorch the parts that need them are skipped with the reason, so the same
command validates a desktop GPU, a Jetson (with or without PyTorch) and, for its CPU parts, CI.
``--budget-s`` (default 450) stops starting new steps once spent. Torch-free itself: training,
export, pytest and profiling run as subprocesses. Exit 0 when nothing failed, 1 otherwise,
2 bad arguments.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from edge import sidecar as S
from edge.cli_checks import check_output_dir, check_output_file
from edge.device import probe_gpu, tensorrt_version
from edge.files import atomic_write
from edge.contract import OUTPUT_NAME, PRECISIONS, decode_metadata

REPO = Path(__file__).resolve().parents[1]
PROFILE_BATCHES = (1, 8, 32)                 # min / opt / max of every engine built here
#: tiny models trained in seconds on built-in data (no download)
TRAIN_RECIPES = {
    # ~86% on crowd_synth's test scenes (the recipe of tests/test_export_quantize.py): a model
    # at chance has near-tied logits, which would make the fp16/int8 agreement figures noise
    "crowd_fcn": ["--dataset", "crowd_synth", "--synth-size", "300", "--model", "crowd_fcn",
                  "--epochs", "30", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "32"],
    "cifar_cnn": ["--dataset", "digits", "--model", "cifar_cnn", "--epochs", "8", "--lr", "0.05",
                  "--batch-size", "32"],
}


class Skip(Exception):
    """A step that cannot run here; the message is the reason."""


@dataclass
class Model:
    name: str
    source: Path                               # .pt or .onnx inside the work folder
    onnx: Optional[Path] = None                # fp32 ONNX
    int8_onnx: Optional[Path] = None           # Q/DQ ONNX
    engines: Dict[str, Path] = field(default_factory=dict)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m edge.selftest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="report JSON (the Markdown goes beside it, .md)")
    p.add_argument("--model", action="append", default=[], metavar="PATH",
                   help=".pt or .onnx, repeatable (default: train a tiny crowd_fcn and cifar_cnn)")
    p.add_argument("--work", default=None,
                   help="folder for models, engines and the video (default: beside --out)")
    p.add_argument("--calib-data", default=None, metavar="DIR",
                   help="int8 calibration images for an fp32 .onnx --model")
    p.add_argument("--batches", type=int, nargs="+", default=list(PROFILE_BATCHES),
                   help="batch sizes of the latency table (at most the engines' max, 32)")
    p.add_argument("--warmup", type=int, default=10, help="untimed calls per latency row")
    p.add_argument("--iters", type=int, default=100, help="timed calls per latency row")
    p.add_argument("--video-frames", type=int, default=120, help="frames of the heatmap video")
    p.add_argument("--video-size", type=int, nargs=2, default=(1920, 1080), metavar=("W", "H"))
    p.add_argument("--cpu-frames", type=int, default=8,
                   help="heatmap frames for ORT-CPU (a 1080p heatmap is slow on a CPU)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="no new step starts after this many seconds")
    return p


# ------------------------------------------------------------------------- bookkeeping
class Report:
    """Steps run under a time budget; each leaves one record, whatever happens inside."""

    def __init__(self, budget_s: float) -> None:
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.steps: List[Dict[str, Any]] = []
        self.data: Dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        rec: Dict[str, Any] = {"step": name}
        t = time.perf_counter()
        try:
            if self.elapsed() > self.budget_s:
                raise Skip(f"time budget of {self.budget_s:g} s spent")
            result = fn()
            rec["status"] = "ok"
        except Skip as e:
            result, rec["status"], rec["reason"] = None, "skipped", str(e)
        except Exception as e:  # noqa: BLE001  one failing step must not hide the others
            result, rec["status"], rec["reason"] = None, "failed", f"{type(e).__name__}: {e}"
            rec["traceback"] = traceback.format_exc(limit=6)
        rec["seconds"] = round(time.perf_counter() - t, 2)
        self.steps.append(rec)
        print(f"edge.selftest: {name}: {rec['status']}"
              + (f" ({rec['reason'].splitlines()[0]})" if rec.get("reason") else ""),
              file=sys.stderr)
        return result

    @property
    def failed(self) -> bool:
        return any(s["status"] == "failed" for s in self.steps)


def findings_failed(doc: Dict[str, Any]) -> List[str]:
    """Everything that failed: steps, exports (a parity gate included), backends."""
    bad = [f"step {s['step']}" for s in doc["steps"] if s["status"] == "failed"]
    bad += [f"export {m} {p}" for m, per in doc.get("engines", {}).items()
            for p, e in per.items() if e.get("status") == "failed"]
    bad += [f"{key} {r['model']} {r['backend']} {r['precision']}" for key in ("latency", "heatmap")
            for r in doc.get(key, []) if r.get("status") == "failed"]
    return bad


def subprocess_env() -> Dict[str, str]:
    """This checkout first on the path, so ``python -m train`` etc. are the code under test."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_cmd(cmd: Sequence[str], timeout: float,
            extra_env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=str(REPO),
                          env={**subprocess_env(), **(extra_env or {})}, timeout=max(10.0, timeout))


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def gpu_status() -> Dict[str, Any]:
    """What this machine offers: TensorRT, a CUDA GPU, ONNX Runtime's providers."""
    try:
        import onnxruntime as ort
        providers, ort_version = ort.get_available_providers(), ort.__version__
    except ImportError:
        providers, ort_version = [], None
    return {"tensorrt": tensorrt_version(), "gpu": probe_gpu(), "onnxruntime": ort_version,
            "providers": providers, "torch": has_module("torch")}


def engines_possible(status: Dict[str, Any]) -> Optional[str]:
    """Why no engine can be built here (None when one can)."""
    if status["tensorrt"] is None:
        return "TensorRT's Python bindings are not importable here"
    if status["gpu"] is None:
        return "no CUDA GPU is visible (libcuda / driver)"
    return None


# ------------------------------------------------------------------------- 1. models
def train_command(name: str, out: Path) -> List[str]:
    return [sys.executable, "-m", "train", *TRAIN_RECIPES[name], "--out", str(out),
            "--overwrite", "--no-progress", "--seed", "0"]


def obtain_models(args, work: Path, report: Report) -> List[Model]:
    if args.model:
        return merge_models(adopt_model_file(Path(p), work) for p in args.model)
    if not (has_module("torch") and (REPO / "train").is_dir()):
        raise Skip("no --model given and no PyTorch/train/ here to train one; pass --model "
                   "crowd.onnx (exported elsewhere)")
    models = []
    for name in TRAIN_RECIPES:
        out = work / name
        r = run_cmd(train_command(name, out), report.budget_s)
        if r.returncode != 0:
            raise RuntimeError(f"training {name} failed: {tail(r.stderr)}")
        models.append(Model(name, out / "model.pt"))
    return models


def adopt_model_file(path: Path, work: Path) -> Model:
    """A copy of the user's model (and its int8 sibling) in the work folder: exports write
    beside their source, and the user's files stay untouched."""
    if path.suffix not in (".pt", ".onnx") or not path.is_file():
        raise ValueError(f"--model {path}: expected an existing .pt or .onnx file")
    name = path.name.split(".")[0]
    dest = work / name
    dest.mkdir(parents=True, exist_ok=True)
    copy = dest / path.name
    shutil.copy2(path, copy)
    m = Model(name, copy)
    if path.suffix == ".onnx":
        from edge.onnx_wire import is_qdq

        if is_qdq(copy):
            m.int8_onnx = copy
        else:
            m.onnx = copy
    return m


def merge_models(models) -> List[Model]:
    """One model per name: ``crowd.onnx`` and ``crowd.int8.onnx`` are the same model."""
    by_name: Dict[str, Model] = {}
    for m in models:
        have = by_name.setdefault(m.name, m)
        if have is not m:
            if m.source.suffix == ".pt" or have.source.suffix == ".pt":
                raise ValueError(f"--model: give {m.name} either as a .pt or as .onnx files")
            have.onnx = have.onnx or m.onnx
            have.int8_onnx = have.int8_onnx or m.int8_onnx
    return list(by_name.values())


def tail(text: str, n: int = 3) -> str:
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return " | ".join(lines[-n:]) if lines else "(no output)"


# ------------------------------------------------------------------------- 2. engines
def export_command(src: Path, precision: str, engine: Path, calib_data: Optional[str]) -> List[str]:
    lo, opt, hi = PROFILE_BATCHES
    cmd = [sys.executable, "-m", "export.trt", str(src), "--precision", precision,
           "--min-batch", str(lo), "--opt-batch", str(opt), "--max-batch", str(hi),
           "--check-size", "64", "--calib-size", "256", "--out", str(engine)]
    if calib_data and precision == "int8" and src.suffix == ".onnx":
        cmd += ["--calib-data", calib_data]
    return cmd


def gate_lines(stdout: str) -> List[str]:
    """export.trt's parity/accuracy reports: the status line and its figures."""
    lines = stdout.splitlines()
    out = []
    for i, line in enumerate(lines):
        if re.match(r"^\[(PASS|FAIL|WARNING)", line):
            out.append(line + (" " + lines[i + 1].strip() if i + 1 < len(lines) else ""))
    return out


def export_plan(m: Model, calib_data: Optional[str]) -> List[tuple]:
    """(precision, source) of each export.trt run, in an order where the .pt run comes first
    (it writes the fp32 and Q/DQ ONNX the others start from)."""
    if m.source.suffix == ".pt":
        return [("int8", m.source), ("fp32", None), ("fp16", None)]
    plan = []
    if m.int8_onnx is not None:
        plan.append(("int8", m.int8_onnx))
    if m.onnx is not None:
        plan += [("fp32", m.onnx), ("fp16", m.onnx)]
        if m.int8_onnx is None:
            plan.append(("int8", m.onnx if calib_data else None))
    return plan


def build_engines(m: Model, args, report: Report, no_engine: Optional[str]) -> Dict[str, Any]:
    results: Dict[str, Any] = {}
    for precision, src in export_plan(m, args.calib_data):
        src = src or m.onnx
        if src is None:
            results[precision] = {"status": "skipped", "reason": "an fp32 .onnx needs --calib-data "
                                  "DIR for int8 (or pass the Q/DQ .onnx or the .pt)"}
            continue
        if no_engine and src.suffix == ".onnx":      # nothing more to learn without TensorRT
            results[precision] = {"status": "skipped", "reason": no_engine}
            continue
        engine = m.source.parent / f"{m.name}.{precision}.engine"
        r = run_cmd(export_command(src, precision, engine, args.calib_data),
                    args.budget_s - report.elapsed())
        results[precision] = export_result(r, no_engine)
        if src.suffix == ".pt":                      # the ONNX files it wrote
            m.onnx = src.with_suffix(".onnx") if src.with_suffix(".onnx").is_file() else None
            q = src.with_name(src.stem + ".int8.onnx")
            m.int8_onnx = q if q.is_file() else None
        if results[precision]["status"] == "ok":
            m.engines[precision] = engine
    return results


def export_result(r: subprocess.CompletedProcess, no_engine: Optional[str]) -> Dict[str, Any]:
    out = {"exit": r.returncode, "gates": gate_lines(r.stdout)}
    if r.returncode == 0:
        out["status"] = "ok"
    elif r.returncode == 3:
        out.update(status="skipped", reason=no_engine or tail(r.stderr, 4))
    else:
        out.update(status="failed", reason=tail(r.stderr, 4))
    return out


def sample_inputs(info, n: int, seed: int = 0) -> np.ndarray:
    """Random images through the model's own preprocessing (no data needed)."""
    pre = info.preprocess
    h, w = pre.size
    x = np.random.default_rng(seed).integers(0, 256, (n, h, w, pre.channels), dtype=np.uint8)
    return pre.normalize(x)


def parity(ref: np.ndarray, got: np.ndarray) -> Dict[str, Any]:
    return {"n": int(len(ref)), "max_abs": float(np.abs(ref.astype(np.float64) - got).max()),
            "top1_agreement": float((ref.argmax(-1) == got.argmax(-1)).mean())}


def engine_parity(m: Model) -> List[Dict[str, Any]]:
    """Each engine against ONNX Runtime fp32 on CPU, through the runtime's own classes."""
    from edge.backends import open_backend
    from edge.backends.ort import OrtBackend

    if not m.engines:
        raise Skip("no engine was built for this model")
    if m.onnx is None:
        raise Skip("no fp32 ONNX to compare with")
    ref_backend = OrtBackend(m.onnx, "ort-cpu")
    x = sample_inputs(ref_backend.info, 64)
    ref = ref_backend(x)
    rows = []
    for precision, path in sorted(m.engines.items()):
        b = open_backend(path, "trt")
        try:
            got = b.run_all(x, [OUTPUT_NAME])[OUTPUT_NAME]
        finally:
            b.close()
        rows.append({"model": m.name, "precision": precision, **parity(ref, got)})
    return rows


# ------------------------------------------------------------------------- 3. pytest -m trt
def pytest_trt(report: Report, no_engine: Optional[str], models: Sequence[Model]) -> Dict[str, Any]:
    if no_engine:
        raise Skip(no_engine)
    if not (REPO / "tests").is_dir() or not has_module("pytest"):
        raise Skip("no tests/ folder or no pytest here (run from a checkout with pytest)")
    if not has_module("torch"):
        raise Skip("the test suite's fixtures train with PyTorch, which is not installed here")
    # the runtime test that loads an existing engine gets one of the engines built above
    engine = next((str(e) for m in models for e in m.engines.values()), None)
    r = run_cmd([sys.executable, "-m", "pytest", "-m", "trt", "-q", "-p", "no:cacheprovider",
                 str(REPO / "tests")], min(300.0, report.budget_s - report.elapsed()),
                {"EDGE_TEST_ENGINE": engine} if engine else None)
    summary = tail(r.stdout, 1)
    if r.returncode not in (0, 5):
        raise RuntimeError(f"pytest -m trt exit {r.returncode}: {summary}")
    return {"exit": r.returncode, "summary": summary}


# ------------------------------------------------------------------------- 4. latency
def backend_targets(m: Model, providers: Sequence[str]) -> List[tuple]:
    """(label, precision, opener or skip reason) for every backend the table covers."""
    from edge.backends import open_backend
    from edge.backends.ort import OrtBackend

    targets: List[tuple] = []
    for precision in PRECISIONS:
        eng = m.engines.get(precision)
        targets.append(("TensorRT", precision, (lambda e=eng: open_backend(e, "trt")) if eng
                        else "no engine built"))
    profile = None
    if m.onnx is not None:
        c, (h, w) = _chw(m.onnx)
        profile = {k: [b, c, h, w] for k, b in zip(("min", "opt", "max"), PROFILE_BATCHES)}
    for label, name, precisions in (("ORT-TensorRT", "ort-trt", PRECISIONS),
                                    ("ORT-CUDA", "ort-cuda", ("fp32",)),
                                    ("ORT-CPU", "ort-cpu", ("fp32",))):
        from edge.backends.ort import PROVIDERS

        for precision in precisions:
            onnx = m.int8_onnx if precision == "int8" else m.onnx
            if PROVIDERS[name] not in providers:
                targets.append((label, precision, f"onnxruntime offers no {PROVIDERS[name]}"))
            elif onnx is None:
                targets.append((label, precision, "no such ONNX for this model"))
            else:
                targets.append((label, precision, lambda o=onnx, n=name, p=precision: OrtBackend(
                    o, n, precision=p, trt_profile=profile if n == "ort-trt" else None)))
    return targets


def _chw(onnx_path: Path):
    from edge import onnx_wire
    from edge.contract import ModelInfo

    info = ModelInfo.from_metadata(decode_metadata(onnx_wire.model_metadata(onnx_path)))
    return info.preprocess.channels, tuple(info.preprocess.size)


def latency(m: Model, providers: Sequence[str], args) -> List[Dict[str, Any]]:
    from edge.bench import bench_batch

    rows = []
    for label, precision, opener in backend_targets(m, providers):
        row: Dict[str, Any] = {"model": m.name, "backend": label, "precision": precision}
        if isinstance(opener, str):
            rows.append({**row, "status": "skipped", "reason": opener})
            continue
        try:
            b = opener()
            row["rows"] = [bench_batch(b, n, args.warmup, args.iters, None) for n in args.batches]
            row.update(status="ok", describe=b.describe())
            getattr(b, "close", lambda: None)()
        except Exception as e:  # noqa: BLE001  one backend failing is a finding, not the end
            row.update(status="failed", reason=f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------- 5. heatmap
def make_video(path: Path, frames: int, size) -> Path:
    """A synthetic video (moving noise) of ``size``, written once."""
    import cv2

    from edge.sources import synthetic_frames

    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (w, h))
    if not writer.isOpened():
        raise Skip(f"OpenCV cannot write an mp4v video here ({path})")
    for f in synthetic_frames(w, h, frames):
        writer.write(np.ascontiguousarray(f.image))
    writer.release()
    return path


def heatmap_fps(m: Model, providers: Sequence[str], video: Path, args) -> List[Dict[str, Any]]:
    from edge.pipeline import Pipeline, PipelineConfig
    from edge.sources import open_source

    rows = []
    for label, precision, opener in backend_targets(m, providers):
        if label == "ORT-TensorRT" and precision != "fp16":
            continue                      # fp16 stands for ONNX Runtime's TensorRT provider
        row: Dict[str, Any] = {"model": m.name, "backend": label, "precision": precision}
        if isinstance(opener, str):
            rows.append({**row, "status": "skipped", "reason": opener})
            continue
        frames = args.cpu_frames if label == "ORT-CPU" else args.video_frames
        try:
            b = opener()
            cfg = PipelineConfig(mode="heatmap", heatmap_impl="tiles", tile_batch=PROFILE_BATCHES[-1],
                                 max_frames=frames, record_grid=False)
            s = Pipeline(b, open_source(str(video)), cfg).run()
            row.update(status="ok", frames=s["frames"], fps=s["fps"],
                       frame_size=list(args.video_size),
                       latency_ms=s["latency_ms"].get("total", {}), provider=b.describe().get("provider"))
            getattr(b, "close", lambda: None)()
        except Exception as e:  # noqa: BLE001
            row.update(status="failed", reason=f"{type(e).__name__}: {e}")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------- 6. memory
def memory_table(report: Report, status: Dict[str, Any]) -> Dict[str, Any]:
    if not status["torch"] or not (REPO / "profiling").is_dir():
        raise Skip("needs PyTorch and profiling/ (a checkout with the [profiling] extra)")
    if status["gpu"] is None:
        raise Skip("no CUDA GPU is visible")
    r = run_cmd([sys.executable, "-m", "profiling.tables", "--tables", "memory", "--device", "cuda"],
                min(240.0, report.budget_s - report.elapsed()))
    if r.returncode != 0:
        raise RuntimeError(f"profiling.tables exit {r.returncode}: {tail(r.stderr)}")
    return {"markdown": r.stdout.strip()}


# ------------------------------------------------------------------------- report
def environment(status: Dict[str, Any]) -> Dict[str, Any]:
    from edge.bench import cpu_name, git_commit

    fp = S.probe_device(status["tensorrt"], status["gpu"])
    return {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": fp.get(S.FP_GPU_NAME) or "n/a", "compute_capability": fp.get(S.FP_COMPUTE_CAPABILITY) or "n/a",
            "cpu": cpu_name(), "l4t": fp.get(S.FP_L4T) or "n/a", "jetpack": fp.get(S.FP_JETPACK) or "n/a",
            "tensorrt": status["tensorrt"] or "n/a", "onnxruntime": status["onnxruntime"] or "n/a",
            "providers": status["providers"], "torch_available": status["torch"],
            "python": platform.python_version(), "machine": platform.machine(), "commit": git_commit()}


def markdown(doc: Dict[str, Any]) -> str:
    env = doc["environment"]
    out = ["# edge-students device self-test", "",
           " | ".join(f"{k} {env[k]}" for k in ("device", "compute_capability", "jetpack", "tensorrt",
                                                "onnxruntime", "python", "commit", "date")), "",
           "| step | status | s | note |", "|---|---|---|---|"]
    out += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s.get('reason', '').splitlines()[0] if s.get('reason') else ''} |"
            for s in doc["steps"]]
    out += ["", "## Engine parity against ONNX Runtime fp32 (CPU)", "",
            "| model | precision | export gate | max abs delta | top-1 agreement | n |", "|---|---|---|---|---|---|"]
    for model, per in doc.get("engines", {}).items():
        rows = {r["precision"]: r for r in doc.get("parity", []) if r["model"] == model}
        for precision, e in per.items():
            p = rows.get(precision, {})
            gate = e["status"] if e["status"] != "skipped" else f"skipped: {e.get('reason', '')}"
            out.append(f"| {model} | {precision} | {gate} | {_fmt(p.get('max_abs'))} | "
                       f"{_fmt(p.get('top1_agreement'), pct=True)} | {p.get('n', '')} |")
    out += ["", "## Latency (ms per call) and throughput", "",
            "| model | backend | precision | batch | p50 | p90 | p99 | img/s | provider |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in doc.get("latency", []):
        if r["status"] != "ok":
            out.append(f"| {r['model']} | {r['backend']} | {r['precision']} | | | | | | {r['status']}: {r.get('reason', '')} |")
            continue
        for row in r["rows"]:
            lat = row["latency_ms"]
            out.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {row['batch']} | {lat['p50']} | "
                       f"{lat['p90']} | {lat['p99']} | {row['throughput_ips']} | {r['describe'].get('provider')} |")
    out += ["", "## End-to-end heatmap (tiles) on a generated video", "",
            "| model | backend | precision | frames | FPS | latency p50 ms | note |", "|---|---|---|---|---|---|---|"]
    for r in doc.get("heatmap", []):
        note = r.get("reason", "") if r["status"] != "ok" else f"{r['frame_size'][0]}x{r['frame_size'][1]}, {r['provider']}"
        out.append(f"| {r['model']} | {r['backend']} | {r['precision']} | {r.get('frames', '')} | "
                   f"{r.get('fps', '')} | {r.get('latency_ms', {}).get('p50', '')} | {note} |")
    if doc.get("pytest_trt"):
        out += ["", "## pytest -m trt", "", doc["pytest_trt"]["summary"]]
    if doc.get("memory"):
        out += ["", "## Training memory on the GPU (profiling.tables --tables memory --device cuda)", "",
                doc["memory"]["markdown"]]
    return "\n".join(out) + "\n"


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}%" if pct else f"{v:.3g}"


def write_report(doc: Dict[str, Any], out: Path) -> Path:
    md = out.with_suffix(".md")
    atomic_write(out, lambda f: f.write((json.dumps(doc, indent=2, default=str) + "\n").encode()))
    atomic_write(md, lambda f: f.write(markdown(doc).encode()))
    return md


# ------------------------------------------------------------------------- main
def work_dir(args) -> Path:
    out = Path(args.out)
    return Path(args.work) if args.work else out.with_name(out.stem + ".selftest")


def check_args(args) -> None:
    for p in args.model:
        if Path(p).suffix not in (".pt", ".onnx") or not Path(p).is_file():
            raise ValueError(f"--model {p}: expected an existing .pt or .onnx file")
    if any(b < 1 or b > PROFILE_BATCHES[-1] for b in args.batches):
        raise ValueError(f"--batches {args.batches}: each between 1 and {PROFILE_BATCHES[-1]}")
    if min(args.iters, args.video_frames, args.cpu_frames, *args.video_size) < 1 or args.warmup < 0:
        raise ValueError("--iters, --video-frames, --cpu-frames and --video-size must be >= 1")
    if Path(args.out).suffix != ".json":
        raise ValueError(f"--out {args.out}: expected a .json path")
    check_output_file("--out", args.out)
    check_output_dir("--work", work_dir(args))
    if args.calib_data and not Path(args.calib_data).is_dir():
        raise ValueError(f"--calib-data {args.calib_data}: not a folder")


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
    except ValueError as e:
        print(f"edge.selftest: error: {e}", file=sys.stderr)
        return 2
    out, work = Path(args.out), work_dir(args)
    work.mkdir(parents=True, exist_ok=True)
    report, status = Report(args.budget_s), gpu_status()
    no_engine = engines_possible(status)
    doc: Dict[str, Any] = {"environment": environment(status), "steps": report.steps,
                           "engines": {}, "parity": [], "latency": [], "heatmap": []}
    models = report.step("models", lambda: obtain_models(args, work, report)) or []
    doc["models"] = {m.name: str(m.source) for m in models}
    for m in models:
        doc["engines"][m.name] = report.step(f"engines {m.name}",
                                             lambda m=m: build_engines(m, args, report, no_engine)) or {}
        doc["parity"] += report.step(f"engine parity {m.name}", lambda m=m: engine_parity(m)) or []
    doc["pytest_trt"] = report.step("pytest -m trt", lambda: pytest_trt(report, no_engine, models))
    for m in models:
        doc["latency"] += report.step(f"latency {m.name}",
                                      lambda m=m: latency(m, status["providers"], args)) or []
    crowd = next((m for m in models if m.name.startswith("crowd")), models[0] if models else None)
    if crowd is not None:
        video = report.step("video", lambda: make_video(work / "heatmap.mp4", args.video_frames,
                                                         args.video_size))
        if video is not None:
            doc["heatmap"] = report.step(f"heatmap {crowd.name}", lambda: heatmap_fps(
                crowd, status["providers"], video, args)) or []
    doc["memory"] = report.step("memory table", lambda: memory_table(report, status))
    doc["elapsed_s"] = round(report.elapsed(), 1)
    doc["failed"] = findings_failed(doc)
    md = write_report(doc, out)
    print(f"edge.selftest: wrote {out} and {md} in {doc['elapsed_s']} s"
          + (f"; FAILED: {', '.join(doc['failed'])}" if doc["failed"] else ""), file=sys.stderr)
    return 1 if doc["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
