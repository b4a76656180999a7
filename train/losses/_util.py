"""Helpers shared by the distillation losses (STYLE.md rule 5: targets that teach are detached)."""
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
