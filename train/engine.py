"""The training loop: one loop for every method (the loss module decides what is computed).

Outputs in ``cfg.out`` (written and read back by :class:`train.rundir.RunDir`): ``config.json``,
``metrics.jsonl`` (one line per epoch), ``metrics.json`` (summary: final and best test accuracy;
the paper reports the best), ``model.pt`` (final), ``best.pt`` (by ``--select-best``: best test
accuracy, or best balanced accuracy on the real frames of ``--val-data``, see
train/validation.py) and ``state.pt`` (resumable: weights, optimiser, scheduler, position,
history). With ``--val-data`` both model files carry a decision rule calibrated on those frames
(unless ``--no-calibrate``). A model with a ``crowd`` class also carries its *background*: how it
scores the test split's images without a crowd (:class:`edge.contract.Background`), from which
the heatmap raises its tile threshold for frames of many patches; it is measured on the same
test pass that gives the test accuracy. Ctrl-C saves ``state.pt`` at the current step (a second Ctrl-C
stops at once and saves nothing, keeping the last consistent ``state.pt``); ``--resume``
continues from it and, on CPU, ends with bit-identical weights to an uninterrupted run, because
every random draw is a function of (seed, epoch, step). A run killed before its first
``state.pt`` resumes from epoch 1; ``metrics.jsonl`` is rewritten on resume to the epochs the
state holds.
"""
from __future__ import annotations

import contextlib
import math
import platform
import signal
import sys
import threading
import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train import distributed as ddp
from edge.contract import MIN_BACKGROUND_PATCHES, Background, DecisionRule, GroundScale, ModelInfo
from train.build import (DataShape, build_parts, effective_loss_kwargs, load_data, model_kwargs,
                         pick_device)
from train.config import TrainConfig
from train.ema import WeightAverage
from train.data import DataSplits
from train.data.augment import MOSAIC_K_MAX, Normalizer, augment_batch, check_policy
from train.grad_ratio import summarise as summarise_ratios, term_grad_ratios
from train.rundir import RunDir, RunState
from train.cli_checks import check_knn_fits_batch


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


# ---------------------------------------------------------------------------------- setup
def training_scale(cfg: TrainConfig, data: DataSplits) -> Optional[GroundScale]:
    """The ground one training image covers: ``--patch-metres`` if given, else the dataset's own
    (crowd_synth knows it), else None (the runtime then tiles at native resolution).

    ``aerial-mosaic`` also trains on views made of up to :data:`MOSAIC_K_MAX` x as many images
    side by side, so the range of ground the inputs spanned reaches that many times the widest
    image's; the nominal ``patch_m``, which sizes heatmap tiles, is the images' own."""
    if cfg.patch_metres is not None:
        m = float(cfg.patch_metres)
        scale = GroundScale(m, (m, m), int(data.input_size[1]))
    elif data.scale is None:
        return None
    else:   # --input-size resizes the images: the same ground, another number of input pixels
        scale = replace(data.scale, input_width=int(data.input_size[1]))
    if data.augment == "aerial-mosaic":
        lo, hi = scale.patch_m_range
        scale = replace(scale, patch_m_range=(lo, round(hi * MOSAIC_K_MAX, 2)))
    return scale


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


class Trainer:
    """Holds a run's objects; :meth:`fit` trains. ``on_step(trainer, epoch, step)`` is called
    after every optimiser step (tests use it to interrupt a run)."""

    def __init__(self, cfg: TrainConfig, data: Optional[DataSplits] = None,
                 on_step: Optional[Callable[["Trainer", int, int], None]] = None,
                 progress: Optional[bool] = None) -> None:
        self.cfg = cfg
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
        self.shape = DataShape.of(self.data)
        self.model_kwargs = model_kwargs(cfg, self.shape)
        self.scale = training_scale(cfg, self.data)
        self.parts = build_parts(cfg, self.shape, self.device)
        self.model, self.loss, self.tap = self.parts.model, self.parts.loss, self.parts.tap
        self.optimizer, self.scheduler = self.parts.optimizer, self.parts.scheduler
        # --ema: the averaged weights are what the run evaluates and saves (train/ema.py)
        self.ema = WeightAverage(self.model, cfg.ema) if cfg.ema else None   # --ema 0: off
        self.eval_model = self.ema.model if self.ema is not None else self.model
        # global scope: neighbours from the batch gathered across ranks (a no-op in one process)
        self.gather = self.dist.enabled and cfg.knn_scope == "global"
        if self.dist.enabled and not self.gather:   # local scope: neighbours from the rank's slice
            check_knn_fits_batch(cfg.method, cfg.knn, cfg.batch_size // self.dist.world,
                                 f"each rank's share of --batch-size ({cfg.batch_size} / {self.dist.world})")
        if self.gather and self.loss.needs_inputs:
            raise ValueError(f"--knn-scope global gathers logits/features for batch-relational losses "
                             f"(posd, oskd); {cfg.method} reads the inputs: use --knn-scope local")
        self.train_model = ddp.wrap(self.model, self.device, self.dist)   # self.model stays unwrapped
        self.scaler = torch.amp.GradScaler("cuda") if cfg.amp else None
        check_policy(self.data.augment)   # augment_batch draws by this name every step
        # the class whose background scores the runtime's heatmap reads, and whose images
        # aerial-mosaic places among any others (None: no such class)
        self.bg_class = (self.data.class_names.index("crowd")
                         if "crowd" in self.data.class_names else None)
        if self.data.augment == "aerial-mosaic" and self.bg_class is None:
            raise ValueError(f"--augment aerial-mosaic needs a class named 'crowd' (a mosaic with a crowd "
                             f"in it is a crowd); the classes are {', '.join(self.data.class_names)}")
        pre = self.data.preprocess
        self.normalize = Normalizer(pre.mean, pre.std, self.device)
        self.train_x = self.data.train_x.to(self.device)   # uint8 stays small: keep it on device
        self.train_y = self.data.train_y.to(self.device)
        self.state = RunState()
        self.run_dir = RunDir(cfg, {
            "arch_kwargs": self.model_kwargs, "class_names": self.data.class_names,
            "input_size": self.data.input_size, "in_channels": self.data.in_channels,
            "preprocess": self.data.preprocess.to_dict(),
            "scale": None if self.scale is None else self.scale.to_dict()}, self.dist)
        self.select = cfg.select_best or ("val" if cfg.val_data else "test")
        self.val = self._real_validation()
        self._last_val = None             # the latest validation result (calibrates model.pt)
        self._background: Optional[Background] = None   # of eval_model at the latest test pass
        self._background_done = False
        self._interrupted = threading.Event()   # a first Ctrl-C during fit() (_deferred_sigint)
        self._stop_all = False            # DDP: a Ctrl-C on any rank, agreed in _reduce_step
        self._start_elapsed = 0.0         # seconds of training before this fit(), from the state

    def model_info(self) -> ModelInfo:
        """What the runtime will know about this model once exported (no decision rule yet)."""
        return ModelInfo(self.data.class_names, self.data.preprocess, self.cfg.model,
                         self.cfg.method, scale=self.scale)

    def _real_validation(self):
        if not self.cfg.val_data:
            return None
        from edge.judge import Camera
        from train.validation import RealValidation

        cfg = self.cfg
        cameras = None
        if cfg.val_cameras is not None:
            from edge.cameras import read_cameras

            cameras = read_cameras(cfg.val_cameras, cfg.val_data)
        val = RealValidation(cfg.val_data, self.model_info(), cfg.val_mode,
                             Camera(cfg.val_tile, cfg.val_gsd, cfg.val_altitude, cfg.val_hfov),
                             cfg.val_map, cameras=cameras)
        if self.dist.is_main:
            for note in val.notes:
                print(f"--val-data: note: {note}", file=sys.stderr, flush=True)
        return val

    def resolved_info(self) -> Dict[str, Any]:
        return {
            "dataset": self.data.name, "data_source": self.data.source,
            "num_classes": self.data.num_classes, "class_names": self.data.class_names,
            "train_size": len(self.data.train_y), "test_size": len(self.data.test_y),
            "preprocess": self.data.preprocess.to_dict(), "augment": self.data.augment,
            "augment_reason": self.data.augment_reason or ("--augment" if self.cfg.augment else
                                                           f"the {self.data.name} default"),
            "model_kwargs": self.model_kwargs,
            "scale": None if self.scale is None else self.scale.to_dict(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "loss_kwargs": effective_loss_kwargs(self.cfg, self.shape),
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
        x = augment_batch(self.train_x, idx, self.data.augment, gen, self.normalize,   # [B, C, H, W] float32
                          self.train_y, self.bg_class)
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
        if self.ema is not None:
            self.ema.update(self.model)
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
        # global scope: every rank already holds the global values; local: slice-weighted means
        w_terms, w_correct = (1 / self.dist.world, 1 / self.dist.world) if self.gather else (n_seen / n_global, 1.0)
        stop = float(self._interrupted.is_set())
        vec = torch.stack([out[k].float() * w_terms for k in keys]
                          + [out["correct"].float() * w_correct, torch.tensor(stop, device=self.device)])
        ddp.all_reduce_sum(vec, self.dist)
        reduced = {k: vec[i] for i, k in enumerate(keys)}
        reduced["correct"] = vec[len(keys)].round()
        self._stop_all = float(vec[-1]) > 0   # the same decision on every rank
        return reduced

    def fit(self) -> Dict[str, Any]:
        cfg = self.cfg
        restored = self.run_dir.prepare(self.parts, self.device, self.resolved_info, self.ema)
        if restored is not None:
            self.state = restored
        ddp.barrier(self.dist)
        state_pt = self.run_dir.path / "state.pt"
        if self.state.epoch >= cfg.epochs:
            self._say(f"{self.run_dir.path}: all {cfg.epochs} epochs already done")
            return self.finish()
        start = time.perf_counter()
        self._start_elapsed = self.state.elapsed
        try:
            with _deferred_sigint(self._interrupted):
                self._epochs(start)
        except AbortNow:                     # the state in memory may be half-updated: not saved
            ddp.shutdown(self.dist)
            kept = "keeps the last saved state" if state_pt.is_file() else "was not written yet"
            print(f"\nsecond Ctrl-C: stopped at once without saving; {state_pt} {kept}. "
                  "Continue with the same command plus --resume", file=sys.stderr)
            raise
        except KeyboardInterrupt:
            self.state.elapsed = self._start_elapsed + time.perf_counter() - start
            try:
                self.run_dir.save_state(self.parts, self.state, self.summary(), ema=self.ema)
            except KeyboardInterrupt:        # pressed again while saving: the old state.pt stays whole
                ddp.shutdown(self.dist)
                print(f"\nstopped while saving; {state_pt} keeps the last saved state",
                      file=sys.stderr)
                raise AbortNow from None
            ddp.shutdown(self.dist)
            print(f"\ninterrupted at epoch {self.state.epoch + 1}, step {self.state.step}; state saved "
                  f"to {state_pt}. Continue with the same command plus --resume",
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
            self.run_dir.save_state(self.parts, st, self.summary(), ema=self.ema)
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
        ratios = self.grad_ratios(epoch)
        test = self.evaluate(self.eval_model)
        val = self._last_val = (self.val.run(self.eval_model, self.device, self._base_rule())
                                if self.val is not None else None)
        better_test = test["acc"] > st.best_acc
        if better_test:
            st.best_acc, st.best_epoch = test["acc"], epoch + 1
        better_val = val is not None and val.score > (st.best_val, st.best_val_auc)
        if better_val:
            (st.best_val, st.best_val_auc), st.best_val_epoch = val.score, epoch + 1
        if better_val if self.select == "val" else better_test:
            st.best_pt_epoch = epoch + 1
            if self.dist.is_main:
                rule = self._calibrated(val, f"epoch {epoch + 1}")
                self.run_dir.save_best(self.parts, self.summary(extra=test), rule, self.eval_model)
        record = {
            "epoch": epoch + 1, "train": train_terms, "train_acc": correct / seen,
            "test_acc": test["acc"], "test_loss": test["loss"], "best_test_acc": st.best_acc,
            "best_epoch": st.best_epoch, "epoch_time_s": round(seconds, 3),
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if val is not None:
            record.update(val=val.metrics, best_val_balanced_accuracy=st.best_val,
                          best_val_epoch=st.best_val_epoch, best_pt_epoch=st.best_pt_epoch)
        if ratios:
            record["grad_ratio"] = ratios
        st.history.append(record)
        self.run_dir.append_metrics(record)
        st.epoch, st.step, st.sums = epoch + 1, 0, {}
        return record

    def grad_ratios(self, epoch: int) -> Dict[str, float]:
        """||grad term|| / ||grad ce|| of each distillation term on the epoch's first batch
        (unaugmented), at the epoch's final weights; leaves the run unchanged (train.grad_ratio)."""
        idx = epoch_batches(len(self.train_y), self.cfg.batch_size, self.cfg.seed, epoch)[0]
        idx = idx.to(self.device)
        return term_grad_ratios(self.model, self.loss, self.normalize(self.train_x[idx]),
                                self.train_y[idx], self.tap)

    @torch.no_grad()
    def evaluate(self, model: Optional[nn.Module] = None) -> Dict[str, float]:
        model = model or self.model
        model.eval()
        correct, total_loss, n = 0, 0.0, 0
        bg: List[torch.Tensor] = []
        collect = self.bg_class is not None and model is self.eval_model   # the saved weights' background
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
            if collect:
                keep = y != self.bg_class
                bg.append(torch.softmax(logits[keep], 1)[:, self.bg_class].double().cpu())
        if collect:
            self._background = self._measure_background(bg)
            self._background_done = True
        if self.dist.enabled:
            sums = ddp.all_reduce_sum(torch.tensor([correct, total_loss, n], dtype=torch.float64,
                                                   device=self.device), self.dist)
            correct, total_loss, n = int(round(float(sums[0]))), float(sums[1]), int(round(float(sums[2])))
        return {"acc": correct / n, "loss": total_loss / n}

    def _measure_background(self, parts: List[torch.Tensor]) -> Optional[Background]:
        """The background of this test pass's scores (all ranks'), None when too few images."""
        scores = ddp.all_gather_cat(torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64),
                                    self.dist)
        return split_background(scores.numpy(), self.data.name, self.data.class_names[self.bg_class])

    def _base_rule(self) -> DecisionRule:
        """The default thresholds with the background of the latest test pass."""
        return DecisionRule(background=self._background)

    def _calibrated(self, val, when: str) -> Optional[DecisionRule]:
        """The decision rule of a saved model: chosen on the validation frames when there are
        some (and ``--calibrate``), else the defaults; with the model's background when it has
        one. None: neither (the checkpoint records no rule)."""
        base = self._base_rule()
        if val is not None and self.cfg.calibrate:
            return self.val.calibrate(val, base, when)
        return base if base.background is not None else None

    def summary(self, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        st = self.state
        last = st.history[-1] if st.history else {}
        out = {
            "method": self.cfg.method, "model": self.cfg.model, "dataset": self.data.name,
            "epochs_done": st.epoch, "epochs": self.cfg.epochs,
            "final_test_acc": last.get("test_acc"), "best_test_acc": st.best_acc if st.history else None,
            "best_epoch": st.best_epoch if st.history else None,
            "final_train_acc": last.get("train_acc"), "wall_time_s": round(st.elapsed, 2),
            "select_best": self.select, "best_pt_epoch": st.best_pt_epoch if st.history else None,
        }
        if self.ema is not None:
            out["weights"] = f"exponential moving average, decay {self.ema.decay}"
        if self.val is not None:
            out.update(final_val=last.get("val"), best_val_balanced_accuracy=st.best_val,
                       best_val_epoch=st.best_val_epoch)
        ratios = summarise_ratios(st.history)
        if ratios:
            out["grad_ratio"] = ratios
        if extra:
            out["at_save"] = dict(extra)
        return out

    def finish(self) -> Dict[str, Any]:
        summary = self.summary()
        if self.bg_class is not None and not self._background_done:   # no epoch ran here (all ranks)
            self.evaluate(self.eval_model)
        if self.dist.is_main:
            val = None                                  # the final weights get their own rule
            if self.val is not None and self.cfg.calibrate:
                val = self._last_val or self.val.run(self.eval_model, self.device, self._base_rule())
            rule = self._calibrated(val, f"final weights, epoch {self.state.epoch}")
            if val is not None:
                summary["decision"] = rule.describe()
            self.run_dir.finish(self.parts, summary, rule, self.eval_model)
        if self.tap is not None:
            self.tap.remove()
        ddp.barrier(self.dist)           # no rank leaves before rank 0 has written the results
        ddp.shutdown(self.dist)
        return summary


# ---------------------------------------------------------------------------------- helpers
def split_background(scores, data_name: str, positive: str) -> Optional[Background]:
    """The :class:`~edge.contract.Background` of p(``positive``) over a test split's images of
    the other classes, named after the data; None below :data:`MIN_BACKGROUND_PATCHES` images."""
    if len(scores) < MIN_BACKGROUND_PATCHES:
        return None
    return Background.from_scores(scores, positive, f"{data_name} test split: {len(scores)} images "
                                  f"not of class {positive}")


class AbortNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once. It can land anywhere (between an optimiser update and the
    position that counts it, or between a scheduler step and the epoch's end), so the state in
    memory is not saved; ``state.pt`` keeps the last consistent one."""


@contextlib.contextmanager
def _deferred_sigint(flag: threading.Event):
    """While training, the first Ctrl-C only sets ``flag`` (cleared on entry), so the step in
    flight finishes and the saved state is consistent; a second Ctrl-C aborts at once without
    saving (:class:`AbortNow`)."""
    flag.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if flag.is_set():
            raise AbortNow
        flag.set()
        print("\nCtrl-C: finishing the current step and saving a resumable state "
              "(press again to abort at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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
    val = ""
    for mode, m in (r.get("val") or {}).items():     # balanced accuracy / ROC-AUC on real frames
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        val += f"val_{mode}={m['balanced_accuracy']:.3f}/{auc}  "
    if val:
        val += f"best.pt@{r['best_pt_epoch']}  "
    terms += "".join(f"  |grad {k}|/|grad ce|={v:.2g}" for k, v in r.get("grad_ratio", {}).items())
    return (f"epoch {r['epoch']}/{epochs}  {terms}  train_acc={r['train_acc']:.4f}  "
            f"test_acc={r['test_acc']:.4f}  best={r['best_test_acc']:.4f}@{r['best_epoch']}  "
            f"{val}{r['epoch_time_s']:.1f}s")


def train(cfg: TrainConfig, **kwargs: Any) -> Dict[str, Any]:
    """Train with ``cfg``; returns the summary written to ``metrics.json``."""
    return Trainer(cfg, **kwargs).fit()
