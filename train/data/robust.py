"""Robustness augmentation for aerial data: what real drone footage does to a scene.

The ``aerial-robust`` policy (:mod:`train.data.augment`) adds these per-sample operations to the
aerial flips and turns, in this order (``docs/augmentation.md`` gives the ranges and why):

1. **tone**: brightness, contrast, colour cast and gamma as one 256-entry table per sample and
   channel; then **saturation** (grayscale frames at saturation 0), three-channel images only;
2. **zoom**: a scale jitter, bilinear, zoomed in (cropped) or out (reflect-padded), about a
   random centre;
3. **blur**: defocus (a binomial kernel) or motion (a line along one of four directions);
4. **noise**: sensor noise from a fixed Gaussian field read at a random offset, the same for
   every channel (luma noise, as in processed video);
5. **JPEG**: an 8x8 block DCT quantisation with the JPEG standard's tables at a random quality,
   in YCbCr with 4:2:0 chroma;

and then the flips and the 90-degree turn of the aerial policy. Each step above is as likely in
every orientation (the motion directions are closed under flips and turns), so doing the flips
last leaves the distribution as it is (up to where the 8x8 grid falls on odd sizes) and lets the
native code fuse them with the normalisation.

Every step maps uint8 images to uint8 images with integer arithmetic, or with float32 operations
whose every result is an exact integer or one correctly rounded operation. That is what lets
:func:`train.native.augment_robust_u8` (the CPU hot path, one C call) give the same tensor as the
PyTorch ops here (any device) bit for bit. The draws come from the step's ``torch.Generator``
and become one :class:`RobustPlan` that both paths read.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import torch

# per-sample integer parameters, the columns of RobustPlan.params (native.c reads the same order)
PARAMS = ("sat", "zoom_step_y", "zoom_step_x", "zoom_base_y", "zoom_base_x", "blur_kind",
          "blur_size", "blur_dir", "noise_sigma16", "noise_y", "noise_x", "jpeg_quality")
COL = {name: i for i, name in enumerate(PARAMS)}

# The ranges (docs/augmentation.md says why each).
CONTRAST = (0.6, 1.5)          # log-uniform, about mid-grey
BRIGHTNESS = (-0.2, 0.2)       # added, in units of full scale
GAMMA = (0.6, 1.6)             # log-uniform; > 1 darkens the mid-tones (dusk), < 1 lifts them
CAST = 0.15                    # per-channel gain exp(U(-CAST, CAST)): white-balance errors
SATURATION = (0.5, 1.5)
P_GRAY = 0.1
P_ZOOM, ZOOM = 0.5, (0.75, 4.0 / 3.0)   # log-uniform; persons 25 % smaller to 33 % larger
P_BLUR = 0.3                   # half defocus (radius 1-3), half motion (3, 5 or 7 px)
P_NOISE, NOISE_SIGMA = 0.5, (1.0, 6.0)  # grey levels
P_JPEG, JPEG_QUALITY = 0.5, (20, 90)

FIX = 8                        # zoom positions and weights in 1/256 px
# The DCT matrix is M = round(2^11 D), |M| <= 1004, and level-shifted pixels are within +-128.
# Every product and partial sum of the four DCT passes is then an integer below 2^24 in
# magnitude, hence exact in float32 in any order: the largest, in the last pass, stays under
# 8.1e6, because a dequantised block's 64 entries sum to at most 8 times its Frobenius norm,
# 8 (1024 + 1024) (the pixels' norm, plus the quantisation error at quantisers <= 255). The
# rescaling between passes (a power of two, then rounding half to even) is exact as well.
DCT_BITS = 11
NOISE_SIZE = 256               # the noise field is NOISE_SIZE x NOISE_SIZE, read with wrap-around
NOISE_SEED = 20240917
DEFOCUS = {1: (1, 2, 1), 2: (1, 4, 6, 4, 1), 3: (1, 6, 15, 20, 15, 6, 1)}   # binomial, sums 4^r
MOTION_DIRS = ((0, 1), (1, 0), (1, 1), (1, -1))    # (dy, dx): horizontal, vertical, diagonals

# JPEG standard (ITU T.81, Annex K) quantisation tables, row-major 8x8
_LUMA_Q = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
           14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
           18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
           49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_CHROMA_Q = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
             24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


@dataclass
class RobustPlan:
    """One batch's robustness draws: ``params`` int32 [B, len(PARAMS)] (zero means "off" for
    blur, noise and JPEG; saturation 256 and zoom step 256 at base 0 are the identity),
    ``lut`` uint8 [B, C, 256] (the tone curve of each sample and channel), and the JPEG
    quantisers ``qtab`` int32 [B, 2, 64] (luma, chroma) with ``qinv`` float32 = 1 / (q 2^11)."""

    params: torch.Tensor
    lut: torch.Tensor
    qtab: torch.Tensor
    qinv: torch.Tensor

    def col(self, name: str) -> torch.Tensor:
        return self.params[:, COL[name]]


# ------------------------------------------------------------------------------- drawing
def draw(shape, gen: torch.Generator) -> RobustPlan:
    """The robustness draws for a batch of ``shape`` [B, C, H, W] from ``gen`` (one call)."""
    b, c, h, w = shape
    u = torch.rand(b, 21, generator=gen, dtype=torch.float64).numpy()   # [B, 21] in [0, 1)
    p = np.zeros((b, len(PARAMS)), dtype=np.int64)
    p[:, COL["sat"]] = np.where(u[:, 0] < P_GRAY, 0, np.rint(256 * _lerp(SATURATION, u[:, 1])))
    _draw_zoom(p, u[:, 2:6], h, w)
    _draw_blur(p, u[:, 6:9])
    noisy = u[:, 9] < P_NOISE
    p[:, COL["noise_sigma16"]] = np.where(noisy, np.rint(16 * _lerp(NOISE_SIGMA, u[:, 10])), 0)
    p[:, COL["noise_y"]] = np.floor(u[:, 11] * NOISE_SIZE)
    p[:, COL["noise_x"]] = np.floor(u[:, 12] * NOISE_SIZE)
    quality = np.floor(JPEG_QUALITY[0] + u[:, 14] * (JPEG_QUALITY[1] - JPEG_QUALITY[0] + 1))
    p[:, COL["jpeg_quality"]] = np.where(u[:, 13] < P_JPEG, quality, 0)
    lut = tone_lut(u[:, 15:21], c)
    qtab, qinv = jpeg_tables(p[:, COL["jpeg_quality"]])
    return RobustPlan(torch.from_numpy(p.astype(np.int32)), torch.from_numpy(lut),
                      torch.from_numpy(qtab), torch.from_numpy(qinv))


def _lerp(bounds: Tuple[float, float], u: np.ndarray) -> np.ndarray:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _loglerp(bounds: Tuple[float, float], u: np.ndarray) -> np.ndarray:
    return np.exp(_lerp((math.log(bounds[0]), math.log(bounds[1])), u))


def _draw_zoom(p: np.ndarray, u: np.ndarray, h: int, w: int) -> None:
    """Output pixel j reads the source at (base + j step) / 256 px: the same zoom z on both axes,
    the window centred within |n/z - n| / 2 of the image centre (a zoom-in stays inside the
    image; a zoom-out keeps the whole image in view, padded by reflection)."""
    z = np.where(u[:, 0] < P_ZOOM, _loglerp(ZOOM, u[:, 1]), 1.0)
    step = np.rint(256.0 / z)
    for axis, n, shift_u in (("y", h, u[:, 2]), ("x", w, u[:, 3])):
        centre = (n - 1) / 2 + (2 * shift_u - 1) * np.abs(n / z - n) / 2
        p[:, COL[f"zoom_step_{axis}"]] = step
        p[:, COL[f"zoom_base_{axis}"]] = np.rint(256 * centre - (n - 1) / 2 * step)


def _draw_blur(p: np.ndarray, u: np.ndarray) -> None:
    kind = np.where(u[:, 0] < P_BLUR / 2, 1, np.where(u[:, 0] < P_BLUR, 2, 0))
    pick = np.minimum(np.floor(u[:, 1] * 3), 2).astype(np.int64)          # one of three sizes
    p[:, COL["blur_kind"]] = kind
    p[:, COL["blur_size"]] = np.where(kind == 1, pick + 1, np.where(kind == 2, 2 * pick + 3, 0))
    p[:, COL["blur_dir"]] = np.where(kind == 2, np.minimum(np.floor(u[:, 2] * 4), 3), 0)


_LEVELS = np.arange(256, dtype=np.float64) / 255.0
with np.errstate(divide="ignore"):
    _LOG_LEVELS = np.log(_LEVELS)                                    # log 0 = -inf: 0^gamma = 0


def tone_lut(u: np.ndarray, channels: int) -> np.ndarray:
    """uint8 [B, C, 256] from u [B, 6]: v -> 255 clamp(g_c (k (v/255 - 1/2) + 1/2 + delta), 0, 1),
    rounded, then through the gamma curve and rounded again (an 8-bit pipeline rounds after
    each stage); k contrast, delta brightness, g_c the gain of channel c (c mod 3)."""
    b = len(u)
    k = _loglerp(CONTRAST, u[:, 0])[:, None, None]                      # [B, 1, 1]
    delta = _lerp(BRIGHTNESS, u[:, 1])[:, None, None]
    gain = np.exp(CAST * (2 * u[:, 2:5] - 1))[:, np.arange(channels) % 3, None]   # [B, C, 1]
    lin = np.clip(np.rint(255 * gain * (k * (_LEVELS - 0.5) + 0.5 + delta)), 0, 255).astype(np.int64)
    gamma = _loglerp(GAMMA, u[:, 5])[:, None]                           # [B, 1]
    curve = np.rint(255 * np.exp(gamma * _LOG_LEVELS)).astype(np.uint8)  # [B, 256]: 255 (v/255)^gamma
    return np.ascontiguousarray(curve.reshape(-1)[lin + 256 * np.arange(b)[:, None, None]])   # [B, C, 256]


def jpeg_tables(quality: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per sample, the luma and chroma quantisers at ``quality`` (1-100; 0: no JPEG, tables of 1)
    with the IJG scaling libjpeg uses, and their float32 reciprocals in DCT units of 2^-11."""
    q = np.asarray(quality, dtype=np.int64).clip(0, 100)
    scale = np.where(q < 50, 5000 // np.maximum(q, 1), 200 - 2 * q)
    base = np.array([_LUMA_Q, _CHROMA_Q], dtype=np.int64)                  # [2, 64]
    tab = np.clip((base[None] * scale[:, None, None] + 50) // 100, 1, 255)
    tab = np.where(q[:, None, None] > 0, tab, 1).astype(np.int32)          # [B, 2, 64]
    qinv = (1.0 / (tab.astype(np.float64) * (1 << DCT_BITS))).astype(np.float32)
    return tab, qinv


# ------------------------------------------------------------------------------- constants
_cache: Dict[Tuple[str, str], torch.Tensor] = {}


def noise_field(device="cpu") -> torch.Tensor:
    """int16 [256, 256]: a fixed standard Gaussian field in units of 1/64, clipped to 4 sigma."""
    key = ("noise", str(device))
    if key not in _cache:
        if ("noise", "cpu") not in _cache:
            g = np.random.default_rng(NOISE_SEED).standard_normal((NOISE_SIZE, NOISE_SIZE))
            _cache[("noise", "cpu")] = torch.from_numpy(np.clip(np.rint(64 * g), -256, 256).astype(np.int16))
        _cache[key] = _cache[("noise", "cpu")].to(device)
    return _cache[key]


def dct_matrix(device="cpu") -> torch.Tensor:
    """float32 [8, 8]: round(2^11 D), D the orthonormal 8-point DCT-II (row k = frequency k)."""
    key = ("dct", str(device))
    if key not in _cache:
        k, n = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
        d = np.cos((2 * n + 1) * k * np.pi / 16) * np.where(k == 0, math.sqrt(1 / 8), 0.5)
        _cache[key] = torch.from_numpy(np.rint(d * (1 << DCT_BITS)).astype(np.float32)).to(device)
    return _cache[key]


# ------------------------------------------------------------------------------- the ops
def photometric(x: torch.Tensor, plan: RobustPlan) -> torch.Tensor:
    """Tone table per sample and channel, then saturation (3-channel images)."""
    b, c, h, w = x.shape
    offset = (torch.arange(b * c, device=x.device, dtype=torch.int32) * 256).view(b, c, 1, 1)
    x = plan.lut.to(x.device).view(-1).index_select(0, (x.int() + offset).view(-1)).view(b, c, h, w)
    if c != 3:
        return x
    rgb = x.int()
    gray = (77 * rgb[:, 0] + 150 * rgb[:, 1] + 29 * rgb[:, 2] + 128) >> 8      # [B, H, W]
    sat = plan.col("sat").to(x.device).view(b, 1, 1, 1)
    g = gray.unsqueeze(1)
    return (g + ((sat * (rgb - g) + 128) >> 8)).clamp_(0, 255).to(torch.uint8)


def reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Reflection about the edge pixels (..., 2, 1, 0, 1, 2, ..., n-2, n-1, n-2, ...)."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    r = torch.remainder(i, period)
    return torch.where(r >= n, period - r, r)


def _subset(x: torch.Tensor, on: torch.Tensor, step, plan: RobustPlan) -> torch.Tensor:
    """``x`` with ``step(x[sel], params[sel])`` in place of the samples ``sel`` where ``on``
    ([B] bool, CPU) is set; the others untouched (and no work done for them)."""
    sel = on.nonzero().flatten()
    if len(sel) == 0:
        return x
    dev_sel = sel.to(x.device)
    out = x.clone()
    out[dev_sel] = step(x.index_select(0, dev_sel), plan.params[sel].to(x.device).long())
    return out


def zoom(x: torch.Tensor, plan: RobustPlan) -> torch.Tensor:
    """Bilinear scale jitter in fixed point: out = (sum of w_y w_x p + 2^15) >> 16, the rows
    blended first (the sum is an exact integer in either order)."""
    p = plan.params
    on = (p[:, COL["zoom_step_y"]] != 256) | (p[:, COL["zoom_step_x"]] != 256) | \
         (p[:, COL["zoom_base_y"]] != 0) | (p[:, COL["zoom_base_x"]] != 0)
    return _subset(x, on, _zoom, plan)


def _zoom(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    dev, frac = x.device, (1 << FIX) - 1
    ys = params[:, COL["zoom_base_y"], None] + torch.arange(h, device=dev) * params[:, COL["zoom_step_y"], None]
    xs = params[:, COL["zoom_base_x"], None] + torch.arange(w, device=dev) * params[:, COL["zoom_step_x"], None]
    fy, fx = (ys & frac).int().view(b, 1, h, 1), (xs & frac).int().view(b, 1, 1, w)   # [B, 1, H, 1], [B, 1, 1, W]
    xi = x.int()

    def rows(i: torch.Tensor) -> torch.Tensor:                   # [B, C, H, W]: source rows i
        return xi.gather(2, reflect_index(i, h).view(b, 1, h, 1).expand(b, c, h, w))

    def cols(v: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        return v.gather(3, reflect_index(j, w).view(b, 1, 1, w).expand(b, c, h, w))

    v = (256 - fy) * rows(ys >> FIX) + fy * rows((ys >> FIX) + 1)   # <= 256 * 255
    out = (256 - fx) * cols(v, xs >> FIX) + fx * cols(v, (xs >> FIX) + 1)
    return ((out + 32768) >> 16).to(torch.uint8)


def _clamped(x: torch.Tensor, dim: int, lo: int, hi: int) -> torch.Tensor:
    """``x`` extended along ``dim`` from index ``lo`` to ``hi`` - 1 by repeating the edge pixels."""
    n = x.shape[dim]
    return x.index_select(dim, torch.arange(lo, hi, device=x.device).clamp_(0, n - 1))


def defocus(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable binomial blur (edge pixels repeated), rounded: (sum + 2^(4r-1)) >> 4r."""
    k = DEFOCUS[radius]
    h, w = x.shape[-2:]
    xi = x.int()
    pw = _clamped(xi, -1, -radius, w + radius)
    rows = sum(k[t] * pw[..., t:t + w] for t in range(len(k)))
    ph = _clamped(rows, -2, -radius, h + radius)
    full = sum(k[t] * ph[..., t:t + h, :] for t in range(len(k)))
    return ((full + (1 << (4 * radius - 1))) >> (4 * radius)).to(torch.uint8)


def motion(x: torch.Tensor, length: int, direction: int) -> torch.Tensor:
    """Mean of ``length`` pixels along a line through each pixel (edges repeated), rounded."""
    dy, dx = MOTION_DIRS[direction]
    r = length // 2
    h, w = x.shape[-2:]
    p = _clamped(_clamped(x.int(), -1, -r, w + r), -2, -r, h + r)
    total = sum(p[..., r + t * dy:r + t * dy + h, r + t * dx:r + t * dx + w] for t in range(-r, r + 1))
    return torch.div(total + r, length, rounding_mode="floor").to(torch.uint8)


def blur(x: torch.Tensor, plan: RobustPlan) -> torch.Tensor:
    """Each sample's blur; samples with the same kernel are done together."""
    params = plan.params
    kind, size, dirn = (params[:, COL[k]] for k in ("blur_kind", "blur_size", "blur_dir"))
    out = x.clone()
    for key in sorted(set(zip(kind.tolist(), size.tolist(), dirn.tolist()))):
        if key[0] == 0:
            continue
        sel = ((kind == key[0]) & (size == key[1]) & (dirn == key[2])).nonzero().flatten().to(x.device)
        part = x.index_select(0, sel)
        out[sel] = defocus(part, key[1]) if key[0] == 1 else motion(part, key[1], key[2])
    return out


def noise(x: torch.Tensor, plan: RobustPlan) -> torch.Tensor:
    """Add (field * sigma16 + 512) >> 10 grey levels, the same at every channel; clamp."""
    return _subset(x, plan.col("noise_sigma16") > 0, _noise, plan)


def _noise(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    dev = x.device
    rows = (params[:, COL["noise_y"], None] + torch.arange(h, device=dev)) & (NOISE_SIZE - 1)   # [B, H]
    cols = (params[:, COL["noise_x"], None] + torch.arange(w, device=dev)) & (NOISE_SIZE - 1)   # [B, W]
    field = noise_field(dev).int().index_select(0, rows.flatten()).view(b, h, NOISE_SIZE)
    field = field.gather(2, cols.view(b, 1, w).expand(b, h, w))                              # [B, H, W]
    n = (field * params[:, COL["noise_sigma16"]].int().view(b, 1, 1) + 512) >> 10
    return (x.int() + n.unsqueeze(1)).clamp_(0, 255).to(torch.uint8)


def jpeg(x: torch.Tensor, plan: RobustPlan) -> torch.Tensor:
    """The samples with a JPEG quality replaced by their block-DCT-quantised version."""
    sel = (plan.col("jpeg_quality") > 0).nonzero().flatten()
    if len(sel) == 0:
        return x
    dev = x.device
    part = jpeg_images(x.index_select(0, sel.to(dev)), plan.qtab[sel].to(dev), plan.qinv[sel].to(dev))
    out = x.clone()
    out[sel.to(dev)] = part
    return out


def jpeg_images(x: torch.Tensor, qtab: torch.Tensor, qinv: torch.Tensor) -> torch.Tensor:
    """Baseline-JPEG-like compression of uint8 [N, C, H, W]: 3 channels go through JFIF YCbCr
    with 4:2:0 chroma (2x2 means, nearest-neighbour upsampling); other channel counts are coded
    channel by channel as luma. Edges are padded by repetition to whole 16x16 blocks."""
    n, c, h, w = x.shape
    hp, wp = -(-h // 16) * 16, -(-w // 16) * 16
    xi = _clamped(_clamped(x.int(), -1, 0, wp), -2, 0, hp)                   # [N, C, Hp, Wp]
    if c != 3:
        planes = [_code_plane(xi[:, i], qtab[:, 0], qinv[:, 0]) for i in range(c)]
        return torch.stack(planes, 1)[..., :h, :w].to(torch.uint8)
    r, g, b = xi[:, 0], xi[:, 1], xi[:, 2]
    y = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16
    cb = (-11059 * r - 21709 * g + 32768 * b + (128 << 16) + 32767) >> 16
    cr = (32768 * r - 27439 * g - 5329 * b + (128 << 16) + 32767) >> 16
    y = _code_plane(y, qtab[:, 0], qinv[:, 0])
    cb = _upsample2(_code_plane(_downsample2(cb), qtab[:, 1], qinv[:, 1])) - 128
    cr = _upsample2(_code_plane(_downsample2(cr), qtab[:, 1], qinv[:, 1])) - 128
    rgb = torch.stack([y + ((91881 * cr + 32768) >> 16),
                       y + ((-22554 * cb - 46802 * cr + 32768) >> 16),
                       y + ((116130 * cb + 32768) >> 16)], 1)
    return rgb[..., :h, :w].clamp(0, 255).to(torch.uint8)


def _downsample2(p: torch.Tensor) -> torch.Tensor:
    """[N, H, W] -> [N, H/2, W/2]: each 2x2 block's sum + 1 or 2 (alternating by column), >> 2,
    as libjpeg downsamples (the alternating bias keeps the rounding unbiased)."""
    n, h, w = p.shape
    bias = 1 + (torch.arange(w // 2, device=p.device) & 1)
    return (p.view(n, h // 2, 2, w // 2, 2).sum((2, 4)) + bias) >> 2


def _upsample2(p: torch.Tensor) -> torch.Tensor:
    """[N, H, W] -> [N, 2H, 2W] by libjpeg's "fancy" triangle filter: each output pixel is 9/16
    of its own input, 3/16 of each nearer neighbour and 1/16 of the diagonal (edges repeated)."""
    n, h, w = p.shape
    near = 3 * p
    up = torch.stack([near + _clamped(p, -2, -1, h - 1), near + _clamped(p, -2, 1, h + 1)], 2)
    cols = up.view(n, 2 * h, w)                                        # column sums, rows interleaved
    near = 3 * cols
    left = (near + _clamped(cols, -1, -1, w - 1) + 8) >> 4
    right = (near + _clamped(cols, -1, 1, w + 1) + 7) >> 4
    return torch.stack([left, right], -1).view(n, 2 * h, 2 * w)


def _dct_rows(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """out[..., a, k] = sum_j m[k, j] x[..., a, j], exact: the operands are integers and every
    sum stays below 2^24 (see DCT_BITS). A float64 product, so that no reduced-precision matmul
    setting (TF32, bf16) can apply; the float32 result is exact too."""
    return (x.double() @ m.double().t()).float()


def _round_shift(x: torch.Tensor) -> torch.Tensor:
    """x / 2^11 rounded half to even (a power-of-two scaling is exact in float32)."""
    return torch.round(x * (1.0 / (1 << DCT_BITS)))


def _code_plane(p: torch.Tensor, qtab: torch.Tensor, qinv: torch.Tensor) -> torch.Tensor:
    """One int plane [N, H, W] (H, W multiples of 8) through 8x8 DCT, quantisation by ``qtab``
    ([N, 64], row-major over (vertical, horizontal) frequency) and the inverse DCT; int32 out."""
    n, h, w = p.shape
    m = dct_matrix(p.device)
    mt = m.t().contiguous()
    blocks = (p - 128).float().view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)   # [N, by, bx, 8y, 8x]
    rows = _round_shift(_dct_rows(blocks, m))                                        # [..., y, u]
    coef = _dct_rows(rows.transpose(-1, -2), m).transpose(-1, -2)                    # [..., v, u]
    qt = qtab.view(n, 1, 1, 8, 8).float()
    deq = torch.round(coef * qinv.view(n, 1, 1, 8, 8)) * qt
    back = _round_shift(_dct_rows(deq.transpose(-1, -2), mt).transpose(-1, -2))     # [..., y, u]
    pix = (_round_shift(_dct_rows(back, mt)) + 128).clamp_(0, 255)                  # [..., y, x]
    return pix.permute(0, 1, 3, 2, 4).reshape(n, h, w).int()


def apply(x: torch.Tensor, plan: RobustPlan) -> torch.Tensor:
    """All the robustness steps, in order, on uint8 [B, C, H, W] (the flips and the turn follow)."""
    return jpeg(noise(blur(zoom(photometric(x, plan), plan), plan), plan), plan)
