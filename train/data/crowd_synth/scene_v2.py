"""crowd_synth generator v2: nadir 128x128 scenes (kept so that earlier results reproduce).

A scene is textured ground (grass, soil, asphalt, sand, paving) with roads and lane marks, plazas,
roofs with shadows, trees, vehicles, bushes/rocks/small objects, and people drawn as figures a few
pixels wide (clothes, a head, a shadow cast in the scene's sun direction). ``crowd`` holds one or
more groups of dozens of people; ``no_crowd`` holds none or a few scattered ones plus clusters of
look-alike clutter (flower beds, bush and rock fields, parked cars, cafe tables), so that the
classes share their global statistics (brightness, colour, edge density) and only the spatial
structure of many small figures with shadows tells them apart. Altitude, sun, photometrics, blur,
sensor noise and JPEG softness are drawn per image independently of the class.

Any change to this file that changes a pixel breaks the reproduction of v2 results: new work goes
into a new version (``scene_v3``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from train.data.crowd_synth.layout import CLASSES, SIZE

SS = 2                            # render at 2x and area-downsample: free anti-aliasing
R = SIZE * SS                     # render size in pixels

# ground materials: mean RGB, texture amplitude (fraction of the mean)
MATERIALS = {
    "grass": ((78, 108, 52), 0.18),
    "dry_grass": ((138, 132, 84), 0.14),
    "soil": ((121, 96, 72), 0.16),
    "sand": ((192, 174, 136), 0.08),
    "asphalt": ((88, 88, 92), 0.08),
    "concrete": ((162, 160, 152), 0.06),
    "paving": ((150, 134, 118), 0.07),
}
ROOF_COLOURS = np.array([(150, 70, 52), (170, 90, 60), (110, 110, 115), (70, 72, 78),
                         (200, 198, 190), (120, 100, 85), (95, 110, 130), (160, 150, 130)], np.float32)
CAR_COLOURS = np.array([(235, 235, 235), (25, 25, 28), (160, 162, 168), (170, 30, 30),
                        (30, 60, 140), (90, 90, 95), (200, 180, 60), (60, 100, 70)], np.float32)
HAIR_COLOURS = np.array([(20, 16, 14), (60, 40, 25), (110, 80, 50), (180, 160, 110),
                         (150, 150, 150)], np.float32)


#: render pixels per metre at the output size, drawn log-uniformly per image (``render``)
PPM_RANGE = (3.0, 8.0)


def ground_scale():
    """The ground scale of these scenes (contract 4): a 128-px image covers SIZE / ppm metres,
    ppm drawn log-uniformly from :data:`PPM_RANGE`; nominal is the geometric mean."""
    from edge.contract import GroundScale

    lo, hi = SIZE / PPM_RANGE[1], SIZE / PPM_RANGE[0]
    return GroundScale(round(math.sqrt(lo * hi), 2), (round(lo, 2), round(hi, 2)), SIZE)


_GRID = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)  # pixel (y, x) coordinates at output size


@dataclass
class Scene:
    """One scene being rendered: the float canvas and the per-image viewing conditions."""

    rng: np.random.Generator
    img: np.ndarray           # [R, R, 3] float32 RGB, 0..255
    ppm: float                # render pixels per metre (altitude)
    sun: np.ndarray           # [2] unit vector, the direction shadows fall in (image x, y)
    shadow_len: float         # metres of shadow per metre of height (1 / tan(sun elevation))
    shadow_dark: float        # fraction of light a shadow removes
    roads: List[Tuple[np.ndarray, np.ndarray, float]]  # (point, unit direction, half width px)
    roofs: np.ndarray         # [R, R] uint8, 1 on roofs and canopies: people stand on the ground
    area: float = 1.0         # ground area of the view over a nominal view's: counts scale by it (v4)


# ---------------------------------------------------------------------------------------------
# small drawing helpers (all on float32 canvases, coordinates in render pixels)
# ---------------------------------------------------------------------------------------------

def _noise(rng: np.random.Generator, cells: int, size: int = R) -> np.ndarray:
    """Smooth value noise in about [-1, 1]: a random cells x cells grid, bicubically enlarged."""
    import cv2

    grid = rng.standard_normal((cells, cells), dtype=np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def _fbm(rng: np.random.Generator, octaves: Sequence[int] = (4, 12, 40),
         size: int = R) -> np.ndarray:
    """Fractal noise: octaves of value noise with amplitude falling as 1/frequency."""
    total = np.zeros((size, size), np.float32)
    for cells in octaves:
        total += _noise(rng, cells, size) * (4.0 / cells) ** 0.5
    return total / len(octaves) ** 0.5


def _rect(centre, length: float, width: float, angle: float) -> np.ndarray:
    """Corners [4, 2] of a rectangle rotated by ``angle`` radians about ``centre``."""
    c, s = math.cos(angle), math.sin(angle)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float32) * (length / 2, width / 2)
    rot = np.array([[c, -s], [s, c]], np.float32)
    return half @ rot.T + np.asarray(centre, np.float32)


def _poly(canvas: np.ndarray, pts: np.ndarray, colour) -> None:
    import cv2

    cv2.fillConvexPoly(canvas, np.round(pts * 4).astype(np.int32), colour, cv2.LINE_8, 2)


def _hull(pts: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.convexHull(pts.astype(np.float32)).reshape(-1, 2)


def _shade(sc: Scene, mask: np.ndarray, soften: bool = True) -> None:
    """Darken the canvas where ``mask`` (0..1) is set: a shadow dims light, it does not paint."""
    import cv2

    if soften:
        mask = cv2.GaussianBlur(mask, (5, 5), 0.6 * SS)
    sc.img *= (1.0 - sc.shadow_dark * mask)[:, :, None]


def _shadow_offset(sc: Scene, height_m) -> np.ndarray:
    """Shadow displacement [.., 2] in pixels of an object ``height_m`` metres tall."""
    return np.multiply.outer(np.asarray(height_m, np.float32) * sc.shadow_len * sc.ppm, sc.sun)


def _jitter_colour(rng: np.random.Generator, rgb, amount: float = 0.12) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) * (1 + rng.normal(0, amount, 3)), 0, 255)


def _random_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Clothing-like colours [n, 3]: any hue, dark to bright, often grey/black/white."""
    import cv2

    hsv = np.stack([rng.uniform(0, 180, n), rng.uniform(0, 230, n) * (rng.random(n) < 0.7),
                    rng.uniform(25, 250, n)], 1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0].astype(np.float32)


# ---------------------------------------------------------------------------------------------
# scene layers
# ---------------------------------------------------------------------------------------------

def _material(rng: np.random.Generator, name: str) -> np.ndarray:
    """A [SIZE, SIZE, 3] texture of one ground material with its own colour variation."""
    base, amp = MATERIALS[name]
    return _texture(rng, base, amp)


def _texture(rng: np.random.Generator, base, amp: float) -> np.ndarray:
    """A [SIZE, SIZE, 3] fractal texture around the RGB ``base`` with relative amplitude ``amp``."""
    # textured at the output size and enlarged: the 2x render detail is only needed for the
    # small objects, and the ground is the costliest layer to synthesise
    base = _jitter_colour(rng, base, 0.10)
    tex = _fbm(rng, size=SIZE) * amp + rng.standard_normal((SIZE, SIZE), dtype=np.float32) * amp * 0.5
    tint = _noise(rng, 3, SIZE) * 0.05  # slow hue drift across the field
    out = base[None, None, :] * (1 + tex[:, :, None])
    out[:, :, 1] *= 1 + tint
    return out


def _up(img: np.ndarray) -> np.ndarray:
    """Output-size layer -> render size."""
    import cv2

    return cv2.resize(img, (R, R), interpolation=cv2.INTER_LINEAR)


def _ground(sc: Scene) -> None:
    """Two materials blended through a smooth random mask (fields, worn patches, dirt)."""
    names = list(MATERIALS)
    a, b = sc.rng.choice(len(names), 2, replace=True)
    first, second = _material(sc.rng, names[a]), _material(sc.rng, names[b])
    mask = np.clip(_noise(sc.rng, sc.rng.integers(2, 6), SIZE) * 2.0 + sc.rng.uniform(-1.5, 1.5), -1, 1)
    w = (0.5 + 0.5 * mask)[:, :, None]
    sc.img[:] = _up(second + (first - second) * w)


def _plaza(sc: Scene) -> None:
    """A paved square with a tile grid (crowds gather on them, but so do empty ones)."""
    rng = sc.rng
    angle = rng.uniform(0, math.pi)
    corners = _rect(rng.uniform(0.2, 0.8, 2) * R, rng.uniform(0.5, 1.4) * R,
                    rng.uniform(0.4, 1.2) * R, angle)
    mask = np.zeros((R, R), np.uint8)
    _poly(mask, corners, 1)
    yy, xx = _GRID                                  # output-size grid: joints need no 2x detail
    tile = rng.uniform(0.6, 1.5) * sc.ppm / SS
    u = (xx * math.cos(angle) + yy * math.sin(angle)) / tile
    v = (-xx * math.sin(angle) + yy * math.cos(angle)) / tile
    joints = ((u % 1) < 0.12) | ((v % 1) < 0.12)
    paving = _material(rng, rng.choice(["paving", "concrete"])) * (1 - 0.12 * joints[:, :, None])
    np.copyto(sc.img, _up(paving), where=mask[:, :, None] > 0)


def _roads(sc: Scene) -> None:
    """Zero to two straight roads with kerbs, a dashed centre line and worn asphalt."""
    import cv2

    rng = sc.rng
    for _ in range(rng.choice(3, p=[0.45, 0.4, 0.15])):
        point = rng.uniform(0.15, 0.85, 2) * R
        theta = rng.uniform(0, math.pi)
        direction = np.array([math.cos(theta), math.sin(theta)], np.float32)
        half = rng.uniform(2.5, 5.0) * sc.ppm
        ends = np.stack([point - direction * 2 * R, point + direction * 2 * R])
        mask = np.zeros((R, R), np.uint8)
        cv2.line(mask, tuple(np.round(ends[0] * 4).astype(int)), tuple(np.round(ends[1] * 4).astype(int)),
                 1, max(1, int(2 * half)), cv2.LINE_8, 2)
        np.copyto(sc.img, _up(_material(rng, "asphalt")), where=mask[:, :, None] > 0)
        _lane_marks(sc, point, direction, half)
        sc.roads.append((point, direction, half))


def _lane_marks(sc: Scene, point: np.ndarray, direction: np.ndarray, half: float) -> None:
    """A dashed white (or yellow) centre line: 3 m dashes, 6 m period."""
    import cv2

    colour = (225, 225, 215) if sc.rng.random() < 0.8 else (215, 185, 60)
    colour = tuple(float(c) * sc.rng.uniform(0.75, 1.0) for c in colour)
    width = max(1, int(round(0.15 * sc.ppm)))
    period, dash = 6 * sc.ppm, 3 * sc.ppm
    offset = sc.rng.uniform(0, period)
    for t in np.arange(-1.5 * R + offset, 1.5 * R, period):
        a, b = point + direction * t, point + direction * (t + dash)
        cv2.line(sc.img, tuple(np.round(a * 4).astype(int)), tuple(np.round(b * 4).astype(int)),
                 colour, width, cv2.LINE_8, 2)
    if sc.rng.random() < 0.5:  # edge lines
        normal = np.array([-direction[1], direction[0]], np.float32) * (half - 0.4 * sc.ppm)
        for side in (-1, 1):
            a = point + side * normal - direction * 2 * R
            b = point + side * normal + direction * 2 * R
            cv2.line(sc.img, tuple(np.round(a * 4).astype(int)), tuple(np.round(b * 4).astype(int)),
                     colour, width, cv2.LINE_8, 2)


def _buildings(sc: Scene, count: int) -> None:
    """Rectangular roofs: hipped/gabled halves lit differently, dark eaves, a cast shadow."""
    rng = sc.rng
    if count == 0:
        return
    shadow = np.zeros((R, R), np.float32)
    roofs = []
    for _ in range(count):
        centre = rng.uniform(-0.1, 1.1, 2) * R
        length, width = rng.uniform(8, 25) * sc.ppm, rng.uniform(6, 14) * sc.ppm
        angle = rng.uniform(0, math.pi)
        corners = _rect(centre, length, width, angle)
        off = _shadow_offset(sc, rng.uniform(3, 12))
        _poly(shadow, _hull(np.concatenate([corners, corners + off])), 1.0)
        roofs.append((centre, length, width, angle, corners))
        _poly(sc.roofs, corners, 1)
    _shade(sc, shadow)
    for centre, length, width, angle, corners in roofs:
        colour = _jitter_colour(rng, ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))], 0.1)
        _poly(sc.img, corners, tuple(float(c) * 0.7 for c in colour))     # eaves
        normal = np.array([-math.sin(angle), math.cos(angle)], np.float32)
        lit = 1.0 + 0.18 * float(np.sign(-normal @ sc.sun))               # sun side brighter
        inner = width / 2 - 0.6 * sc.ppm
        for side, gain in ((1, lit), (-1, 2.0 - lit)):
            half = _rect(centre + side * normal * inner / 2, length - 1.2 * sc.ppm, inner, angle)
            _poly(sc.img, half, tuple(float(c) * gain for c in colour))


def _trees(sc: Scene, count: int) -> None:
    """Round canopies of a few overlapping blobs, lit on the sun side, each with a shadow."""
    import cv2

    rng = sc.rng
    if count == 0:
        return
    centres = rng.uniform(-0.05, 1.05, (count, 2)) * R
    radii = rng.uniform(1.5, 4.5, count) * sc.ppm
    offs = _shadow_offset(sc, rng.uniform(3, 9, count))
    shadow = np.zeros((R, R), np.float32)
    for c, r, o in zip(centres, radii, offs):
        # the canopy's shadow swept from the trunk outwards: one attached, elongated blot
        a, b = tuple(np.round(c * 4).astype(int)), tuple(np.round((c + o) * 4).astype(int))
        cv2.line(shadow, a, b, 1.0, max(1, int(1.8 * r)), cv2.LINE_8, 2)
        cv2.circle(shadow, b, int(r * 4), 1.0, -1, cv2.LINE_8, 2)
        cv2.circle(sc.roofs, a, int(r * 0.8 * 4), 1, -1, cv2.LINE_8, 2)
    _shade(sc, shadow)
    for c, r in zip(centres, radii):
        colour = _jitter_colour(rng, (52, 78, 38), 0.18)
        for _ in range(rng.integers(3, 6)):
            blob = c + rng.normal(0, 0.3 * r, 2)
            cv2.circle(sc.img, tuple(np.round(blob * 4).astype(int)), int(r * rng.uniform(0.55, 0.8) * 4),
                       tuple(float(v) * rng.uniform(0.85, 1.1) for v in colour), -1, cv2.LINE_8, 2)
        light = c - sc.sun * 0.35 * r
        cv2.circle(sc.img, tuple(np.round(light * 4).astype(int)), int(r * 0.4 * 4),
                   tuple(float(v) * 1.25 for v in colour), -1, cv2.LINE_8, 2)


def _car_spots(sc: Scene, count: int) -> List[Tuple[np.ndarray, float]]:
    """Where cars stand: in a lane of a road when there is one, else anywhere at any angle."""
    rng, spots = sc.rng, []
    for _ in range(count):
        if sc.roads and rng.random() < 0.75:
            point, direction, half = sc.roads[rng.integers(len(sc.roads))]
            normal = np.array([-direction[1], direction[0]], np.float32)
            pos = point + direction * rng.uniform(-0.7, 0.7) * R + normal * rng.choice([-0.5, 0.5]) * half
            spots.append((pos, math.atan2(direction[1], direction[0])))
        else:
            spots.append((rng.uniform(0, 1, 2) * R, rng.uniform(0, math.pi)))
    return spots


def _vehicles(sc: Scene, spots: Sequence[Tuple[np.ndarray, float]]) -> None:
    """Cars: a rounded-off body, dark windscreen and rear window, a shadow 1.5 m high."""
    rng = sc.rng
    if not spots:
        return
    shadow = np.zeros((R, R), np.float32)
    bodies = []
    for pos, angle in spots:
        length, width = rng.uniform(3.8, 5.0) * sc.ppm, rng.uniform(1.7, 2.0) * sc.ppm
        body = _rect(pos, length, width, angle)
        _poly(shadow, _hull(np.concatenate([body, body + _shadow_offset(sc, 1.5)])), 1.0)
        bodies.append((pos, length, width, angle, body))
    _shade(sc, shadow)
    for pos, length, width, angle, body in bodies:
        colour = _jitter_colour(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.06)
        _poly(sc.img, body, tuple(float(c) for c in colour))
        axis = np.array([math.cos(angle), math.sin(angle)], np.float32)
        glass = (30.0, 34.0, 40.0)
        _poly(sc.img, _rect(pos + axis * 0.18 * length, 0.16 * length, 0.8 * width, angle), glass)
        _poly(sc.img, _rect(pos - axis * 0.30 * length, 0.10 * length, 0.75 * width, angle), glass)


def _on_ground(sc: Scene, xy: np.ndarray) -> np.ndarray:
    """Drop the points that fall on a roof (points outside the frame are kept: they are cut)."""
    pix = np.round(xy).astype(np.int64)
    inside = ((pix >= 0) & (pix < R)).all(1)
    on_roof = np.zeros(len(xy), bool)
    on_roof[inside] = sc.roofs[pix[inside, 1], pix[inside, 0]] > 0
    return xy[~on_roof]


def _muted(rng: np.random.Generator, n: int) -> np.ndarray:
    """Man-made object colours: random hues pulled halfway to grey."""
    return 0.5 * _random_colours(rng, n) + 0.5 * rng.uniform(70, 190, (n, 1)).astype(np.float32)


# kind -> (size range m, height m (shadow), base colour or None for man-made colours, jitter)
SMALL_OBJECTS = {
    "bush": ((0.7, 1.8), 1.0, (45, 70, 35), 0.25),
    "rock": ((0.3, 1.0), 0.4, (120, 115, 105), 0.2),
    "box": ((0.3, 0.7), 0.9, None, 0.0),
    "flower": ((0.15, 0.35), 0.0, None, 0.0),
    "table": ((0.5, 0.9), 0.8, None, 0.0),
}


def _fixed(xy: np.ndarray) -> List[Tuple[int, int]]:
    """Points [n, 2] in pixels -> OpenCV fixed-point tuples (shift 2), converted in one go."""
    return [tuple(p) for p in np.round(np.asarray(xy) * 4).astype(np.int64).tolist()]


def _object_palette(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    _, _, base, jitter = SMALL_OBJECTS[kind]
    if base is not None:
        return np.clip(np.float32(base) * (1 + rng.normal(0, jitter, (n, 3))), 0, 255)
    return _random_colours(rng, n) if kind == "flower" else _muted(rng, n)


def _small_objects(sc: Scene, groups: Sequence[Tuple[np.ndarray, str]]) -> None:
    """Bushes, rocks, boxes/bins, flowers, tables: small blobs that are not people.

    All groups share one shadow pass (shading is the costly full-frame step)."""
    import cv2

    rng, items = sc.rng, []
    shadow = np.zeros((R, R), np.float32)
    for xy, kind in groups:
        xy = _on_ground(sc, xy)
        n = len(xy)
        if n == 0:
            continue
        (lo, hi), height, _, _ = SMALL_OBJECTS[kind]
        radius = rng.uniform(lo, hi, n) * sc.ppm / 2
        rad4 = np.maximum(1, (radius * 4).astype(np.int64)).tolist()
        if height > 0:
            for c, r in zip(_fixed(xy + _shadow_offset(sc, height)), rad4):
                cv2.circle(shadow, c, r, 1.0, -1, cv2.LINE_8, 2)
        items.append((xy, kind, radius, rad4, _object_palette(rng, kind, n)))
    if not items:
        return
    _shade(sc, shadow)
    for xy, kind, radius, rad4, palette in items:
        colours = palette.tolist()
        if kind in ("box", "table"):
            aspect, angle = rng.uniform(0.6, 1.0, len(xy)), rng.uniform(0, math.pi, len(xy))
            for c, r, col, a, t in zip(xy, radius, colours, aspect, angle):
                _poly(sc.img, _rect(c, 2 * r, 2 * r * a, t), col)
        else:
            for c, r, col in zip(_fixed(xy), rad4, colours):
                cv2.circle(sc.img, c, r, col, -1, cv2.LINE_8, 2)


def _people(sc: Scene, xy: np.ndarray) -> None:
    """People from above: shoulders (an ellipse in clothing colour), a head, a long thin shadow."""
    import cv2

    rng = sc.rng
    xy = _on_ground(sc, xy)
    n = len(xy)
    if n == 0:
        return
    shoulders = rng.uniform(0.42, 0.56, n) * sc.ppm
    heights = rng.uniform(1.5, 1.9, n)
    ends = xy + _shadow_offset(sc, heights)
    shadow = np.zeros((R, R), np.float32)
    centres = _fixed(xy)
    widths = np.maximum(1, np.round(0.7 * shoulders)).astype(np.int64).tolist()
    for a, b, w in zip(centres, _fixed(ends), widths):
        cv2.line(shadow, a, b, 1.0, w, cv2.LINE_8, 2)
    _shade(sc, shadow)
    clothes = _random_colours(rng, n).tolist()
    hair = (HAIR_COLOURS[rng.integers(len(HAIR_COLOURS), size=n)] * rng.uniform(0.8, 1.2, (n, 1))).tolist()
    facing = rng.uniform(0, 180, n).tolist()
    axes = np.maximum(1, np.stack([shoulders * 2, shoulders * 1.1], 1).astype(np.int64)).tolist()
    head = max(1, int(0.11 * sc.ppm * 4))                         # radius, x4 fixed point
    for centre, ax, cl, hr, ang in zip(centres, axes, clothes, hair, facing):
        cv2.ellipse(sc.img, centre, tuple(ax), ang, 0, 360, cl, -1, cv2.LINE_8, 2)
        cv2.circle(sc.img, centre, head, hr, -1, cv2.LINE_8, 2)


# ---------------------------------------------------------------------------------------------
# layouts: where the people and the look-alike clutter go
# ---------------------------------------------------------------------------------------------

def _cluster(rng: np.random.Generator, count: int, spacing_px: float, centre=None) -> np.ndarray:
    """``count`` points packed in a random ellipse at about ``spacing_px`` apart (jittered grid)."""
    aspect = rng.uniform(0.35, 1.0)
    area = count * spacing_px ** 2 * 0.87  # a hexagonal cell per point
    a = math.sqrt(area / (math.pi * aspect))
    b = a * aspect
    gx, gy = np.meshgrid(np.arange(-a, a + spacing_px, spacing_px),
                         np.arange(-b, b + spacing_px, spacing_px * 0.87))
    gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * spacing_px / 2
    pts = np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)
    pts += rng.normal(0, 0.28 * spacing_px, pts.shape)
    pts = pts[(pts[:, 0] / a) ** 2 + (pts[:, 1] / b) ** 2 <= 1.0]
    theta = rng.uniform(0, math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], np.float32)
    if centre is None:
        centre = rng.uniform(0.2, 0.8, 2) * R
    return (pts @ rot.T + centre).astype(np.float32)


def _open_spot(sc: Scene, tries: int = 8) -> np.ndarray:
    """The least built-over of a few random centres: crowds gather in the open, not on roofs."""
    import cv2

    free = cv2.blur(sc.roofs.astype(np.float32), (R // 8, R // 8))  # local built-over fraction
    cand = sc.rng.uniform(0.2, 0.8, (tries, 2)) * R
    pix = np.round(cand).astype(np.int64)
    return cand[int(np.argmin(free[pix[:, 1], pix[:, 0]]))]


def _crowd_groups(sc: Scene) -> np.ndarray:
    """One to three dense groups of dozens of people, often on a road or plaza."""
    rng, groups = sc.rng, []
    for _ in range(rng.choice([1, 2, 3], p=[0.55, 0.3, 0.15])):
        count = int(rng.integers(40, 220))
        spacing = rng.uniform(0.6, 1.2) * sc.ppm
        if sc.roads and rng.random() < 0.4:
            point, direction, _ = sc.roads[rng.integers(len(sc.roads))]
            centre = point + direction * rng.uniform(-0.25, 0.25) * R
        else:
            centre = _open_spot(sc)
        groups.append(_cluster(rng, count, spacing, centre))
    return np.concatenate(groups)


def _scattered(rng: np.random.Generator, count: int) -> np.ndarray:
    return rng.uniform(0.0, 1.0, (count, 2)).astype(np.float32) * R


def _decoys(sc: Scene) -> None:
    """Dense look-alike clusters for no_crowd: flower beds, bush/rock fields, cafe tables, cars."""
    rng, groups = sc.rng, []
    for _ in range(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15])):
        kind = rng.choice(["flower", "bush", "rock", "table", "box", "cars"],
                          p=[0.2, 0.2, 0.2, 0.15, 0.15, 0.1])
        if kind == "cars":
            spots = _cluster(rng, int(rng.integers(4, 14)), rng.uniform(5.2, 6.0) * sc.ppm)  # no overlaps
            angle = rng.uniform(0, math.pi)
            _vehicles(sc, [(p, angle) for p in spots])
            continue
        # sparser than a crowd: look-alikes share its global statistics, not its packing
        count = int(rng.integers(15, 70))
        spacing = rng.uniform(1.6, 3.0) * sc.ppm * (0.5 if kind == "flower" else 1.0)
        groups.append((_cluster(rng, count, spacing), str(kind)))
    _small_objects(sc, groups)


def _clutter(sc: Scene, count: int) -> None:
    """Scattered small objects of every kind, the same distribution for both classes."""
    kinds = sc.rng.choice(["bush", "rock", "box", "flower"], count, p=[0.35, 0.3, 0.2, 0.15])
    _small_objects(sc, [(_scattered(sc.rng, int((kinds == kind).sum())), str(kind))
                        for kind in ("bush", "rock", "box", "flower")])


# ---------------------------------------------------------------------------------------------
# the camera: global photometrics, blur, noise and compression, independent of the class
# ---------------------------------------------------------------------------------------------

def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Render-resolution float canvas -> final 128x128 uint8 RGB as a drone camera would see it."""
    import cv2

    img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    img = img * rng.uniform(0.92, 1.08, 3).astype(np.float32)          # white balance / colour cast
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.7, 1.3) + mean * rng.uniform(0.75, 1.25)  # contrast, exposure
    haze = rng.uniform(0, 0.25) * (rng.random() < 0.5)
    img = img * (1 - haze) + haze * rng.uniform(150, 220)
    img = 255.0 * (np.clip(img, 0, 255) / 255.0) ** rng.uniform(0.8, 1.25)    # gamma
    sigma = rng.uniform(0.0, 0.9)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    noise = rng.standard_normal((SIZE, SIZE, 3), dtype=np.float32) * rng.uniform(1, 6)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)
    if rng.random() < 0.8:  # JPEG-like softness, as frames off a video link are
        img = _jpeg(img, int(rng.integers(35, 95)))
    return np.ascontiguousarray(img)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """An RGB uint8 image after a JPEG round trip at ``quality``."""
    import cv2

    ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a generated image")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]


def render(seed: int, split_id: int, class_id: int, index: int) -> np.ndarray:
    """Image ``index`` of (split, class) as 128x128x3 uint8 RGB; a pure function of its arguments."""
    rng = np.random.default_rng([int(seed), int(split_id), int(class_id), int(index)])
    elevation = math.radians(rng.uniform(30, 70))
    sun_angle = rng.uniform(0, 2 * math.pi)
    sc = Scene(rng=rng, img=np.zeros((R, R, 3), np.float32),
               ppm=float(math.exp(rng.uniform(math.log(PPM_RANGE[0]), math.log(PPM_RANGE[1])))) * SS,
               sun=np.array([math.cos(sun_angle), math.sin(sun_angle)], np.float32),
               shadow_len=1.0 / math.tan(elevation), shadow_dark=rng.uniform(0.35, 0.65), roads=[],
               roofs=np.zeros((R, R), np.uint8))
    _ground(sc)
    if rng.random() < 0.35:
        _plaza(sc)
    _roads(sc)
    _buildings(sc, int(rng.choice(4, p=[0.45, 0.3, 0.15, 0.1])))
    _trees(sc, int(rng.poisson(2.5)))
    _vehicles(sc, _car_spots(sc, int(rng.poisson(1.5))))
    _clutter(sc, int(rng.poisson(10)))
    crowd = CLASSES[class_id] == "crowd"
    if not crowd:
        _decoys(sc)
    few = int(rng.choice(7, p=[0.4, 0.15, 0.15, 0.1, 0.1, 0.05, 0.05]))  # lone walkers, both classes
    people = _scattered(rng, few)
    if crowd:
        people = np.concatenate([people, _crowd_groups(sc)])
    _people(sc, people)
    return _camera(rng, sc.img)

