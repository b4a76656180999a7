"""File helpers every part of the toolkit shares: atomic writes, sha256, image listings.

Standard library (+ ``edge.contract`` for the image extensions) only, so ``train/``, ``export/``,
``profiling/`` and the Jetson runtime write and list files the same way without importing the
TensorRT sidecar module.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import List, Optional

from edge.contract import IMAGE_EXTENSIONS


def is_image_file(path) -> bool:
    """A regular file whose suffix is one of :data:`edge.contract.IMAGE_EXTENSIONS`."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def images_in(folder) -> List[Path]:
    """The image files directly in ``folder``, sorted (sub-folders are not searched)."""
    return sorted(p for p in Path(folder).iterdir() if is_image_file(p))


def images_under(folder) -> List[Path]:
    """The image files anywhere below ``folder``, sorted; hidden files and folders are skipped."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*")
                  if is_image_file(p) and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def file_sha256(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path, write, sync: bool = False) -> Path:
    """Write a file through ``write(binary_file)`` into a temporary sibling, then rename it over
    ``path``: a crash leaves the old file or the new one, never half of one.

    The file gets the mode a plain ``open()`` would give it (0o666 less the umask), not the
    0o600 of the temporary file, so a service user or a colleague can read it. A failing write
    (a full disk) raises the ``OSError`` itself, naming ``path``, even when the writer (e.g.
    ``torch.save``) would wrap it in its own error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    sink = None
    try:
        with os.fdopen(fd, "wb") as f:
            sink = _ErrorMemo(f)
            write(sink)
            sink.flush()
            if sync:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        first = sink.error if sink is not None else None
        if first is not None:
            raise OSError(first.errno, first.strerror or str(first), str(path)) from None
        raise
    return path


class _ErrorMemo:
    """A binary file that remembers the first ``OSError`` of a write or flush: writers that
    report it as their own exception (``torch.save``: "enforce fail ... unexpected pos") would
    hide a plain "No space left on device"."""

    def __init__(self, f) -> None:
        self._f = f
        self.error: Optional[OSError] = None

    def write(self, data) -> int:
        return self._call(self._f.write, data)

    def flush(self) -> None:
        self._call(self._f.flush)

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except OSError as e:
            self.error = self.error or e
            raise

    def __getattr__(self, name: str):
        return getattr(self._f, name)


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc), else
    set and restored at once under a lock, through a restrictive value, so a file another
    thread creates meanwhile is never more open than intended."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o077)
        os.umask(old)
    return old
