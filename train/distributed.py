"""Data-parallel training under ``torchrun``: the few collective operations the engine needs.

    torchrun --nproc-per-node 4 -m train --dataset cifar10 --model wrn_28_10 --posd --knn 2
    torchrun --nproc-per-node 2 -m train --dataset digits --model cifar_cnn --posd --knn-scope global

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (plus ``MASTER_ADDR``/``MASTER_PORT``);
:func:`init_from_env` reads them and starts the process group (NCCL on CUDA, gloo on CPU). With
``WORLD_SIZE`` unset or 1 everything here is a no-op, so a plain ``python -m train`` is unchanged.

How a global batch is split (see :class:`train.engine.Trainer`): every rank draws the *same*
seeded permutation (``engine.epoch_batches``; ``--batch-size`` is the global batch), augments
the whole global batch with the same generator and keeps its contiguous slice
``batch.tensor_split(world)[rank]``. So the ranks together see exactly the samples and
augmentations one process would, and :func:`grad_scale` makes the averaged DDP gradient equal
the single-process gradient of the global batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False      # this process started the group, so it also ends it

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group described by torchrun's environment variables (if any)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        owns = True
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank,
                       owns_group=owns)


def local_device(device: torch.device, ctx: DistContext) -> torch.device:
    """``cuda`` becomes ``cuda:LOCAL_RANK`` (one GPU per process); CPU stays CPU."""
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


def split_sizes(n: int, world: int) -> List[int]:
    """Sizes of ``torch.arange(n).tensor_split(world)``: every rank can compute all of them."""
    return [n // world + (1 if r < n % world else 0) for r in range(world)]


def gather_keep_local_grad(local: torch.Tensor, sizes: List[int], ctx: DistContext) -> torch.Tensor:
    """Concatenate every rank's slice in rank order: [sum(sizes), ...].

    The other ranks' slices arrive detached; this rank's slice is the local tensor itself, so
    backward yields d(loss)/d(local slice). Each rank holds the same global loss, and its
    backward gives exactly the part of the gradient that flows through its own samples; the
    sum over ranks is the full gradient (see :func:`grad_scale`). Slices may differ in length
    by one (the last batch), so they are padded to the largest and trimmed.
    """
    if not ctx.enabled:
        return local
    biggest = max(sizes)
    pad = torch.zeros((biggest - local.shape[0],) + tuple(local.shape[1:]),
                      dtype=local.dtype, device=local.device)
    padded = torch.cat([local.detach(), pad])                                    # [max, ...]
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    parts = [p[:s] for p, s in zip(parts, sizes)]
    parts[ctx.rank] = local
    return torch.cat(parts)                                                      # [N, ...]


def grad_scale(n_local: int, n_global: int, ctx: DistContext, gathered: bool) -> float:
    """Factor on this rank's loss so that DDP's *average* of gradients is the gradient of the
    single-process loss on the global batch.

    - gathered (global scope): every rank computes the global loss and back-propagates through
      its own slice only; the slices' gradients must be *summed*, DDP divides by ``world``, so
      the factor is ``world``.
    - local scope: a per-sample mean over the local slice; weighting by ``n_local / n_global``
      and undoing DDP's ``1/world`` gives the global mean even when slices differ in size.
    """
    if not ctx.enabled:
        return 1.0
    return float(ctx.world) if gathered else ctx.world * n_local / n_global


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_cat(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Every rank's 1-D ``t`` (of any length), concatenated in rank order, on every rank (on CPU)."""
    if not ctx.enabled:
        return t.cpu()
    parts: List[Any] = [None] * ctx.world
    dist.all_gather_object(parts, t.cpu())
    return torch.cat(parts)


def average_grads(params, ctx: DistContext) -> None:
    """Average the gradients of parameters DDP does not own (a loss's trainable peer)."""
    if not ctx.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, device: torch.device, ctx: DistContext) -> torch.nn.Module:
    if not ctx.enabled:
        return model
    ids: Optional[List[int]] = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
