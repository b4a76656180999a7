"""The TensorRT engine sidecar (contract 3, docs/export.md): schema, device probe, write, read, check.

A serialised TensorRT plan only loads on the TensorRT version and GPU it was built for; a
mismatch otherwise shows up as a bare ``None`` from ``deserialize_cuda_engine`` or a crash
(docs/tensorrt.md, "Engines are tied to their device"). So ``model.engine`` always travels with ``model.engine.json``, written by
``python -m export.trt`` (through :func:`write_sidecar`), and the runtime
(``edge/backends/trt.py``, through :func:`check_engine`) compares it with this device *before*
deserialising, naming each difference and the command that rebuilds the engine.

This is the only implementation of the sidecar: ``export/`` writes with it, ``edge/`` checks with
it (``edge/`` imports nothing from ``export/``). Standard library + ``edge.contract`` only: no
torch, no numpy needed; TensorRT is imported lazily just to read its version.

Sidecar schema, format 1 (every key is always written; unknown values are ``null``)::

    {
      "format": "edge-students/engine-sidecar",
      "format_version": 1,
      "metadata": {                      # the ONNX metadata_props TensorRT parsed, as strings
        "edge_students.class_names": "[\"crowd\", \"no_crowd\"]", ...   # keys: edge.contract META_*
      },
      "fingerprint": {
        "tensorrt_version": "10.3.0",    # tensorrt.__version__ of the build
        "gpu_name": "Orin",              # CUDA driver cuDeviceGetName (probe_gpu, both sides)
        "compute_capability": "8.7",     # CUDA driver attributes 75/76 (probe_gpu, both sides)
        "l4t": "36.4.0",                 # /etc/nv_tegra_release; null off a Jetson
        "jetpack": "6.1",                # from the L4T release; null off a Jetson / unknown
        "precision": "fp16",             # fp32 / fp16 / int8 (edge.contract.PRECISIONS)
        "profile": {"min": [1, 3, 128, 128], "opt": [8, 3, 128, 128], "max": [8, 3, 128, 128]},
        "onnx_sha256": "<hex>",          # of the ONNX TensorRT parsed (source_onnx)
        "dla_core": null                 # the DLA core the plan targets, null for the GPU
      },
      "source_onnx": "crowd.onnx",       # that ONNX, relative to the engine's folder when possible
      "rebuild_command": "python -m export.trt crowd.onnx --precision fp16 --min-batch 1 ...",
                                         # run in the engine's folder; paths relative to it
                                         # (adopted engines: "trtexec ... && python -m edge.sidecar adopt ...")
      "build": {"created": "2025-01-01T00:00:00+00:00", "plan": "precision fp16 ..."}
    }

Checked before deserialising (:data:`DEVICE_KEYS`, strictly; GPU names ignore case and
repeated spaces): TensorRT version, GPU name, compute capability, L4T release. An unknown value
here (no TensorRT importable, no GPU visible) is a difference: an engine we cannot vouch for is
not loaded. When the source ONNX is beside the engine (or passed explicitly) its sha256 is
checked too, so a re-exported model does not silently run on an engine built from the old one.
An engine built elsewhere (``trtexec``) gets its sidecar from ``python -m edge.sidecar adopt``
(edge/adopt.py). ``precision``/``profile``/``dla_core`` describe the build (and let ``export/``
decide whether an existing engine still fits a request, :func:`compare` with :data:`BUILD_KEYS`).

GPU identity has ONE source on both sides, :func:`edge.device.probe_gpu`: the CUDA driver library
(``libcuda``) through ctypes. It is present wherever an NVIDIA driver is (Jetson included),
needs neither cuda-python nor nvidia-smi, and is what ``cudaGetDeviceProperties`` itself reports,
so the writer and the reader never disagree on the spelling of a name.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shlex
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import edge.device
from edge.contract import META_PREFIX, PRECISIONS, decode_metadata
from edge.files import atomic_write, file_sha256

SIDECAR_FORMAT = "edge-students/engine-sidecar"
SIDECAR_FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".json"                 # model.engine -> model.engine.json

# --- fingerprint keys ----------------------------------------------------------------------
FP_TRT_VERSION = "tensorrt_version"
FP_GPU_NAME = "gpu_name"
FP_COMPUTE_CAPABILITY = "compute_capability"
FP_L4T = "l4t"
FP_JETPACK = "jetpack"
FP_PRECISION = "precision"
FP_PROFILE = "profile"                   # {"min": [N,C,H,W], "opt": [...], "max": [...]}
FP_ONNX_SHA256 = "onnx_sha256"
FP_DLA_CORE = "dla_core"
FINGERPRINT_KEYS = (FP_TRT_VERSION, FP_GPU_NAME, FP_COMPUTE_CAPABILITY, FP_L4T, FP_JETPACK,
                    FP_PRECISION, FP_PROFILE, FP_ONNX_SHA256, FP_DLA_CORE)
#: what must match between the build device and the device that deserialises the plan
DEVICE_KEYS = (FP_TRT_VERSION, FP_GPU_NAME, FP_COMPUTE_CAPABILITY, FP_L4T)
#: what a build request decides (export/ compares these to reuse or rebuild an engine)
BUILD_KEYS = (FP_PRECISION, FP_PROFILE, FP_ONNX_SHA256, FP_DLA_CORE)
LABELS = {FP_TRT_VERSION: "TensorRT version", FP_GPU_NAME: "GPU",
          FP_COMPUTE_CAPABILITY: "GPU compute capability", FP_L4T: "L4T (Jetson Linux) release",
          FP_JETPACK: "JetPack", FP_PRECISION: "precision", FP_PROFILE: "optimisation profile",
          FP_ONNX_SHA256: "source ONNX sha256", FP_DLA_CORE: "DLA core"}

# --- top-level keys ------------------------------------------------------------------------
KEY_FORMAT = "format"
KEY_FORMAT_VERSION = "format_version"
KEY_METADATA = "metadata"
KEY_FINGERPRINT = "fingerprint"
KEY_SOURCE_ONNX = "source_onnx"
KEY_REBUILD_COMMAND = "rebuild_command"
KEY_BUILD = "build"


class SidecarError(ValueError):
    """A sidecar that is missing, unreadable, of an unknown format, or not for this device."""


class FingerprintMismatch(SidecarError):
    """The engine was built for another device / TensorRT, or from another ONNX."""

    def __init__(self, message: str, differences: List[str], command: str) -> None:
        super().__init__(message)
        self.differences = list(differences)
        self.command = command


def sidecar_path(engine_path) -> Path:
    p = Path(engine_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def probe_device(trt_version: Optional[str] = None,
                 gpu: Optional[Tuple[str, str]] = None,
                 l4t: Optional[str] = None) -> Dict[str, Any]:
    """The device half of a fingerprint for this machine (:data:`DEVICE_KEYS` + jetpack).

    Arguments override the probes (the writer passes the TensorRT it builds with; tests pass
    fixed values). Unknown entries are None, never guessed.
    """
    gpu = gpu if gpu is not None else edge.device.probe_gpu()
    l4t = l4t if l4t is not None else edge.device.read_l4t()
    return {
        FP_TRT_VERSION: trt_version if trt_version is not None else edge.device.tensorrt_version(),
        FP_GPU_NAME: gpu[0] if gpu else None,
        FP_COMPUTE_CAPABILITY: gpu[1] if gpu else None,
        FP_L4T: l4t,
        FP_JETPACK: edge.device.jetpack_for_l4t(l4t),
    }


def make_fingerprint(*, device: Mapping[str, Any], precision: str,
                     profile: Mapping[str, Any], onnx_path,
                     dla_core: Optional[int] = None) -> Dict[str, Any]:
    """A complete fingerprint: ``device`` (:func:`probe_device`) plus what the build decided."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} not in {PRECISIONS}")
    fp = {k: device.get(k) for k in (FP_TRT_VERSION, FP_GPU_NAME, FP_COMPUTE_CAPABILITY,
                                     FP_L4T, FP_JETPACK)}
    fp.update({FP_PRECISION: precision,
               FP_PROFILE: {k: [int(v) for v in profile[k]] for k in ("min", "opt", "max")},
               FP_ONNX_SHA256: file_sha256(onnx_path),
               FP_DLA_CORE: None if dla_core is None else int(dla_core)})
    return fp


# ------------------------------------------------------------------------- compare
def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, dict):
        return ", ".join(f"{k} {'x'.join(str(d) for d in s) if isinstance(s, list) else s}"
                         for k, s in v.items())
    return str(v)


def _norm(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == FP_GPU_NAME:
        return " ".join(str(value).split()).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def compare(built: Mapping[str, Any], current: Mapping[str, Any],
            keys=DEVICE_KEYS) -> List[str]:
    """Differences between the engine's fingerprint and ``current``, one sentence each; [] if none.

    Compared over ``keys`` (default: :data:`DEVICE_KEYS`). An unknown value on the current side
    while the engine records one is a difference (we cannot vouch for the engine); both None
    (e.g. no L4T on a desktop, either side) is a match.
    """
    out = []
    for k in keys:
        want, have = built.get(k), current.get(k)
        if _norm(k, want) == _norm(k, have):
            continue
        label = LABELS.get(k, k)
        if have is None:
            why = {FP_TRT_VERSION: "tensorrt not importable", FP_L4T: "not a Jetson"}.get(
                k, "no CUDA GPU detected" if k in (FP_GPU_NAME, FP_COMPUTE_CAPABILITY) else "n/a")
            out.append(f"{label}: engine built with {_fmt(want)}, here unknown ({why})")
        else:
            out.append(f"{label}: engine built with {_fmt(want)}, here {_fmt(have)}")
    return out


# ------------------------------------------------------------------------- write
def relative_to_engine(path, engine_path) -> str:
    """``path`` relative to the engine's folder when that works, else absolute."""
    p, base = Path(path).absolute(), Path(engine_path).absolute().parent
    try:
        return os.path.relpath(p, base)
    except ValueError:                   # another drive (Windows)
        return str(p)


def write_sidecar(engine_path, metadata_props: Mapping[str, str], fingerprint: Mapping[str, Any],
                  *, source_onnx, rebuild_command: str,
                  build: Optional[Mapping[str, Any]] = None) -> Path:
    """Atomically write ``<engine>.json`` (schema in the module docstring); returns its path.

    ``metadata_props`` is the encoded ONNX metadata (``edge.contract.encode_metadata``); it must
    decode under the contract (the required ``edge_students.*`` keys present), and only the
    contract's keys are kept. ``fingerprint`` must hold exactly :data:`FINGERPRINT_KEYS`.
    ``source_onnx`` is stored relative to the engine's folder when possible.
    """
    keys = set(fingerprint)
    if keys != set(FINGERPRINT_KEYS):
        raise ValueError(f"fingerprint keys {sorted(keys)} differ from the schema: unknown "
                         f"{sorted(keys - set(FINGERPRINT_KEYS))}, missing "
                         f"{sorted(set(FINGERPRINT_KEYS) - keys)}")
    meta = {str(k): str(v) for k, v in metadata_props.items() if str(k).startswith(META_PREFIX)}
    decode_metadata(meta)                # ValueError naming a missing contract key
    if not rebuild_command or not ("export.trt" in rebuild_command or
                                   rebuild_command.startswith("trtexec ")):
        raise ValueError(f"rebuild_command must be a `python -m export.trt ...` command (or the "
                         f"trtexec one of an adopted engine), got {rebuild_command!r}")
    doc = {KEY_FORMAT: SIDECAR_FORMAT, KEY_FORMAT_VERSION: SIDECAR_FORMAT_VERSION,
           KEY_METADATA: meta, KEY_FINGERPRINT: dict(fingerprint),
           KEY_SOURCE_ONNX: relative_to_engine(source_onnx, engine_path),
           KEY_REBUILD_COMMAND: str(rebuild_command),
           KEY_BUILD: {"created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                       **dict(build or {})}}
    return atomic_write(sidecar_path(engine_path),
                        lambda f: f.write((json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()))


# ------------------------------------------------------------------------- read
def read_sidecar(path) -> Dict[str, Any]:
    """Read a sidecar (give the engine or the ``.json`` path); raises :class:`SidecarError`."""
    p = Path(path)
    if p.suffix != SIDECAR_SUFFIX:
        p = sidecar_path(p)
    if not p.is_file():
        raise SidecarError(f"engine sidecar not found: {p} (every engine needs the JSON written "
                           "beside it by `python -m export.trt`; rebuild the engine on this "
                           "device, or copy the .json along with the .engine)")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SidecarError(f"engine sidecar {p} is not readable JSON ({e}); rebuild the "
                           "engine with `python -m export.trt`") from None
    if not isinstance(doc, dict) or doc.get(KEY_FORMAT) != SIDECAR_FORMAT:
        raise SidecarError(f"{p} is not an edge-students engine sidecar "
                           f"(no \"format\": \"{SIDECAR_FORMAT}\")")
    try:
        version = int(doc.get(KEY_FORMAT_VERSION, -1))
    except (TypeError, ValueError):
        version = -1
    if version < 1:
        raise SidecarError(f"{p}: bad sidecar format_version {doc.get(KEY_FORMAT_VERSION)!r}")
    if version > SIDECAR_FORMAT_VERSION:
        raise SidecarError(f"{p} has sidecar format {version}, newer than this edge-students "
                           f"({SIDECAR_FORMAT_VERSION}); upgrade the package")
    for key in (KEY_METADATA, KEY_FINGERPRINT):
        if not isinstance(doc.get(key), dict):
            raise SidecarError(f"{p} lacks its {key!r} object")
    return doc


def sidecar_metadata(doc: Mapping[str, Any]) -> Dict[str, Any]:
    """The decoded (typed) model metadata of a sidecar; :class:`SidecarError` if incomplete."""
    try:
        return decode_metadata(doc[KEY_METADATA])
    except (ValueError, TypeError) as e:   # json inside a value, or a missing contract key
        raise SidecarError(f"engine sidecar metadata: {e}") from None


def rebuild_command(doc: Mapping[str, Any], engine_path) -> str:
    """The command that rebuilds the engine, safe to print and to paste.

    The recorded command is split into words and quoted again word by word
    (:func:`edge.cli_checks.shell_quote`): a sidecar is a file anyone may have edited, and its
    shell metacharacters must stay arguments of ``export.trt``, its terminal escape codes must
    not reach the terminal. A command that does not split, or is not ``python -m export.trt``,
    is replaced by the generic one (as for a bare sidecar)."""
    from edge.cli_checks import shell_join

    try:
        words = shlex.split(str(doc.get(KEY_REBUILD_COMMAND) or ""))
    except ValueError:                   # unbalanced quotes
        words = []
    if len(words) > 3 and words[1:3] == ["-m", "export.trt"] and "python" in Path(words[0]).name:
        return shell_join(words)
    src = str(doc.get(KEY_SOURCE_ONNX) or "MODEL.onnx")
    return shell_join(["python", "-m", "export.trt", src, "--out", Path(engine_path).name])


def source_onnx_path(doc: Mapping[str, Any], engine_path) -> Optional[Path]:
    """Where the recorded source ONNX is, resolved against the engine's folder (may not exist)."""
    src = doc.get(KEY_SOURCE_ONNX)
    if not src:
        return None
    p = Path(src)
    return p if p.is_absolute() else Path(engine_path).parent / p


def mismatch_message(engine_path, differences: List[str], command: str,
                     onnx_note: Optional[str] = None) -> str:
    """The refusal, one item per line; values read from the sidecar (GPU names, paths) are
    shown with their control characters escaped (:func:`edge.cli_checks.printable`)."""
    from edge.cli_checks import printable, shell_quote

    where = Path(engine_path).absolute().parent
    lines = [f"engine {engine_path} does not match this device (checked before deserialising):"]
    lines += [f"  - {d}" for d in differences]
    lines.append(f"rebuild it on this device (paths relative to {where}):")
    lines.append(f"  cd {shell_quote(str(where))} && {command}")
    if onnx_note:
        lines.append(onnx_note)
    return "\n".join(printable(line) for line in lines)


def check_engine(engine_path, current: Optional[Mapping[str, Any]] = None,
                 onnx_path: Any = "auto") -> Dict[str, Any]:
    """Read ``<engine>.json`` and refuse the engine unless it was built for this device.

    ``current`` is this device's fingerprint (default :func:`probe_device`). ``onnx_path``:
    ``"auto"`` checks the recorded ``source_onnx`` if that file exists beside the engine, a path
    checks that file, None skips the ONNX check. Returns the sidecar; raises
    :class:`SidecarError` (missing/corrupt sidecar) or :class:`FingerprintMismatch` (naming
    every difference and the rebuild command). Touches neither TensorRT's runtime nor the plan.
    """
    doc = read_sidecar(engine_path)
    built = doc[KEY_FINGERPRINT]
    diffs = compare(built, probe_device() if current is None else current, DEVICE_KEYS)
    src = source_onnx_path(doc, engine_path)
    onnx = src if isinstance(onnx_path, str) and onnx_path == "auto" else onnx_path
    explicit = onnx_path is not None and not (isinstance(onnx_path, str) and onnx_path == "auto")
    if onnx is not None and Path(onnx).is_file():
        have, want = file_sha256(onnx), built.get(FP_ONNX_SHA256)
        if have != want:
            diffs.append(f"{LABELS[FP_ONNX_SHA256]}: engine built from {_fmt(want)[:12]}..., "
                         f"{onnx} is now {have[:12]}... (re-exported since the build?)")
    elif explicit:
        diffs.append(f"{LABELS[FP_ONNX_SHA256]}: {onnx_path} not found, cannot check it")
    if diffs:
        cmd = rebuild_command(doc, engine_path)
        note = None
        if src is not None and not src.is_file():
            note = (f"(the source ONNX {doc[KEY_SOURCE_ONNX]} is not beside the engine: copy it "
                    "there first, or adjust the path in the command)")
        raise FingerprintMismatch(mismatch_message(engine_path, diffs, cmd, note), diffs, cmd)
    return doc


# ------------------------------------------------------------------------- command line
def main(argv: Optional[List[str]] = None) -> int:
    """``python -m edge.sidecar adopt ENGINE --onnx ONNX``: see edge/adopt.py."""
    import sys  # noqa: PLC0415

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "adopt":
        print("usage: python -m edge.sidecar adopt ENGINE --onnx ONNX [--precision P] [--dla N] "
              "[--force]\n(writes the sidecar of an engine built with trtexec)", file=sys.stderr)
        return 2
    from edge.adopt import main as adopt_main  # noqa: PLC0415

    return adopt_main(args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
