"""POSD: online self-distillation by maximising QMI with latent labels (POSD paper, eqs. 4-12).

Each sample ``p`` of a mini-batch defines a latent label whose members ``G_p`` are ``p`` and its
``k`` nearest neighbours in the batch (Euclidean, recomputed every step from the current features;
the neighbour *indices* carry no gradient, the distances of the selected pairs do). With the power
kernel ``K(a, b) = -||a - b||^d`` the information potential of eq. (8) is

    V_IN = 1/N^2 * sum_p sum_{a,b in G_p} K(y_a, y_b)

and the loss is ``J = J_CE - lam * V_IN`` (eq. 12). ``qmi=True`` uses the full objective
``V_IN + V_ALL - 2 V_BTW`` (eqs. 7-10) with group size ``k_p = k + 1`` and ``P(c_p) = k_p / N``,
so the paper's V_IN approximation can be measured.

Design decisions (docs/design.md, "The method, as this project reads the papers"):

- Kernel sign: eq. (11) prints ``K_P = ||y_i - y_j||^d``. That is a *dissimilarity*; maximising a
  potential built from it would push neighbours apart, the opposite of what the paper says the
  method does. The "unrectified triangular" power kernel is the negative power, which is what we use.
- ``d`` is not given in the paper: default 2 (then V_IN has a closed form, see
  :func:`_group_potential_d2`). For ``0 < d < 2`` the kernel is not differentiable at coincident
  points (and for ``d < 1`` its derivative is unbounded there); we define that gradient as 0, which
  leaves every value unchanged and keeps training finite when features collapse or repeat.
- ``k >= N`` (the last, smaller batch of an epoch): ``k`` is clamped to ``N - 1`` so that every
  group is the whole batch rather than crashing training. A batch of one gives V = 0.
- Ties in the neighbour ranking (duplicated features) are broken by ``torch.topk``, or by the
  lower batch index in the native CPU kernel (:mod:`train.native`, used for float32 CPU features
  with d = 2); the value is invariant to permutations of the batch whenever the k-th neighbour
  is unique.
- CE reduction: eq. (2) *sums* the cross-entropy over the N samples of the batch; we average it
  by default (``ce_reduction="mean"``, PyTorch's default). V_IN carries its own 1/N^2, so the
  choice sets the balance of eq. (12): relative to the summed CE of eq. (2), the averaged CE makes
  -lam * V_IN weigh N times more (a mean-CE run at lam is eq. (12) as written at N * lam, with
  SGD steps N times smaller). ``ce_reduction="sum"`` (``--ce-reduction sum``) runs eq. (12) as
  written. The training log reports ||grad(lam V_IN)|| / ||grad(J_CE)|| per epoch either way.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from train import native
from train.losses import Distiller, register_loss
from train.losses._util import check_ce_reduction, check_positive_int


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


def _laplacian_d2(neighbours: torch.Tensor, n: int, dtype: torch.dtype, device: torch.device,
                  scale: float) -> torch.Tensor:
    """``scale * -2 * L`` with ``L = |G| diag(c) - A^T A`` for groups ``{p} + neighbours[p]``: [N, N].

    ``A[p, j] = 1`` iff ``j`` in ``G_p`` and ``c = A^T 1`` (how many groups hold ``j``); ``L`` is
    symmetric and carries no gradient. See :func:`_group_potential_d2`.
    """
    g = neighbours.shape[1] + 1
    member = torch.eye(n, dtype=dtype, device=device)              # p is in G_p
    member.scatter_(1, neighbours, 1.0)                            # [N, N]  A
    s = -2.0 * scale                                               # K = -||.||^2
    return torch.addmm(torch.diag(member.sum(0) * (g * s)), member.t(), member, alpha=-s)


class _VInD2(torch.autograd.Function):
    """``scale * V`` of eq. (8) for d = 2 as ONE autograd node, neighbours found inside.

    The same maths as :func:`neighbour_idx` + :func:`_group_potential_d2`, written for as few
    kernels as possible: at batch 64 a small net's CPU step is ~10 ms, and after its convolutions
    every *distinct* small op runs cache-cold at ~25 us, so POSD's overhead over CE is roughly its
    op count (benchmarks/bench_posd_overhead.py). One Gram matrix gives both the ranking score
    ``S[p, j] = |y_j|^2 - 2 y_p.y_j = ||y_p - y_j||^2 - |y_p|^2`` and ``|y_j|^2`` (its diagonal).
    ``p`` itself has the row's smallest score (``-|y_p|^2``), so the ``k + 1`` smallest of row
    ``p`` are ``G_p`` with ``p`` included and no diagonal masking is needed; one ``scatter_`` into
    the reused score buffer is then the membership ``A``. (Only when ``k + 1`` other samples lie
    within rounding distance of ``p`` can one of them displace ``p``; those points are equal to
    rounding, so the group's value and gradient are unchanged. Exact duplicates are the same
    case.) ``c = diag(A^T A)`` because ``A`` is 0/1, and one ``addmm`` gives
    ``2H = 2s (|G| diag(c) - A^T A) Y``: the Laplacian being symmetric, ``2H`` is the gradient
    (saved, so the backward is one multiply) and ``<Y, 2H> / 2`` the value (a 1x1 ``addmm`` with
    ``alpha=0.5`` and ``beta=0``, which ignores its input).
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, k: int, scale: float) -> torch.Tensor:   # grad mode is off here
        gram = torch.mm(y, y.t())                                      # [N, N]
        score = torch.add(gram.diagonal(), gram, alpha=-2.0)           # [p, j] = |y_j|^2 - 2 y_p.y_j
        members = score.topk(k + 1, dim=1, largest=False).indices     # [N, k+1]  G_p, p included
        a = score.zero_().scatter_(1, members, 1.0)                    # [N, N]  A
        ata = torch.mm(a.t(), a)                                       # diag = c
        s = -4.0 * scale                                               # K = -||.||^2, and the 2 of 2H
        h2 = torch.addmm(ata.diagonal().unsqueeze(1) * y, ata, y, beta=(k + 1) * s, alpha=-s)
        ctx.save_for_backward(h2)                                      # [N, D]  2 H, the gradient
        flat = h2.view(-1, 1)                                          # <Y, H> = <Y, 2H> / 2 as a
        return torch.addmm(flat[:1], y.reshape(1, -1), flat, beta=0.0, alpha=0.5).view(())   # 1x1 gemm

    @staticmethod
    @once_differentiable                  # 2H is saved without a graph: no double backward
    def backward(ctx, grad: torch.Tensor):
        (h2,) = ctx.saved_tensors
        return h2 * grad, None, None


class _VInD2Native(torch.autograd.Function):
    """:class:`_VInD2` as one native call (:mod:`train.native`): same value and gradient
    to float rounding, for float32 CPU features that :func:`native.supports` accepts. The C code
    writes ``scale * V`` and ``scale * dV/dy``; the gradient is saved, so the backward is one
    multiply. Neighbour ties go to the lower batch index."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, k: int, scale: float) -> torch.Tensor:   # y: contiguous [N, D]
        n, d = y.shape
        value, ctx.grad = torch.empty(()), torch.empty(n, d)   # an intermediate: kept on ctx
        native.run(y, n, d, k, scale, ctx.grad, value)
        return value

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        if torch.is_grad_enabled():       # create_graph=True: the saved gradient has no graph
            return _VInD2Native.backward_once(ctx, grad)
        return ctx.grad * grad, None, None   # the ordinary backward skips once_differentiable's wrapper

    @staticmethod
    @once_differentiable                  # raises if this gradient is differentiated again
    def backward_once(ctx, grad: torch.Tensor):
        return ctx.grad * grad, None, None


def _group_potential_d2(features: torch.Tensor, neighbours: torch.Tensor,
                        scale: float = 1.0) -> torch.Tensor:
    """``scale * sum_p sum_{a,b in G_p} K(y_a, y_b)`` for d = 2, without pairwise distances.

    Per group, ``sum_{a,b in G} ||y_a - y_b||^2 = 2|G| sum_a ||y_a||^2 - 2 ||sum_a y_a||^2``.
    Summed over the groups with the membership matrix ``A`` (``A[p, j] = 1`` iff ``j`` in ``G_p``),
    ``c = A^T 1`` (how many groups hold ``j``) and ``sum_a y_a = A Y``, this is
    ``2 tr(Y^T L Y)`` with ``L = |G| diag(c) - A^T A``. ``L`` carries no gradient, so the
    differentiable part is one matmul and a dot product, and ``scale`` and the kernel's sign are
    folded into ``L``. ``features``: [N, D], ``neighbours``: [N, k] (from :func:`neighbour_idx`).
    Plain autograd; the training path uses the fused :class:`_VInD2` (or :class:`_VInD2Native`).
    """
    with torch.no_grad():
        lap = _laplacian_d2(neighbours, features.shape[0], features.dtype, features.device, scale)
    return torch.dot(features.reshape(-1), (lap @ features).reshape(-1))


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


def posd_loss(features: torch.Tensor, k: int, d: float = 2.0, qmi: bool = False,
              scale: float = 1.0) -> torch.Tensor:
    """The information potential V to MAXIMISE: V_IN (eq. 8), or with ``qmi`` V_IN + V_ALL -
    2 V_BTW (eqs. 7-10). ``features``: [N, D] (any trailing shape is flattened). Scalar.

    ``k`` is clamped to ``N - 1`` (see the module docstring). The result is ``scale * V``;
    :class:`POSDLoss` passes ``-lam`` so that the default path (d = 2, V_IN) is one fused node.
    """
    k = check_positive_int("k", k)
    if not (isinstance(d, (int, float)) and 0.0 < float(d) < float("inf")):
        raise ValueError(f"d must be a finite number > 0 (e.g. 1, 2, 3), got {d!r}")
    if features.shape[0] == 0:
        raise ValueError("posd_loss needs a non-empty batch")
    return _posd_value(features, k, float(d), bool(qmi), float(scale))


def _posd_value(features: torch.Tensor, k: int, d: float, qmi: bool, scale: float) -> torch.Tensor:
    """:func:`posd_loss` without its argument checks (``k >= 1``, ``d > 0``, ``N >= 1``), which
    :class:`POSDLoss` makes once in ``__init__`` instead of at every training step."""
    y = features if features.dim() == 2 else features.flatten(1)   # [N, D]
    n = y.shape[0]
    k = min(k, n - 1)
    if torch.is_autocast_enabled(y.device.type):   # distances in half precision overflow/cancel
        with torch.autocast(y.device.type, enabled=False):
            return _posd_value(y.float(), k, d, qmi, scale)
    if d == 2.0 and not qmi:                                                      # eq. (8)
        if native.supports(y):
            return _VInD2Native.apply(y if y.is_contiguous() else y.contiguous(), k, scale / n ** 2)
        return _VInD2.apply(y, k, scale / n ** 2)
    group_idx = latent_groups(y, k)                          # [N, k+1]
    if d == 2.0:
        v_in = _group_potential_d2(y, group_idx[:, 1:], scale=1.0 / n ** 2)       # eq. (8)
    else:
        v_in = _group_potential_pairwise(y[group_idx], d) / n ** 2                # eq. (8), groups [N, k+1, D]
    if not qmi:
        return v_in if scale == 1.0 else scale * v_in
    kp = k + 1                                               # group size; P(c_p) = k_p / N
    rows = _row_potentials(y, d)                             # [N]
    v_all = kp ** 2 / n ** 3 * rows.sum()                    # eq. (9): (1/N^2) * N (k_p/N)^2 * sum_kl K
    v_btw = kp / n ** 3 * rows[group_idx].sum()              # eq. (10): sum_p (k_p/N) sum_{j in G_p} R_j / N^2
    v = v_in + v_all - 2.0 * v_btw                           # eq. (7)
    return v if scale == 1.0 else scale * v


@register_loss("posd")
class POSDLoss(Distiller):
    """``{"ce": J_CE, "posd": -lam * V}``: J = J_CE - lam * V_IN (eq. 12). ``knn`` is the paper's
    k, ``kernel_d`` its d."""

    needs_features = True

    def __init__(self, knn: int = 2, lam: float = 1e-4, kernel_d: float = 2.0,
                 feature_layer: str = "penultimate", qmi: bool = False,
                 ce_reduction: str = "mean") -> None:
        super().__init__()
        self.knn = check_positive_int("knn", knn)
        self.ce_reduction = check_ce_reduction(ce_reduction)   # eq. (2) sums: "sum"
        if not float(kernel_d) > 0.0:
            raise ValueError(f"kernel_d must be a finite number > 0 (e.g. 1, 2, 3), got {kernel_d!r}")
        self.lam, self.kernel_d, self.qmi = float(lam), float(kernel_d), bool(qmi)
        self.feature_layer = feature_layer

    def forward(self, logits: torch.Tensor, targets: torch.Tensor,
                features: Optional[torch.Tensor] = None,
                inputs: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        if features is None:
            raise ValueError(f"posd needs the features of layer {self.feature_layer!r}; got None")
        if features.dtype in (torch.float16, torch.bfloat16):
            features = features.float()   # d-th powers of distances overflow half precision
        if features.shape[0] == 0:
            raise ValueError("posd needs a non-empty batch")
        term = _posd_value(features, self.knn, self.kernel_d, self.qmi, -self.lam)   # -lam * V
        return {"ce": F.cross_entropy(logits, targets, reduction=self.ce_reduction), "posd": term}

    def extra_repr(self) -> str:
        return (f"knn={self.knn}, lam={self.lam}, kernel_d={self.kernel_d}, qmi={self.qmi}, "
                f"layer={self.feature_layer!r}, ce_reduction={self.ce_reduction!r}")
