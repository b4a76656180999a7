"""Wall time per training step, all methods measured in one run, interleaved.

Steps are called round-robin (ce, posd, kd_teacher, kd_student, dml, ce, ...) so that a change in
machine load hits every method alike; each gets ``warmup`` untimed calls first. CUDA is
synchronised before and after each timed call. A step faster than ``min_seconds`` is called
several times per round (the count set from its first timed call), so millisecond steps are not
measured at the resolution of scheduler noise. The median over ``repeats`` rounds is reported.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Dict, List, Sequence

import torch

from profiling.steps import Step


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step_times(steps: Sequence[Step], repeats: int = 3, warmup: int = 1,
               min_seconds: float = 0.05) -> Dict[str, float]:
    """Median seconds per call for each step, keyed by ``step.method``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: Dict[str, List[float]] = {s.method: [] for s in steps}
    inner = {s.method: 1 for s in steps}
    for i in range(warmup + repeats):
        for s in steps:
            n = inner[s.method]
            _sync(s.device)
            t0 = time.perf_counter()
            for _ in range(n):
                s.run()
            _sync(s.device)
            per_call = (time.perf_counter() - t0) / n
            if i >= warmup:
                times[s.method].append(per_call)
            if i == warmup:  # calibrate the later rounds from the first timed one
                inner[s.method] = max(1, math.ceil(min_seconds / max(per_call, 1e-6)))
    return {m: statistics.median(v) for m, v in times.items()}


def ratios(t: Dict[str, float]) -> Dict[str, float]:
    """POSD / CE, and KD (both phases: teacher step + distillation step) / POSD, DML / POSD."""
    kd = t["kd_teacher"] + t["kd_student"]
    return {"posd_over_ce": t["posd"] / t["ce"], "kd_over_posd": kd / t["posd"],
            "dml_over_posd": t["dml"] / t["posd"]}
