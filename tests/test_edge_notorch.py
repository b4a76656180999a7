"""edge/ must import and run with torch unimportable (a Jetson without PyTorch)."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import edge

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import importlib, importlib.abc, pkgutil, sys

class NoTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith(("torch.", "torchvision")):
            raise ImportError(f"torch is blocked in this test: {name}")
        return None

sys.meta_path.insert(0, NoTorch())
import edge
names = ["edge"] + [m.name for m in pkgutil.walk_packages(edge.__path__, "edge.")]
for n in names:
    importlib.import_module(n)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
from edge import run
rc = run.main(["--model", sys.argv[1], "--source", "synthetic://96x80?frames=3", "--output", "-"])
assert rc == 0, rc
print("IMPORTED", len(names))
"""


def test_every_edge_module_imports_without_torch(tmp_path):
    try:
        from edge_helpers import export_crowd_onnx
    except ImportError:
        from tests.edge_helpers import export_crowd_onnx
    model = export_crowd_onnx(tmp_path / "m.onnx", size=32)
    expected = 1 + len(list(pkgutil.walk_packages(edge.__path__, "edge.")))
    res = subprocess.run([sys.executable, "-c", SCRIPT, str(model)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                                      "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert f"IMPORTED {expected}" in res.stdout


def test_no_torch_in_edge_sources():
    for path in Path(edge.__file__).parent.rglob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "from torch" not in text, path
