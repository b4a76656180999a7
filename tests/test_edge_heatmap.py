"""Heatmap tiling/statistics, the flight-safety decision, and heatmaps of a 1280x720 frame."""
from __future__ import annotations

import numpy as np
import pytest

from edge.heatmap import FlightSafety, stats_from_dense, stats_from_tiles, tile_grid
from edge.judge import Camera

try:
    from edge_helpers import export_crowd_onnx
except ImportError:
    from tests.edge_helpers import export_crowd_onnx


def test_tile_grid_covers_frame_with_border_flush_tiles():
    g = tile_grid((720, 1280), (128, 128), (64, 64))
    assert g.ys[0] == 0 and g.ys[-1] == 720 - 128 and g.xs[-1] == 1280 - 128
    assert g.shape == (11, 19)
    covered = np.zeros((720, 1280), bool)
    for y0, x0, y1, x1 in g.boxes():
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    small = tile_grid((50, 60), (128, 128), (64, 64))
    assert small.shape == (1, 1) and small.boxes() == [(0, 0, 50, 60)]
    with pytest.raises(ValueError):
        tile_grid((10, 10), (0, 4), (1, 1))


def test_tile_stats_area_and_max():
    g = tile_grid((256, 256), (128, 128), (128, 128))          # 2x2 disjoint tiles
    s = stats_from_tiles(np.array([0.9, 0.1, 0.1, 0.1]), g, threshold=0.5)
    assert s.grid.shape == (2, 2) and s.max == pytest.approx(0.9)
    assert s.area_over == pytest.approx(0.25) and s.mean == pytest.approx(0.3)
    d = stats_from_dense(np.array([[0.6, 0.2], [0.2, 0.2]]), 0.5)
    assert d.area_over == pytest.approx(0.25) and d.impl == "dense"
    rec = s.to_record()
    assert rec["grid_shape"] == [2, 2] and set(rec) >= {"max", "mean", "area_over_threshold", "grid"}


def test_flight_safety_hysteresis_does_not_flicker():
    fs = FlightSafety(unsafe_above=0.5, safe_below=0.3, alpha=1.0, hold=3)
    assert not fs.update(0.1).safe and not fs.update(0.1).safe   # starts unsafe, needs 3 calm frames
    assert fs.update(0.1).safe
    # scores oscillating inside the band (0.3..0.5) never change the decision
    flips = sum(fs.update(s).changed for s in [0.45, 0.35, 0.49, 0.31] * 5)
    assert flips == 0 and fs.safe
    assert not fs.update(0.6).safe                               # unsafe at once
    assert not fs.update(0.1).safe and not fs.update(0.2).safe   # hold before safe again
    assert fs.update(0.0).safe


def test_flight_safety_smoothing_ignores_single_spike():
    fs = FlightSafety(unsafe_above=0.5, safe_below=0.3, alpha=0.3, hold=1)
    fs.update(0.0)
    assert fs.safe
    assert fs.update(1.0).safe            # one spike: smoothed 0.3 < 0.5
    assert not fs.update(1.0).safe        # persistent: 0.51
    with pytest.raises(ValueError):
        FlightSafety(unsafe_above=0.2, safe_below=0.4)


@pytest.fixture(scope="module")
def dense_model(tmp_path_factory):
    return export_crowd_onnx(tmp_path_factory.mktemp("m") / "crowd.onnx", size=64, dense=True)


@pytest.mark.parametrize("impl", ["dense", "tiles"])
def test_heatmap_on_720p_frame(dense_model, impl):
    from edge.backends import open_backend
    from edge.pipeline import Pipeline, PipelineConfig
    from edge.sources import synthetic_frames

    backend = open_backend(dense_model, "ort-cpu", threads=1)
    assert backend.has_dense
    records = []
    cfg = PipelineConfig(mode="heatmap", heatmap_impl=impl, camera=Camera(tile=128), stride=128)
    pipe = Pipeline(backend, synthetic_frames(1280, 720, 2), cfg,
                    publish=lambda rec, item, grid: records.append(rec))
    s = pipe.run()
    assert s["frames"] == 2 and s["heatmap_impl"] == impl
    assert s["judge"]["tiling"] == {"source": "tile", "tile": 128}
    heat = records[0]["heat"]
    # 128-px tiles of a 64-px model: dense sees the frame at half size (360x640 -> 23x40 cells)
    shape = [23, 40] if impl == "dense" else [6, 10]
    assert heat["grid_shape"] == shape and np.asarray(heat["grid"]).shape == tuple(shape)
    assert 0.0 <= heat["mean"] <= heat["max"] <= 1.0 and 0.0 <= heat["area_over_threshold"] <= 1.0
    assert "safe_to_overfly" in records[0]["decision"]
    v = records[0]["verdict"]                     # the frame's own verdict by the default rule
    assert v["crowd"] == (heat["area_over_threshold"] >= 0.02) and v["tile_px"] == 128
    assert records[0]["decision"]["score"] == v["score"]


def test_dense_refused_without_score_map(tmp_path):
    from edge.backends import open_backend
    from edge.pipeline import Pipeline, PipelineConfig

    path = export_crowd_onnx(tmp_path / "plain.onnx", size=64, dense=False)
    backend = open_backend(path, "ort-cpu", threads=1)
    assert not backend.has_dense
    with pytest.raises(ValueError, match="score_map"):
        Pipeline(backend, iter([]), PipelineConfig(mode="heatmap", heatmap_impl="dense"))
    assert Pipeline(backend, iter([]), PipelineConfig(mode="heatmap")).impl == "tiles"


def test_jsonl_grid_fast_path_is_byte_identical_to_json():
    import json

    from edge.heatmap import stats_from_dense
    from edge.outputs import _grid_json, dumps_record

    rng = np.random.default_rng(3)
    p = rng.random((45, 80)).astype(np.float32)
    p[0, :6] = [0.0, 1.0, 0.0005, 0.0015, 0.9995, 1e-7]          # edges and rounding ties
    rec = {"source": "a.mp4", "frame": 7, "heat": stats_from_dense(p, 0.5).to_record(),
           "decision": {"safe_to_overfly": False}}
    plain = json.dumps(rec, separators=(",", ":"), allow_nan=False)
    assert _grid_json(rec["heat"]["grid"]) is not None               # the fast path is taken
    assert dumps_record(rec) == plain
    assert json.loads(dumps_record(rec)) == rec
    # anything that is not a grid of 3-decimal probabilities goes through json unchanged
    for grid in ([[0.1234, 0.5]], [[1, 0]], [[0.5, 0.25], [1, 0.5]], [[0.5], [0.5, 0.5]], [[2.0]],
                 [[-0.001]], [], [[]], [["0.5"]], [[True]], [[0.5], [False]]):
        r = {"heat": {"grid": grid}}
        assert _grid_json(grid) is None
        assert dumps_record(r) == json.dumps(r, separators=(",", ":"))
    tricky = {"source": "\x00grid\x00", "heat": {"grid": [[0.5, 0.25]]}}
    assert dumps_record(tricky) == json.dumps(tricky, separators=(",", ":"))
    with pytest.raises(ValueError):                                     # NaN still refused
        dumps_record({"heat": {"grid": [[float("nan")]]}})
