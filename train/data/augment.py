"""Batched augmentation and normalisation on the training device (no per-sample Python work but
``aerial-mosaic``'s few mosaics).

The policies (``--augment``; ``docs/augmentation.md`` lists their operations and ranges):

- ``none``;
- ``crop``: a random crop of the image zero-padded by 2 px (digits: a flipped digit is another
  digit);
- ``crop-flip``: a crop with 4 px of padding and a horizontal flip (the CIFAR recipe; ``cifar``
  is an older name of it);
- ``flip``: a horizontal flip (upright photos too large for the 4 px crop to matter);
- ``aerial``: flips of either axis and a 90-degree turn (square images): seen from above, each
  is another valid view;
- ``aerial-robust``: ``aerial`` plus what real footage does to a scene (:mod:`train.data.robust`:
  tone, colour, grayscale, scale jitter, blur, noise, JPEG);
- ``aerial-mosaic``: 35 % of the images become wider views made of 2x2 or 3x3 scenes, then
  ``aerial`` (:func:`mosaic_batch`; needs a ``crowd`` class, whose images keep their label among
  images of any class).

Every random draw comes from an explicit ``torch.Generator`` so a step's augmentation is a
function of (seed, epoch, step): this is what makes ``--resume`` bit-exact. A batch's draws are a
:class:`Plan`; :func:`apply` carries it out with PyTorch ops on any device, and on CPU
:func:`augment_batch` hands uint8 images to one native call (:mod:`train.native`) that gives the
same tensor bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from train import native
from train.data import robust

#: the policies, as ``--augment`` offers them
POLICIES = ("none", "crop", "crop-flip", "flip", "aerial", "aerial-robust", "aerial-mosaic")
ALIASES = {"cifar": "crop-flip"}   # older name, still accepted
#: every name a run may carry: the policies and the older aliases
NAMES = POLICIES + tuple(ALIASES)

#: An image folder (``--data DIR``) whose training images have a median shorter side of at most
#: this many pixels is taken to hold small natural images (CIFAR, Tiny-ImageNet, thumbnails):
#: ``crop-flip``. Larger frames are taken to be aerial views, the toolkit's use: ``aerial``.
SMALL_IMAGE_SIDE = 64


def folder_default(sizes: Iterable[Tuple[int, int]]) -> Tuple[str, str]:
    """The default policy of an image folder from its training images' original (H, W) sizes,
    and the reason, for the run's record."""
    sides = sorted(min(int(h), int(w)) for h, w in sizes)
    if not sides:
        raise ValueError("folder_default needs the size of at least one image")
    median = sides[len(sides) // 2]
    if median <= SMALL_IMAGE_SIDE:
        return "crop-flip", (f"folder default: median shorter side {median} px <= {SMALL_IMAGE_SIDE}, "
                             f"small natural images")
    return "aerial", (f"folder default: median shorter side {median} px > {SMALL_IMAGE_SIDE}, taken "
                      f"as aerial frames (--augment flip for upright photos)")


@dataclass
class Plan:
    """One batch's random draws, per sample, applied in this order: the robustness steps
    (``robust``: tone, saturation, zoom, blur, noise, JPEG), a crop at (``oy``, ``ox``) of the
    image zero-padded by ``pad``, a flip of the width, of the height, and a transpose (square
    images). ``None`` skips a step.
    Drawing the plan and applying it are separate so that the PyTorch ops and the native
    kernels apply the same draws."""

    pad: int = 0
    oy: Optional[torch.Tensor] = None      # [B] int64 in [0, 2 pad]
    ox: Optional[torch.Tensor] = None
    flip_w: Optional[torch.Tensor] = None  # [B] bool
    flip_h: Optional[torch.Tensor] = None
    turn: Optional[torch.Tensor] = None
    robust: Optional[robust.RobustPlan] = None


def _draw_crop(plan: Plan, b: int, pad: int, gen: torch.Generator) -> None:
    plan.pad = pad
    plan.oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    plan.ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen)


def _draw_flip(b: int, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(b, generator=gen) < 0.5


def check_policy(name: str) -> str:
    """``name`` if it is one of :data:`NAMES`, else a ValueError listing the policies."""
    if name not in NAMES:
        raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(POLICIES)}")
    return name


def draw(policy: str, shape: Sequence[int], gen: torch.Generator) -> Plan:
    """The random draws of augmentation ``policy`` for a batch of ``shape`` [B, C, H, W]."""
    b, _, h, w = shape
    policy = ALIASES.get(check_policy(policy), policy)
    plan = Plan()
    if policy == "crop-flip":      # random crop (pad 4) + horizontal flip
        _draw_crop(plan, b, 4, gen)
        plan.flip_w = _draw_flip(b, gen)
    elif policy == "crop":         # digits, SVHN: a flipped digit is another digit
        _draw_crop(plan, b, 2, gen)
    elif policy == "flip":
        plan.flip_w = _draw_flip(b, gen)
    elif policy in ("aerial", "aerial-robust", "aerial-mosaic"):   # from above: any flip or turn
        plan.flip_w = _draw_flip(b, gen)
        plan.flip_h = _draw_flip(b, gen)
        if h == w:
            plan.turn = _draw_flip(b, gen)
        if policy == "aerial-robust":
            plan.robust = robust.draw(shape, gen)
    return plan


def crop(x: torch.Tensor, pad: int, oy: torch.Tensor, ox: torch.Tensor) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the input size at offset (``oy``, ``ox``) per sample."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))                                   # [B, C, H+2p, W+2p]
    oy, ox = oy.to(x.device), ox.to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))                    # [B, H]
    cols = (ox[:, None] + torch.arange(w, device=x.device))                    # [B, W]
    wp = w + 2 * pad
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w)       # [B, 1, H*W]
    out = padded.flatten(2).gather(2, flat.expand(b, c, h * w))                # [B, C, H*W]
    return out.view(b, c, h, w)


def _where(mask: torch.Tensor, changed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per sample: ``changed`` where ``mask`` ([B] bool) is set, else ``x``."""
    return torch.where(mask.to(x.device).view(-1, 1, 1, 1), changed, x)


def flip_where(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` with the samples where ``mask`` ([B] bool) flipped along ``dim``."""
    return _where(mask, x.flip(dim), x)


def apply(x: torch.Tensor, plan: Plan) -> torch.Tensor:
    """``plan`` applied to a batch [B, C, H, W] with PyTorch ops (any device; any dtype, but
    uint8 for the robustness steps, which map 8-bit images to 8-bit images)."""
    if plan.robust is not None:
        if x.dtype != torch.uint8:
            raise ValueError(f"the robustness augmentation takes uint8 images, got {x.dtype}")
        x = robust.apply(x, plan.robust)
    if plan.oy is not None:
        x = crop(x, plan.pad, plan.oy, plan.ox)
    if plan.flip_w is not None:
        x = flip_where(x, plan.flip_w, 3)
    if plan.flip_h is not None:
        x = flip_where(x, plan.flip_h, 2)
    if plan.turn is not None:
        x = _where(plan.turn, x.transpose(2, 3), x)
    return x


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the input size at a random offset per sample."""
    plan = Plan()
    _draw_crop(plan, x.shape[0], pad, gen)
    return crop(x, pad, plan.oy, plan.ox)


def random_flip(x: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    return flip_where(x, _draw_flip(x.shape[0], gen), dim)


class Normalizer:
    """uint8 NCHW -> float32 ``(x/255 - mean) / std``, the same arithmetic as
    :meth:`edge.contract.Preprocess.normalize` so both give the same tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.inv_std = (1.0 / torch.tensor(std, dtype=torch.float32, device=device)).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * (1.0 / 255.0) - self.mean) * self.inv_std


def augment_batch(images: torch.Tensor, idx: torch.Tensor, policy: str, gen: torch.Generator,
                  normalize: Normalizer, labels: Optional[torch.Tensor] = None,
                  crowd: Optional[int] = None) -> torch.Tensor:
    """``normalize(apply(images[idx], draw(policy, ...)))``: the training batch, float32.

    On CPU, uint8 images go through one native call (:func:`train.native.augment_u8`, or
    :func:`train.native.augment_robust_u8` for ``aerial-robust``) instead of a chain of small
    PyTorch ops; the random draws are the same and the result is the same tensor bit for bit, so
    a run, and its resume, do not depend on which path ran.
    """
    if policy == "aerial-mosaic":
        if labels is None or crowd is None:
            raise ValueError("aerial-mosaic needs the training labels and the index of the crowd class")
        return mosaic_batch(images, labels, idx, gen, normalize, crowd)
    shape = (len(idx),) + tuple(images.shape[1:])
    plan = draw(policy, shape, gen)
    if plan.robust is not None and native.augment_ready(images):
        r = plan.robust
        return native.augment_robust_u8(images, idx, normalize.mean, normalize.inv_std, plan.flip_w,
                                        plan.flip_h, plan.turn, r.params, r.lut, r.qtab, r.qinv,
                                        robust.noise_field())
    if native.augment_ready(images):
        return native.augment_u8(images, idx, normalize.mean, normalize.inv_std, plan.pad, plan.oy,
                                 plan.ox, plan.flip_w, plan.flip_h, plan.turn)
    return normalize(apply(images[idx], plan))


#: ``aerial-mosaic``: this share of a batch becomes a mosaic, 3x3 for this share of those (else 2x2)
MOSAIC_P, MOSAIC_K3 = 0.35, 0.3
#: the most images side by side in a mosaic: its views span up to this many times an image's ground
MOSAIC_K_MAX = 3


def mosaic_batch(images: torch.Tensor, labels: torch.Tensor, idx: torch.Tensor, gen: torch.Generator,
                 normalize: Normalizer, crowd: int) -> torch.Tensor:
    """``aerial-mosaic``: wider views made of the scenes themselves, then ``aerial``.

    Each sample becomes, with probability :data:`MOSAIC_P`, a k x k mosaic (k = 3 with probability
    :data:`MOSAIC_K3`, else 2) shrunk back to the input by area averaging, the sample at a random
    cell. A sample of class ``crowd`` is placed among images of any class (a wider view with a
    crowd in it is still a crowd), any other sample among images of the other classes (a wider
    view without a crowd). The label is the sample's. The draws come from ``gen``
    (whether, k, the other images, the cell; then the flips of ``aerial``), so a run and its resume
    see the same batches on any device; the mosaics are built on the CPU with OpenCV.
    """
    import cv2

    b = len(idx)
    on = torch.rand(b, generator=gen) < MOSAIC_P
    k3 = torch.rand(b, generator=gen) < MOSAIC_K3
    cells_max = MOSAIC_K_MAX * MOSAIC_K_MAX
    picks = torch.randint(0, 1 << 30, (b, cells_max), generator=gen)
    cells = torch.randint(0, cells_max, (b,), generator=gen)
    on_cpu = images.device.type == "cpu"
    # a copy of the batch; on the CPU through NumPy, whose row gather is ~10x torch's indexing
    batch = torch.from_numpy(images.numpy()[idx.numpy()]) if on_cpu else images[idx]
    if bool(on.any()):
        lab = labels.cpu().numpy()
        others_pool = np.flatnonzero(lab != crowd)
        _, c, h, w = images.shape
        plans = []                                               # (sample, k, the k*k images)
        for i in torch.nonzero(on).flatten().tolist():
            k = MOSAIC_K_MAX if bool(k3[i]) else 2
            me = int(idx[i])
            pool = others_pool if int(lab[me]) != crowd else None
            n = len(pool) if pool is not None else len(lab)
            cell_images = picks[i, :k * k].numpy() % n
            if pool is not None:
                cell_images = pool[cell_images]
            cell_images[int(cells[i]) % (k * k)] = me
            plans.append((i, k, cell_images))
        if on_cpu:
            src, rows = images.numpy(), [p[2] for p in plans]
        else:   # only the images the mosaics use come to the host
            needed = np.concatenate([p[2] for p in plans])
            src = images[torch.from_numpy(needed).to(images.device)].cpu().numpy()
            rows = np.split(np.arange(len(needed)), np.cumsum([len(p[2]) for p in plans])[:-1])
        out = batch.numpy() if on_cpu else np.empty((c, h, w), np.uint8)
        for (i, k, _), row in zip(plans, rows):
            # channel planes of the k x k canvas, image m of the cell list in row m // k, column
            # m % k; area averaging is per channel, so this equals shrinking the interleaved
            # canvas, and is 3x faster
            planes = np.empty((c, k * h, k * w), np.uint8)
            for m, j in enumerate(row):
                r, q = divmod(m, k)
                planes[:, r * h:(r + 1) * h, q * w:(q + 1) * w] = src[j]
            dst = out[i] if on_cpu else out
            for ch in range(c):
                cv2.resize(planes[ch], (w, h), dst=dst[ch], interpolation=cv2.INTER_AREA)
            if not on_cpu:
                batch[i] = torch.from_numpy(out).to(batch.device)
    return augment_batch(batch, torch.arange(b, device=batch.device), "aerial", gen, normalize)
