"""The I/O contract shared by train/, export/ and edge/ (docs/design.md, contracts 2-5).

This module is the single place that names the ONNX tensors, the metadata keys and the
preprocessing recipe. It lives in ``edge/`` because ``edge/`` may import nothing from the other
packages (it must run on a Jetson without PyTorch), while ``train/`` and ``export/`` may import
from ``edge/``. It depends on numpy only; OpenCV is imported by the functions that resize.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

# --- tensor names and layout (contract 2) -------------------------------------------------
INPUT_NAME = "input"            # float32, NCHW, dynamic batch axis
OUTPUT_NAME = "logits"          # float32, [N, num_classes]
PROBS_NAME = "probabilities"    # optional second output: softmax(logits)
SCORE_MAP_NAME = "score_map"    # optional output of fully convolutional models: dense logits
                                # [N, num_classes, H/stride, W/stride] (dynamic H/W in the ONNX)
INPUT_LAYOUT = "NCHW"
INPUT_DTYPE = "float32"
BATCH_AXIS_NAME = "batch"
HEIGHT_AXIS_NAME = "height"     # dynamic spatial axes of a dense (score_map) export
WIDTH_AXIS_NAME = "width"

# --- metadata keys (ONNX metadata_props and the engine sidecar; contracts 2-3) ------------
META_PREFIX = "edge_students."
META_FORMAT_VERSION = META_PREFIX + "format_version"
META_CLASS_NAMES = META_PREFIX + "class_names"          # JSON list of str
META_INPUT_SIZE = META_PREFIX + "input_size"            # JSON [height, width]
META_IN_CHANNELS = META_PREFIX + "in_channels"          # JSON int
META_PREPROCESS = META_PREFIX + "preprocess"            # JSON Preprocess.to_dict()
META_ARCH = META_PREFIX + "arch"                        # str
META_ARCH_KWARGS = META_PREFIX + "arch_kwargs"          # JSON dict
META_METHOD = META_PREFIX + "method"                    # str: ce/posd/oskd/kd/dml
META_CHECKPOINT_SHA256 = META_PREFIX + "checkpoint_sha256"
META_OUTPUTS = META_PREFIX + "outputs"                  # JSON list of output names
META_PRECISION = META_PREFIX + "precision"              # fp32 / fp16 / int8
META_FULLY_CONVOLUTIONAL = META_PREFIX + "fully_convolutional"  # JSON bool
META_DENSE = META_PREFIX + "dense"                      # JSON bool: output is a score map
META_NUM_CLASSES = META_PREFIX + "num_classes"          # JSON int
META_SOURCE_ONNX_SHA256 = META_PREFIX + "source_onnx_sha256"  # fp16/int8 ONNX: its fp32 parent
META_OPSET = META_PREFIX + "opset"                      # JSON int
META_SCORE_MAP_STRIDE = META_PREFIX + "score_map_stride"       # JSON int (crowd_fcn: 16)
META_SCALE = META_PREFIX + "scale"                      # JSON GroundScale.to_dict() (contract 4)
META_DECISION = META_PREFIX + "decision"                # JSON DecisionRule.to_dict() (contract 4)
METADATA_FORMAT_VERSION = 1

#: metadata values stored as JSON (everything else is a plain string)
JSON_KEYS = frozenset(
    {META_CLASS_NAMES, META_INPUT_SIZE, META_IN_CHANNELS, META_PREPROCESS, META_ARCH_KWARGS,
     META_OUTPUTS, META_FULLY_CONVOLUTIONAL, META_FORMAT_VERSION, META_DENSE, META_NUM_CLASSES,
     META_OPSET, META_SCORE_MAP_STRIDE, META_SCALE, META_DECISION}
)
REQUIRED_KEYS = (META_CLASS_NAMES, META_INPUT_SIZE, META_IN_CHANNELS, META_PREPROCESS, META_ARCH)

PRECISIONS = ("fp32", "fp16", "int8")
#: image files the folder readers accept (train/data/folder.py keeps the same list)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

#: how a whole image meets the input size: "stretch" (whole image, aspect changed), "letterbox"
#: (whole image, aspect kept, padded with the normalisation mean), "center-crop" (aspect kept, the
#: centre of the image at the input's aspect ratio, the rest cut off)
RESIZE_POLICIES = ("stretch", "letterbox", "center-crop")
CHANNEL_ORDERS = ("RGB", "BGR", "GRAY")


def encode_metadata(meta: Mapping[str, Any]) -> Dict[str, str]:
    """Typed metadata -> the string map stored in ONNX ``metadata_props`` and sidecars."""
    return {k: (json.dumps(v) if k in JSON_KEYS else str(v)) for k, v in meta.items()}


def decode_metadata(props: Mapping[str, str]) -> Dict[str, Any]:
    """Inverse of :func:`encode_metadata`; raises ``ValueError`` naming a missing key."""
    out: Dict[str, Any] = {}
    for k, v in props.items():
        if not k.startswith(META_PREFIX):
            continue
        out[k] = json.loads(v) if k in JSON_KEYS else v
    missing = [k for k in REQUIRED_KEYS if k not in out]
    if missing:
        raise ValueError(
            f"model metadata lacks {', '.join(missing)}: was it exported with "
            "`python -m export.onnx model.pt`?"
        )
    return out


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the network input: the same recipe in train/ (torch) and edge/ (numpy).

    ``size`` is (height, width). ``channel_order`` is the order the network expects ("RGB" for
    colour models, "GRAY" for one-channel models); decoders hand over RGB and the recipe converts.
    ``resize`` is the policy (one of :data:`RESIZE_POLICIES`, which says what each does; applied
    by :meth:`fit` through :func:`fit_to_size`), with OpenCV's INTER_AREA when shrinking and
    INTER_LINEAR when enlarging.
    Normalisation: ``(pixel / 255 - mean) / std`` per channel.
    """

    size: Tuple[int, int]
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    channel_order: str = "RGB"
    resize: str = "stretch"

    def __post_init__(self) -> None:
        if self.channel_order not in CHANNEL_ORDERS:
            raise ValueError(f"channel_order {self.channel_order!r} not in {CHANNEL_ORDERS}")
        if self.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy {self.resize!r} not in {RESIZE_POLICIES}")
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be (height, width) of positive ints, got {self.size!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean/std need {self.channels} values for {self.channel_order}, "
                f"got {len(self.mean)}/{len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def channels(self) -> int:
        return 1 if self.channel_order == "GRAY" else 3

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["size"] = list(self.size)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocess":
        try:
            return cls(
                size=tuple(int(v) for v in d["size"]),  # type: ignore[arg-type]
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
                channel_order=str(d.get("channel_order", "RGB")),
                resize=str(d.get("resize", "stretch")),
            )
        except KeyError as e:
            raise ValueError(f"preprocess recipe lacks {e.args[0]!r}: {dict(d)}") from None

    # -- numpy implementation (edge/ uses it; train/ uses it to decode and resize) --------
    def to_uint8(self, image: np.ndarray) -> np.ndarray:
        """Any decoded RGB image (HxW, HxWx1, HxWx3, HxWx4; uint8) -> HxWxC uint8 at ``size`` in
        the model's channel order (:meth:`fit`, then RGB -> BGR for a BGR model)."""
        img = self.fit(image, "RGB")
        return np.ascontiguousarray(img[:, :, ::-1] if self.channel_order == "BGR" else img)

    def fit(self, image: np.ndarray, order: str = "RGB",
            size: Optional[Sequence[int]] = None) -> np.ndarray:
        """A decoded uint8 image (HxW, HxWx1, HxWx3 or HxWx4 with its colour in ``order``, "RGB"
        or "BGR") at ``size`` (default the recipe's) by the recipe's resize policy: HxWx1 luma
        (ITU-R 601, as OpenCV) for a GRAY model, else HxWx3 in ``order`` (alpha dropped, gray
        replicated). The one path from a decoded image to the input size, train's and edge's.

        Gray is replicated after the resize, which works per channel (the same pixels for a third
        of the work), except under a letterbox, whose padding is a colour (the mean)."""
        import cv2

        img = np.asarray(image)
        if img.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {img.dtype}")
        img = as_colour_or_gray(img)
        gray = self.channel_order == "GRAY"
        if gray and img.ndim == 3:
            to_luma = cv2.COLOR_RGB2GRAY if order == "RGB" else cv2.COLOR_BGR2GRAY
            img = cv2.cvtColor(np.ascontiguousarray(img), to_luma)
        if img.ndim == 2 and not gray and self.resize == "letterbox":
            img = np.repeat(img[:, :, None], 3, 2)
        img = fit_to_size(img, self.size if size is None else size, self.resize,
                          self.pad_value(order))
        if img.ndim == 2:
            img = img[:, :, None] if gray else np.repeat(img[:, :, None], 3, 2)
        return img

    def pad_value(self, order: Optional[str] = None) -> Tuple[int, ...]:
        """The uint8 pixel a letterbox pads with, in the model's channel order (or in ``order``,
        "RGB" or "BGR"): the normalisation mean, so padding becomes ~0 after normalising (no
        edges the model could read)."""
        pad = tuple(int(round(min(max(m, 0.0), 1.0) * 255)) for m in self.mean)
        return pad[::-1] if {order, self.channel_order} == {"RGB", "BGR"} else pad

    def normalize(self, batch_nhwc: np.ndarray) -> np.ndarray:
        """uint8 NHWC batch -> float32 NCHW network input."""
        x = np.asarray(batch_nhwc, dtype=np.float32) * np.float32(1.0 / 255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        inv_std = np.float32(1.0) / np.asarray(self.std, dtype=np.float32)
        x = (x - mean) * inv_std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """A list of decoded RGB images -> float32 NCHW batch."""
        return self.normalize(np.stack([self.to_uint8(im) for im in images]))


def as_colour_or_gray(img: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 -> HxW gray or HxWx3 colour in the image's own channel order
    (alpha dropped; a view when possible); ``ValueError`` for any other shape."""
    if img.ndim == 3 and img.shape[2] == 1:
        return img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        return img[:, :, :3]
    if img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3):
        return img
    raise ValueError(f"unsupported image shape {img.shape}")


def resize_u8(img: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``img`` at ``size`` (height, width): INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    import cv2

    h, w = (int(v) for v in size)
    if img.shape[:2] == (h, w):
        return img
    interp = cv2.INTER_AREA if img.shape[0] * img.shape[1] > h * w else cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=interp)


def letterbox_size(src_hw: Sequence[int], size: Sequence[int]) -> Tuple[int, int]:
    """(height, width) of the picture inside a letterbox of ``size`` around an image of
    ``src_hw``: scaled by the smaller ratio, at least 1 px, at most the box."""
    (src_h, src_w), (h, w) = (int(v) for v in src_hw), (int(v) for v in size)
    s = min(h / src_h, w / src_w)
    return min(h, max(1, int(round(src_h * s)))), min(w, max(1, int(round(src_w * s))))


def fit_to_size(img: np.ndarray, size: Sequence[int], policy: str = "stretch",
                fill: Sequence[int] = (0,)) -> np.ndarray:
    """A uint8 HxW or HxWxC image at ``size`` (height, width) by a :data:`RESIZE_POLICIES` policy.

    ``fill`` is the letterbox padding, one value per channel in the image's own channel order.
    The one implementation of the policies: training and the edge runtime both reach it through
    :meth:`Preprocess.fit`, so they see the same pixels.
    """
    if policy not in RESIZE_POLICIES:
        raise ValueError(f"resize policy {policy!r} not in {RESIZE_POLICIES}")
    h, w = (int(v) for v in size)
    src_h, src_w = img.shape[:2]
    if policy == "center-crop":                       # the largest centred window of aspect w:h
        ch = min(src_h, max(1, int(round(src_w * h / w))))
        cw = min(src_w, max(1, int(round(src_h * w / h))))
        y0, x0 = (src_h - ch) // 2, (src_w - cw) // 2
        return resize_u8(img[y0:y0 + ch, x0:x0 + cw], (h, w))
    if policy == "letterbox":
        nh, nw = letterbox_size((src_h, src_w), (h, w))
        inner = resize_u8(img, (nh, nw))
        if (nh, nw) == (h, w):
            return inner
        pad = np.asarray(fill, np.uint8).reshape(-1)
        out = np.empty((h, w) + img.shape[2:], np.uint8)
        out[...] = pad[0] if img.ndim == 2 else pad[:img.shape[2]]
        top, left = (h - nh) // 2, (w - nw) // 2
        out[top:top + nh, left:left + nw] = inner
        return out
    return resize_u8(img, (h, w))


@dataclass
class ModelInfo:
    """What edge/ needs to know about a model, read from ONNX metadata or an engine sidecar."""

    class_names: Sequence[str]
    preprocess: Preprocess
    arch: str = "unknown"
    method: str = "unknown"
    extra: Dict[str, Any] = field(default_factory=dict)

    scale: Optional[GroundScale] = None       # None: the model records no training scale
    decision: Optional[DecisionRule] = None   # None: the defaults of DecisionRule

    def __post_init__(self) -> None:
        if self.decision is None:
            self.decision = DecisionRule()

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> "ModelInfo":
        """Raises ``ValueError`` for a scale or decision record that does not validate."""
        scale, decision = meta.get(META_SCALE), meta.get(META_DECISION)
        return cls(
            class_names=list(meta[META_CLASS_NAMES]),
            preprocess=Preprocess.from_dict(meta[META_PREPROCESS]),
            arch=str(meta.get(META_ARCH, "unknown")),
            method=str(meta.get(META_METHOD, "unknown")),
            extra=dict(meta),
            scale=GroundScale.from_dict(scale) if scale is not None else None,
            decision=DecisionRule.from_dict(decision) if decision is not None else None,
        )


def positive_class_index(class_names: Sequence[str], positive: "str | int | None" = None,
                         default: str = "crowd") -> int:
    """Index of the class a decision is about (the Crowd-drone task: "crowd").

    ``positive`` may be a class name or an index (as text or int); without it ``default`` is
    looked up by name, never assumed to sit at a fixed index.
    """
    names = list(class_names)
    want = default if positive is None else positive
    if isinstance(want, int) or (isinstance(want, str) and want.isdigit()):
        idx = int(want)
        if not 0 <= idx < len(names):
            raise ValueError(f"positive class index {idx} outside 0..{len(names) - 1} ({names})")
        return idx
    if want not in names:
        raise ValueError(f"positive class {want!r} not in the model's classes {names}; "
                         "pass --positive-class NAME|INDEX")
    return names.index(want)


# --- scale and decision (contract 4) --------------------------------------------------------
@dataclass(frozen=True)
class GroundScale:
    """The ground scale a crowd model was trained at: one network input of ``input_width`` pixels
    covers ``patch_m`` metres of ground (nominal), and training spanned ``patch_m_range``.

    The runtime maps a camera frame onto it: with a ground sample distance ``gsd`` (metres per
    frame pixel), a tile of ``patch_m / gsd`` frame pixels shows the ground the way training did.
    """

    patch_m: float
    patch_m_range: Tuple[float, float]
    input_width: int

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.patch_m_range)
        if not (0 < lo <= float(self.patch_m) <= hi and math.isfinite(hi)) or int(self.input_width) < 1:
            raise ValueError(f"scale needs 0 < patch_m_range[0] <= patch_m <= patch_m_range[1] "
                             f"(finite) and a positive input width, got {self}")

    @property
    def metres_per_px(self) -> float:
        """Ground metres per network-input pixel at the nominal scale."""
        return float(self.patch_m) / int(self.input_width)

    def tile_px(self, gsd_m_per_px: float) -> int:
        """Tile side in frame pixels that covers ``patch_m`` of ground at this camera GSD."""
        gsd = float(gsd_m_per_px)
        if not (gsd > 0 and math.isfinite(gsd)):
            raise ValueError(f"ground sample distance must be a positive number of metres per "
                             f"pixel, got {gsd_m_per_px!r}")
        return max(1, int(round(float(self.patch_m) / gsd)))

    def to_dict(self) -> Dict[str, Any]:
        return {"patch_m": float(self.patch_m), "patch_m_range": [float(v) for v in self.patch_m_range],
                "input_width": int(self.input_width)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "GroundScale":
        try:
            return cls(float(d["patch_m"]), tuple(float(v) for v in d["patch_m_range"]),  # type: ignore[arg-type]
                       int(d["input_width"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"scale record {d!r} is not valid ({e})") from None


def gsd_from_camera(altitude_m: float, hfov_deg: float, frame_width_px: int) -> float:
    """Ground sample distance (m/px) of a nadir camera: ground width ``2 h tan(hfov/2)`` over the
    frame width. For an oblique camera it is the value at the principal point's ground distance."""
    h, fov, w = float(altitude_m), float(hfov_deg), int(frame_width_px)
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"altitude must be a positive number of metres, got {altitude_m!r}")
    if not 0 < fov < 180:
        raise ValueError(f"horizontal field of view must be in (0, 180) degrees, got {hfov_deg!r}")
    if w < 1:
        raise ValueError(f"frame width must be >= 1 pixel, got {frame_width_px!r}")
    return 2.0 * h * math.tan(math.radians(fov) / 2.0) / w


#: levels at which :class:`Background` keeps the quantiles of its scores (0, 0.001, ..., 1): the
#: per-frame threshold of a frame of 12 tiles reads the 0.99 quantile, so the tail needs the detail
BACKGROUND_LEVELS = 1001
#: fewer crowd-free test patches than this give no background (their upper quantiles mean little)
MIN_BACKGROUND_PATCHES = 20


@dataclass(frozen=True)
class Background:
    """How the model scores patches without a crowd: the quantiles of p(``positive``) over the
    crowd-free images of its own test split, each one training patch of ground, at
    :data:`BACKGROUND_LEVELS` evenly spaced levels. The heatmap reads from it how often one patch
    of empty ground exceeds a threshold, and so the threshold that keeps a whole frame, which
    holds many patches, to that rate (:meth:`DecisionRule.tile_threshold`)."""

    quantiles: Tuple[float, ...]
    n: int                       # patches measured
    positive: str                # the class the scores are of
    source: str = ""             # which patches, for records

    def __post_init__(self) -> None:
        q = np.asarray(self.quantiles, dtype=np.float64)
        if q.ndim != 1 or len(q) < 2 or not np.isfinite(q).all() or q.min() < 0 or q.max() > 1:
            raise ValueError("background quantiles must be >= 2 finite values in [0, 1]")
        if np.any(np.diff(q) < 0):
            raise ValueError("background quantiles must not decrease")
        if int(self.n) < 1:
            raise ValueError(f"background needs >= 1 patch, got n={self.n!r}")

    @classmethod
    def from_scores(cls, scores, positive: str, source: str = "",
                    levels: int = BACKGROUND_LEVELS) -> "Background":
        """The quantiles of ``scores`` (p(``positive``) of crowd-free patches), rounded to 6
        decimals (upward, so a rounded quantile is never below the score it stands for)."""
        s = np.asarray(scores, dtype=np.float64).ravel()
        if len(s) == 0 or not np.isfinite(s).all():
            raise ValueError(f"background needs finite scores, got {len(s)}")
        q = np.quantile(s, np.linspace(0.0, 1.0, int(levels)))
        q = np.clip(np.ceil(q * 1e6) / 1e6, 0.0, 1.0)
        return cls(tuple(float(v) for v in q), int(len(s)), str(positive), str(source))

    def _levels(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, len(self.quantiles))

    def exceedance(self, threshold: float) -> float:
        """Share of the background patches scoring above ``threshold`` (interpolated)."""
        q = np.asarray(self.quantiles, dtype=np.float64)
        t = float(threshold)
        if t >= q[-1]:
            return 0.0
        if t < q[0]:
            return 1.0
        # the highest level whose quantile is <= t: ties (flat runs) count as below the threshold
        i = int(np.searchsorted(q, t, side="right")) - 1
        lv = self._levels()
        if q[i + 1] == q[i]:
            return float(1.0 - lv[i + 1])
        frac = (t - q[i]) / (q[i + 1] - q[i])
        return float(1.0 - (lv[i] + frac * (lv[i + 1] - lv[i])))

    def quantile(self, level: float) -> float:
        return float(np.interp(float(level), self._levels(), np.asarray(self.quantiles, np.float64)))

    def to_dict(self) -> Dict[str, Any]:
        return {"positive": self.positive, "n": int(self.n), "source": self.source,
                "quantiles": [float(v) for v in self.quantiles]}

    def describe(self) -> Dict[str, Any]:
        """For records: what the quantiles are of, and a few of them."""
        return {"positive": self.positive, "n": int(self.n), "source": self.source,
                **{f"q{int(round(lv * 1000)):04d}": round(self.quantile(lv), 4)
                   for lv in (0.5, 0.9, 0.99, 0.999)}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Background":
        return cls(tuple(float(v) for v in d["quantiles"]), int(d["n"]), str(d["positive"]),
                   str(d.get("source", "")))


def patch_count(frame_hw: Sequence[int], tile_px: int) -> int:
    """How many training patches a heatmap of tiles of ``tile_px`` frame pixels examines in a frame
    of ``frame_hw``: the positions of a half-overlapping grid of such tiles, the last one flush
    with the border (1 for a frame no bigger than a tile). Fixed by the geometry, not by the
    runtime's ``--stride``, so a frame's threshold does not change with the stride."""
    t = max(1, int(tile_px))
    step = max(1, t // 2)

    def n(length: int) -> int:
        if length <= t:
            return 1
        k = (length - t) // step + 1
        return k + (1 if (k - 1) * step != length - t else 0)

    return n(int(frame_hw[0])) * n(int(frame_hw[1]))


@dataclass(frozen=True)
class DecisionRule:
    """Per-frame crowd verdict, and the score the flight-safety filter smooths.

    heatmap: the frame shows a crowd when the share of its area whose crowd probability exceeds
    the frame's tile threshold is at least ``min_area``. The tile threshold is ``threshold`` for a
    frame of one training patch; with a ``background`` (how the model scores crowd-free patches),
    a frame that holds ``k`` patches gets the threshold that keeps its false-alarm rate at one
    patch's (Sidak: each patch may exceed it with rate ``1 - (1 - a) ** (1 / k)``, where ``a`` is
    the background's rate above ``threshold``; :meth:`tile_threshold`). Without one, every tile
    uses ``threshold``. classify: when p(crowd) >= ``classify_threshold``.
    Both are mapped to a *calibrated score* in [0, 1] that is monotone in the evidence and equals
    0.5 exactly at the rule's boundary, so one smoothing/hysteresis setting (unsafe at 0.5) serves
    every model and mode. ``source`` says where the numbers came from ("default", or the
    validation data they were chosen on).
    """

    threshold: float = 0.5
    min_area: float = 0.02
    classify_threshold: float = 0.5
    source: str = "default"
    background: Optional[Background] = None
    # patches -> tile threshold, filled as frames are judged (a video's frames share one size)
    _tile_thresholds: Dict[int, float] = field(default_factory=dict, init=False, repr=False,
                                               compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("threshold", "min_area", "classify_threshold"):
            v = float(getattr(self, name))
            if not 0.0 < v < 1.0:
                raise ValueError(f"decision {name} must be in (0, 1), got {getattr(self, name)!r}")

    @staticmethod
    def _calibrate(value: float, boundary: float) -> float:
        v = min(max(float(value), 0.0), 1.0)
        if v < boundary:
            return 0.5 * v / boundary
        return 0.5 + 0.5 * (v - boundary) / (1.0 - boundary)

    def tile_threshold(self, patches: int = 1) -> float:
        """The crowd probability a tile must exceed in a frame of ``patches`` training patches
        (:func:`patch_count`): ``threshold`` for one patch or without a background, else the
        background quantile at ``(1 - a) ** (1 / patches)``, never below ``threshold``."""
        t = float(self.threshold)
        k = int(patches)
        if self.background is None or k <= 1:
            return t
        got = self._tile_thresholds.get(k)
        if got is None:
            a = self.background.exceedance(t)
            got = t if a <= 0.0 else max(t, min(self.background.quantile((1.0 - a) ** (1.0 / k)), 1.0))
            self._tile_thresholds[k] = got
        return got

    def heatmap_score(self, area_over: float) -> float:
        """Share of the frame above its tile threshold -> calibrated score (0.5 at ``min_area``)."""
        return self._calibrate(area_over, float(self.min_area))

    def classify_score(self, p_crowd: float) -> float:
        """p(crowd) of the whole frame -> calibrated score (0.5 at ``classify_threshold``)."""
        return self._calibrate(p_crowd, float(self.classify_threshold))

    def replace(self, **changes: Any) -> "DecisionRule":
        """The rule with the given fields changed (a None value leaves a field as it is; use
        :meth:`without_background` to drop the background)."""
        from dataclasses import replace as _replace

        return _replace(self, **{k: v for k, v in changes.items() if v is not None})

    def without_background(self) -> "DecisionRule":
        from dataclasses import replace as _replace

        return _replace(self, background=None)

    def to_dict(self) -> Dict[str, Any]:
        out = {"threshold": float(self.threshold), "min_area": float(self.min_area),
               "classify_threshold": float(self.classify_threshold), "source": str(self.source)}
        if self.background is not None:
            out["background"] = self.background.to_dict()
        return out

    def describe(self) -> Dict[str, Any]:
        """:meth:`to_dict` for records: the background summarised, not its 1001 quantiles."""
        out = self.to_dict()
        if self.background is not None:
            out["background"] = self.background.describe()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DecisionRule":
        try:
            bg = d.get("background")
            return cls(float(d.get("threshold", 0.5)), float(d.get("min_area", 0.02)),
                       float(d.get("classify_threshold", 0.5)), str(d.get("source", "default")),
                       Background.from_dict(bg) if bg is not None else None)
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            raise ValueError(f"decision record {_short(d)} is not valid ({e})") from None


def _short(d: Any, limit: int = 200) -> str:
    """A record's repr cut to ``limit`` characters (a background holds 1001 numbers)."""
    text = repr(d)
    return text if len(text) <= limit else text[:limit] + "...}"
