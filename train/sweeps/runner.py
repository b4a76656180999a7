"""What each run folder needs, and running the jobs (in-process for one at a time, else subprocesses).

A folder is *done* when ``metrics.json`` says ``epochs_done >= epochs``; *resume* when it holds a
``state.pt`` (interrupted, or asked for more epochs); *broken* when it holds results that cannot be
continued (unreadable JSON, a log without a state); *conflict* when its saved configuration differs
from the job's in a setting that changes the result; *running* while another live process holds its
lock. Broken, conflicting and running folders are reported and skipped, never fatal.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import Dict, List, Optional, Sequence, Tuple

from train.config import RESUMABLE_CHANGES, TrainConfig
from train.sweeps.grid import Job

LOCK = ".sweep.lock"
LOG = "train.log"


@dataclass(frozen=True)
class Planned:
    job: Job
    out: Path
    status: str          # new | done | resume | broken | conflict | running
    detail: str = ""

    @property
    def runnable(self) -> bool:
        return self.status in ("new", "resume")


def resolve_config(job: Job, out: Path) -> TrainConfig:
    """The TrainConfig `python -m train` will build for this job (same parser, same presets)."""
    from train.cli import build_parser, config_from_args

    try:
        args = build_parser().parse_args(list(job.argv) + ["--out", str(out)])
    except SystemExit:
        raise ValueError(f"{job.name}: `python -m train` rejects {' '.join(job.argv)}") from None
    return config_from_args(args)


def folder_status(out: Path, cfg: TrainConfig, check_lock: bool = True) -> Tuple[str, str]:
    if check_lock and _lock_holder(out) is not None:
        return "running", f"locked by {_lock_holder(out)}"
    if (out / "metrics.json").is_file():
        try:
            summary = json.loads((out / "metrics.json").read_text())
            done = int(summary["epochs_done"])
        except (ValueError, KeyError, TypeError) as e:
            return "broken", f"unreadable metrics.json ({e.__class__.__name__}: {e})"
        if done >= cfg.epochs:
            return _check_config(out, cfg, "done", f"{done} epochs")
        if (out / "state.pt").is_file():
            return _check_config(out, cfg, "resume", f"{done}/{cfg.epochs} epochs, extending")
        return "broken", f"metrics.json has {done} epochs and there is no state.pt to continue"
    if (out / "state.pt").is_file():
        return _check_config(out, cfg, "resume", "interrupted")
    leftovers = [n for n in ("metrics.jsonl", "model.pt") if (out / n).exists()]
    if leftovers:
        return "broken", f"{', '.join(leftovers)} without state.pt (killed before its first epoch ended?)"
    return "new", ""


def _check_config(out: Path, cfg: TrainConfig, status: str, detail: str) -> Tuple[str, str]:
    try:
        saved = json.loads((out / "config.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return "broken", f"unreadable config.json ({e.__class__.__name__})"
    ignore = set(RESUMABLE_CHANGES) | {"out"}
    mine = cfg.to_dict()
    diff = sorted(k for k in mine if k not in ignore and saved.get(k) != mine[k])
    if diff:
        return "conflict", "saved config differs in " + ", ".join(f"{k}={saved.get(k)!r}" for k in diff)
    return status, detail


def plan(jobs: Sequence[Job], root: Path, redo_broken: bool = False) -> List[Planned]:
    out = []
    for job in jobs:
        path = job.out(root)
        status, detail = folder_status(path, resolve_config(job, path))
        if status == "broken" and redo_broken:
            status, detail = "new", f"redo ({detail})"
        out.append(Planned(job, path, status, detail))
    return out


def train_argv(p: Planned) -> List[str]:
    argv = list(p.job.argv) + ["--out", str(p.out), "--no-progress"]
    if p.status == "resume":
        argv.append("--resume")
    elif p.detail.startswith("redo"):
        argv.append("--overwrite")
    return argv


# ---------------------------------------------------------------------------------- locks
def _lock_holder(out: Path) -> Optional[str]:
    """Who holds the folder's lock, or None (a lock left by a dead process on this host is stale)."""
    path = out / LOCK
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "unknown (unreadable lock)"
    if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
        return None
    return f"{info.get('host')}:{info.get('pid')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


@contextlib.contextmanager
def locked(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    if path.exists() and _lock_holder(out) is None:
        path.unlink(missing_ok=True)                 # stale
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)   # raises FileExistsError if taken
    with os.fdopen(fd, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}, f)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------- running
class AlreadyDone(Exception):
    """Another sweep process finished this run between planning and locking."""


def _still_needed(p: Planned) -> None:
    """Called with the lock held: a concurrent sweep (another shard, another machine on the same
    folder) may have finished the run since :func:`plan` looked."""
    status, _ = folder_status(p.out, resolve_config(p.job, p.out), check_lock=False)
    if status != p.status and not p.detail.startswith("redo"):
        raise AlreadyDone(status)


def run_inprocess(p: Planned) -> int:
    """One job through ``train.cli.main`` in this process, its output in the run's train.log."""
    from train.cli import main as train_main

    with locked(p.out):
        _still_needed(p)
        with open(p.out / LOG, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return train_main(train_argv(p))


def run_subprocess(p: Planned, env: Dict[str, str]) -> int:
    with locked(p.out):
        _still_needed(p)
        with open(p.out / LOG, "a") as log:
            proc = subprocess.run([sys.executable, "-m", "train", *train_argv(p)], stdout=log,
                                  stderr=subprocess.STDOUT, env=env)
            return proc.returncode


def run_all(todo: Sequence[Planned], jobs: int = 1, gpus: Sequence[str] = (),
            say=print) -> Dict[str, int]:
    """Run the jobs, ``jobs`` at a time; returns {"ok", "failed", "interrupted", "skipped": n}.
    A failing run is reported (see its train.log) and the sweep goes on; Ctrl-C stops it (the
    runs in flight save a resumable state)."""
    counts = {"ok": 0, "failed": 0, "interrupted": 0, "skipped": 0}
    total = len(todo)
    lock = threading.Lock()
    stop = threading.Event()
    slots: "Queue[Optional[str]]" = Queue()
    for s in range(jobs):
        slots.put(gpus[s % len(gpus)] if gpus else None)
    threads = max(1, (os.cpu_count() or 1) // jobs)

    def one(i: int, p: Planned) -> None:
        if stop.is_set():
            return
        slot = slots.get()
        try:
            with lock:
                say(f"[{i + 1}/{total}] {p.job.name}: start ({p.status}{', ' + p.detail if p.detail else ''})")
            t0 = time.perf_counter()
            if jobs == 1 and not gpus:
                rc = run_inprocess(p)
            else:
                env = dict(os.environ)
                env.setdefault("OMP_NUM_THREADS", str(threads))
                if slot is not None:
                    env["CUDA_VISIBLE_DEVICES"] = slot
                rc = run_subprocess(p, env)
            with lock:
                key = "ok" if rc == 0 else "interrupted" if rc in (130, -2) else "failed"
                counts[key] += 1
                if key == "interrupted":
                    stop.set()
                end = _result_line(p.out) if rc == 0 else f"exit code {rc}, see {p.out / LOG}"
                say(f"[{i + 1}/{total}] {p.job.name}: {key} in {time.perf_counter() - t0:.0f}s: {end}")
        except FileExistsError:
            with lock:
                counts["skipped"] += 1
                say(f"[{i + 1}/{total}] {p.job.name}: skipped, another process holds its lock")
        except AlreadyDone as e:
            with lock:
                counts["skipped"] += 1
                say(f"[{i + 1}/{total}] {p.job.name}: skipped, now {e} (another sweep process)")
        finally:
            slots.put(slot)

    try:
        if jobs == 1:
            for i, p in enumerate(todo):
                one(i, p)
                if stop.is_set():
                    break
        else:
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for f in [pool.submit(one, i, p) for i, p in enumerate(todo)]:
                    f.result()
    except KeyboardInterrupt:
        stop.set()
        counts["interrupted"] += 1
    return counts


def _result_line(out: Path) -> str:
    try:
        s = json.loads((out / "metrics.json").read_text())
        return f"best {s['best_test_acc']:.4f} (epoch {s['best_epoch']}), final {s['final_test_acc']:.4f}"
    except (OSError, ValueError, KeyError, TypeError):
        return "finished (no readable metrics.json)"
