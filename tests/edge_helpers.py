"""Test helpers for edge/: tiny crowd_fcn ONNX models with the contract's metadata (uses torch)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from edge.contract import (INPUT_NAME, META_ARCH, META_ARCH_KWARGS, META_CLASS_NAMES,
                           META_FORMAT_VERSION, META_FULLY_CONVOLUTIONAL, META_IN_CHANNELS,
                           META_INPUT_SIZE, META_METHOD, META_OUTPUTS, META_PRECISION,
                           META_PREPROCESS, META_SCORE_MAP_STRIDE, METADATA_FORMAT_VERSION,
                           OUTPUT_NAME, SCORE_MAP_NAME, Preprocess, encode_metadata)

CROWD_CLASSES = ["crowd", "no_crowd"]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def recipe(size: int = 64, channel_order: str = "RGB") -> Preprocess:
    n = 1 if channel_order == "GRAY" else 3
    return Preprocess((size, size), MEAN[:n], STD[:n], channel_order)


def build_crowd_model(seed: int = 0, in_channels: int = 3):
    import torch

    from train.models import build_model

    torch.manual_seed(seed)
    return build_model("crowd_fcn", num_classes=len(CROWD_CLASSES), in_channels=in_channels).eval()


def brightness_crowd_model(gain: float = 3.0, in_channels: int = 3):
    """crowd_fcn with hand-set weights: p(crowd) = sigmoid(gain * mean normalised brightness),
    roughly (zero padding darkens the border a little). Bright images are "crowds", dark ones
    are not, so tests know every verdict in advance. Works for the pooled logits and the score map."""
    import torch

    model = build_crowd_model(0, in_channels)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        conv1, conv2, conv3 = (m for m in model.features if isinstance(m, torch.nn.Conv2d))
        conv1.weight[0] = 1.0 / conv1.weight[0].numel()       # channel 0: local mean brightness
        conv1.bias[0] = 10.0                                  # + 10 keeps it through the ReLUs
        conv2.weight[0, 0, 1, 1] = 1.0                        # pass channel 0 on (centre tap)
        conv3.weight[0, 0, 1, 1] = 1.0
        model.classifier.weight[0, 0, 0, 0] = gain            # crowd logit = gain * (c0 - 10)
        model.classifier.bias[0] = -10.0 * gain
    return model.eval()


def export_crowd_onnx(path, size: int = 64, dense: bool = True, channel_order: str = "RGB",
                      seed: int = 0, class_names: Sequence[str] = CROWD_CLASSES, model=None,
                      extra_meta=None) -> Path:
    """Export crowd_fcn to ONNX (input/logits, dynamic batch; with ``dense`` also a score_map
    output and dynamic H/W) and write the contract's metadata into metadata_props (plus
    ``extra_meta``, e.g. the scale and decision records)."""
    import onnx
    import torch

    prep = recipe(size, channel_order)
    model = model if model is not None else build_crowd_model(seed, prep.channels)

    class WithScoreMap(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m(x), self.m.score_map(x)

    x = torch.zeros(1, prep.channels, size, size)
    path = Path(path)
    if dense:
        net, outs = WithScoreMap(model), [OUTPUT_NAME, SCORE_MAP_NAME]
        axes = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch"},
                SCORE_MAP_NAME: {0: "batch", 2: "map_h", 3: "map_w"}}
    else:
        net, outs = model, [OUTPUT_NAME]
        axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated but still the stable path
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (x,), str(path), input_names=[INPUT_NAME], output_names=outs,
                          dynamic_axes=axes, opset_version=17, dynamo=False)
    meta = {META_FORMAT_VERSION: METADATA_FORMAT_VERSION, META_CLASS_NAMES: list(class_names),
            META_INPUT_SIZE: [size, size], META_IN_CHANNELS: prep.channels,
            META_PREPROCESS: prep.to_dict(), META_ARCH: "crowd_fcn",
            META_ARCH_KWARGS: {"num_classes": len(class_names)}, META_METHOD: "ce",
            META_OUTPUTS: outs, META_PRECISION: "fp32", META_FULLY_CONVOLUTIONAL: True,
            META_SCORE_MAP_STRIDE: 16, **(extra_meta or {})}
    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in encode_metadata(meta).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


def write_video(path, frames: int = 12, size=(160, 120), fps: float = 10.0) -> Path:
    import cv2

    w, h = size
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert vw.isOpened(), "OpenCV cannot write MJPG here"
    rng = np.random.default_rng(0)
    for i in range(frames):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img[:, : (i * 10) % w] = 255
        vw.write(img)
    vw.release()
    return Path(path)


def image_folder(root: Path, counts, levels, size: int = 32, spread: int = 90, seed: int = 0) -> Path:
    """``root/<split>/<class>/<i>.png``: ``counts[split]`` random images per class whose pixels lie in
    ``[levels[class], levels[class] + spread)`` (a class told apart by brightness)."""
    import cv2

    rng = np.random.default_rng(seed)
    for split, n in counts.items():
        for cls, lo in levels.items():
            folder = Path(root) / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                cv2.imwrite(str(folder / f"{i}.png"), rng.integers(lo, lo + spread, (size, size, 3), dtype=np.uint8))
    return Path(root)
