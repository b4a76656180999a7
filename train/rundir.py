"""A run's folder (``--out``): everything the training loop writes there and reads back.

``config.json`` (the configuration and what it resolved to), ``metrics.jsonl`` (one line per
epoch, appended), ``metrics.json`` (the summary), ``model.pt`` (the final weights), ``best.pt``
(the weights ``--select-best`` chose) and ``state.pt`` (resumable: weights, optimiser, scheduler,
loss state, torch generator, :class:`RunState`). Every file but the appended log is written
through :func:`edge.files.atomic_write`; under DDP only rank 0 writes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch

from edge.contract import DecisionRule
from edge.files import atomic_write
from train.build import TrainingParts
from train.checkpoint import (CheckpointError, build_checkpoint, load_checkpoint, load_weights,
                              save_checkpoint, train_state_of)
from train.config import RESUMABLE_CHANGES, TrainConfig
from train.distributed import DistContext
from train.ema import WeightAverage

#: the files of a run (each written through atomic_write, except the appended metrics.jsonl)
OUTPUTS = ("state.pt", "metrics.jsonl", "metrics.json", "model.pt", "best.pt")


class RunExists(RuntimeError):
    """The output folder already holds a run and neither --resume nor --overwrite was given."""


@dataclass
class RunState:
    epoch: int = 0                       # the epoch in progress (0-based)
    step: int = 0                        # the next step to run within it
    sums: Dict[str, float] = field(default_factory=dict)   # running sums of the epoch
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = -1
    elapsed: float = 0.0                 # seconds of training before this process
    best_val: float = -1.0               # best validation (balanced accuracy, ROC-AUC), its epoch
    best_val_auc: float = -1.0
    best_val_epoch: int = -1
    best_pt_epoch: int = -1              # the epoch best.pt holds (by --select-best)

    def to_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "sums": dict(self.sums),
                "history": list(self.history), "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "elapsed": self.elapsed, "best_val": self.best_val,
                "best_val_auc": self.best_val_auc, "best_val_epoch": self.best_val_epoch,
                "best_pt_epoch": self.best_pt_epoch}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunState":
        return cls(int(d["epoch"]), int(d["step"]), dict(d["sums"]), list(d["history"]),
                   float(d["best_acc"]), int(d["best_epoch"]), float(d.get("elapsed", 0.0)),
                   float(d.get("best_val", -1.0)), float(d.get("best_val_auc", -1.0)),
                   int(d.get("best_val_epoch", -1)), int(d.get("best_pt_epoch", d["best_epoch"])))


class RunDir:
    """The folder of the run ``cfg`` describes. ``description`` holds the checkpoint fields that
    describe the model and its data (``arch_kwargs``, ``class_names``, ``input_size``,
    ``in_channels``, ``preprocess``, ``scale``; see :func:`train.checkpoint.build_checkpoint`)."""

    def __init__(self, cfg: TrainConfig, description: Mapping[str, Any], dist: DistContext) -> None:
        self.cfg = cfg
        self.path = Path(cfg.out)
        self.description = dict(description)
        self.dist = dist

    # -- checkpoints ---------------------------------------------------------------------
    def checkpoint(self, parts: TrainingParts, metrics: Dict[str, Any],
                   state: Optional[RunState] = None,
                   decision: Optional[DecisionRule] = None, model: Optional[torch.nn.Module] = None,
                   ema: Optional[WeightAverage] = None) -> Dict[str, Any]:
        """The checkpoint of ``model`` (default ``parts.model``); with ``state``, resumable (what
        ``state.pt`` holds: the trained weights, and under ``--ema`` the average beside them)."""
        train_state = None
        if state is not None:
            train_state = {
                "run": state.to_dict(),
                "optimizer": parts.optimizer.state_dict(),
                "scheduler": parts.scheduler.state_dict(),
                "loss_state": parts.loss.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
            if ema is not None:
                train_state["ema"] = ema.state_dict()
        return build_checkpoint(
            model if model is not None else parts.model, arch=self.cfg.model, method=self.cfg.method,
            config=self.cfg.to_dict(), metrics=metrics, train_state=train_state,
            decision=None if decision is None else decision.to_dict(), **self.description)

    def save_state(self, parts: TrainingParts, state: RunState, summary: Dict[str, Any],
                   ema: Optional[WeightAverage] = None) -> None:
        if self.dist.is_main:
            save_checkpoint(self.checkpoint(parts, summary, state, ema=ema), self.path / "state.pt")

    def save_best(self, parts: TrainingParts, metrics: Dict[str, Any],
                  decision: Optional[DecisionRule], model: Optional[torch.nn.Module] = None) -> None:
        if self.dist.is_main:
            save_checkpoint(self.checkpoint(parts, metrics, decision=decision, model=model),
                            self.path / "best.pt")

    def append_metrics(self, record: Dict[str, Any]) -> None:
        if self.dist.is_main:
            with open(self.path / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def finish(self, parts: TrainingParts, summary: Dict[str, Any],
               decision: Optional[DecisionRule], model: Optional[torch.nn.Module] = None) -> None:
        """``model.pt`` (the final weights, or ``model``) and ``metrics.json`` (``summary``)."""
        if self.dist.is_main:
            save_checkpoint(self.checkpoint(parts, summary, decision=decision, model=model),
                            self.path / "model.pt")
            _write_json(self.path / "metrics.json", summary)

    # -- starting and resuming -----------------------------------------------------------
    def prepare(self, parts: TrainingParts, device: torch.device,
                resolved: Callable[[], Dict[str, Any]],
                ema: Optional[WeightAverage] = None) -> Optional[RunState]:
        """Before the first step: refuse to replace a run silently; on ``--resume`` restore
        ``state.pt`` into ``parts`` (before anything is written, so a refused resume changes
        nothing); then (rank 0) create the folder, clear what ``--overwrite`` replaces, rewrite
        ``metrics.jsonl`` to the restored epochs and write ``config.json`` with ``resolved()``.
        Returns the restored state, None for a run that starts at epoch 1."""
        existing = [n for n in ("state.pt", "metrics.jsonl", "model.pt", "best.pt") if (self.path / n).exists()]
        if existing and not (self.cfg.resume or self.cfg.overwrite):
            raise RunExists(f"{self.path} already holds a run ({', '.join(existing)}); pass --resume "
                            "to continue it, --overwrite to replace it, or choose another --out")
        state = self.restore(parts, device, ema) if self.cfg.resume else None
        if self.dist.is_main:               # every file is written by rank 0 only
            self.path.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(self.path)
            if self.cfg.overwrite and not self.cfg.resume:
                for n in OUTPUTS:
                    (self.path / n).unlink(missing_ok=True)
            if self.cfg.resume:             # the log holds exactly the epochs of the restored state
                _write_lines(self.path / "metrics.jsonl", state.history if state is not None else [])
            _write_json(self.path / "config.json", {"config": self.cfg.to_dict(), "resolved": resolved()})
        return state

    def restore(self, parts: TrainingParts, device: torch.device,
                ema: Optional[WeightAverage] = None) -> Optional[RunState]:
        """Load ``state.pt`` into ``parts`` (and ``ema``) and the torch generator; its :class:`RunState`. A run
        killed before its first state was saved (only config.json, perhaps a log and best.pt)
        starts again from epoch 1 (None): that is where it stands."""
        path = self.path / "state.pt"
        if not path.is_file():
            if not (self.path / "config.json").is_file():
                raise FileNotFoundError(f"--resume: no state.pt in {self.path} to resume from")
            self._check_same_run(_saved_config(self.path / "config.json"), self.path / "config.json")
            if self.dist.is_main:
                print(f"{self.path}: no state.pt yet (stopped before the end of epoch 1); "
                      "starting at epoch 1", flush=True)
            return None
        ckpt = load_checkpoint(path, map_location=device)
        ts = train_state_of(ckpt, path)
        self._check_same_run(ckpt["config"], path)
        load_weights(parts.model, ckpt["state_dict"], path)
        try:
            parts.optimizer.load_state_dict(ts["optimizer"])
            parts.scheduler.load_state_dict(ts["scheduler"])
            parts.loss.load_state_dict(ts["loss_state"])
            torch.set_rng_state(ts["torch_rng"])
            if ema is not None:
                ema.load_state_dict(ts["ema"])
            return RunState.from_dict(ts["run"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise CheckpointError(f"{path}: the training state does not fit this run "
                                  f"({type(e).__name__}: {first})") from None

    def _check_same_run(self, saved: Any, where: Path) -> None:
        """--resume continues only the same run: settings that change the result must match
        (the folder itself may have moved: ``out`` is one of the changes allowed)."""
        try:
            saved_cfg = TrainConfig.from_dict(saved).to_dict()
        except (TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"{where}: the saved configuration is not readable ({e})") from None
        mine = self.cfg.to_dict()
        diff = sorted(k for k, v in saved_cfg.items() if mine[k] != v and k not in RESUMABLE_CHANGES)
        if diff:
            shown = ", ".join(f"{k} (saved {saved_cfg[k]!r}, now {mine[k]!r})" for k in diff)
            raise ValueError(f"--resume: the configuration differs from the saved run in "
                             f"{shown[:400]}; resume with the same settings")


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def _write_lines(path: Path, records: List[Dict[str, Any]]) -> None:
    atomic_write(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def _saved_config(path: Path) -> Any:
    try:
        return json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is unreadable ({type(e).__name__}); the run cannot be resumed: "
                         "pass --overwrite to start it again") from None


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary files of a process killed mid-write (atomic_write names them ``.NAME.*.tmp``);
    only this run's writer makes them, and it is this process."""
    for name in (*OUTPUTS, "config.json"):
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
