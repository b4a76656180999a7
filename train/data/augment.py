"""Batched augmentation and normalisation on the training device (no per-sample Python work).

Every random draw comes from an explicit ``torch.Generator`` so a step's augmentation is a
function of (seed, epoch, step): this is what makes ``--resume`` bit-exact.
"""
from __future__ import annotations

from typing import Callable, Dict, Sequence

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the input size at a random offset per sample."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))                                   # [B, C, H+2p, W+2p]
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))                    # [B, H]
    cols = (ox[:, None] + torch.arange(w, device=x.device))                    # [B, W]
    wp = w + 2 * pad
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w)       # [B, 1, H*W]
    out = padded.flatten(2).gather(2, flat.expand(b, c, h * w))                # [B, C, H*W]
    return out.view(b, c, h, w)


def random_flip(x: torch.Tensor, dim: int, gen: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x.shape[0], generator=gen) < 0.5                         # [B]
    mask = mask.to(x.device).view(-1, 1, 1, 1)
    return torch.where(mask, x.flip(dim), x)


def _cifar(x, gen):      # random crop (pad 4) + horizontal flip
    return random_flip(random_crop(x, 4, gen), 3, gen)


def _crop(x, gen):       # digits, SVHN: a flipped digit is another digit
    return random_crop(x, 2, gen)


def _aerial(x, gen):     # seen from above: any flip or 90-degree turn is another valid view
    x = random_flip(random_flip(x, 3, gen), 2, gen)
    if x.shape[2] == x.shape[3]:
        turn = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
        x = torch.where(turn, x.transpose(2, 3), x)
    return x


def _none(x, gen):
    return x


AUGMENTATIONS: Dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "cifar": _cifar, "crop": _crop, "aerial": _aerial, "none": _none,
}


class Normalizer:
    """uint8 NCHW -> float32 ``(x/255 - mean) / std``, the same arithmetic as
    :meth:`edge.contract.Preprocess.normalize` so both give the same tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.inv_std = (1.0 / torch.tensor(std, dtype=torch.float32, device=device)).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() * (1.0 / 255.0) - self.mean) * self.inv_std
