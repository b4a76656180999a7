"""The walls between the packages (docs/design.md, "Layout"), checked on every import statement,
module-level or inside a function.

- ``edge/`` runs on a Jetson with numpy, OpenCV, ONNX Runtime and TensorRT only: it never imports
  torch, torchvision or another package of this repository.
- ``train/`` uses from ``edge/`` only what it must share with the runtime: the contract, the file
  helpers, the one image decoder, the one command-line parser, and the runtime's own judge (with
  its labelled-folder reader, per-frame cameras file and metrics) so that ``--val-data`` judges
  frames exactly as ``edge.run`` does. It never imports ``export/`` or ``profiling/``.
- ``export/`` never imports ``profiling/``; ``profiling/`` never imports ``export/``.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "train", "export", "profiling")

#: the edge modules train/ may import, and why
TRAIN_MAY_USE_FROM_EDGE = {
    "edge.contract": "the contract itself: metadata keys, preprocessing, ground scale, decision rule",
    "edge.files": "atomic writes, sha256, image listings",
    "edge.preprocess": "the one image decoder, so training and the runtime see the same pixels",
    "edge.cli_checks": "the one command-line parser: one error line and exit 2",
    "edge.judge": "--val-data judges frames through the runtime's own tiling and decision",
    "edge.labelled": "--val-data reads labelled folders as edge.evaluate does",
    "edge.cameras": "--val-cameras and train.calibrate --cameras read the per-frame cameras file as "
                    "edge.evaluate --cameras does",
    "edge.metrics": "--val-data scores and calibrates as edge.evaluate does",
    "edge.command": "train.calibrate starts like the edge commands (one error line, exit 2)",
}
FORBIDDEN = {
    "edge": {"torch", "torchvision", "train", "export", "profiling"},
    "train": {"export", "profiling"},
    "export": {"profiling"},
    "profiling": {"export"},
}


def imports(package: str) -> Iterator[Tuple[str, int, str]]:
    """(file, line, imported module) for every import in ``package``, relative ones resolved."""
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT)
        here = list(rel.with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(), str(rel))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield str(rel), node.lineno, alias.name
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level] if path.name != "__init__.py" else here[: len(here) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                yield str(rel), node.lineno, module
                for alias in node.names:            # ``from edge import judge`` imports edge.judge
                    if (ROOT / Path(*module.split("."), alias.name + ".py")).exists():
                        yield str(rel), node.lineno, f"{module}.{alias.name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_crosses_a_wall(package):
    bad = [f"{f}:{line} imports {m}" for f, line, m in imports(package)
           if m.split(".")[0] in FORBIDDEN[package]]
    assert not bad, "\n".join(bad)


def test_train_uses_from_edge_only_what_it_shares_with_the_runtime():
    used: Dict[str, Set[str]] = {}
    for f, line, m in imports("train"):
        if m.startswith("edge."):
            module = ".".join(m.split(".")[:2])
            used.setdefault(module, set()).add(f"{f}:{line}")
    extra = {m: sorted(where) for m, where in used.items() if m not in TRAIN_MAY_USE_FROM_EDGE}
    assert not extra, extra


def test_the_scan_sees_imports_inside_functions():
    """The walls hold for lazy imports too: export/ imports train.checkpoint only inside
    functions, and the scan sees it."""
    assert "train.checkpoint" in {m for _, _, m in imports("export")}
    module_level = {m for path in (ROOT / "export").rglob("*.py")
                    for node in ast.parse(path.read_text()).body
                    if isinstance(node, ast.ImportFrom) and node.module for m in [node.module]}
    assert "train.checkpoint" not in module_level
