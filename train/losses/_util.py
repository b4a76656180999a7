"""Helpers shared by the distillation losses (targets that teach are detached, so no gradient flows into them)."""
from __future__ import annotations

import torch


def teaching_target(t: torch.Tensor) -> torch.Tensor:
    """A tensor used as a *target* (teacher output, peer output, neighbour mean): no gradient.

    One helper so that every method detaches its targets the same way and a reader can grep for
    where gradient is deliberately stopped (KD, DML, OSKD).
    """
    return t.detach()


def check_positive_int(name: str, value: int) -> int:
    """``value`` as an int >= 1, or a ValueError naming it."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


#: how J_CE combines the samples of a batch: "mean" (PyTorch's default, what every run did before
#: this option existed) or "sum", eq. (2) of the POSD paper as written. Summing makes the CE term
#: and its gradient N times larger at batch N, so against a distillation term the weight lambda
#: acts N times smaller than under "mean" (and plain SGD steps N times larger).
CE_REDUCTIONS = ("mean", "sum")


def check_ce_reduction(value: str) -> str:
    """``value`` if it is one of :data:`CE_REDUCTIONS`, else a ValueError naming it."""
    if value not in CE_REDUCTIONS:
        raise ValueError(f"ce_reduction must be one of {', '.join(CE_REDUCTIONS)}, got {value!r}")
    return value
