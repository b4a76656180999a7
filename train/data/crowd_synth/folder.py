"""The crowd_synth image folder: parallel, chunked, atomic, cached.

``ROOT/{train,test}/{crowd,no_crowd}/NNNNN.png`` plus a marker file written last. Image ``i`` of
(split, class) is a pure function of (version, seed, split, class, i), so it is the same whatever
the size of the set; the folder name and the marker hold the generator version.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from train.data.crowd_synth.layout import (CLASSES, GENERATOR_VERSION, MARKER, PAPER_TRAIN_PER_CLASS,
                                           SIZE, SPLITS, VERSIONS, n_test_per_class)

CHUNK = 64                        # images per worker task


#: the versions whose scenes carry v5's photographs (scikit-image's, checked by their sha256)
PHOTO_VERSIONS = (5, 6, 10)


def renderer(version: int = GENERATOR_VERSION) -> Callable[[int, int, int, int], np.ndarray]:
    """``render(seed, split_id, class_id, index) -> 128x128x3 uint8 RGB`` of a generator version."""
    if version == 2:
        from train.data.crowd_synth.scene_v2 import render
    elif version == 3:
        from train.data.crowd_synth.scene_v3 import render
    elif version == 4:
        from train.data.crowd_synth.scene_v4 import render
    elif version == 5:
        from train.data.crowd_synth.scene_v5 import render
    elif version == 6:
        from train.data.crowd_synth.scene_v6 import render
    elif version == 10:
        from train.data.crowd_synth.scene_v10 import render
    else:
        raise ValueError(f"crowd_synth generator version {version!r} not in {VERSIONS}")
    return render


def _tasks(train_per_class: int, chunk: int = CHUNK) -> List[Tuple[int, int, int, int]]:
    """(split_id, class_id, start, stop) chunks covering every image of the folder."""
    counts = (train_per_class, n_test_per_class(train_per_class))
    return [(s, c, start, min(start + chunk, counts[s]))
            for s in range(len(SPLITS)) for c in range(len(CLASSES))
            for start in range(0, counts[s], chunk)]


def _write_chunk(args: Tuple[Path, int, int, Tuple[int, int, int, int]]) -> int:
    """Worker: render and write one chunk of PNGs; returns the number written."""
    import cv2

    root, version, seed, (split_id, class_id, start, stop) = args
    render = renderer(version)
    out = root / SPLITS[split_id] / CLASSES[class_id]
    for i in range(start, stop):
        img = render(seed, split_id, class_id, i)
        if not cv2.imwrite(str(out / f"{i:05d}.png"), img[:, :, ::-1]):
            raise OSError(f"could not write {out / f'{i:05d}.png'}")
    return stop - start


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def _run_tasks(root: Path, version: int, seed: int, tasks: Sequence[Tuple[int, int, int, int]],
               workers: int, progress: bool) -> None:
    """Render every chunk, in ``workers`` fresh worker processes when more than one is asked for."""
    from tqdm.auto import tqdm

    total = sum(t[3] - t[2] for t in tasks)
    bar = tqdm(total=total, desc=f"crowd_synth v{version}", unit="img", disable=not progress,
               mininterval=1.0)
    with bar:
        if workers <= 1:
            _init_worker()
            for t in tasks:
                bar.update(_write_chunk((root, version, seed, t)))
            return
        _run_worker_processes(root, version, seed, tasks, workers, bar.update)


def _run_worker_processes(root: Path, version: int, seed: int, tasks, workers: int, report) -> None:
    """Fresh interpreter processes, each rendering every ``workers``-th chunk.

    Not a multiprocessing pool: under fork, a child of a process that already ran OpenCV or
    OpenMP thread pools (the training CLI, a test session) can inherit a lock held by a thread
    that does not exist in the child and hang; under spawn/forkserver the children re-import the
    caller's main script, which hangs a user's script that lacks the ``__main__`` guard. A plain
    subprocess has neither problem. Each worker prints one line per finished chunk."""
    import subprocess
    import sys
    import threading

    package_root = str(Path(__file__).resolve().parents[3])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-c", "from train.data.crowd_synth.folder import _worker_main; _worker_main()"]
    procs = []
    for w in range(workers):
        job = json.dumps({"root": str(root), "version": version, "seed": seed, "tasks": [list(t) for t in tasks[w::workers]]})
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        proc.stdin.write(job)
        proc.stdin.close()
        procs.append(proc)
    lock = threading.Lock()

    def follow(proc) -> None:
        for line in proc.stdout:
            with lock:
                report(int(line))

    readers = [threading.Thread(target=follow, args=(p,), daemon=True) for p in procs]
    for t in readers:
        t.start()
    try:
        for t in readers:
            t.join()
        failed = [(p.wait(), p.stderr.read()) for p in procs]
    except BaseException:  # Ctrl-C: do not leave renderers writing into the temporary folder
        for p in procs:
            p.kill()
        raise
    bad = [(code, err) for code, err in failed if code != 0]
    if bad:   # the worker's last line says why (e.g. "OSError: ... No space left on device")
        from train.data import DataError

        why = (bad[0][1].strip().splitlines() or [f"exit code {bad[0][0]}"])[-1]
        raise DataError(f"crowd_synth: generating images into {root} failed: {why}")


def _worker_main() -> None:
    """Entry point of one worker process: a JSON job on stdin, one count per chunk on stdout."""
    import sys

    job = json.loads(sys.stdin.read())
    _init_worker()
    root = Path(job["root"])
    for t in job["tasks"]:
        print(_write_chunk((root, int(job["version"]), int(job["seed"]), tuple(t))), flush=True)


def is_complete(root: Path, train_per_class: Optional[int] = None, seed: Optional[int] = None,
                version: int = GENERATOR_VERSION) -> bool:
    """True when ``root`` holds a finished folder of generator ``version`` (and, when given,
    of this size and seed): the marker is written only after the last image."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        return False
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return (info.get("generator_version") == version
            and train_per_class in (None, info.get("train_per_class"))
            and seed in (None, info.get("seed")))


def _remove_stale_temps(root: Path) -> None:
    """Delete temporary siblings left by killed runs (their writer process no longer exists)."""
    for tmp in root.parent.glob(f".{root.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
            alive = pid != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:  # someone else's live process
            alive = True
        if not alive:
            shutil.rmtree(tmp, ignore_errors=True)


def generate_folder(root, train_per_class: int, seed: int = 0, workers: Optional[int] = None,
                    progress: bool = True, version: int = GENERATOR_VERSION) -> Path:
    """Write the image folder at ``root`` (replacing an incomplete one) via a temporary sibling."""
    root = Path(root)
    renderer(version)                                   # an unknown version fails before any work
    if version in PHOTO_VERSIONS:                       # so do missing or changed photographs
        from train.data.crowd_synth.scene_v5 import photos

        photos()
    if train_per_class < 1:
        raise ValueError(f"train_per_class must be >= 1, got {train_per_class}")
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for split in SPLITS:
            for name in CLASSES:
                (tmp / split / name).mkdir(parents=True)
        tasks = _tasks(train_per_class)
        start = time.perf_counter()
        _run_tasks(tmp, version, seed, tasks, min(workers or os.cpu_count() or 1, len(tasks)), progress)
        info = {"generator_version": version, "seed": seed, "classes": list(CLASSES),
                "train_per_class": train_per_class, "test_per_class": n_test_per_class(train_per_class),
                "size": SIZE, "seconds": round(time.perf_counter() - start, 2)}
        (tmp / MARKER).write_text(json.dumps(info, indent=1) + "\n")
        if root.exists() and not is_complete(root, train_per_class, seed, version):
            shutil.rmtree(root)  # half-written, another version or other settings: never used
        try:
            os.rename(tmp, root)
        except OSError:
            if not is_complete(root, train_per_class, seed, version):  # not a race another writer won
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return root


def cache_folder(train_per_class: int, seed: int = 0, cache_dir=None,
                 version: int = GENERATOR_VERSION) -> Path:
    """Where :func:`ensure_crowd_synth` keeps the folder for these settings."""
    if cache_dir is None:
        from train.data import default_cache_dir

        cache_dir = default_cache_dir() / "crowd_synth"
    return Path(cache_dir) / f"v{version}-s{seed}-n{train_per_class}"


def ensure_crowd_synth(train_per_class: int = PAPER_TRAIN_PER_CLASS, seed: int = 0,
                       cache_dir=None, workers: Optional[int] = None, progress: bool = True,
                       version: int = GENERATOR_VERSION) -> Path:
    """The cached image folder ``ROOT/{train,test}/{crowd,no_crowd}/*.png``, generated once."""
    root = cache_folder(train_per_class, seed, cache_dir, version)
    if is_complete(root, train_per_class, seed, version):
        return root
    return generate_folder(root, train_per_class, seed, workers, progress, version)

