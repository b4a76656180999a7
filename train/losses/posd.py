"""POSD: online self-distillation by maximising QMI with latent labels (POSD paper, eqs. 4-12).

Each sample ``p`` of a mini-batch defines a latent label whose members ``G_p`` are ``p`` and its
``k`` nearest neighbours in the batch (Euclidean, recomputed every step from the current features;
the neighbour *indices* carry no gradient, the distances of the selected pairs do). With the power
kernel ``K(a, b) = -||a - b||^d`` the information potential of eq. (8) is

    V_IN = 1/N^2 * sum_p sum_{a,b in G_p} K(y_a, y_b)

and the loss is ``J = J_CE - lam * V_IN`` (eq. 12). ``qmi=True`` uses the full objective
``V_IN + V_ALL - 2 V_BTW`` (eqs. 7-10) with group size ``k_p = k + 1`` and ``P(c_p) = k_p / N``,
so the paper's V_IN approximation can be measured.

Design decisions (DESIGN.md, "The method, as this project reads the papers"):

- Kernel sign: eq. (11) prints ``K_P = ||y_i - y_j||^d``. That is a *dissimilarity*; maximising a
  potential built from it would push neighbours apart, the opposite of what the paper says the
  method does. The "unrectified triangular" power kernel is the negative power, which is what we use.
- ``d`` is not given in the paper: default 2 (then V_IN has a closed form, see
  :func:`_group_potential_d2`). For ``0 < d < 2`` the kernel is not differentiable at coincident
  points (and for ``d < 1`` its derivative is unbounded there); we define that gradient as 0, which
  leaves every value unchanged and keeps training finite when features collapse or repeat.
- ``k >= N`` (the last, smaller batch of an epoch): ``k`` is clamped to ``N - 1`` so that every
  group is the whole batch rather than crashing training. A batch of one gives V = 0.
- Ties in the neighbour ranking (duplicated features) are broken by ``torch.topk``; the value
  is invariant to permutations of the batch whenever the k-th neighbour is unique.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch import nn

from train.losses import register_loss
from train.losses._util import check_positive_int


def neighbour_idx(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of each sample's ``k`` nearest neighbours in the batch, itself excluded: [N, k].

    Selection only, so no gradient. Row ``p`` ranks ``||y_p - y_j||^2 = |y_p|^2 + |y_j|^2 -
    2 y_p.y_j``; the ``|y_p|^2`` term is constant along the row, so one ``addmm`` of
    ``|y_j|^2 - 2 y_p.y_j`` gives the same ranking at the cost of a single matmul.
    """
    with torch.no_grad():
        y = features.detach()
        sq_norm = (y * y).sum(1)                                          # [N]
        score = torch.addmm(sq_norm.unsqueeze(0), y, y.t(), alpha=-2.0)   # [N, N]
        score.fill_diagonal_(float("inf"))                                # a sample is not its own neighbour
        return score.topk(k, dim=1, largest=False).indices                # [N, k]


def latent_groups(features: torch.Tensor, k: int) -> torch.Tensor:
    """Member indices of each latent label ``G_p = {p} + kNN(p)``: [N, k+1], column 0 is ``p``."""
    n = features.shape[0]
    self_idx = torch.arange(n, device=features.device).unsqueeze(1)      # [N, 1]
    return torch.cat([self_idx, neighbour_idx(features, k)], dim=1)     # [N, k+1]


def power_kernel_from_sq(sq_dist: torch.Tensor, d: float) -> torch.Tensor:
    """``K = -||a - b||^d`` from squared distances, with a finite (zero) gradient at distance 0.

    ``sqrt``/``pow`` at 0 give NaN/inf gradients in torch, and a plain ``where`` does not help
    because the untaken branch still back-propagates NaN; so the power is taken of a tensor with
    the zeros replaced by ones, and the zeros are put back by an outer ``where``.
    """
    if d == 2.0:
        return -sq_dist
    positive = sq_dist > 0
    safe = torch.where(positive, sq_dist, torch.ones_like(sq_dist))
    return -torch.where(positive, safe.pow(d / 2.0), torch.zeros_like(sq_dist))


def _group_potential_d2(features: torch.Tensor, neighbours: torch.Tensor,
                        scale: float = 1.0) -> torch.Tensor:
    """``scale * sum_p sum_{a,b in G_p} K(y_a, y_b)`` for d = 2, without pairwise distances.

    Per group, ``sum_{a,b in G} ||y_a - y_b||^2 = 2|G| sum_a ||y_a||^2 - 2 ||sum_a y_a||^2``.
    Summed over the groups with the membership matrix ``A`` (``A[p, j] = 1`` iff ``j`` in ``G_p``),
    ``c = A^T 1`` (how many groups hold ``j``) and ``sum_a y_a = A Y``, this is
    ``2 tr(Y^T L Y)`` with ``L = |G| diag(c) - A^T A``. ``L`` carries no gradient, so the
    differentiable part is one matmul and a dot product, and ``scale`` and the kernel's sign are
    folded into ``L``: at batch 64 a small net's step is a few ms on a CPU, where every extra small
    op shows in POSD's overhead over CE (benchmarks/bench_posd_overhead.py).
    ``features``: [N, D], ``neighbours``: [N, k] (from :func:`neighbour_idx`).
    """
    n, g = neighbours.shape[0], neighbours.shape[1] + 1
    with torch.no_grad():
        member = torch.eye(n, dtype=features.dtype, device=features.device)   # p is in G_p
        member.scatter_(1, neighbours, 1.0)                                   # [N, N]  A
        s = -2.0 * scale                                                      # K = -||.||^2
        laplacian = torch.addmm(torch.diag(member.sum(0) * (g * s)), member.t(), member,
                                alpha=-s)                                     # [N, N]  s * L
    return torch.dot(features.reshape(-1), (laplacian @ features).reshape(-1))


def _group_potential_pairwise(groups: torch.Tensor, d: float) -> torch.Tensor:
    """``sum_p sum_{a,b in G_p} K(y_a, y_b)`` for any d, over the pairs a < b (K is symmetric and
    K(a, a) = 0, so the full double sum is twice that). ``groups``: [N, G, D]."""
    g = groups.shape[1]
    ia, ib = torch.triu_indices(g, g, offset=1, device=groups.device)   # [2, G(G-1)/2]
    diff = groups[:, ia] - groups[:, ib]                                # [N, P, D]
    return 2.0 * power_kernel_from_sq(diff.pow(2).sum(-1), d).sum()


def _row_potentials(features: torch.Tensor, d: float) -> torch.Tensor:
    """``R_j = sum_k K(y_j, y_k)`` over the whole batch: [N] (used by V_ALL and V_BTW)."""
    if d == 2.0:
        # sum_k ||y_j - y_k||^2 = N ||y_j - m||^2 + sum_k ||y_k - m||^2, m the batch mean
        centred = features - features.mean(0, keepdim=True)   # [N, D]
        sq = centred.pow(2).sum(1)                             # [N]
        return -(features.shape[0] * sq + sq.sum())
    diff = features.unsqueeze(1) - features.unsqueeze(0)      # [N, N, D]
    return power_kernel_from_sq(diff.pow(2).sum(-1), d).sum(1)  # [N]


def posd_loss(features: torch.Tensor, k: int, d: float = 2.0, qmi: bool = False) -> torch.Tensor:
    """The information potential V to MAXIMISE: V_IN (eq. 8), or with ``qmi`` V_IN + V_ALL -
    2 V_BTW (eqs. 7-10). ``features``: [N, D] (any trailing shape is flattened). Scalar.

    ``k`` is clamped to ``N - 1`` (see the module docstring).
    """
    k = check_positive_int("k", k)
    if not (isinstance(d, (int, float)) and 0.0 < float(d) < float("inf")):
        raise ValueError(f"d must be a finite number > 0 (e.g. 1, 2, 3), got {d!r}")
    d = float(d)
    y = features.flatten(1)                                  # [N, D]
    n = y.shape[0]
    if n == 0:
        raise ValueError("posd_loss needs a non-empty batch")
    k = min(k, n - 1)
    if d == 2.0 and not qmi:
        return _group_potential_d2(y, neighbour_idx(y, k), scale=1.0 / n ** 2)    # eq. (8)
    group_idx = latent_groups(y, k)                          # [N, k+1]
    if d == 2.0:
        v_in = _group_potential_d2(y, group_idx[:, 1:], scale=1.0 / n ** 2)       # eq. (8)
    else:
        v_in = _group_potential_pairwise(y[group_idx], d) / n ** 2                # eq. (8), groups [N, k+1, D]
    if not qmi:
        return v_in
    kp = k + 1                                               # group size; P(c_p) = k_p / N
    rows = _row_potentials(y, d)                             # [N]
    v_all = kp ** 2 / n ** 3 * rows.sum()                    # eq. (9): (1/N^2) * N (k_p/N)^2 * sum_kl K
    v_btw = kp / n ** 3 * rows[group_idx].sum()              # eq. (10): sum_p (k_p/N) sum_{j in G_p} R_j / N^2
    return v_in + v_all - 2.0 * v_btw                        # eq. (7)


class POSDLoss(nn.Module):
    """``{"ce": J_CE, "posd": -lam * V}``: J = J_CE - lam * V_IN (eq. 12)."""

    needs_features = True
    needs_inputs = False
    feature_layer = "penultimate"

    def __init__(self, k: int = 2, lam: float = 1e-4, d: float = 2.0,
                 feature_layer: str = "penultimate", qmi: bool = False) -> None:
        super().__init__()
        self.k = check_positive_int("k", k)
        if not float(d) > 0.0:
            raise ValueError(f"d must be a finite number > 0 (e.g. 1, 2, 3), got {d!r}")
        self.lam, self.d, self.qmi = float(lam), float(d), bool(qmi)
        self.feature_layer = feature_layer

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                inputs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if features is None:
            raise ValueError(f"posd needs the features of layer {self.feature_layer!r}; got None")
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()   # d-th powers of distances overflow half precision
        v = posd_loss(features, self.k, self.d, self.qmi)
        return {"ce": F.cross_entropy(logits, targets), "posd": -self.lam * v}

    def extra_repr(self) -> str:
        return f"k={self.k}, lam={self.lam}, d={self.d}, qmi={self.qmi}, layer={self.feature_layer!r}"


@register_loss("posd")
def posd(k: int = 2, lam: float = 1e-4, d: float = 2.0, feature_layer: str = "penultimate",
         qmi: bool = False) -> nn.Module:
    return POSDLoss(k=k, lam=lam, d=d, feature_layer=feature_layer, qmi=qmi)
