"""The training loop: one loop for every method (the loss module decides what is computed).

Outputs in ``cfg.out``: ``config.json``, ``metrics.jsonl`` (one line per epoch), ``metrics.json``
(summary: final and best test accuracy; the paper reports the best), ``model.pt`` (final),
``best.pt`` (best test accuracy) and ``state.pt`` (resumable: weights, optimiser, scheduler,
position, history). Ctrl-C saves ``state.pt`` at the current step; ``--resume`` continues from it
and, on CPU, ends with bit-identical weights to an uninterrupted run, because every random draw
is a function of (seed, epoch, step).
"""
from __future__ import annotations

import contextlib
import inspect
import json
import math
import platform
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train import distributed as ddp
from edge.sidecar import atomic_write
from train.checkpoint import build_checkpoint, load_checkpoint, save_checkpoint
from train.config import RESUMABLE_CHANGES, TrainConfig
from train.data import DataSplits, build_dataset
from train.data.augment import AUGMENTATIONS, Normalizer, augment_batch
from train.features import FeatureTap
from train.losses import LOSSES, build_loss
from train.models import MODELS, build_model


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class RunExists(RuntimeError):
    """The output folder already holds a run and neither --resume nor --overwrite was given."""


# ---------------------------------------------------------------------------------- setup
def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but no CUDA device is available")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def load_data(cfg: TrainConfig) -> DataSplits:
    if cfg.data:
        from train.data.builtin import folder_dataset

        size = cfg.input_size or _model_default_size(cfg.model)
        return folder_dataset(cfg.data, size, augment=cfg.augment, name=Path(cfg.data).name)
    return build_dataset(cfg.dataset, root=cfg.data_root, download=cfg.download,
                         synth_size=cfg.synth_size, synth_seed=cfg.synth_seed,
                         input_size=cfg.input_size)


def _model_default_size(model: str) -> int:
    default = inspect.signature(MODELS.get(model)).parameters.get("input_size")
    return int(default.default) if default is not None else 128


def model_kwargs(cfg: TrainConfig, data: DataSplits) -> Dict[str, Any]:
    """Keyword arguments of the architecture, as stored in the checkpoint."""
    kwargs = {"in_channels": data.in_channels, "input_size": int(data.input_size[0])}
    kwargs.update(dict(cfg.model_kwargs))
    return kwargs


def loss_kwargs(cfg: TrainConfig, data: DataSplits) -> Dict[str, Any]:
    """The config values a method's builder accepts (by its signature); None means its default."""
    candidates = {
        "k": cfg.knn, "lam": cfg.lam, "d": cfg.kernel_d, "feature_layer": cfg.feature_layer,
        "qmi": cfg.qmi, "teacher": cfg.teacher, "temperature": cfg.temperature,
        "alpha": cfg.kd_alpha, "peer_arch": cfg.peer_model or cfg.model,
        "num_classes": data.num_classes, "in_channels": data.in_channels,
        "input_size": int(data.input_size[0]),
    }
    params = inspect.signature(LOSSES.get(cfg.method)).parameters
    return {k: v for k, v in candidates.items() if k in params and v is not None}


def effective_loss_kwargs(cfg: TrainConfig, data: DataSplits) -> Dict[str, Any]:
    """What the method actually runs with: the given values over the builder's defaults."""
    params = inspect.signature(LOSSES.get(cfg.method)).parameters
    out = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    out.update(loss_kwargs(cfg, data))
    return out


def build_optimizer(cfg: TrainConfig, params):
    if cfg.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: sgd, adam, adamw")
    if cfg.schedule == "none":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 1.0)
    elif cfg.schedule == "step":
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), cfg.gamma)
    elif cfg.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: none, step, cosine")
    return opt, sched


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes, unlike hash())."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & 0xFFFFFFFFFFFF)) * 1099511628211) % (1 << 63)
    return h


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> List[torch.Tensor]:
    """The epoch's shuffled index batches; a trailing batch of one sample is dropped (BatchNorm)."""
    gen = torch.Generator().manual_seed(_seed(seed, epoch, 1))
    perm = torch.randperm(n, generator=gen)
    batches = list(perm.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) < 2:
        batches.pop()
    return batches


# ---------------------------------------------------------------------------------- state
@dataclass
class RunState:
    epoch: int = 0                       # the epoch in progress (0-based)
    step: int = 0                        # the next step to run within it
    sums: Dict[str, float] = field(default_factory=dict)   # running sums of the epoch
    history: List[Dict[str, Any]] = field(default_factory=list)
    best_acc: float = -1.0
    best_epoch: int = -1
    elapsed: float = 0.0                 # seconds of training before this process

    def to_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step, "sums": dict(self.sums),
                "history": list(self.history), "best_acc": self.best_acc,
                "best_epoch": self.best_epoch, "elapsed": self.elapsed}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "RunState":
        return cls(int(d["epoch"]), int(d["step"]), dict(d["sums"]), list(d["history"]),
                   float(d["best_acc"]), int(d["best_epoch"]), float(d.get("elapsed", 0.0)))


class Trainer:
    """Holds a run's objects; :meth:`fit` trains. ``on_step(trainer, epoch, step)`` is called
    after every optimiser step (tests use it to interrupt a run)."""

    def __init__(self, cfg: TrainConfig, data: Optional[DataSplits] = None,
                 on_step: Optional[Callable[["Trainer", int, int], None]] = None,
                 progress: Optional[bool] = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.device = pick_device(cfg.device)
        self.dist = ddp.init_from_env(self.device)     # torchrun: RANK / WORLD_SIZE / LOCAL_RANK
        self.device = ddp.local_device(self.device, self.dist)
        if cfg.knn_scope not in ("local", "global"):
            raise ValueError(f"--knn-scope must be local or global, got {cfg.knn_scope!r}")
        if cfg.amp and self.device.type != "cuda":
            raise ValueError("--amp needs a CUDA device")
        self.on_step = on_step
        self.progress = progress
        torch.manual_seed(_seed(cfg.seed, 0, 0))
        self.data = data if data is not None else load_data(cfg)
        if cfg.augment:                  # --augment over the data's default
            self.data = replace(self.data, augment=cfg.augment, augment_reason="")
        self.model_kwargs = model_kwargs(cfg, self.data)
        self.model = build_model(cfg.model, num_classes=self.data.num_classes,
                                 **self.model_kwargs).to(self.device)
        self.loss = build_loss(cfg.method, **loss_kwargs(cfg, self.data)).to(self.device)
        self.tap = FeatureTap(self.model, self.loss.feature_layer) if self.loss.needs_features else None
        # global scope: neighbours from the batch gathered across ranks (a no-op in one process)
        self.gather = self.dist.enabled and cfg.knn_scope == "global"
        if self.gather and getattr(self.loss, "needs_inputs", False):
            raise ValueError(f"--knn-scope global gathers logits/features for batch-relational losses "
                             f"(posd, oskd); {cfg.method} reads the inputs: use --knn-scope local")
        self.train_model = ddp.wrap(self.model, self.device, self.dist)   # self.model stays unwrapped
        params = [p for p in chain(self.model.parameters(), self.loss.parameters()) if p.requires_grad]
        self.optimizer, self.scheduler = build_optimizer(cfg, params)
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp else None
        if self.data.augment not in AUGMENTATIONS:   # augment_batch draws by this name every step
            raise ValueError(f"unknown augmentation {self.data.augment!r}; valid: {', '.join(sorted(AUGMENTATIONS))}")
        pre = self.data.preprocess
        self.normalize = Normalizer(pre.mean, pre.std, self.device)
        self.train_x = self.data.train_x.to(self.device)   # uint8 stays small: keep it on device
        self.train_y = self.data.train_y.to(self.device)
        self.state = RunState()

    # -- persistence ---------------------------------------------------------------------
    def checkpoint(self, metrics: Dict[str, Any], with_train_state: bool = False) -> Dict[str, Any]:
        train_state = None
        if with_train_state:
            train_state = {
                "run": self.state.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "loss_state": self.loss.state_dict(),
                "torch_rng": torch.get_rng_state(),
            }
        return build_checkpoint(
            self.model, arch=self.cfg.model, arch_kwargs=self.model_kwargs,
            class_names=self.data.class_names, input_size=self.data.input_size,
            in_channels=self.data.in_channels, preprocess=self.data.preprocess.to_dict(),
            method=self.cfg.method, config=self.cfg.to_dict(), metrics=metrics,
            train_state=train_state)

    def save_state(self) -> None:
        if not self.dist.is_main:
            return
        save_checkpoint(self.checkpoint(self.summary(), with_train_state=True), self.out / "state.pt")

    def restore(self) -> None:
        path = self.out / "state.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no state.pt in {self.out} to resume from")
        ckpt = load_checkpoint(path, map_location=self.device)
        saved = TrainConfig.from_dict(ckpt["config"])
        diff = {k for k, v in saved.to_dict().items()
                if self.cfg.to_dict()[k] != v and k not in RESUMABLE_CHANGES}
        if diff:
            raise ValueError(f"--resume: the configuration differs from the saved run in "
                             f"{', '.join(sorted(diff))}; resume with the same settings")
        self.model.load_state_dict(ckpt["state_dict"])
        ts = ckpt["train_state"]
        self.optimizer.load_state_dict(ts["optimizer"])
        self.scheduler.load_state_dict(ts["scheduler"])
        self.loss.load_state_dict(ts["loss_state"])
        torch.set_rng_state(ts["torch_rng"])
        self.state = RunState.from_dict(ts["run"])

    def prepare_out(self) -> None:
        existing = [n for n in ("state.pt", "metrics.jsonl", "model.pt") if (self.out / n).exists()]
        if existing and not (self.cfg.resume or self.cfg.overwrite):
            raise RunExists(f"{self.out} already holds a run ({', '.join(existing)}); pass --resume "
                            "to continue it, --overwrite to replace it, or choose another --out")
        if self.dist.is_main:               # every file is written by rank 0 only
            self.out.mkdir(parents=True, exist_ok=True)
            if self.cfg.overwrite and not self.cfg.resume:
                for n in ("state.pt", "metrics.jsonl", "metrics.json", "model.pt", "best.pt"):
                    (self.out / n).unlink(missing_ok=True)
            record = {"config": self.cfg.to_dict(), "resolved": self.resolved_info()}
            _write_json(self.out / "config.json", record)
        ddp.barrier(self.dist)

    def resolved_info(self) -> Dict[str, Any]:
        return {
            "dataset": self.data.name, "data_source": self.data.source,
            "num_classes": self.data.num_classes, "class_names": self.data.class_names,
            "train_size": len(self.data.train_y), "test_size": len(self.data.test_y),
            "preprocess": self.data.preprocess.to_dict(), "augment": self.data.augment,
            "augment_reason": self.data.augment_reason or ("--augment" if self.cfg.augment else
                                                           f"the {self.data.name} default"),
            "model_kwargs": self.model_kwargs,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "loss_kwargs": effective_loss_kwargs(self.cfg, self.data),
            "device": str(self.device), "torch": str(torch.__version__), "python": platform.python_version(),
            "threads": torch.get_num_threads(), "world_size": self.dist.world,
            **self._kernel_info(),
        }

    def _kernel_info(self) -> Dict[str, Any]:
        """CPU runs: whether the native kernels (the batch augmentation; POSD with d = 2) or the
        pure-PyTorch code ran. The augmentation is bit-identical either way; POSD matches to float
        rounding, so a resume on the other path is not bit-identical."""
        if self.device.type != "cpu":
            return {}
        from train import native

        return {"native_kernels": native.status()}

    # -- the loop ------------------------------------------------------------------------
    def train_step(self, idx: torch.Tensor, gen: torch.Generator) -> Dict[str, torch.Tensor]:
        # DDP: augment the whole global batch (same generator on every rank), keep this rank's slice
        sizes = ddp.split_sizes(len(idx), self.dist.world)
        x = augment_batch(self.train_x, idx, self.data.augment, gen, self.normalize)   # [B, C, H, W] float32
        y = self.train_y[idx]
        if self.dist.world > 1:
            x = x.tensor_split(self.dist.world)[self.dist.rank]     # [B_local, C, H, W]
            y = y.tensor_split(self.dist.world)[self.dist.rank]
        # Every small op costs tens of microseconds in a CPU step at batch 64, so the step skips
        # the ones that would do nothing here (no-AMP autocast, casts of float32, scaling by 1).
        with torch.autocast(self.device.type) if self.scaler is not None else contextlib.nullcontext():
            logits = self.train_model(x)
            feats = self.tap.read(logits) if self.tap is not None else None
        if logits.dtype != torch.float32:
            logits = logits.float()
        if feats is not None and feats.dtype != torch.float32:
            feats = feats.float()
        if self.gather:                      # the loss sees the global batch, in rank order
            logits = ddp.gather_keep_local_grad(logits, sizes, self.dist)
            feats = None if feats is None else ddp.gather_keep_local_grad(feats, sizes, self.dist)
            y = ddp.gather_keep_local_grad(y, sizes, self.dist)
        terms = self.loss(logits, y, features=feats, inputs=x)
        total = sum(terms.values())
        if not self._all_finite(total):      # stop before a NaN update reaches the weights
            raise NonFiniteLoss({k: float(v.detach()) for k, v in terms.items()})
        scale = ddp.grad_scale(len(x), len(idx), self.dist, self.gather)
        scaled = total if scale == 1.0 else total * scale
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(scaled).backward()
            ddp.average_grads(self.loss.parameters(), self.dist)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            scaled.backward()
            ddp.average_grads(self.loss.parameters(), self.dist)
            self.optimizer.step()
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = total.detach()
        out["correct"] = (logits.detach().argmax(1) == y).sum()
        return self._reduce_step(out, len(y), len(idx))

    def _all_finite(self, total: torch.Tensor) -> bool:
        """Finite on every rank (under DDP all ranks must agree, or the others would hang)."""
        if not self.dist.enabled:
            return math.isfinite(total.detach().item())
        bad = (~torch.isfinite(total.detach())).float().reshape(1)
        ddp.all_reduce_sum(bad, self.dist)
        return float(bad) == 0.0

    def _reduce_step(self, out: Dict[str, torch.Tensor], n_seen: int, n_global: int) -> Dict[str, torch.Tensor]:
        """DDP: make the logged step values those of the global batch on every rank (so every
        rank holds the same history), and share a Ctrl-C seen by any rank so all stop together."""
        if not self.dist.enabled:
            return out
        keys = sorted(k for k in out if k != "correct")
        flag = getattr(self, "_interrupted", None)
        # global scope: every rank already holds the global values; local: slice-weighted means
        w_terms, w_correct = (1 / self.dist.world, 1 / self.dist.world) if self.gather else (n_seen / n_global, 1.0)
        stop = float(flag is not None and flag.is_set())
        vec = torch.stack([out[k].float() * w_terms for k in keys]
                          + [out["correct"].float() * w_correct, torch.tensor(stop, device=self.device)])
        ddp.all_reduce_sum(vec, self.dist)
        reduced = {k: vec[i] for i, k in enumerate(keys)}
        reduced["correct"] = vec[len(keys)].round()
        self._stop_all = float(vec[-1]) > 0   # the same decision on every rank
        return reduced

    def fit(self) -> Dict[str, Any]:
        cfg = self.cfg
        self.prepare_out()
        if cfg.resume:
            self.restore()
        if self.state.epoch >= cfg.epochs:
            self._say(f"{self.out}: all {cfg.epochs} epochs already done")
            return self.finish()
        start = time.perf_counter()
        self._start_elapsed = self.state.elapsed
        try:
            with _deferred_sigint() as self._interrupted:
                self._epochs(start)
        except KeyboardInterrupt:
            self.state.elapsed = self._start_elapsed + time.perf_counter() - start
            self.save_state()
            ddp.shutdown(self.dist)
            print(f"\ninterrupted at epoch {self.state.epoch + 1}, step {self.state.step}; state saved "
                  f"to {self.out / 'state.pt'}. Continue with the same command plus --resume",
                  file=sys.stderr)
            raise
        return self.finish()

    def _epochs(self, start: float) -> None:
        cfg, st = self.cfg, self.state
        n = len(self.train_y)
        outer = _bar(range(st.epoch, cfg.epochs), self.progress, "epochs", cfg.epochs, st.epoch)
        for epoch in outer:
            t0 = time.perf_counter()
            batches = epoch_batches(n, cfg.batch_size, cfg.seed, epoch)
            if self.dist.enabled and len(batches) > 1 and len(batches[-1]) < 2 * self.dist.world:
                batches.pop()            # DDP: every rank needs >= 2 samples of the last batch
            self.model.train()
            self.loss.train()
            inner = _bar(range(st.step, len(batches)), self.progress, f"epoch {epoch + 1}",
                         len(batches), st.step, leave=False)
            for step in inner:
                gen = torch.Generator().manual_seed(_seed(cfg.seed, epoch, step + 2))
                try:
                    out = self.train_step(batches[step].to(self.device), gen)
                except NonFiniteLoss as e:
                    raise NonFiniteLoss(f"non-finite loss at epoch {epoch + 1}, step {step + 1} "
                                        f"(terms {e.args[0]}); lower --lr or --lambda") from None
                bs = len(batches[step])
                for k, v in out.items():
                    st.sums[k] = st.sums.get(k, 0.0) + (float(v) if k == "correct" else float(v) * bs)
                st.sums["seen"] = st.sums.get("seen", 0.0) + bs
                st.step = step + 1
                if self.on_step is not None:
                    self.on_step(self, epoch, step)
                # Ctrl-C during the step; DDP: on any rank, decided jointly in _reduce_step
                if (self._stop_all if self.dist.enabled else self._interrupted.is_set()):
                    raise KeyboardInterrupt
            self.scheduler.step()
            record = self.end_epoch(epoch, time.perf_counter() - t0)
            st.elapsed = self._start_elapsed + time.perf_counter() - start
            self.save_state()
            _bar_post(outer, record)
            self._say(_epoch_line(record, cfg.epochs))

    def _say(self, line: str) -> None:
        if self.dist.is_main:
            print(line, flush=True)

    def end_epoch(self, epoch: int, seconds: float) -> Dict[str, Any]:
        st = self.state
        seen = max(st.sums.pop("seen", 1.0), 1.0)
        correct = st.sums.pop("correct", 0.0)
        train_terms = {k: v / seen for k, v in st.sums.items()}
        test = self.evaluate()
        if test["acc"] > st.best_acc:
            st.best_acc, st.best_epoch = test["acc"], epoch + 1
            if self.dist.is_main:
                save_checkpoint(self.checkpoint(self.summary(extra=test)), self.out / "best.pt")
        record = {
            "epoch": epoch + 1, "train": train_terms, "train_acc": correct / seen,
            "test_acc": test["acc"], "test_loss": test["loss"], "best_test_acc": st.best_acc,
            "best_epoch": st.best_epoch, "epoch_time_s": round(seconds, 3),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        st.history.append(record)
        if self.dist.is_main:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        st.epoch, st.step, st.sums = epoch + 1, 0, {}
        return record

    @torch.no_grad()
    def evaluate(self, model: Optional[nn.Module] = None) -> Dict[str, float]:
        model = model or self.model
        model.eval()
        correct, total_loss, n = 0, 0.0, 0
        # DDP: each rank evaluates its contiguous shard of the test set; the sums are all-reduced
        test_x = self.data.test_x.tensor_split(self.dist.world)[self.dist.rank]
        test_y = self.data.test_y.tensor_split(self.dist.world)[self.dist.rank]
        for xb, yb in zip(test_x.split(self.cfg.eval_batch_size), test_y.split(self.cfg.eval_batch_size)):
            x = self.normalize(xb.to(self.device))
            y = yb.to(self.device)
            with torch.autocast(self.device.type, enabled=self.scaler is not None):
                logits = model(x).float()
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        if self.dist.enabled:
            sums = ddp.all_reduce_sum(torch.tensor([correct, total_loss, n], dtype=torch.float64,
                                                   device=self.device), self.dist)
            correct, total_loss, n = int(round(float(sums[0]))), float(sums[1]), int(round(float(sums[2])))
        return {"acc": correct / n, "loss": total_loss / n}

    def summary(self, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        st = self.state
        last = st.history[-1] if st.history else {}
        out = {
            "method": self.cfg.method, "model": self.cfg.model, "dataset": self.data.name,
            "epochs_done": st.epoch, "epochs": self.cfg.epochs,
            "final_test_acc": last.get("test_acc"), "best_test_acc": st.best_acc if st.history else None,
            "best_epoch": st.best_epoch if st.history else None,
            "final_train_acc": last.get("train_acc"), "wall_time_s": round(st.elapsed, 2),
        }
        if extra:
            out["at_save"] = dict(extra)
        return out

    def finish(self) -> Dict[str, Any]:
        summary = self.summary()
        if self.dist.is_main:
            save_checkpoint(self.checkpoint(summary), self.out / "model.pt")
            _write_json(self.out / "metrics.json", summary)
        if self.tap is not None:
            self.tap.remove()
        ddp.barrier(self.dist)           # no rank leaves before rank 0 has written the results
        ddp.shutdown(self.dist)
        return summary


# ---------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _deferred_sigint():
    """While training, the first Ctrl-C only sets a flag, so the step in flight finishes and the
    saved state is consistent; a second Ctrl-C interrupts at once."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag.is_set():
            raise KeyboardInterrupt
        flag.set()
        print("\nCtrl-C: finishing the current step and saving a resumable state "
              "(press again to abort at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def _bar(it, enabled: Optional[bool], desc: str, total: int, initial: int, leave: bool = True):
    from tqdm.auto import tqdm

    # enabled=None: tqdm decides (off when stderr is not a terminal, e.g. in CI logs)
    return tqdm(it, desc=desc, total=total, initial=initial, leave=leave, dynamic_ncols=True,
                disable=None if enabled is None else not enabled, mininterval=0.5)


def _bar_post(bar, record: Dict[str, Any]) -> None:
    if hasattr(bar, "set_postfix"):
        bar.set_postfix(test=f"{record['test_acc']:.4f}", best=f"{record['best_test_acc']:.4f}")


def _epoch_line(r: Dict[str, Any], epochs: int) -> str:
    terms = " ".join(f"{k}={v:.4g}" for k, v in r["train"].items())   # posd terms are ~1e-4
    return (f"epoch {r['epoch']}/{epochs}  {terms}  train_acc={r['train_acc']:.4f}  "
            f"test_acc={r['test_acc']:.4f}  best={r['best_test_acc']:.4f}@{r['best_epoch']}  "
            f"{r['epoch_time_s']:.1f}s")


def train(cfg: TrainConfig, **kwargs: Any) -> Dict[str, Any]:
    """Train with ``cfg``; returns the summary written to ``metrics.json``."""
    return Trainer(cfg, **kwargs).fit()
