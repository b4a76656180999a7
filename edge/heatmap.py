"""Crowd heatmap over a full-resolution frame and the flight-safety decision.

Two ways to get the map: ``tiles`` cuts the frame into tiles of the training scale (default the
model's input size, in frame pixels) at a stride, classifies them in batches and averages the
overlapping tiles; ``dense`` runs the fully convolutional model once on the whole frame through its
``score_map`` output (stride 16 for crowd_fcn). Both end in a probability grid and the same
statistics. :class:`FlightSafety` turns the per-frame score into a decision with an exponential
moving average and hysteresis so it does not flicker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

CELL = 8  # px: resolution of the canvas on which overlapping tiles are averaged
GRID_DECIMALS = 3  # heat grid values in records (edge.outputs encodes these fast)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _starts(length: int, tile: int, stride: int) -> List[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:  # last tile flush with the border: the whole frame is covered
        starts.append(length - tile)
    return starts


@dataclass(frozen=True)
class TileGrid:
    frame_hw: Tuple[int, int]
    tile_hw: Tuple[int, int]
    ys: Tuple[int, ...]
    xs: Tuple[int, ...]

    @property
    def shape(self) -> Tuple[int, int]:
        return len(self.ys), len(self.xs)

    def boxes(self) -> List[Tuple[int, int, int, int]]:
        """(y0, x0, y1, x1) per tile, row-major; tiles are clipped to frames smaller than a tile."""
        th, tw = self.tile_hw
        h, w = self.frame_hw
        return [(y, x, min(y + th, h), min(x + tw, w)) for y in self.ys for x in self.xs]


def tile_grid(frame_hw: Sequence[int], tile_hw: Sequence[int], stride_hw: Sequence[int]) -> TileGrid:
    h, w = (int(v) for v in frame_hw)
    th, tw = (int(v) for v in tile_hw)
    sy, sx = (int(v) for v in stride_hw)
    if min(th, tw, sy, sx) < 1:
        raise ValueError(f"tile {tile_hw} and stride {stride_hw} must be positive")
    return TileGrid((h, w), (th, tw), tuple(_starts(h, th, sy)), tuple(_starts(w, tw, sx)))


def cut_tiles(frame: np.ndarray, grid: TileGrid) -> List[np.ndarray]:
    return [frame[y0:y1, x0:x1] for (y0, x0, y1, x1) in grid.boxes()]


@dataclass
class HeatStats:
    grid: np.ndarray             # [rows, cols] crowd probability
    max: float
    mean: float
    area_over: float             # fraction of the frame area whose probability > threshold
    threshold: float             # the frame's tile threshold (DecisionRule.tile_threshold)
    impl: str
    # the probability surface area_over is measured on (tiles: the 8-px canvas; dense: the map),
    # kept so thresholds can be re-chosen without running the model again (calibration)
    canvas: Optional[np.ndarray] = field(default=None, repr=False)
    patches: int = 1             # training patches in the frame (edge.contract.patch_count)

    def area_above(self, threshold: float) -> float:
        """Share of the frame whose crowd probability exceeds ``threshold``."""
        return float((self.canvas > threshold).mean())

    def to_record(self, decimals: int = GRID_DECIMALS, grid: bool = True) -> Dict[str, object]:
        rec = {"impl": self.impl, "max": round(self.max, 4), "mean": round(self.mean, 4),
               "area_over_threshold": round(self.area_over, 4),
               "threshold": round(float(self.threshold), 6), "patches": int(self.patches),
               "grid_shape": list(self.grid.shape)}
        if grid:  # float64 first: float32 -> Python float would print 0.12300000339746475
            rec["grid"] = np.round(self.grid.astype(np.float64), decimals).tolist()
        return rec


def stats_from_tiles(probs: np.ndarray, grid: TileGrid, threshold: float, patches: int = 1) -> HeatStats:
    """Tile probabilities (row-major) -> grid and area statistics on an 8-px canvas."""
    rows, cols = grid.shape
    p = np.asarray(probs, dtype=np.float32).reshape(rows, cols)
    h, w = grid.frame_hw
    ch, cw = -(-h // CELL), -(-w // CELL)
    acc = np.zeros((ch, cw), np.float32)
    cnt = np.zeros((ch, cw), np.float32)
    for (y0, x0, y1, x1), v in zip(grid.boxes(), p.ravel()):
        sl = (slice(y0 // CELL, -(-y1 // CELL)), slice(x0 // CELL, -(-x1 // CELL)))
        acc[sl] += v
        cnt[sl] += 1
    canvas = acc / np.maximum(cnt, 1)
    return HeatStats(p, float(p.max()), float(canvas.mean()), float((canvas > threshold).mean()),
                     threshold, "tiles", canvas, patches)


def stats_from_dense(prob_map: np.ndarray, threshold: float, patches: int = 1) -> HeatStats:
    """Dense probability map [h, w] (one cell per output stride) -> statistics."""
    p = np.asarray(prob_map, dtype=np.float32)
    return HeatStats(p, float(p.max()), float(p.mean()), float((p > threshold).mean()),
                     threshold, "dense", p, patches)


@dataclass
class Decision:
    safe: bool
    score: float
    smoothed: float
    changed: bool

    def to_record(self) -> Dict[str, object]:
        return {"safe_to_overfly": self.safe, "score": round(self.score, 4),
                "smoothed": round(self.smoothed, 4), "changed": self.changed}


@dataclass
class FlightSafety:
    """Smoothed, hysteretic "safe to overfly" decision from a per-frame crowd score in [0, 1].

    ``smoothed = alpha * score + (1 - alpha) * smoothed``. It turns unsafe as soon as the smoothed
    score reaches ``unsafe_above`` (safety first), and back to safe only after ``hold`` consecutive
    frames below ``safe_below``. It starts unsafe: no evidence is not evidence of no crowd.
    """

    unsafe_above: float = 0.5
    safe_below: float = 0.35
    alpha: float = 0.4
    hold: int = 5
    safe: bool = False
    smoothed: Optional[float] = None
    _calm: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.safe_below <= self.unsafe_above <= 1.0:
            raise ValueError(f"need 0 <= safe_below ({self.safe_below}) <= unsafe_above "
                             f"({self.unsafe_above}) <= 1")
        if not 0.0 < self.alpha <= 1.0 or self.hold < 1:
            raise ValueError(f"alpha must be in (0, 1] and hold >= 1, got {self.alpha}, {self.hold}")

    def update(self, score: float) -> Decision:
        s = float(score)
        self.smoothed = s if self.smoothed is None else self.alpha * s + (1 - self.alpha) * self.smoothed
        before = self.safe
        if self.smoothed >= self.unsafe_above:
            self.safe, self._calm = False, 0
        elif self.smoothed < self.safe_below:
            self._calm += 1
            if self._calm >= self.hold:
                self.safe = True
        else:
            self._calm = 0
        return Decision(self.safe, s, float(self.smoothed), self.safe != before)
