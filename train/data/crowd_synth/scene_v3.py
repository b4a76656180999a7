"""crowd_synth generator v3: scenes randomised so that what is learnt transfers to real drone footage.

v2 drew one kind of picture (nadir, daylight, sparse look-alikes), and a model trained on it learnt
the generator: it flagged every dense pattern of small objects in real photos (marinas, parking
rows, plantations, city blocks) and missed real crowds at dusk or seen obliquely. v3 keeps v2's
drawing primitives (:mod:`.scene_v2`) and randomises everything that is not "many people close
together" over the range real drone footage spans, the same way for both classes:

- **camera**: nadir or oblique (a ground plane rendered top-down, then warped by a homography:
  scale changes across the frame, and a horizon with sky and a skyline for high tilts), ground
  scale and aspect (see the constants below for the ranges and why);
- **light**: day, overcast, dusk, night with street lights, lit windows, phone lights and flares;
- **place**: town (roads, crosswalks, roofs with rooftop units), park, parking lot, waterfront
  with a marina, plantation / fields, sports venue with courts and stands;
- **hard negatives as dense as crowds**, in both classes (more often in ``no_crowd``): rows of
  parked cars, boats, young trees in a grid, rooftop units, empty seats, market stalls,
  umbrellas, flower beds;
- **crowd layouts**: compact groups, crowds that fill a street or square edge to edge, people
  lining both sides of a road, spectators around a court, loose gatherings 1.5-4 m apart;
  ``no_crowd`` may hold up to 12 scattered people (the label's definition);
- **artefacts**: burnt-in captions and watermarks, heavy JPEG, motion and defocus blur, sensor
  noise, haze, grayscale frames.

People are drawn last, in image space, as upright figures whose height shows more the more
oblique the view, sized by the local scale of the homography.

The scene code takes a :class:`Recipe` (:func:`render_recipe`): v3's is :data:`V3`; v4
(:mod:`.scene_v4`) reuses everything here with wider views and its crowds kept in view, v5
(:mod:`.scene_v5`, the default) with those and photograph textures (the recipe's ``clutter``), v6
(:mod:`.scene_v6`, opt-in) with v5's and every crowd on open ground in view (the recipe's
``open_ground``); the hooks they use (the view's area factor, :func:`_into_view`, ``clutter``,
``open_ground``) leave v3's pixels unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from train.data.crowd_synth.layout import CLASSES, SIZE
from train.data.crowd_synth.scene_v2 import (HAIR_COLOURS, MATERIALS, R, SS, Scene,
                                             _buildings, _cluster, _fixed, _jitter_colour, _jpeg, _noise,
                                             _on_ground, _plaza, _poly, _random_colours, _rect,
                                             _roads, _shade, _shadow_offset, _small_objects,
                                             _texture, _trees, _vehicles)

#: output pixels per metre at the centre of the frame, drawn log-uniformly. 2-10 px/m means a
#: 128-px image covers 12.8-64 m of ground and a person (0.45-0.55 m across the shoulders) is
#: 1-5.5 px wide: from a whole 1080p frame at 40-120 m altitude squeezed to 128 px (the classify
#: mode) down to a tile of a quarter of such a frame (the heatmap mode).
PPM_RANGE = (2.0, 10.0)
#: horizontal/vertical stretch of the final image, log-uniform, for 40 % of the images: a 16:9
#: frame stretched to a square (classify's "stretch" policy) is 1.78x squeezed horizontally.
ASPECT_RANGE = (1 / 1.8, 1.8)
#: oblique views: tilt from nadir in degrees; real drone footage is anything from nadir mapping
#: flights to 60-70 degree "cinematic" shots with the horizon in view.
TILT_RANGE = (15.0, 68.0)
LIGHTING = {"day": 0.42, "overcast": 0.2, "dusk": 0.16, "night": 0.22}
PLACES = {"town": 0.22, "city": 0.16, "park": 0.14, "parking": 0.12, "waterfront": 0.11,
          "fields": 0.11, "venue": 0.14}
MAX_PEOPLE = 2600          # per image: a dense square at 2 px/m would otherwise need ~10,000

WATER = ((52, 84, 98), 0.06)
COURT_COLOURS = np.array([(60, 120, 80), (170, 70, 60), (60, 90, 150), (190, 120, 80),
                          (80, 140, 150)], np.float32)


def ground_scale(ppm_range: Tuple[float, float] = PPM_RANGE):
    """The ground scale of scenes drawn at ``ppm_range`` (v3's by default; contract 4): 128 px
    cover SIZE / ppm metres at the centre."""
    from edge.contract import GroundScale

    lo, hi = SIZE / ppm_range[1], SIZE / ppm_range[0]
    return GroundScale(round(math.sqrt(lo * hi), 2), (round(lo, 2), round(hi, 2)), SIZE)


def _n(sc: Scene, count: int, linear: bool = False) -> int:
    """``count`` things of a nominal view for this view's ground area, or for its width when the
    things are ``linear`` (roads cross a view in proportion to its width); the same count in v3."""
    if sc.area == 1.0:
        return count
    return int(round(count * (math.sqrt(sc.area) if linear else sc.area)))


def _pick(rng: np.random.Generator, table: dict) -> str:
    names = list(table)
    return names[int(rng.choice(len(names), p=np.array(list(table.values())) / sum(table.values())))]


# ---------------------------------------------------------------------------------------------
# places: the ground and what is built on it (the same distribution for both classes)
# ---------------------------------------------------------------------------------------------

def _fill(sc: Scene, name: str) -> None:
    import cv2

    base, amp = MATERIALS[name] if name in MATERIALS else WATER
    sc.img[:] = cv2.resize(_texture(sc.rng, base, amp), (R, R), interpolation=cv2.INTER_LINEAR)


def _blend_ground(sc: Scene, names: List[str]) -> None:
    """Two materials blended through a smooth random mask (as v2, from a chosen set)."""
    import cv2

    rng = sc.rng
    a, b = (MATERIALS[str(n)] for n in rng.choice(names, 2))
    first, second = _texture(rng, *a), _texture(rng, *b)
    mask = np.clip(_noise(rng, int(rng.integers(2, 6)), SIZE) * 2.0 + rng.uniform(-1.5, 1.5), -1, 1)
    w = (0.5 + 0.5 * mask)[:, :, None]
    sc.img[:] = cv2.resize(second + (first - second) * w, (R, R), interpolation=cv2.INTER_LINEAR)


def _crosswalks(sc: Scene) -> None:
    """Zebra stripes across each road: dense, regular, bright bars (a classic false alarm)."""
    rng = sc.rng
    for point, direction, half in sc.roads:
        if rng.random() < 0.55:
            continue
        normal = np.array([-direction[1], direction[0]], np.float32)
        at = point + direction * rng.uniform(-0.3, 0.3) * R
        bar, gap = 0.5 * sc.ppm, 0.5 * sc.ppm
        colour = tuple(float(c) for c in _jitter_colour(rng, (228, 228, 222), 0.06))
        for t in np.arange(-half, half, bar + gap):
            _poly(sc.img, _rect(at + normal * (t + bar / 2), 3.0 * sc.ppm, bar, math.atan2(normal[1], normal[0]) + math.pi / 2), colour)


def _rooftop_units(sc: Scene, count: int) -> None:
    """Dense city blocks seen from above: many small grey boxes on roofs (AC units, skylights)."""
    rng = sc.rng
    pts = rng.uniform(0, R, (count, 2)).astype(np.float32)
    pix = np.clip(np.round(pts).astype(np.int64), 0, R - 1)
    pts = pts[sc.roofs[pix[:, 1], pix[:, 0]] > 0]
    for p in pts:
        size = rng.uniform(0.6, 2.2) * sc.ppm
        grey = float(rng.uniform(90, 220))
        _poly(sc.img, _rect(p, size, size * rng.uniform(0.5, 1.0), rng.uniform(0, math.pi)), (grey, grey, grey * 1.02))


def _town(sc: Scene) -> None:
    _blend_ground(sc, ["asphalt", "concrete", "paving"])
    if sc.rng.random() < 0.5:
        _plaza(sc)
    for _ in range(_n(sc, 1, linear=True)):
        _roads(sc)
    _crosswalks(sc)
    _buildings(sc, _n(sc, int(sc.rng.integers(1, 7))))
    _rooftop_units(sc, _n(sc, int(sc.rng.integers(0, 120))))
    _trees(sc, _n(sc, int(sc.rng.poisson(2))))


def _city(sc: Scene) -> None:
    """A dense city seen from high up: a street grid, many roofs of every colour with rooftop
    units, cars in the streets, a few trees: busy, but without a gathering."""
    rng = sc.rng
    _blend_ground(sc, ["asphalt", "concrete"])
    for _ in range(_n(sc, int(rng.integers(2, 5)), linear=True)):
        _roads(sc)
    _crosswalks(sc)
    _buildings(sc, _n(sc, int(rng.integers(12, 45))))
    _rooftop_units(sc, _n(sc, int(rng.integers(50, 300))))
    _car_spots_on_roads(sc, _n(sc, int(rng.integers(5, 40))))
    _trees(sc, _n(sc, int(rng.poisson(3))))


def _car_spots_on_roads(sc: Scene, count: int) -> None:
    rng, spots = sc.rng, []
    for _ in range(count if sc.roads else 0):
        point, direction, half = sc.roads[rng.integers(len(sc.roads))]
        normal = np.array([-direction[1], direction[0]], np.float32)
        pos = point + direction * rng.uniform(-0.8, 0.8) * R + normal * rng.uniform(-0.7, 0.7) * half
        spots.append((pos, math.atan2(direction[1], direction[0])))
    _vehicles(sc, spots)


def _park(sc: Scene) -> None:
    _blend_ground(sc, ["grass", "dry_grass", "soil", "grass"])
    if sc.rng.random() < 0.4:
        _plaza(sc)
    if sc.rng.random() < 0.5:
        for _ in range(_n(sc, 1, linear=True)):
            _roads(sc)
    _trees(sc, _n(sc, int(sc.rng.poisson(6))))


def _parking_rows(sc: Scene, fill: float) -> None:
    """Rows of parked cars, nose to nose: as dense and as colourful as a crowd, but car-shaped."""
    rng = sc.rng
    angle = rng.uniform(0, math.pi)
    axis = np.array([math.cos(angle), math.sin(angle)], np.float32)
    across = np.array([-axis[1], axis[0]], np.float32)
    centre = rng.uniform(0.3, 0.7, 2) * R
    bay, row = rng.uniform(2.4, 2.8) * sc.ppm, rng.uniform(5.0, 6.5) * sc.ppm
    spots = []
    n_rows, n_bays = _n(sc, int(rng.integers(2, 9))), int(rng.integers(6, 30))
    for r in range(n_rows):
        for b in range(n_bays):
            if rng.random() < fill:
                pos = centre + axis * (b - n_bays / 2) * bay + across * (r - n_rows / 2) * row * (1.0 + (r % 2) * 0.7)
                spots.append((pos, angle + math.pi / 2 + rng.normal(0, 0.04)))
    _vehicles(sc, spots)


def _parking(sc: Scene) -> None:
    _fill(sc, "asphalt")
    if sc.rng.random() < 0.5:
        _roads(sc)
    _parking_rows(sc, sc.rng.uniform(0.3, 0.98))
    if sc.rng.random() < 0.5:
        _buildings(sc, _n(sc, int(sc.rng.integers(1, 3))))
    _trees(sc, _n(sc, int(sc.rng.poisson(1.5))))


def _water(sc: Scene) -> np.ndarray:
    """A water body beside a quay; returns its mask (people and cars stay off it)."""
    rng = sc.rng
    _blend_ground(sc, ["concrete", "paving", "grass"])
    water = np.zeros((R, R), np.uint8)
    edge = rng.uniform(0.3, 0.7) * R
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:R, 0:R].astype(np.float32)
    water[((xx - R / 2) * math.cos(theta) + (yy - R / 2) * math.sin(theta)) > edge - R / 2] = 1
    colour = _jitter_colour(rng, WATER[0], 0.2)
    ripple = 1 + 0.08 * _noise(rng, 48) + 0.05 * _noise(rng, 8)
    sea = colour[None, None, :] * ripple[:, :, None]
    np.copyto(sc.img, sea.astype(np.float32), where=water[:, :, None] > 0)
    sc.roofs |= water                       # nobody stands on water
    return water


def _boats(sc: Scene, water: np.ndarray, count: int) -> None:
    """Moored boats in rows: white elongated hulls with a darker deck, very crowd-like in bulk."""
    rng = sc.rng
    angle = rng.uniform(0, math.pi)
    axis = np.array([math.cos(angle), math.sin(angle)], np.float32)
    across = np.array([-axis[1], axis[0]], np.float32)
    start = rng.uniform(0.2, 0.8, 2) * R
    hulls, shadow = [], np.zeros((R, R), np.float32)
    for i in range(count):
        pos = start + axis * (i % 16 - 8) * rng.uniform(3.0, 5.0) * sc.ppm + across * (i // 16) * 12 * sc.ppm
        pix = np.round(pos).astype(int)
        if not (0 <= pix[0] < R and 0 <= pix[1] < R) or not water[pix[1], pix[0]]:
            continue
        length, width = rng.uniform(6, 14) * sc.ppm, rng.uniform(2.2, 4.0) * sc.ppm
        body = _rect(pos, width, length, angle)
        _poly(shadow, body + _shadow_offset(sc, 1.0), 0.6)
        hulls.append((pos, width, length, body))
    if not hulls:
        return
    _shade(sc, shadow)                                   # one pass for every hull's shadow
    for pos, width, length, body in hulls:
        hull = float(rng.uniform(200, 250))
        _poly(sc.img, body, (hull, hull, hull * rng.uniform(0.95, 1.05)))
        _poly(sc.img, _rect(pos, width * 0.55, length * 0.4, angle),
              tuple(float(c) for c in _jitter_colour(rng, (120, 110, 100), 0.3)))


def _waterfront(sc: Scene) -> None:
    water = _water(sc)
    _boats(sc, water, _n(sc, int(sc.rng.integers(6, 60))))
    if sc.rng.random() < 0.5:
        _buildings(sc, _n(sc, int(sc.rng.integers(1, 4))))
    _trees(sc, _n(sc, int(sc.rng.poisson(2))))


def _plantation(sc: Scene) -> None:
    """Young trees or shrubs on a regular grid, or crop rows: repetition without people."""
    import cv2

    rng = sc.rng
    spacing = rng.uniform(1.5, 5.0) * sc.ppm
    angle = rng.uniform(0, math.pi)
    n = int(min(1500, (1.6 * R / spacing) ** 2))
    side = int(math.sqrt(n))
    g = (np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2) - side / 2) * spacing
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], np.float32)
    pts = g @ rot.T + R / 2 + rng.normal(0, 0.08 * spacing, g.shape)
    colour = _jitter_colour(rng, (58, 92, 40), 0.25)
    radius = max(1, int(rng.uniform(0.25, 0.45) * spacing * 4))
    shadow = np.zeros((R, R), np.float32)
    off = _shadow_offset(sc, 1.5)
    for c in _fixed(pts + off):
        cv2.circle(shadow, c, radius, 1.0, -1, cv2.LINE_8, 2)
    _shade(sc, shadow)
    for c in _fixed(pts):
        cv2.circle(sc.img, c, radius, tuple(float(v) * rng.uniform(0.8, 1.2) for v in colour), -1, cv2.LINE_8, 2)


def _fields(sc: Scene) -> None:
    _blend_ground(sc, ["soil", "dry_grass", "grass"])
    if sc.rng.random() < 0.75:
        _plantation(sc)
    if sc.rng.random() < 0.4:
        _roads(sc)
    _trees(sc, _n(sc, int(sc.rng.poisson(2))))


def _court(sc: Scene) -> np.ndarray:
    """A sports court with white lines; returns its corners (spectators line its edges)."""
    import cv2

    rng = sc.rng
    centre = rng.uniform(0.3, 0.7, 2) * R
    length, width = rng.uniform(28, 60) * sc.ppm, rng.uniform(15, 35) * sc.ppm
    angle = rng.uniform(0, math.pi)
    corners = _rect(centre, length, width, angle)
    _poly(sc.img, corners, tuple(float(c) for c in _jitter_colour(rng, COURT_COLOURS[rng.integers(len(COURT_COLOURS))], 0.1)))
    line = max(1, int(0.12 * sc.ppm * 4))
    white = (235.0, 235.0, 230.0)
    inner = _rect(centre, length * 0.9, width * 0.85, angle)
    cv2.polylines(sc.img, [np.round(inner * 4).astype(np.int32)], True, white, line, cv2.LINE_8, 2)
    mid = _rect(centre, 0.0, width * 0.85, angle)
    cv2.line(sc.img, tuple(np.round(mid[0] * 4).astype(int)), tuple(np.round(mid[1] * 4).astype(int)), white, line, cv2.LINE_8, 2)
    cv2.circle(sc.img, tuple(np.round(centre * 4).astype(int)), int(width * 0.15 * 4), white, line, cv2.LINE_8, 2)
    return corners


def _seats(sc: Scene, corners: np.ndarray) -> None:
    """Empty stands along a court: rows of coloured seats, the pattern of a seated crowd."""
    rng = sc.rng
    a, b = corners[0], corners[1]
    side = b - a
    length = float(np.linalg.norm(side))
    axis = side / max(length, 1e-6)
    out = np.array([axis[1], -axis[0]], np.float32)
    colour = tuple(float(c) for c in _jitter_colour(rng, _random_colours(rng, 1)[0], 0.1))
    pitch = rng.uniform(0.5, 0.8) * sc.ppm
    for row in range(int(rng.integers(4, 14))):
        for t in np.arange(0, length, pitch):
            p = a + axis * t + out * (1.5 * sc.ppm + row * 0.9 * sc.ppm)
            _poly(sc.img, _rect(p, pitch * 0.7, 0.45 * sc.ppm, math.atan2(axis[1], axis[0])), colour)


def _venue(sc: Scene) -> np.ndarray:
    _blend_ground(sc, ["concrete", "grass", "paving", "asphalt"])
    corners = _court(sc)
    if sc.rng.random() < 0.5:
        _trees(sc, int(sc.rng.poisson(2)))
    return corners


def _market(sc: Scene, count: int) -> None:
    """Market stalls and umbrellas: square and round colourful roofs, larger than people."""
    import cv2

    rng = sc.rng
    centre = rng.uniform(0.2, 0.8, 2) * R
    pts = _cluster(rng, count, rng.uniform(3.0, 5.0) * sc.ppm, centre)
    for p, colour in zip(pts, _random_colours(rng, len(pts)).tolist()):
        size = rng.uniform(1.8, 3.5) * sc.ppm
        if rng.random() < 0.5:
            cv2.circle(sc.img, tuple(np.round(p * 4).astype(int)), int(size * 2), colour, -1, cv2.LINE_8, 2)
        else:
            _poly(sc.img, _rect(p, size, size, rng.uniform(0, math.pi)), colour)


# ---------------------------------------------------------------------------------------------
# people: where they stand (ground coordinates), and how they look (image space)
# ---------------------------------------------------------------------------------------------

def _region_fill(sc: Scene, spacing: float) -> np.ndarray:
    """A crowd that fills a band (a street edge to edge) or a large block of the frame."""
    rng = sc.rng
    if sc.roads and rng.random() < 0.6:
        point, direction, half = sc.roads[rng.integers(len(sc.roads))]
        width, length = 2 * half * rng.uniform(1.0, 2.5), R * rng.uniform(0.6, 2.0)
        centre, angle = point, math.atan2(direction[1], direction[0])
    else:
        width, length = R * rng.uniform(0.25, 1.3), R * rng.uniform(0.4, 1.5)
        centre, angle = rng.uniform(0.2, 0.8, 2) * R, rng.uniform(0, math.pi)
    return _band(rng, centre, angle, length, width, spacing)


def _band(rng, centre, angle: float, length: float, width: float, spacing: float) -> np.ndarray:
    spacing = max(spacing, math.sqrt(length * width / MAX_PEOPLE))
    u = np.arange(-length / 2, length / 2, spacing)
    v = np.arange(-width / 2, width / 2, spacing * 0.87)
    g = np.stack(np.meshgrid(u, v), -1).reshape(-1, 2).astype(np.float32)
    g += rng.normal(0, 0.3 * spacing, g.shape)
    c, s = math.cos(angle), math.sin(angle)
    return g @ np.array([[c, s], [-s, c]], np.float32) + np.asarray(centre, np.float32)


def _road_sides(sc: Scene, spacing: float) -> np.ndarray:
    """People lining both sides of a road (a parade, a race), a few metres deep."""
    rng = sc.rng
    if not sc.roads:
        _roads(sc)
    if not sc.roads:
        return _region_fill(sc, spacing)
    point, direction, half = sc.roads[rng.integers(len(sc.roads))]
    normal = np.array([-direction[1], direction[0]], np.float32)
    depth = rng.uniform(1.5, 6.0) * sc.ppm
    angle = math.atan2(direction[1], direction[0])
    sides = [_band(rng, point + side * normal * (half + depth / 2), angle, 2.2 * R, depth, spacing)
             for side in (-1, 1)]
    return np.concatenate(sides)


def _ring(sc: Scene, corners: np.ndarray, spacing: float) -> np.ndarray:
    """Spectators packed along the edges of a court or stage."""
    rng, out = sc.rng, []
    depth = rng.uniform(1.0, 4.0) * sc.ppm
    for i in range(4):
        a, b = corners[i], corners[(i + 1) % 4]
        if rng.random() < 0.25:
            continue
        mid, side = (a + b) / 2, b - a
        normal = np.array([side[1], -side[0]], np.float32) / max(float(np.linalg.norm(side)), 1e-6)
        out.append(_band(rng, mid + normal * (depth / 2 + 0.5 * sc.ppm), math.atan2(side[1], side[0]),
                         float(np.linalg.norm(side)), depth, spacing))
    return np.concatenate(out) if out else _region_fill(sc, spacing)


def _crowd(sc: Scene, court) -> np.ndarray:
    """The gathering of a ``crowd`` image in one of the layouts real gatherings take."""
    rng = sc.rng
    layout = rng.choice(["groups", "fill", "sides", "ring", "loose"], p=[0.3, 0.3, 0.15, 0.1, 0.15])
    dense = rng.uniform(0.45, 1.1) * sc.ppm                         # shoulder to shoulder .. 1 m
    if layout == "fill":
        return _region_fill(sc, dense)
    if layout == "sides":
        return _road_sides(sc, dense)
    if layout == "ring" and court is not None:
        return _ring(sc, court, dense)
    if layout == "loose":                                           # dancers, a rally on a lawn
        return _cluster(rng, _n(sc, int(rng.integers(40, 160))), rng.uniform(1.5, 4.0) * sc.ppm)
    groups = [_cluster(rng, _n(sc, int(rng.integers(30, 300))), dense) for _ in range(int(rng.integers(1, 4)))]
    return np.concatenate(groups)


# ---------------------------------------------------------------------------------------------
# the camera: homography, light, people in image space, sky, artefacts
# ---------------------------------------------------------------------------------------------

def _homography(rng: np.random.Generator) -> Tuple[np.ndarray, float, int]:
    """Ground canvas -> image (both R x R): (H, tilt in degrees, horizon row; 0 = none).

    Nadir views are a pure aspect stretch. Oblique views map a trapezoid of the canvas (its far
    edge ``k`` times wider than its near edge) onto the image below a horizon row."""
    aspect = math.exp(rng.uniform(*np.log(ASPECT_RANGE))) if rng.random() < 0.4 else 1.0
    sx, sy = (min(1.0, aspect), min(1.0, 1.0 / aspect))
    if rng.random() < 0.5:
        tilt, horizon = 0.0, 0
        dst = np.float32([[0, 0], [R, 0], [R, R], [0, R]])
        cx, cy = R / 2, R / 2
        src = np.float32([[cx - sx * R / 2, cy - sy * R / 2], [cx + sx * R / 2, cy - sy * R / 2],
                          [cx + sx * R / 2, cy + sy * R / 2], [cx - sx * R / 2, cy + sy * R / 2]])
    else:
        tilt = float(rng.uniform(*TILT_RANGE))
        k = 1.0 + 3.5 * ((tilt - TILT_RANGE[0]) / (TILT_RANGE[1] - TILT_RANGE[0])) ** 1.3
        horizon = int(R * rng.uniform(0.08, 0.35)) if tilt > 50 and rng.random() < 0.7 else 0
        near = sx * R / k
        src = np.float32([[R / 2 - sx * R / 2, 0], [R / 2 + sx * R / 2, 0],
                          [R / 2 + near / 2, sy * R], [R / 2 - near / 2, sy * R]])
        dst = np.float32([[0, horizon], [R, horizon], [R, R], [0, R]])
    import cv2

    return cv2.getPerspectiveTransform(src, dst), tilt, horizon


def _local_scale(H: np.ndarray, pts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Image positions of ground points and the local linear magnification at each."""
    p = np.concatenate([pts, np.ones((len(pts), 1), np.float32)], 1) @ H.T
    w = p[:, 2:3]
    img = p[:, :2] / w
    eps = 1.0
    q = np.concatenate([pts + (eps, 0), np.ones((len(pts), 1), np.float32)], 1) @ H.T
    r = np.concatenate([pts + (0, eps), np.ones((len(pts), 1), np.float32)], 1) @ H.T
    jx, jy = q[:, :2] / q[:, 2:3] - img, r[:, :2] / r[:, 2:3] - img
    det = np.abs(jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0])
    return img, np.sqrt(det) / eps


def _draw_people(img: np.ndarray, rng: np.random.Generator, xy: np.ndarray, scale: np.ndarray,
                 ppm: float, tilt: float, night: bool) -> None:
    """Upright figures in image space: a body whose visible height grows with the tilt, a head
    on top (with a face when the camera looks at people from the side), clothes of any colour; at
    night some hold up a phone light. Far figures first, so near ones occlude them."""
    import cv2

    n = len(xy)
    if n == 0:
        return
    up = math.sin(math.radians(tilt))
    shoulder = rng.uniform(0.42, 0.56, n) * ppm * scale             # render px
    height = rng.uniform(1.5, 1.9, n) * ppm * scale * up
    clothes = _random_colours(rng, n) * (0.5 if night else 1.0)
    hair = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS), size=n)] * rng.uniform(0.8, 1.2, (n, 1))
    skin = np.float32([224, 180, 150]) * rng.uniform(0.35, 1.05, (n, 1)) * (0.5 if night else 1.0)
    angle = rng.uniform(-15, 15, n) if up > 0.3 else rng.uniform(0, 180, n)
    phone = night & (rng.random(n) < 0.15)
    body = np.round(np.stack([xy[:, 0], xy[:, 1] - height * 0.45], 1) * 4).astype(np.int64)
    head = np.round(np.stack([xy[:, 0], xy[:, 1] - height * 0.85], 1) * 4).astype(np.int64)
    axes = np.maximum(1, np.stack([shoulder, shoulder * 0.55 + height * 0.45], 1) * 4).astype(np.int64)
    head_r = np.maximum(1, shoulder * 0.45 * 4).astype(np.int64)
    face = up > 0.55
    for i in np.argsort(xy[:, 1]).tolist():
        cv2.ellipse(img, tuple(body[i].tolist()), tuple(axes[i].tolist()), float(angle[i]), 0, 360,
                    clothes[i].tolist(), -1, cv2.LINE_8, 2)
        cv2.circle(img, tuple(head[i].tolist()), int(head_r[i]), hair[i].tolist(), -1, cv2.LINE_8, 2)
        if face:
            cv2.circle(img, (int(head[i, 0]), int(head[i, 1] + head_r[i] // 3)), int(head_r[i] * 3 // 4),
                       skin[i].tolist(), -1, cv2.LINE_8, 2)
        if phone[i]:
            cv2.circle(img, (int(head[i, 0] + head_r[i]), int(head[i, 1])), max(1, int(head_r[i] * 2 // 3)),
                       (255.0, 255.0, 240.0), -1, cv2.LINE_8, 2)


def _pt(p) -> Tuple[int, int]:
    return int(round(p[0] * 4)), int(round(p[1] * 4))


def _sky(img: np.ndarray, rng: np.random.Generator, horizon: int, light: str) -> None:
    """Sky gradient and a skyline of distant buildings (lit windows at night) above the horizon."""
    import cv2

    top = {"day": (150, 185, 225), "overcast": (190, 192, 196), "dusk": (90, 80, 120),
           "night": (15, 20, 40)}[light]
    low = {"day": (215, 225, 235), "overcast": (210, 210, 210), "dusk": (240, 160, 100),
           "night": (45, 40, 55)}[light]
    t = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = np.asarray(top, np.float32) * (1 - t) + np.asarray(low, np.float32) * t
    x = 0
    while x < R:
        w = int(rng.integers(6, 30))
        h = int(rng.uniform(0.1, 0.9) * horizon)
        shade = float(rng.uniform(60, 150)) * (0.35 if light == "night" else 1.0)
        cv2.rectangle(img, (x, horizon - h), (x + w, horizon), (shade, shade, shade * 1.05), -1)
        if light in ("night", "dusk"):
            ys, xs = np.mgrid[horizon - h:horizon:3, x:x + w:3]
            lit = rng.random(ys.shape) < 0.3
            img[ys[lit].clip(0, R - 1), xs[lit].clip(0, R - 1)] = (250, 220, 150)
        x += w + int(rng.integers(0, 6))


def _lamps(sc: Scene, count: int) -> np.ndarray:
    """Street lights on the ground canvas: a warm pool of light around each lamp post."""
    import cv2

    rng = sc.rng
    light = np.zeros((R, R), np.float32)
    for _ in range(count):
        if sc.roads and rng.random() < 0.7:
            point, direction, half = sc.roads[rng.integers(len(sc.roads))]
            normal = np.array([-direction[1], direction[0]], np.float32)
            p = point + direction * rng.uniform(-0.8, 0.8) * R + normal * rng.choice([-1, 1]) * half
        else:
            p = rng.uniform(0, R, 2)
        cv2.circle(light, _pt(p), int(rng.uniform(4, 12) * sc.ppm * 4), float(rng.uniform(0.5, 1.0)), -1, cv2.LINE_8, 2)
    sigma = 3.0 * sc.ppm
    return cv2.GaussianBlur(light, (0, 0), sigma)


def _traffic_lights(img: np.ndarray, sc: Scene, H: np.ndarray, count: int) -> None:
    """Head and tail lights, lit signs and windows after dark: bright points in both classes, so
    that points of light alone (a crowd's phones) do not mean a crowd."""
    import cv2

    rng = sc.rng
    pts = []
    for _ in range(count):
        if sc.roads and rng.random() < 0.8:
            point, direction, half = sc.roads[rng.integers(len(sc.roads))]
            normal = np.array([-direction[1], direction[0]], np.float32)
            pts.append(point + direction * rng.uniform(-1, 1) * R + normal * rng.uniform(-0.8, 0.8) * half)
        else:
            pts.append(rng.uniform(0, R, 2))
    if not pts:
        return
    xy, scale = _local_scale(H, np.asarray(pts, np.float32))
    colours = np.float32([(255, 250, 230), (255, 60, 40), (255, 200, 90), (200, 230, 255)])
    for (x, y), s in zip(xy, scale):
        radius = max(1, int(rng.uniform(0.15, 0.5) * sc.ppm * s * 4))
        cv2.circle(img, (int(x * 4), int(y * 4)), radius, colours[rng.integers(4)].tolist(), -1, cv2.LINE_8, 2)


def _relight(img: np.ndarray, rng: np.random.Generator, light: str, pool: np.ndarray) -> np.ndarray:
    """Ambient level and tint per lighting condition, plus the warped pools of artificial light."""
    if light == "day":
        return img
    ambient = {"overcast": (0.75, 0.95), "dusk": (0.3, 0.65), "night": (0.06, 0.22)}[light]
    tint = {"overcast": (1.0, 1.0, 1.03), "dusk": (1.15, 0.95, 0.85), "night": (0.8, 0.9, 1.25)}[light]
    amb = rng.uniform(*ambient) * np.asarray(tint, np.float32)
    if light == "overcast":
        mean = img.mean((0, 1), keepdims=True)
        img = mean + (img - mean) * 0.8                             # flat light, soft contrast
    lamp = np.asarray((1.25, 1.0, 0.65) if rng.random() < 0.7 else (1.0, 1.0, 1.1), np.float32)
    return img * (amb + pool[:, :, None] * lamp * rng.uniform(0.6, 1.2))


def _caption(img: np.ndarray, rng: np.random.Generator) -> None:
    """A burnt-in news caption band or a corner watermark / timestamp, on the uint8 image."""
    import cv2

    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 :-/"))
    text = "".join(rng.choice(letters, int(rng.integers(6, 24))))
    scale = float(rng.uniform(0.22, 0.45))
    if rng.random() < 0.5:                                          # caption band
        y0 = int(rng.uniform(0.72, 0.92) * SIZE) if rng.random() < 0.8 else int(rng.uniform(0.0, 0.1) * SIZE)
        band = tuple(float(c) for c in _random_colours(rng, 1)[0] * 0.6)
        cv2.rectangle(img, (0, y0), (SIZE, min(SIZE, y0 + int(rng.integers(8, 18)))), band, -1)
        cv2.putText(img, text, (2, min(SIZE - 2, y0 + 10)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (250, 250, 250), 1, cv2.LINE_AA)
    else:                                                           # watermark / timestamp
        overlay = img.copy()
        pos = (int(rng.uniform(0, 0.5) * SIZE), int(rng.uniform(0.1, 1.0) * SIZE))
        cv2.putText(overlay, text, pos, cv2.FONT_HERSHEY_SIMPLEX, scale * 1.4, (255, 255, 255), 1, cv2.LINE_AA)
        alpha = float(rng.uniform(0.3, 0.9))
        img[:] = np.round(img * (1 - alpha) + overlay * alpha).astype(np.uint8)


@dataclass(frozen=True)
class CameraRanges:
    """What :func:`_finish` draws for blur, noise and compression (v10 draws lighter ones)."""

    motion: float = 0.15                     # share of images with motion blur
    motion_px: Tuple[int, int] = (2, 6)      # its kernel length, rng.integers(lo, hi)
    blurred: float = 0.55                    # share with motion blur or defocus (defocus: the rest)
    defocus_sigma: Tuple[float, float] = (0.3, 1.1)
    noise_sigma: Tuple[float, float] = (0.5, 8.0)
    jpeg_quality: Tuple[int, int] = (8, 95)  # rng.integers(lo, hi), in 85 % of images


V3_CAMERA = CameraRanges()


def _finish(rng: np.random.Generator, img: np.ndarray, camera: CameraRanges = V3_CAMERA) -> np.ndarray:
    """Render canvas -> 128x128 uint8 RGB with the camera's colour, blur, noise and compression."""
    import cv2

    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    img = img * rng.uniform(0.88, 1.12, 3).astype(np.float32)
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.65, 1.35) + mean * rng.uniform(0.7, 1.3)
    haze = rng.uniform(0, 0.35) * (rng.random() < 0.4)
    img = img * (1 - haze) + haze * rng.uniform(120, 230)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.75, 1.3)
    blur = rng.random()
    if blur < camera.motion:                                        # motion blur
        n = int(rng.integers(*camera.motion_px))
        kernel = np.zeros((n, n), np.float32)
        kernel[n // 2] = 1.0 / n
        rot = cv2.getRotationMatrix2D(((n - 1) / 2, (n - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (n, n))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif blur < camera.blurred:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*camera.defocus_sigma))
    noise = rng.standard_normal((SIZE, SIZE, 3), dtype=np.float32) * rng.uniform(*camera.noise_sigma)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:
        _caption(img, rng)
    if rng.random() < 0.1:                                          # a letterboxed wide frame
        band = int(rng.uniform(0.1, 0.24) * SIZE)
        grey = np.uint8(rng.integers(90, 140))
        if rng.random() < 0.7:
            img[:band], img[SIZE - band:] = grey, grey
        else:
            img[:, :band], img[:, SIZE - band:] = grey, grey
    if rng.random() < 0.08:                                         # grayscale footage
        img = np.repeat(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[:, :, None], 3, 2)
    if rng.random() < 0.85:                                         # video-link compression
        img = _jpeg(img, int(rng.integers(*camera.jpeg_quality)))
    return np.ascontiguousarray(img)


# ---------------------------------------------------------------------------------------------
# one image
# ---------------------------------------------------------------------------------------------

def _hard_negatives(sc: Scene, court) -> None:
    """Dense look-alikes, in both classes: what a real no-crowd frame full of small things has."""
    rng = sc.rng
    for _ in range(int(rng.choice([0, 1, 2], p=[0.25, 0.5, 0.25]))):
        kind = rng.choice(["cars", "market", "objects", "seats", "roof_units"])
        if kind == "cars":
            _parking_rows(sc, rng.uniform(0.4, 1.0))
        elif kind == "market":
            _market(sc, _n(sc, int(rng.integers(8, 60))))
        elif kind == "seats" and court is not None:
            _seats(sc, court)
        elif kind == "roof_units":
            _buildings(sc, _n(sc, int(rng.integers(1, 4))))
            _rooftop_units(sc, _n(sc, int(rng.integers(40, 200))))
        else:
            count, spacing = _n(sc, int(rng.integers(20, 120))), rng.uniform(1.0, 2.5) * sc.ppm
            _small_objects(sc, [(_cluster(rng, count, spacing), str(rng.choice(["bush", "rock", "box", "flower", "table"])))])


PLACE_BUILDERS = {"town": _town, "city": _city, "park": _park, "parking": _parking, "waterfront": _waterfront,
                  "fields": _fields}


@dataclass(frozen=True)
class Recipe:
    """What one generator version draws beyond the shared scene code (v3 and v4 share it)."""

    version: int
    ppm_range: Tuple[float, float]           # output px per metre at the centre, log-uniform
    area_ref: float = 0.0                    # px/m of a nominal view; wider views get more of
    max_area: float = 1.0                    # everything, up to this many times (0: off)
    crowd_in_view: int = 0                   # a crowd image shows at least this many people
    clutter: Optional[Callable[[Scene], None]] = None   # drawn on the ground after the vehicles (v5)
    #: (scene, H, horizon row, gathering or None, need) -> gathering or None, called in both
    #: classes: a crowd still not in view after ``_into_view`` is put on open ground that is (v6)
    open_ground: Optional[Callable[[Scene, np.ndarray, int, Optional[np.ndarray], int],
                                   Optional[np.ndarray]]] = None
    #: what the camera (:func:`_finish`) draws for blur, noise and compression (v10: lighter)
    camera: CameraRanges = V3_CAMERA


V3 = Recipe(3, PPM_RANGE)


def render(seed: int, split_id: int, class_id: int, index: int) -> np.ndarray:
    """Image ``index`` of (split, class) as 128x128x3 uint8 RGB; a pure function of its arguments."""
    return render_recipe(V3, seed, split_id, class_id, index)


def _view_area(recipe: Recipe, ppm_out: float) -> float:
    if not recipe.area_ref:
        return 1.0
    return float(min(recipe.max_area, max(1.0, (recipe.area_ref / ppm_out) ** 2)))


def _seen(sc: Scene, H: np.ndarray, horizon: int, pts: np.ndarray) -> int:
    """How many of ``pts`` (ground coordinates) stand on the ground inside the picture."""
    pts = _on_ground(sc, pts)
    if not len(pts):
        return 0
    xy = _local_scale(H, pts)[0]
    return int(((xy[:, 1] > horizon + 2) & (xy[:, 0] >= 0) & (xy[:, 0] < R) & (xy[:, 1] < R)).sum())


def _into_view(sc: Scene, H: np.ndarray, horizon: int, pts: np.ndarray, need: int) -> np.ndarray:
    """Move a gathering (ground coordinates) onto free ground in the picture until at least
    ``need`` of its people (half of a smaller group) are seen: a ``crowd`` image whose crowd fell
    outside the frame, behind the horizon or on the roofs is mislabelled."""
    need = min(need, len(pts) // 2)
    inverse = np.linalg.inv(H)
    for _ in range(8):
        if _seen(sc, H, horizon, pts) >= need:
            break
        u = sc.rng.uniform(0.15, 0.85) * R
        v = sc.rng.uniform(horizon + 0.2 * (R - horizon), 0.9 * R)
        g = inverse @ np.array([u, v, 1.0])
        target = np.float32(g[:2] / g[2])
        x, y = np.clip(np.round(target).astype(int), 0, R - 1)
        if not sc.roofs[y, x]:
            pts = pts + (target - np.median(pts, 0)).astype(np.float32)
    return pts


def render_recipe(recipe: Recipe, seed: int, split_id: int, class_id: int, index: int) -> np.ndarray:
    """Image ``index`` of (split, class) of ``recipe``'s version: a pure function of its arguments."""
    import cv2

    rng = np.random.default_rng([int(seed), int(split_id), int(class_id), int(index), recipe.version])
    crowd = CLASSES[class_id] == "crowd"
    light, place = _pick(rng, LIGHTING), _pick(rng, PLACES)
    H, tilt, horizon = _homography(rng)
    centre_mag = float(_local_scale(H, np.float32([[R / 2, R / 2]]))[1][0])
    lo, hi = recipe.ppm_range
    ppm = math.exp(rng.uniform(math.log(lo), math.log(hi))) * SS
    elevation = math.radians(rng.uniform(20, 75))
    sun = rng.uniform(0, 2 * math.pi)
    sc = Scene(rng=rng, img=np.zeros((R, R, 3), np.float32), ppm=ppm / centre_mag,
               sun=np.array([math.cos(sun), math.sin(sun)], np.float32),
               shadow_len=1.0 / math.tan(elevation),
               shadow_dark=rng.uniform(0.35, 0.65) * (0.3 if light in ("overcast", "night") else 1.0),
               roads=[], roofs=np.zeros((R, R), np.uint8), area=_view_area(recipe, ppm / SS))
    court = _venue(sc) if place == "venue" else None
    if court is None:
        PLACE_BUILDERS[place](sc)
    if rng.random() < (0.45 if crowd else 0.85):
        _hard_negatives(sc, court)
    _vehicles(sc, [(rng.uniform(0, R, 2), rng.uniform(0, math.pi)) for _ in range(_n(sc, int(rng.poisson(1.5))))])
    if recipe.clutter is not None:
        recipe.clutter(sc)
    few = int(rng.choice(13, p=np.r_[0.3, np.full(12, 0.7 / 12)]))           # up to 12 walkers
    people = rng.uniform(0, R, (few, 2)).astype(np.float32)
    if crowd:
        gathering = _crowd(sc, court)
        if recipe.crowd_in_view:
            gathering = _into_view(sc, H, horizon, gathering, recipe.crowd_in_view)
        if recipe.open_ground is not None:
            gathering = recipe.open_ground(sc, H, horizon, gathering, recipe.crowd_in_view)
        people = np.concatenate([people, gathering])
    elif recipe.open_ground is not None:
        recipe.open_ground(sc, H, horizon, None, recipe.crowd_in_view)
    people = _on_ground(sc, people)[:MAX_PEOPLE]
    if len(people):                                                 # shadows on the ground plane
        shadow = np.zeros((R, R), np.float32)
        for a, b in zip(_fixed(people), _fixed(people + _shadow_offset(sc, 1.7))):
            cv2.line(shadow, a, b, 1.0, max(1, int(0.35 * sc.ppm)), cv2.LINE_8, 2)
        _shade(sc, shadow)
    pool = _lamps(sc, int(rng.integers(3, 14))) if light in ("dusk", "night") else np.zeros((R, R), np.float32)
    img = cv2.warpPerspective(sc.img, H, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    pool = cv2.warpPerspective(pool, H, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    xy, scale = _local_scale(H, people) if len(people) else (people, np.zeros(0, np.float32))
    inside = (xy[:, 1] > horizon) & (xy[:, 0] > -4) & (xy[:, 0] < R + 4) & (xy[:, 1] < R + 8)
    _draw_people(img, rng, xy[inside], scale[inside], sc.ppm, tilt, light == "night")
    if horizon:
        _sky(img, rng, horizon, light)
    img = _relight(img, rng, light, pool)
    if light in ("dusk", "night"):
        _traffic_lights(img, sc, H, int(rng.integers(0, 80)))
    return _finish(rng, img, recipe.camera)
