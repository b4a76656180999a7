"""edge.judge: tile size from the camera, the area decision, dense rescaling, classify policies."""
from __future__ import annotations

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge.contract import DecisionRule, GroundScale, ModelInfo, Preprocess, gsd_from_camera  # noqa: E402
from edge.judge import (DEFAULT_ALTITUDE_M, DEFAULT_HFOV_DEG, Camera, Judge, resolve_impl,  # noqa: E402
                        resolve_tiling)

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SCALE = GroundScale(25.6, (16.0, 40.0), 64)


def info(scale=SCALE, rule=None, resize="stretch"):
    return ModelInfo(["crowd", "no_crowd"], Preprocess((64, 64), MEAN, STD, "RGB", resize),
                     scale=scale, decision=rule)


class Bright:
    """A stand-in network: crowd logit = 8 * (mean normalised brightness); records its inputs."""

    def __init__(self):
        self.shapes = []

    def __call__(self, x):
        self.shapes.append(x.shape)
        m = x.mean(axis=(1, 2, 3))
        return np.stack([8 * m, np.zeros_like(m)], 1).astype(np.float32)      # [N, 2]

    def score_map(self, x):
        self.shapes.append(x.shape)
        n, _, h, w = x.shape
        cells = x[:, :, : h // 16 * 16, : w // 16 * 16].reshape(n, 3, h // 16, 16, w // 16, 16)
        m = cells.mean(axis=(1, 3, 5))                                         # [N, h/16, w/16]
        return np.stack([8 * m, np.zeros_like(m)], 1).astype(np.float32)      # [N, 2, h', w']


def half_white(h=1080, w=1920):
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = 255
    return img


def test_camera_flags_validate():
    for kw, msg in [({"altitude": 40.0}, "go together"), ({"tile": 64, "gsd": 0.1}, "one of"),
                    ({"gsd": -1.0}, "--gsd"), ({"tile": 0}, "--tile"),
                    ({"altitude": 40.0, "hfov": 200.0}, "field of view"),
                    ({"altitude": -5.0, "hfov": 80.0}, "altitude")]:
        with pytest.raises(ValueError, match=msg):
            Camera(**kw)


def test_tile_size_from_gsd_altitude_or_default_camera():
    assert resolve_tiling(Camera(gsd=0.1), SCALE, 64).tile_px(1920) == 256      # 25.6 m / 0.1 m/px
    t = resolve_tiling(Camera(altitude=30.0, hfov=70.0), SCALE, 64)
    ground = 2 * 30.0 * math.tan(math.radians(35.0))
    assert t.tile_px(1920) == round(25.6 / (ground / 1920)) and t.tile_px(960) == round(25.6 / (ground / 960))
    d = resolve_tiling(Camera(), SCALE, 64)
    assert d.source == "default camera"
    assert d.tile_px(1920) == SCALE.tile_px(gsd_from_camera(DEFAULT_ALTITUDE_M, DEFAULT_HFOV_DEG, 1920))
    assert resolve_tiling(Camera(tile=300), SCALE, 64).tile_px(1920) == 300
    # a model without a scale: native tiles of its input size, or an explicit tile
    assert resolve_tiling(Camera(), None, 64).tile_px(1920) == 64
    assert resolve_tiling(Camera(tile=90), None, 64).tile_px(1920) == 90
    with pytest.raises(ValueError, match="no ground scale"):
        resolve_tiling(Camera(gsd=0.05), None, 64)


def test_notes_say_when_a_default_is_assumed():
    j = Judge(info(), "heatmap")
    assert len(j.notes) == 1 and "altitude 40 m" in j.notes[0]
    assert j.describe()["tiling"]["source"] == "default camera"
    assert Judge(info(), "heatmap", camera=Camera(gsd=0.1)).notes == []
    assert "no ground scale" in Judge(info(scale=None), "heatmap").notes[0]
    assert Judge(info(), "classify").notes == []


def test_classify_notes_what_the_camera_means_for_a_whole_frame():
    # SCALE: the input spans 16-40 m of ground in training. 2 h tan(hfov / 2) across the frame:
    def across(h, fov):
        return 2 * h * math.tan(math.radians(fov / 2))

    assert 16 < across(15, 90) < 40
    assert Judge(info(), "classify", camera=Camera(altitude=15.0, hfov=90.0)).notes == []
    wide = Judge(info(), "classify", camera=Camera(altitude=60.0, hfov=82.0)).notes
    assert len(wide) == 1 and f"{across(60, 82):.0f} m of ground across, wider" in wide[0]
    assert "(16-40 m across its input)" in wide[0] and "heatmap mode" in wide[0]
    narrow = Judge(info(), "classify", camera=Camera(altitude=5.0, hfov=60.0)).notes
    assert len(narrow) == 1 and "narrower" in narrow[0] and "heatmap" not in narrow[0]
    # a centre crop shows less than the frame's width: no figure to give
    assert Judge(info(), "classify", camera=Camera(altitude=60.0, hfov=82.0), resize="center-crop").notes == []
    # no scale recorded: nothing to compare with
    assert Judge(info(scale=None), "classify", camera=Camera(altitude=60.0, hfov=82.0)).notes == []
    # a tile size or GSD sizes heatmap tiles only, with or without a scale
    for cam, given in ((Camera(tile=300), "a tile size"), (Camera(gsd=0.05), "a ground sample distance")):
        for sc in (SCALE, None):
            notes = Judge(info(scale=sc), "classify", camera=cam).notes
            assert len(notes) == 1 and notes[0].startswith(given) and "does not use it" in notes[0]


def test_tiles_at_the_camera_scale_and_the_area_decision():
    net = Bright()
    rule = DecisionRule(threshold=0.5, min_area=0.4)
    j = Judge(info(rule=rule), "heatmap", camera=Camera(gsd=0.1))          # 256-px tiles, stride 128
    res = j.judge(half_white(), net)
    # rows 0, 128, .., 768 and 824 (flush), columns 0, 128, .., 1664: 8 x 14 tiles, batches of 64
    assert res.tile_px == 256 and net.shapes == [(64, 3, 64, 64), (48, 3, 64, 64)]
    assert res.heat.area_over == pytest.approx(0.5, abs=0.04)             # the white half is "crowd"
    assert res.crowd and res.score == pytest.approx(rule.heatmap_score(res.heat.area_over))
    assert res.score > 0.5
    strict = j.with_rule(DecisionRule(threshold=0.5, min_area=0.6))
    again = strict.judge(half_white(), net)
    assert not again.crowd and again.score < 0.5 and again.evidence == res.evidence
    # the score is exactly 0.5 when the area is exactly the minimum
    edge = j.with_rule(DecisionRule(threshold=0.5, min_area=res.evidence))
    assert edge.judge(half_white(), net).score == 0.5 and edge.judge(half_white(), net).crowd


def test_dense_resizes_the_frame_to_the_training_scale():
    net = Bright()
    j = Judge(info(), "heatmap", camera=Camera(tile=128), impl="dense")   # 64-px model: frame / 2
    res = j.judge(half_white(720, 1280), net, net.score_map)
    assert net.shapes == [(1, 3, 360, 640)]
    assert res.heat.grid.shape == (22, 40) and res.heat.impl == "dense"
    assert res.heat.area_over == pytest.approx(0.5, abs=0.03) and res.tile_px == 128
    with pytest.raises(ValueError, match="score_map"):
        j.judge(half_white(), net)


def test_classify_policy_and_threshold():
    net = Bright()
    img = np.full((100, 300, 3), 255, np.uint8)
    rule = DecisionRule(classify_threshold=0.9)
    stretch = Judge(info(rule=rule), "classify").judge(img, net)
    boxed = Judge(info(rule=rule), "classify", resize="letterbox").judge(img, net)
    assert net.shapes == [(1, 3, 64, 64)] * 2
    assert stretch.evidence > 0.999 and stretch.crowd                      # all white
    assert boxed.evidence < stretch.evidence                               # mean-grey bands
    assert boxed.score == pytest.approx(rule.classify_score(boxed.evidence))
    assert boxed.crowd == (boxed.evidence >= 0.9)
    with pytest.raises(ValueError, match="resize"):
        Judge(info(), "classify", resize="squash")


def test_impl_resolution():
    assert resolve_impl("auto", True) == "dense" and resolve_impl("auto", False) == "tiles"
    with pytest.raises(ValueError, match="score_map"):
        resolve_impl("dense", False)
