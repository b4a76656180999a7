"""The heatmap's per-frame tile threshold: the model's background (how it scores crowd-free
patches), the Sidak rule that reads a frame's threshold off it, the patch count, the judge, the
flags and calibration that use it, and the record round trips (edge/contract.py, edge/judge.py)."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge.contract import (META_DECISION, Background, DecisionRule, GroundScale, ModelInfo,  # noqa: E402
                           Preprocess, patch_count)
from edge.heatmap import tile_grid  # noqa: E402
from edge.judge import Camera, Judge, add_decision_args, rule_from_args  # noqa: E402
from edge.metrics import calibrate_heatmap  # noqa: E402

SCALE = GroundScale(25.6, (16.0, 40.0), 64)
PRE = Preprocess((64, 64), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "RGB", "stretch")


def beta_scores(n, seed=0, a=1.2, b=6.0):
    return np.random.default_rng(seed).beta(a, b, n)


def test_background_quantiles_and_exceedance_against_the_scores():
    s = beta_scores(20000)
    bg = Background.from_scores(s, "crowd", "test")
    assert len(bg.quantiles) == 1001 and bg.n == 20000
    # rounded up: never below the quantile it stands for, and at most 1e-6 above
    exact = np.quantile(s, np.linspace(0, 1, 1001))
    assert np.all(np.array(bg.quantiles) >= exact - 1e-12)
    assert np.all(np.array(bg.quantiles) - exact <= 1e-6 + 1e-12)
    for t in (0.05, 0.2, 0.5, 0.7, 0.9):
        assert bg.exceedance(t) == pytest.approx((s > t).mean(), abs=2e-3)
    for lv in (0.1, 0.5, 0.95, 0.999):
        assert bg.quantile(lv) == pytest.approx(np.quantile(s, lv), abs=2e-3)
    assert bg.exceedance(1.0) == 0.0 and bg.exceedance(-0.1) == 1.0


def test_exceedance_of_tied_scores():
    bg = Background.from_scores([0.0] * 90 + [0.8] * 10, "crowd")
    assert bg.exceedance(0.0) == pytest.approx(0.1, abs=3e-3)     # the ties count as not above
    assert bg.exceedance(0.5) == pytest.approx(0.1, abs=8e-3)     # np.quantile interpolates
    assert bg.exceedance(0.8) == 0.0


def test_sidak_threshold_keeps_a_frame_to_one_patch_rate():
    """Frames of k independent background patches: the share whose hottest patch exceeds the
    frame's tile threshold is the one-patch rate at ``threshold``, for every k."""
    rng = np.random.default_rng(1)
    rule = DecisionRule(threshold=0.4, background=Background.from_scores(beta_scores(200000, 2), "crowd"))
    a = rule.background.exceedance(0.4)
    assert 0.02 < a < 0.2
    for k in (1, 4, 9, 20):
        t = rule.tile_threshold(k)
        frames = rng.beta(1.2, 6.0, (100000, k)).max(axis=1)
        assert (frames > t).mean() == pytest.approx(a, abs=0.004)
    # without the correction the frame rate grows with k: the problem the rule solves
    frames = rng.beta(1.2, 6.0, (100000, 9)).max(axis=1)
    assert (frames > 0.4).mean() > 3 * a


def test_tile_threshold_edges():
    bg = Background.from_scores(beta_scores(5000), "crowd")
    rule = DecisionRule(threshold=0.3, background=bg)
    assert rule.tile_threshold(1) == 0.3 and rule.tile_threshold(0) == 0.3
    ts = [rule.tile_threshold(k) for k in (1, 2, 5, 10, 100)]
    assert ts == sorted(ts) and ts[-1] < 1.0 and ts[1] > 0.3
    assert DecisionRule(threshold=0.3).tile_threshold(50) == 0.3            # no background
    above_all = DecisionRule(threshold=0.99, background=bg)                 # no patch exceeds it
    assert above_all.tile_threshold(50) == 0.99


@pytest.mark.parametrize("hw,tile", [((1080, 1920), 256), ((480, 640), 304), ((100, 90), 128),
                                     ((128, 128), 128), ((129, 300), 128), ((1000, 1000), 3),
                                     ((1000, 1000), 1)])
def test_patch_count_is_the_half_overlapping_grid(hw, tile):
    grid = tile_grid(hw, (tile, tile), (max(1, tile // 2),) * 2)
    assert patch_count(hw, tile) == grid.shape[0] * grid.shape[1]


def test_records_round_trip_and_bad_records():
    bg = Background.from_scores(beta_scores(300), "crowd", "crowd_synth test split")
    rule = DecisionRule(0.55, 0.03, 0.6, "default", bg)
    back = DecisionRule.from_dict(json.loads(json.dumps(rule.to_dict())))
    assert back == rule
    assert DecisionRule.from_dict({"threshold": 0.5}).background is None
    d = rule.describe()["background"]
    assert "quantiles" not in d and d["n"] == 300 and d["q0990"] == round(bg.quantile(0.99), 4)
    info = ModelInfo.from_metadata({"edge_students.class_names": ["crowd", "no_crowd"],
                                    "edge_students.preprocess": PRE.to_dict(),
                                    "edge_students.arch": "x", META_DECISION: rule.to_dict()})
    assert info.decision == rule
    for bad in ({"quantiles": [0.5, 0.2], "n": 3, "positive": "crowd"},
                {"quantiles": [0.1, 1.5], "n": 3, "positive": "crowd"},
                {"quantiles": [0.1], "n": 3, "positive": "crowd"},
                {"quantiles": [0.1, float("nan")], "n": 3, "positive": "crowd"},
                {"quantiles": [0.1, 0.2], "n": 0, "positive": "crowd"},
                {"n": 3, "positive": "crowd"}, "not a dict"):
        with pytest.raises(ValueError, match="decision record"):
            DecisionRule.from_dict({"threshold": 0.5, "background": bad})
    # a record of 1001 numbers is not printed whole in the message
    with pytest.raises(ValueError) as e:
        DecisionRule.from_dict({"threshold": 2.0, "background": bg.to_dict()})
    assert len(str(e.value)) < 400


class Spot:
    """A stand-in network: p(crowd) of a tile is 0.62 where it holds white pixels, else 0.02."""

    def __call__(self, x):
        hot = (x.max(axis=(1, 2, 3)) > 0.5).astype(np.float32)
        p = 0.02 + 0.60 * hot
        logit = np.log(p / (1 - p))
        return np.stack([logit, np.zeros_like(logit)], 1).astype(np.float32)


def frame_with_spot(h=720, w=1280):
    img = np.zeros((h, w, 3), np.uint8)
    img[300:340, 600:640] = 255
    return img


def test_judge_raises_the_threshold_for_a_frame_of_many_patches():
    bg = Background.from_scores(beta_scores(20000), "crowd")
    rule = DecisionRule(threshold=0.5, min_area=0.01, background=bg)
    info = ModelInfo(["crowd", "no_crowd"], PRE, scale=SCALE, decision=rule)
    j = Judge(info, "heatmap", camera=Camera(tile=256))
    res = j.judge(frame_with_spot(), Spot())
    k = patch_count((720, 1280), 256)
    assert res.heat.patches == k == 5 * 9
    assert res.heat.threshold == pytest.approx(rule.tile_threshold(k)) and res.heat.threshold > 0.62
    assert not res.crowd and res.evidence == 0.0                            # 0.62 is not enough here
    rec = res.heat.to_record()
    assert rec["patches"] == k and rec["threshold"] == pytest.approx(res.heat.threshold, abs=1e-6)
    fixed = Judge(info, "heatmap", camera=Camera(tile=256), rule=rule.without_background())
    res2 = fixed.judge(frame_with_spot(), Spot())
    assert res2.heat.threshold == 0.5 and res2.crowd                        # the old rule flags it
    # a frame of one patch keeps the threshold as it is
    one = j.judge(frame_with_spot()[200:456, 500:756], Spot())
    assert one.heat.patches == 1 and one.heat.threshold == 0.5 and one.crowd
    assert j.describe()["rule"]["background"]["n"] == 20000


def test_judge_ignores_a_background_of_another_class():
    bg = Background.from_scores(beta_scores(1000), "person")
    info = ModelInfo(["crowd", "no_crowd"], PRE, scale=SCALE, decision=DecisionRule(background=bg))
    j = Judge(info, "heatmap", camera=Camera(tile=256))
    assert j.rule.background is None and any("'person'" in n for n in j.notes)
    assert Judge(info, "classify").notes == []


def test_fixed_threshold_flag():
    p = argparse.ArgumentParser()
    add_decision_args(p)
    rule = DecisionRule(background=Background.from_scores(beta_scores(500), "crowd"))
    assert rule_from_args(rule, p.parse_args([])) is rule
    fixed = rule_from_args(rule, p.parse_args(["--fixed-threshold", "--threshold", "0.7"]))
    assert fixed.background is None and fixed.threshold == 0.7
    assert fixed.source.endswith("--threshold, --fixed-threshold from the command line")
    plain = DecisionRule()
    assert rule_from_args(plain, p.parse_args(["--fixed-threshold"])) is plain


class Heat:
    """Heat statistics as calibration sees them: a canvas and a patch count."""

    def __init__(self, canvas, patches):
        self.canvas, self.patches = np.asarray(canvas, np.float32), patches

    def area_above(self, t):
        return float((self.canvas > t).mean())


def test_calibration_chooses_on_the_per_frame_thresholds():
    rng = np.random.default_rng(3)
    bg = Background.from_scores(beta_scores(20000), "crowd")
    base = DecisionRule(background=bg)
    heats, y = [], []
    for i in range(40):
        crowd = i % 2 == 0
        c = rng.beta(1.2, 6.0, (20, 20))
        if crowd:
            c[:4, :4] = rng.uniform(0.85, 1.0, (4, 4))
        heats.append(Heat(c, int(rng.integers(1, 30))))
        y.append(int(crowd))
    t, choice = calibrate_heatmap(y, heats, base=base)
    # brute force: the same balanced accuracy from each frame's own tile threshold
    rule = base.replace(threshold=t, min_area=choice.threshold)
    pred = np.array([h.area_above(rule.tile_threshold(h.patches)) >= rule.min_area for h in heats])
    yy = np.array(y, bool)
    bacc = (pred[yy].mean() + (~pred[~yy]).mean()) / 2
    assert bacc == pytest.approx(choice.balanced_accuracy) and bacc == 1.0
    t0, c0 = calibrate_heatmap(y, heats)                                    # without the background
    assert c0.balanced_accuracy <= choice.balanced_accuracy
