"""crowd_synth v10, opt-in: v5's scenes through a lighter camera (docs/crowd_synth.md: the versions
table and "What real frames have that the scenes lack").

A whole frame shrunk 8-15x to the 128-px input is sharp whatever the camera's focus, so blur at
the input's scale belongs to close views only. v5's camera (v3's :func:`scene_v3._finish`) blurs
55 % of the images, up to a defocus of sigma 1.1 px, and compresses down to JPEG quality 8. v10 is
v5's scene code with only the camera's ranges changed (:data:`CAMERA`): motion blur 2-4 px long
in 6 % of the images, defocus sigma 0.3-0.8 px in 14 %, noise sigma 0.5-6, JPEG quality 25-94
(v5: motion 2-5 px in 15 %, defocus 0.3-1.1 px in 40 %, noise up to 8, quality 8-94). The version
number is part of every image's random stream, so v10's images are other draws than v5's. With
the ``aerial-mosaic`` training augmentation it is the recipe that reaches 92 % balanced accuracy
in classify mode on the development photos. Versions 7-9 were scratch experiments, never shipped;
v10 keeps the number it was measured under.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from train.data.crowd_synth import scene_v3, scene_v5
from train.data.crowd_synth.scene_v3 import render_recipe

CAMERA = scene_v3.CameraRanges(motion=0.06, motion_px=(2, 5), blurred=0.2, defocus_sigma=(0.3, 0.8),
                               noise_sigma=(0.5, 6.0), jpeg_quality=(25, 95))
V10 = dataclasses.replace(scene_v5.V5, version=10, camera=CAMERA)


def render(seed: int, split_id: int, class_id: int, index: int) -> np.ndarray:
    """Image ``index`` of (split, class) as 128x128x3 uint8 RGB; a pure function of its arguments."""
    return render_recipe(V10, seed, split_id, class_id, index)


def ground_scale():
    """The ground scale of v10 scenes: v5's (128 px cover 12.8-85.3 m at the centre)."""
    return scene_v5.ground_scale()
