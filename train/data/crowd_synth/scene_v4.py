"""crowd_synth v4: the v3 scenes, made to hold for whole drone frames (docs/crowd_synth.md).

Two things v3 got wrong, both measured on real photos and on v3 itself:

- **wide views.** The classify mode squeezes a whole frame to 128 px: a 1080p frame from 40-120 m
  covers 70-250 m of ground, 0.5-2 px/m, below v3's 2-10 px/m. There a car is 2-7 px and a roof
  a handful of pixels, the size v3 gives only to people, so a v3 model calls every busy street a
  crowd. v4 draws 1-10 px/m (128 px = 12.8-128 m) and fills a wider view with proportionally more
  of everything (roads, buildings, cars, boats, trees, stalls, people), up to 6x a nominal view's
  count.
- **crowds out of view.** In 15 % of v3's ``crowd`` images fewer than 20 people land in the
  picture (the gathering falls outside the frame or behind the horizon of an oblique view): label
  noise that teaches the model to hedge. A v4 crowd is moved until at least 60 of its people (or
  half of a smaller group) are in view.

Everything else is v3's (``scene_v3.render_recipe`` with v4's :data:`V4` recipe). v4 is opt-in
(``--synth-version 4``), not the default: on real photos it trades ranking for calibration
(docs/crowd_synth.md, "v4"). v5, the default, takes both measures on a narrower range of scales
(1.5-10 px/m) with photograph textures.
"""
from __future__ import annotations

import numpy as np

from train.data.crowd_synth import scene_v3
from train.data.crowd_synth.scene_v3 import Recipe, render_recipe

#: output pixels per metre at the centre of the frame, log-uniform: a whole 1080p frame from up to
#: ~120 m squeezed to 128 px (1 px/m) down to a quarter-frame tile from low altitude (10 px/m).
PPM_RANGE = (1.0, 10.0)
#: a view at 3 px/m or closer is "nominal"; at 1 px/m it covers 9x the ground, capped at 6x the
#: things (and MAX_PEOPLE people) so that generation stays within its time budget.
V4 = Recipe(4, PPM_RANGE, area_ref=3.0, max_area=6.0, crowd_in_view=60)


def render(seed: int, split_id: int, class_id: int, index: int) -> np.ndarray:
    """Image ``index`` of (split, class) as 128x128x3 uint8 RGB; a pure function of its arguments."""
    return render_recipe(V4, seed, split_id, class_id, index)


def ground_scale():
    """The ground scale of v4 scenes (contract 4): 128 px cover 12.8-128 m at the centre."""
    return scene_v3.ground_scale(PPM_RANGE)
