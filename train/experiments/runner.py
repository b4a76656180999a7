"""What each run folder needs, and running the jobs (in-process for one at a time, else subprocesses).

A folder is *done* when ``metrics.json`` says ``epochs_done >= epochs``; *resume* when it holds a
``state.pt`` (interrupted, or asked for more epochs); *broken* when it holds results that cannot be
continued (unreadable JSON, a final model without a state); *conflict* when its saved configuration
differs from the job's in a setting that changes the result; *running* while another live process
holds its lock. Broken, conflicting and running folders are reported and skipped, never fatal.

The lock (``.sweep.lock``, JSON) names the host and the process that trains the folder: the
sweep itself for in-process runs, the trainer subprocess otherwise (handed over once it starts),
so a sweep killed with its trainers still running leaves locks that keep a rerun out until those
trainers end. A lock of a dead process on this host is stale and taken over; a lock of another
host cannot be checked from here and holds until ``--break-locks``.
"""
from __future__ import annotations

import contextlib
import io
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

from edge.files import atomic_write
from train.config import RESUMABLE_CHANGES, TrainConfig
from train.experiments.grid import Job

LOCK = ".sweep.lock"
LOG = "train.log"


@dataclass(frozen=True)
class Planned:
    job: Job
    out: Path
    status: str          # new | done | resume | broken | conflict | running
    detail: str = ""
    break_lock: bool = False   # another host's lock is overridden (--break-locks)

    @property
    def runnable(self) -> bool:
        return self.status in ("new", "resume")


def resolve_config(job: Job, out: Path) -> TrainConfig:
    """The TrainConfig `python -m train` will build for this job (same parser, same presets)."""
    from train.cli import build_parser, config_from_args

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):      # the parser's one error line goes in the message
            args = build_parser().parse_args(list(job.argv) + ["--out", str(out)])
    except SystemExit:
        why = said.getvalue().strip().splitlines()
        raise ValueError(f"{job.name}: `python -m train` rejects {' '.join(job.argv)}"
                         + (f" ({why[-1].split('error: ', 1)[-1]})" if why else "")) from None
    return config_from_args(args)


def folder_status(out: Path, cfg: TrainConfig, check_lock: bool = True,
                  break_locks: bool = False) -> Tuple[str, str]:
    holder = _lock_holder(out, break_locks) if check_lock else None
    if holder is not None:
        return "running", f"locked by {holder}" + ("" if break_locks or holder.startswith(_HOST + ":")
                                                   else "; --break-locks if nothing runs there")
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
    if (out / "model.pt").exists():
        return "broken", "model.pt without state.pt or metrics.json"
    leftovers = [n for n in ("metrics.jsonl", "best.pt") if (out / n).exists()]
    if leftovers:                       # killed before its first state.pt: --resume starts at epoch 1
        return _check_config(out, cfg, "resume", f"{', '.join(leftovers)} but no state.pt yet; from epoch 1")
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


def plan(jobs: Sequence[Job], root: Path, redo_broken: bool = False,
         break_locks: bool = False) -> List[Planned]:
    out = []
    for job in jobs:
        path = job.out(root)
        status, detail = folder_status(path, resolve_config(job, path), break_locks=break_locks)
        if status == "broken" and redo_broken:
            status, detail = "new", f"redo ({detail})"
        out.append(Planned(job, path, status, detail, break_lock=break_locks))
    return out


def train_argv(p: Planned) -> List[str]:
    argv = list(p.job.argv) + ["--out", str(p.out), "--no-progress"]
    if p.status == "resume":
        argv.append("--resume")
    elif p.detail.startswith("redo"):
        argv.append("--overwrite")
    return argv


# ---------------------------------------------------------------------------------- locks
_HOST = socket.gethostname()


def _lock_holder(out: Path, break_foreign: bool = False) -> Optional[str]:
    """Who holds the folder's lock, or None: no lock, a stale one (its process on this host is
    gone, or its PID now belongs to a later process), or another host's with ``break_foreign``."""
    path = out / LOCK
    try:
        info = json.loads(path.read_text())
        host, pid = info.get("host"), int(info.get("pid", -1))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, AttributeError):
        return None if break_foreign else "unknown (unreadable lock)"
    if host == _HOST:
        return f"{host}:{pid}" if _alive(pid, info.get("started")) else None
    return None if break_foreign else f"{host}:{pid}"


def _alive(pid: int, started: Optional[float] = None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    state, now = _proc_stat(pid)
    if state == "Z":                  # exited, not yet reaped (an orphan under a lazy init)
        return False
    return started is None or now is None or now == started


def _proc_stat(pid: int) -> Tuple[Optional[str], Optional[int]]:
    """(state, start time) of a process from /proc/PID/stat (Linux; fields 3 and 22, the start in
    clock ticks since boot): the start time tells a live lock holder from a later process that
    got its PID. (None, None) where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None, None


def _start_time(pid: int) -> Optional[int]:
    return _proc_stat(pid)[1]


def _lock_record(pid: int) -> bytes:
    return json.dumps({"host": _HOST, "pid": pid, "started": _start_time(pid), "sweep_pid": os.getpid(),
                       "since": time.time()}).encode()


class Lock:
    """A taken folder lock; :meth:`hand_to` names the trainer process that now holds it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def hand_to(self, pid: int) -> None:
        atomic_write(self.path, lambda f: f.write(_lock_record(pid)))   # the lock never disappears


@contextlib.contextmanager
def locked(out: Path, break_foreign: bool = False):
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    if path.exists() and _lock_holder(out, break_foreign) is None:
        path.unlink(missing_ok=True)                 # stale, or overridden with --break-locks
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)   # raises FileExistsError if taken
    with os.fdopen(fd, "wb") as f:
        f.write(_lock_record(os.getpid()))
    try:
        yield Lock(path)
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

    with locked(p.out, p.break_lock):
        _still_needed(p)
        with open(p.out / LOG, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            return train_main(train_argv(p))


def run_subprocess(p: Planned, env: Dict[str, str]) -> int:
    with locked(p.out, p.break_lock) as lock:
        _still_needed(p)
        with open(p.out / LOG, "a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "train", *train_argv(p)], stdout=log,
                                    stderr=subprocess.STDOUT, env=env)
            try:
                lock.hand_to(proc.pid)      # if this sweep dies, the lock still names a live trainer
                return proc.wait()
            except BaseException:
                _stop(proc)
                raise


def _stop(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """Ctrl-C reached the trainer too (same terminal): give it time to save, then kill it."""
    try:
        proc.wait(timeout=grace_s)
    except BaseException:
        proc.kill()
        proc.wait()


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
