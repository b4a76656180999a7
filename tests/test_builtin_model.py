"""The built-in crowd model (edge/models): what it is, where it came from, and that it works.

It ships as package data so that ``python -m edge.run --model crowd`` runs before anyone trains;
docs/builtin_model.md gives the command that made it, and these tests hold the files to it."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edge import contract as C
from edge.builtin import BUILTIN_MODELS, MODELS_DIR, builtin_checkpoint, resolve_model
from edge.files import file_sha256

DOC = Path(__file__).resolve().parents[1] / "docs" / "builtin_model.md"
ONNX, CKPT = (MODELS_DIR / f for f in BUILTIN_MODELS["crowd"])


def test_files_ship_small_and_resolve_by_name(tmp_path, monkeypatch):
    assert ONNX.is_file() and CKPT.is_file()
    assert ONNX.stat().st_size + CKPT.stat().st_size < 1024 * 1024
    assert resolve_model("crowd") == ONNX and builtin_checkpoint("crowd") == CKPT
    monkeypatch.chdir(tmp_path)
    (tmp_path / "crowd").write_bytes(b"a file of that name")      # a real path wins over the name
    assert resolve_model("crowd") == Path("crowd")
    with pytest.raises(ValueError, match="no built-in model 'people'"):
        builtin_checkpoint("people")


def test_files_are_tracked_not_ignored():
    """A clone must carry them: *.pt and *.onnx are ignored everywhere else in the repository."""
    import shutil
    import subprocess

    root = DOC.parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    for f in (ONNX, CKPT):
        ignored = subprocess.run(["git", "-C", str(root), "check-ignore", "-q", "--no-index", str(f)])
        assert ignored.returncode == 1, f"{f.name} is git-ignored: a fresh clone would lack it"


def test_metadata_names_its_checkpoint_scale_and_rule():
    from export.source import read_contract_metadata
    from train.checkpoint import load_checkpoint
    from train.data.crowd_synth import ground_scale

    meta = read_contract_metadata(ONNX)
    ckpt = load_checkpoint(CKPT)
    assert meta[C.META_ARCH] == ckpt["arch"] == "crowd_fcn"
    assert meta[C.META_CLASS_NAMES] == ckpt["class_names"] == ["crowd", "no_crowd"]
    assert meta[C.META_CHECKPOINT_SHA256] == file_sha256(CKPT)    # exported from exactly this file
    # v10's scenes (v5's scales); aerial-mosaic's views reach 3x the widest scene
    v10 = ground_scale(10)
    widened = replace(v10, patch_m_range=(v10.patch_m_range[0], 255.99))
    assert meta[C.META_SCALE] == ckpt["scale"] == widened.to_dict()
    # classify letterboxes a wide frame: the policy crowd_synth records (train/data/builtin.py)
    assert C.Preprocess.from_dict(ckpt["preprocess"]).resize == "letterbox"
    # the default thresholds, not tuned on any photos, and the background training measured on
    # the model's own synthetic test split (3,000 crowd-free scenes)
    rule = C.DecisionRule.from_dict(ckpt["decision"])
    assert (rule.threshold, rule.min_area, rule.classify_threshold, rule.source) == (0.5, 0.02, 0.5, "default")
    assert rule.background.n == 3000 and rule.background.positive == "crowd"
    assert rule.background.source == "crowd_synth test split: 3000 images not of class crowd"
    assert meta[C.META_DECISION] == rule.to_dict()
    from edge.backends import open_backend

    assert open_backend("crowd").info.decision == rule


def test_checkpoint_is_what_the_documented_command_trains():
    """The command in docs/builtin_model.md resolves to the configuration stored in the file."""
    from train.checkpoint import load_checkpoint
    from train.cli import build_parser, config_from_args

    command = re.search(r"^python -m train\.crowd_drone (.+)$", DOC.read_text(), re.M).group(1)
    from train.crowd_drone import DEFAULTS

    args = build_parser("python -m train.crowd_drone", "crowd", DEFAULTS).parse_args(shlex.split(command))
    documented = config_from_args(args).to_dict()
    stored = load_checkpoint(CKPT)["config"]
    keys = ("dataset", "model", "method", "knn", "synth_size", "synth_seed", "synth_version", "epochs",
            "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule", "seed", "augment",
            "select_best", "calibrate", "preset", "ema")
    assert {k: documented[k] for k in keys} == {k: stored[k] for k in keys}
    assert stored["augment"] is None                    # crowd_synth's own default policy
    assert stored["synth_version"] == 10                # the default version: trained with aerial-mosaic
    assert stored["method"] == "posd" and stored["knn"] == 2 and stored["epochs"] == 100
    assert stored["ema"] == 0.9998                      # the command's own default: the average


def _scenes(per_class: int):
    from train.data.crowd_synth import render

    images = [render(0, 1, c, i) for c in (0, 1) for i in range(per_class)]   # the model's test split
    return images, np.repeat([0, 1], per_class)


def test_onnx_equals_checkpoint_and_tells_the_scenes_apart():
    import onnxruntime as ort

    from train.checkpoint import load_model

    model, ckpt = load_model(CKPT)
    pre = C.Preprocess.from_dict(ckpt["preprocess"])
    images, labels = _scenes(100)
    x = pre(images)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"]).run(None, {C.INPUT_NAME: x})[0]
    assert np.abs(ref - got).max() <= 1e-4 and (ref.argmax(1) == got.argmax(1)).all()
    # 71.8 % on its whole test split (6,000 v10 scenes); far from chance on these 200
    assert (got.argmax(1) == labels).mean() >= 0.6
    # its background is of these scenes: the first 100 crowd-free ones lie within its extremes
    # (levels 0 and 1 are the lowest and highest of all 3,000) and follow its quantiles
    bg = C.DecisionRule.from_dict(ckpt["decision"]).background
    p = torch.softmax(torch.from_numpy(ref[labels == 1]).double(), 1)[:, 0].numpy()
    assert p.min() >= bg.quantiles[0] - 2e-6 and p.max() <= bg.quantiles[-1] + 1e-6
    for level in (0.25, 0.5, 0.75, 0.9):        # binomial, 100 draws: within 4 standard deviations
        share = (p <= bg.quantile(level)).mean()
        assert abs(share - level) <= 4 * (level * (1 - level) / 100) ** 0.5 + 0.01, (level, share)


def test_edge_run_takes_it_by_name(tmp_path):
    import cv2

    from edge.run import main

    images, _ = _scenes(2)
    for i, im in enumerate(images):
        cv2.imwrite(str(tmp_path / f"{i}.png"), cv2.resize(im, (320, 240))[:, :, ::-1])
    out = tmp_path / "r.jsonl"
    assert main(["--model", "crowd", "--source", str(tmp_path / "*.png"), "--output", str(out),
                 "--mode", "heatmap", "--tile", "160"]) == 0
    records = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert len(records) == 4 and all("verdict" in r for r in records)
