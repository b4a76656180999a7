"""Test fixture helper: one exact release of a package installed with ``pip install --no-deps
--target`` into ``~/.cache/edge-students/<kind>/<dist>-<version>`` (downloaded once; CI re-runs
reuse it). A registry that cannot be reached skips the test with pip's reason."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge-students"


def publish(tmp: Path, final: Path) -> None:
    """Rename a finished folder into place; another process may have won the race."""
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


def pip_target(dist: str, version: str, marker: str, root: Path) -> Path:
    """The folder holding ``dist==version`` (``marker``: a file it must contain)."""
    final = root / f"{dist}-{version}"
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--quiet",
           "--disable-pip-version-check", "--target", str(tmp), f"{dist}=={version}"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        pytest.skip(f"{dist}=={version}: the package registry did not answer within 300 s")
    if r.returncode != 0 or not (tmp / marker).is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        why = (r.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"cannot install {dist}=={version} from the package registry: {why}")
    publish(tmp, final)
    return final
