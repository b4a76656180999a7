"""One judge of one image: the crowd verdict that the runtime, ``edge.evaluate``, training's
``--val-data`` and calibration all share, so a number measured offline is the number flown.

A :class:`Judge` is built once from the model's :class:`~edge.contract.ModelInfo`, the mode, the
camera and the :class:`~edge.contract.DecisionRule`. ``prepare`` turns a decoded image (OpenCV
BGR/gray uint8) into network inputs, ``run`` calls the network, ``decide`` turns its logits into a
:class:`Judgement`: probabilities or heat statistics, the calibrated score (0.5 exactly at the
rule's boundary) and the verdict. The runtime spreads the three over its threads; :meth:`judge`
does them in a row. Each mode is a small strategy with one interface (:class:`JudgeMode`:
:class:`Classify`, :class:`DenseHeatmap`, :class:`TiledHeatmap`), chosen once by
:func:`judge_mode`; the judge holds it and the rule. Modes:

* ``classify``: the whole frame is resized to the input (the recipe's resize policy, or the one
  given) and the verdict is p(crowd) >= ``classify_threshold``.
* ``heatmap``: the frame is seen at the training ground scale. The tile side in frame pixels comes
  from the camera (:class:`Camera`): an explicit tile, or ``patch_m / gsd`` with the ground sample
  distance given or computed from altitude and horizontal field of view. ``tiles`` cuts tiles of
  that side (stride half a tile) and resizes each to the input; ``dense`` resizes the whole frame
  by ``input / tile`` and runs the score map once. The verdict is: the share of the frame whose
  crowd probability exceeds the frame's tile threshold is at least ``min_area``. The tile
  threshold is the rule's ``threshold`` raised for the number of training patches the frame holds
  when the model carries a background (how it scores crowd-free patches), so that a frame of many
  patches false-alarms no more often than one patch (:meth:`DecisionRule.tile_threshold`).

With no camera information a heatmap assumes :data:`DEFAULT_ALTITUDE_M` and
:data:`DEFAULT_HFOV_DEG` (a wide drone camera at a typical survey height) and says so once in
:attr:`Judge.notes`; a model that records no ground scale is tiled at its input size in native
frame pixels, as before the scale contract. numpy and OpenCV only (it runs on the Jetson).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from edge.contract import (RESIZE_POLICIES, DecisionRule, GroundScale, ModelInfo, Preprocess,
                           gsd_from_camera, patch_count)
from edge.heatmap import HeatStats, TileGrid, cut_tiles, softmax, stats_from_dense, stats_from_tiles, tile_grid
from edge.preprocess import FramePreprocessor

MODES = ("classify", "heatmap")
HEATMAP_IMPLS = ("auto", "dense", "tiles")
#: the camera assumed when a heatmap is given none: ~40 m is a common survey/inspection height
#: (well under the usual 120 m ceiling), 82 degrees the horizontal field of view of the usual
#: 24 mm-equivalent drone camera. At 1920 px wide that is 3.6 cm per pixel.
DEFAULT_ALTITUDE_M = 40.0
DEFAULT_HFOV_DEG = 82.0
MIN_DENSE_SIDE = 16          # crowd_fcn's output stride: a smaller input has no score-map cell

Predict = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------ camera
@dataclass(frozen=True)
class Camera:
    """How frame pixels relate to the ground. At most one of: ``tile`` (frame pixels, explicit),
    ``gsd`` (metres per frame pixel), ``altitude`` + ``hfov`` (metres, degrees; GSD follows from
    the frame width). None of them: the default camera (when the model has a scale)."""

    tile: Optional[int] = None
    gsd: Optional[float] = None
    altitude: Optional[float] = None
    hfov: Optional[float] = None

    def __post_init__(self) -> None:
        if (self.altitude is None) != (self.hfov is None):
            raise ValueError("--altitude and --hfov go together (the ground width a frame shows "
                             f"needs both), got altitude {self.altitude!r}, hfov {self.hfov!r}")
        given = [n for n, v in (("--tile", self.tile), ("--gsd", self.gsd),
                                ("--altitude/--hfov", self.altitude)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"give one of --tile, --gsd, --altitude/--hfov, not {' and '.join(given)}")
        if self.tile is not None and int(self.tile) < 1:
            raise ValueError(f"--tile must be >= 1 frame pixel, got {self.tile!r}")
        if self.gsd is not None and not (float(self.gsd) > 0 and math.isfinite(float(self.gsd))):
            raise ValueError(f"--gsd must be a positive number of metres per pixel, got {self.gsd!r}")
        if self.altitude is not None:
            gsd_from_camera(self.altitude, self.hfov, 1)          # ValueError naming the bad value

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.tile, self.gsd, self.altitude))

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in (("tile", self.tile), ("gsd", self.gsd), ("altitude_m", self.altitude),
                                  ("hfov_deg", self.hfov)) if v is not None}


DEFAULT_CAMERA = Camera(altitude=DEFAULT_ALTITUDE_M, hfov=DEFAULT_HFOV_DEG)


@dataclass(frozen=True)
class Tiling:
    """Frame width -> tile side in frame pixels, and where that came from (for records)."""

    camera: Camera
    scale: Optional[GroundScale]
    input_width: int
    source: str          # "tile", "gsd", "altitude+hfov", "default camera", "model input size"

    def tile_px(self, frame_width: int) -> int:
        c = self.camera
        if c.tile is not None:
            return int(c.tile)
        if self.scale is None:
            return self.input_width
        gsd = c.gsd if c.gsd is not None else gsd_from_camera(c.altitude, c.hfov, frame_width)
        return self.scale.tile_px(gsd)

    def to_dict(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {"source": self.source, **self.camera.to_dict()}
        if self.scale is not None:
            out["patch_m"] = float(self.scale.patch_m)
        return out


def resolve_tiling(camera: Camera, scale: Optional[GroundScale], input_width: int) -> Tiling:
    """The camera against the model's scale; ``ValueError`` when a GSD or altitude is given for a
    model that records no scale (only an explicit tile means anything then)."""
    if camera.tile is not None:
        return Tiling(camera, scale, input_width, "tile")
    if scale is None:
        if camera.given:
            raise ValueError("this model records no ground scale, so --gsd/--altitude cannot set "
                             "the tile size; pass --tile PX, or retrain with crowd_synth or "
                             "--patch-metres M")
        return Tiling(camera, None, input_width, "model input size")
    if camera.gsd is not None:
        return Tiling(camera, scale, input_width, "gsd")
    if camera.altitude is not None:
        return Tiling(camera, scale, input_width, "altitude+hfov")
    return Tiling(DEFAULT_CAMERA, scale, input_width, "default camera")


def resolve_impl(requested: str, has_dense: bool) -> str:
    """``auto`` -> dense when the model has a dense score map, else tiles."""
    if requested not in HEATMAP_IMPLS:
        raise ValueError(f"heatmap impl {requested!r} not in {HEATMAP_IMPLS}")
    if requested == "dense" and not has_dense:
        raise ValueError("--heatmap-impl dense needs a model with a dynamic-size 'score_map' "
                         "output; this one has none (use tiles or auto)")
    if requested == "auto":
        return "dense" if has_dense else "tiles"
    return requested


def impl_for(mode: str, requested: str, backend) -> str:
    """The resolved heatmap impl for a judge of ``mode`` on ``backend`` (classify has none and
    takes "tiles", which it ignores: a request for dense is not checked then)."""
    if mode != "heatmap":
        return "tiles"
    return resolve_impl(requested, bool(getattr(backend, "has_dense", False)))


# ------------------------------------------------------------------------------ results
@dataclass
class Prepared:
    """The network input of one image, and what ``decide`` needs to read the output."""

    x: Optional[np.ndarray]              # float32 NCHW (released after inference)
    frame_hw: tuple
    tile_px: Optional[int] = None
    grid: Optional[TileGrid] = None


@dataclass
class Judgement:
    mode: str
    crowd: bool                          # the rule's verdict for this image alone
    score: float                         # calibrated: 0.5 at the rule's boundary
    evidence: float                      # p(crowd) (classify) or crowd area share (heatmap)
    probs: Optional[np.ndarray] = None   # classify: softmax over the classes
    heat: Optional[HeatStats] = None     # heatmap
    tile_px: Optional[int] = None

    @property
    def grid(self) -> Optional[np.ndarray]:
        """The heat grid an overlay blends in (None for classify)."""
        return self.heat.grid if self.heat is not None else None

    def to_record(self) -> Dict[str, Any]:
        rec: Dict[str, Any] = {"crowd": bool(self.crowd), "score": round(self.score, 4),
                               "evidence": round(self.evidence, 4)}
        if self.tile_px is not None:
            rec["tile_px"] = int(self.tile_px)
        return rec


# ------------------------------------------------------------------------------ the modes
class JudgeMode(Protocol):
    """One way of judging a frame (:class:`Classify`, :class:`DenseHeatmap`,
    :class:`TiledHeatmap`): the interface the judge, the runtime and the offline judges call."""

    mode: str                        # "classify" or "heatmap"
    impl: str                        # "none", "dense" or "tiles"
    batches_frames: bool             # several frames may share one inference call
    queue_cap: Optional[int]         # the most prepared frames worth buffering (None: no limit)
    tiling: Optional[Tiling]

    def notes(self) -> List[str]:
        """What the settings assumed, said once."""
        ...

    def describe(self) -> Dict[str, Any]:
        """This mode's settings, for records and reports."""
        ...

    def prepare(self, image: np.ndarray) -> Prepared:
        """A decoded BGR/gray uint8 image -> its network input."""
        ...

    def infer(self, batch: Sequence[Prepared], predict: Predict,
              score_map: Optional[Predict] = None) -> List[np.ndarray]:
        """The network's outputs, one per prepared image."""
        ...

    def decide(self, out: np.ndarray, prepared: Prepared, rule: DecisionRule) -> Judgement:
        """One image's outputs -> its judgement under ``rule``."""
        ...

    def record(self, verdict: Judgement, class_names: Sequence[str], grid: bool) -> Dict[str, Any]:
        """The fields this mode adds to a runtime record (``grid``: the heatmap's whole grid)."""
        ...


class Classify:
    """The whole frame resized to the input by a resize policy; p(crowd) decides. Frames can share
    one inference call (``batches_frames``)."""

    mode, impl, batches_frames, queue_cap = "classify", "none", True, None
    tiling: Optional[Tiling] = None

    def __init__(self, recipe: Preprocess, positive: int, resize: Optional[str],
                 camera: Camera = Camera(), scale: Optional[GroundScale] = None) -> None:
        self.positive, self.resize = positive, resize or recipe.resize
        self.prep = FramePreprocessor(replace(recipe, resize=self.resize))
        self.camera, self.scale = camera, scale

    def notes(self) -> List[str]:
        """What a camera given to classify means: a tile size or GSD nothing (they size heatmap
        tiles); altitude and field of view the ground a whole frame shows across, said when it
        lies outside the views the model was trained on (where its p(crowd) is least reliable).
        No flag names: ``edge.run`` and training's ``--val-*`` flags share these notes."""
        c = self.camera
        if c.tile is not None or c.gsd is not None:
            given = "a tile size" if c.tile is not None else "a ground sample distance"
            return [f"{given} only sizes heatmap tiles: classify resizes the whole frame to the "
                    "input and does not use it"]
        if c.altitude is None or self.scale is None or self.resize == "center-crop":
            return []
        across = gsd_from_camera(c.altitude, c.hfov, 1)          # the frame's width, in metres
        lo, hi = (float(v) for v in self.scale.patch_m_range)
        if lo <= across <= hi:
            return []
        where = "wider" if across > hi else "narrower"
        advice = "; heatmap mode sees the frame at the trained scale" if across > hi else ""
        return [f"at altitude {c.altitude:g} m and field of view {c.hfov:g} deg a whole frame is "
                f"{across:.0f} m of ground across, {where} than any view the model was trained on "
                f"({lo:.3g}-{hi:.3g} m across its input): classify is least reliable there{advice}"]

    def describe(self) -> Dict[str, Any]:
        return {"resize": self.resize}

    def prepare(self, image: np.ndarray) -> Prepared:
        return Prepared(self.prep([image]), _hw(image))                     # [1, C, H, W]

    def infer(self, batch: Sequence[Prepared], predict: Predict,
              score_map: Optional[Predict] = None) -> List[np.ndarray]:
        """Logits [C] per image, all images in one call."""
        xs = [p.x for p in batch]
        return list(np.asarray(predict(xs[0] if len(xs) == 1 else np.concatenate(xs))))

    def decide(self, out: np.ndarray, prepared: Prepared, rule: DecisionRule) -> Judgement:
        probs = softmax(np.asarray(out, np.float64))
        p = float(probs[self.positive])
        return Judgement("classify", p >= rule.classify_threshold, rule.classify_score(p), p,
                         probs=probs)

    def record(self, verdict: Judgement, class_names: Sequence[str], grid: bool) -> Dict[str, Any]:
        probs = verdict.probs
        return {"probabilities": {n: round(float(v), 5) for n, v in zip(class_names, probs)},
                "top_class": class_names[int(np.argmax(probs))]}


class _Heatmap:
    """The frame seen at the training ground scale (tiles sized from the camera); the share of
    the frame above ``threshold`` decides. One frame per inference call. A subclass gives
    ``impl``, ``prepare``, ``infer`` and ``heat`` (its outputs -> :class:`HeatStats`)."""

    mode, batches_frames, queue_cap = "heatmap", False, None

    def __init__(self, recipe: Preprocess, positive: int, tiling: Tiling) -> None:
        # tiles already have the input's aspect ratio; dense keeps the frame's
        self.positive, self.tiling = positive, tiling
        self.prep = FramePreprocessor(replace(recipe, resize="stretch"))

    def notes(self) -> List[str]:
        if self.tiling.source == "default camera":
            return [f"no camera given: assuming altitude {DEFAULT_ALTITUDE_M:g} m and horizontal "
                    f"field of view {DEFAULT_HFOV_DEG:g} deg to size the heatmap tiles (pass --gsd, "
                    "--altitude/--hfov or --tile)"]
        if self.tiling.source == "model input size":
            return ["the model records no ground scale: heatmap tiles are its input size in "
                    "frame pixels (pass --tile to choose)"]
        return []

    def describe(self) -> Dict[str, Any]:
        return {"impl": self.impl, "tiling": self.tiling.to_dict()}

    def decide(self, out: np.ndarray, prepared: Prepared, rule: DecisionRule) -> Judgement:
        patches = patch_count(prepared.frame_hw, prepared.tile_px)
        heat = self.heat(out, prepared, rule.tile_threshold(patches), patches)
        area = heat.area_over
        return Judgement("heatmap", area >= rule.min_area, rule.heatmap_score(area), area,
                         heat=heat, tile_px=prepared.tile_px)

    def record(self, verdict: Judgement, class_names: Sequence[str], grid: bool) -> Dict[str, Any]:
        return {"heat": verdict.heat.to_record(grid=grid)}


class DenseHeatmap(_Heatmap):
    """The whole frame rescaled by ``input / tile`` through the model's score map, once."""

    impl = "dense"

    def prepare(self, image: np.ndarray) -> Prepared:
        hw = _hw(image)
        tile = self.tiling.tile_px(hw[1])
        f = self.prep.size[1] / tile                                          # frame -> training scale
        size = (max(MIN_DENSE_SIDE, int(round(hw[0] * f))), max(MIN_DENSE_SIDE, int(round(hw[1] * f))))
        return Prepared(self.prep.to_tensor(image, size=size)[None], hw, tile)   # [1, C, h', w']

    def infer(self, batch: Sequence[Prepared], predict: Predict,
              score_map: Optional[Predict] = None) -> List[np.ndarray]:
        """The score map [C, h, w] per image."""
        if score_map is None:
            raise ValueError("the dense heatmap needs the model's score_map")
        return [np.asarray(score_map(p.x))[0] for p in batch]

    def heat(self, out: np.ndarray, prepared: Prepared, threshold: float, patches: int) -> HeatStats:
        return stats_from_dense(softmax(out, axis=0)[self.positive], threshold, patches)   # [h, w]


class TiledHeatmap(_Heatmap):
    """Tiles of the camera's tile side at ``stride`` (default half a tile), each resized to the
    input, classified ``tile_batch`` at a time and averaged where they overlap."""

    impl = "tiles"
    queue_cap = 2         # the tiles of a 720p frame are ~40 MB of float32: buffer fewer of them

    def __init__(self, recipe: Preprocess, positive: int, tiling: Tiling,
                 stride: Optional[int], tile_batch: int) -> None:
        super().__init__(recipe, positive, tiling)
        self.stride, self.tile_batch = stride, tile_batch

    def prepare(self, image: np.ndarray) -> Prepared:
        hw = _hw(image)
        tile = self.tiling.tile_px(hw[1])
        stride = int(self.stride) if self.stride else max(1, tile // 2)
        grid = tile_grid(hw, (tile, tile), (stride, stride))
        return Prepared(self.prep(cut_tiles(image, grid)), hw, tile, grid)   # [T, C, H, W]

    def infer(self, batch: Sequence[Prepared], predict: Predict,
              score_map: Optional[Predict] = None) -> List[np.ndarray]:
        """Logits [T, C] per image."""
        tb = self.tile_batch
        return [np.concatenate([np.asarray(predict(p.x[i:i + tb])) for i in range(0, len(p.x), tb)])
                for p in batch]

    def heat(self, out: np.ndarray, prepared: Prepared, threshold: float, patches: int) -> HeatStats:
        return stats_from_tiles(softmax(out)[:, self.positive], prepared.grid, threshold, patches)


def _hw(image: np.ndarray) -> Tuple[int, int]:
    return int(image.shape[0]), int(image.shape[1])


# ------------------------------------------------------------------------------ the judge
class Judge:
    """Build once per model and setting; ``judge(image, predict)`` per image (see module doc)."""

    def __init__(self, info: ModelInfo, mode: str = "classify", *, positive: int = 0,
                 rule: Optional[DecisionRule] = None, camera: Camera = Camera(),
                 impl: str = "tiles", stride: Optional[int] = None, resize: Optional[str] = None,
                 tile_batch: int = 64) -> None:
        _check(info, mode, positive, impl, stride, resize, tile_batch)
        self.info, self.mode, self.positive = info, mode, int(positive)
        self.rule = rule if rule is not None else info.decision
        self.strategy = judge_mode(info, mode, self.positive, camera, impl, stride, resize,
                                   int(tile_batch))
        self.impl, self.tiling = self.strategy.impl, self.strategy.tiling
        self.notes: List[str] = self.strategy.notes()
        bg, name = self.rule.background, str(info.class_names[self.positive])
        if bg is not None and bg.positive != name:
            self.rule = self.rule.without_background()
            if mode == "heatmap":
                self.notes.append(f"the model's background scores are of class {bg.positive!r}, "
                                  f"not {name!r}: every tile uses the threshold as it is")

    def describe(self) -> Dict[str, Any]:
        """The settings, for records and reports."""
        return {"mode": self.mode, "rule": self.rule.describe(), **self.strategy.describe()}

    # -- stages ------------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> Prepared:
        """A decoded BGR/gray uint8 image -> its network input."""
        return self.strategy.prepare(image)

    def run(self, prepared: Prepared, predict: Predict,
            score_map: Optional[Predict] = None) -> np.ndarray:
        """Network outputs for one prepared image: logits [C] (classify), [T, C] (tiles) or the
        score map [C, h, w] (dense, through ``score_map``)."""
        return self.strategy.infer([prepared], predict, score_map)[0]

    def decide(self, out: np.ndarray, prepared: Prepared) -> Judgement:
        """Network outputs (see :meth:`run`) -> the judgement of the image."""
        return self.strategy.decide(out, prepared, self.rule)

    def judge(self, image: np.ndarray, predict: Predict,
              score_map: Optional[Predict] = None) -> Judgement:
        """All three stages for one image."""
        prepared = self.prepare(image)
        out = self.run(prepared, predict, score_map)
        prepared.x = None
        return self.decide(out, prepared)

    def with_rule(self, rule: DecisionRule) -> "Judge":
        """The same judge under another decision rule (calibration tries several)."""
        other = copy.copy(self)
        other.rule = rule
        return other


def judge_mode(info: ModelInfo, mode: str, positive: int, camera: Camera, impl: str,
               stride: Optional[int], resize: Optional[str], tile_batch: int) -> JudgeMode:
    """The strategy of a mode (and heatmap impl): the one place their names are read."""
    recipe = info.preprocess
    if mode == "classify":
        return Classify(recipe, positive, resize, camera, info.scale)
    tiling = resolve_tiling(camera, info.scale, int(recipe.size[1]))
    if impl == "dense":
        return DenseHeatmap(recipe, positive, tiling)
    return TiledHeatmap(recipe, positive, tiling, stride, tile_batch)


def _check(info: ModelInfo, mode: str, positive: int, impl: str, stride: Optional[int],
           resize: Optional[str], tile_batch: int) -> None:
    """ValueError naming the first setting a :class:`Judge` cannot take."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} not in {MODES}")
    if impl not in ("tiles", "dense"):
        raise ValueError(f"heatmap impl {impl!r} must be resolved to tiles or dense")
    if resize is not None and resize not in RESIZE_POLICIES:
        raise ValueError(f"--resize {resize!r} not in {RESIZE_POLICIES}")
    if stride is not None and int(stride) < 1:
        raise ValueError(f"--stride must be >= 1 frame pixel, got {stride!r}")
    if int(tile_batch) < 1:
        raise ValueError(f"tile batch must be >= 1, got {tile_batch!r}")
    if not 0 <= int(positive) < len(info.class_names):
        raise ValueError(f"positive class index {positive} outside the model's classes")


# ------------------------------------------------------------------------------ command lines
def add_camera_args(group, prefix: str = "") -> None:
    """``--tile``, ``--gsd``, ``--altitude``, ``--hfov`` (with ``prefix``: ``--val-tile`` ...)."""
    p = f"--{prefix}"
    group.add_argument(f"{p}tile", type=int, default=None, metavar="PX",
                       help="heatmap tile side in frame pixels (overrides the camera)")
    group.add_argument(f"{p}gsd", type=float, default=None, metavar="M_PER_PX",
                       help="ground sample distance of the frames, metres per pixel: tile = "
                            "the model's training patch in metres / GSD")
    group.add_argument(f"{p}altitude", type=float, default=None, metavar="M",
                       help="camera height above ground in metres (with --hfov; nadir view)")
    group.add_argument(f"{p}hfov", type=float, default=None, metavar="DEG",
                       help="horizontal field of view in degrees (with --altitude)")


def camera_from_args(args, prefix: str = "") -> Camera:
    key = prefix.replace("-", "_")
    return Camera(getattr(args, f"{key}tile"), getattr(args, f"{key}gsd"),
                  getattr(args, f"{key}altitude"), getattr(args, f"{key}hfov"))


#: the rule's thresholds that a flag of the same name overrides, with the flag's help
_DECISION_FLAGS = (
    ("threshold", "heatmap: crowd probability above which an area counts as crowd "
                  "(default: the model's decision rule, else 0.5)"),
    ("min_area", "heatmap: share of the frame that must count as crowd for a crowd verdict "
                 "(default: the model's, else 0.02)"),
    ("classify_threshold", "classify: p(crowd) at or above which the verdict is crowd "
                           "(default: the model's, else 0.5)"),
)


def add_decision_args(group) -> None:
    group.add_argument("--resize", choices=RESIZE_POLICIES, default=None,
                       help="classify: how the whole frame meets the input size (default: the model's, "
                            "stretch)")
    for key, text in _DECISION_FLAGS:
        group.add_argument(f"--{key.replace('_', '-')}", type=float, default=None, help=text)
    group.add_argument("--fixed-threshold", action="store_true",
                       help="heatmap: every tile uses --threshold as it is, however many training "
                            "patches the frame holds (default: raised per frame from the model's "
                            "background scores, when it has them)")


def rule_from_args(base: DecisionRule, args) -> DecisionRule:
    """The model's rule with the thresholds given on the command line replacing its own, and
    without its background under ``--fixed-threshold``."""
    given = {k: getattr(args, k) for k, _ in _DECISION_FLAGS if getattr(args, k) is not None}
    fixed = bool(getattr(args, "fixed_threshold", False)) and base.background is not None
    if not given and not fixed:
        return base
    names = [f"--{k.replace('_', '-')}" for k in given] + (["--fixed-threshold"] if fixed else [])
    rule = base.without_background() if fixed else base
    return rule.replace(**given, source=f"{base.source}; {', '.join(names)} from the command line")
