"""Wall time per training step, all methods measured in one run, interleaved.

Steps are called round-robin (ce, posd, kd_teacher, kd_student, dml, ce, ...) so that a change in
machine load hits every method alike; each gets ``warmup`` untimed calls first. CUDA is
synchronised before and after each timed call. The median of ``repeats`` calls is reported.
"""
from __future__ import annotations

import statistics
import time
from typing import Dict, List, Sequence

import torch

from profiling.steps import Step


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def step_times(steps: Sequence[Step], repeats: int = 3, warmup: int = 1) -> Dict[str, float]:
    """Median seconds per call for each step, keyed by ``step.method``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times: Dict[str, List[float]] = {s.method: [] for s in steps}
    for i in range(warmup + repeats):
        for s in steps:
            _sync(s.device)
            t0 = time.perf_counter()
            s.run()
            _sync(s.device)
            if i >= warmup:
                times[s.method].append(time.perf_counter() - t0)
    return {m: statistics.median(v) for m, v in times.items()}


def ratios(t: Dict[str, float]) -> Dict[str, float]:
    """POSD / CE, and KD (both phases: teacher step + distillation step) / POSD, DML / POSD."""
    kd = t["kd_teacher"] + t["kd_student"]
    return {"posd_over_ce": t["posd"] / t["ce"], "kd_over_posd": kd / t["posd"],
            "dml_over_posd": t["dml"] / t["posd"]}
