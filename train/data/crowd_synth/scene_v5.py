"""crowd_synth v5, the default: v3's scenes with the texture of real photographs, wider views and
every crowd in view (docs/crowd_synth.md).

A model trained on v3 calls real empty cities crowds: in a real photo every surface is busy at
every scale (roof tiles, foliage, windows, cars, road paint), while v3's ground, roofs and
objects are smooth procedural colour, so "fine, many-coloured detail" still says "crowd"; and a
whole frame squeezed to 128 px is a wider view than v3 draws. v5 keeps v3's scene code
(``scene_v3.render_recipe``) and adds, with the same probability in both classes:

- **photo ground** (half of the images): parts of the ground, or of building-shaped blocks
  (roofs), take the texture of a real photograph, cropped, scaled, rotated and recoloured at
  random;
- **photo objects** (40 %): rows, grids or clusters of 20-150 small objects the size of cars,
  boats, stalls or roof units (1-6 m), each a different crop of a photograph;
- **wider views**: 1.5-10 px/m instead of 2-10, a wider view holding proportionally more of
  everything, and a crowd moved into the picture when it fell outside (v4's two measures, on a
  narrower range of scales: v4's 1 px/m made people half a pixel wide).

The photographs are those that ship inside scikit-learn (``load_sample_images``) and
scikit-image (``skimage.data``), read from the installed packages, never downloaded, and each is
checked against the digest v5 was made with (:data:`PHOTOS`): a package that ships a different
file would change v5's pixels, so it stops with a clear error instead. None of them is an aerial
view; they are there for their real-world texture statistics, not their content.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
from typing import Tuple

import numpy as np

from train.data.crowd_synth import scene_v3
from train.data.crowd_synth.scene_v2 import R, Scene, _noise, _rect
from train.data.crowd_synth.scene_v3 import Recipe, render_recipe

#: (package, file inside the package, sha256 of the file): photographs with real texture (stone,
#: foliage, fabric, metal, tiles, coins, stars, tissue), in colour and in gray.
PHOTOS = (
    ("sklearn", "datasets/images/china.jpg", "8378025ad2519d649d02e32bd98990db4ab572357d9f09841c2fbfbb4fefad29"),
    ("sklearn", "datasets/images/flower.jpg", "a77f6ec41e353afdf8bdff2ea981b2955535d8d83294f8cfa49cf4e423dd5638"),
    ("skimage", "data/astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"),
    ("skimage", "data/brick.png", "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf"),
    ("skimage", "data/camera.png", "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a"),
    ("skimage", "data/chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
    ("skimage", "data/coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"),
    ("skimage", "data/coins.png", "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba"),
    ("skimage", "data/grass.png", "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89"),
    ("skimage", "data/gravel.png", "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12"),
    ("skimage", "data/hubble_deep_field.jpg", "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4"),
    ("skimage", "data/ihc.png", "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef"),
    ("skimage", "data/motorcycle_left.png", "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179"),
    ("skimage", "data/rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c"),
    ("skimage", "data/retina.jpg", "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6"),
    ("skimage", "data/moon.png", "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577"),
)
#: output pixels per metre at the centre of the frame, log-uniform: v3's 2-10 px/m widened to
#: 1.5 px/m, where a person is still most of a pixel wide: a whole 1080p frame from 40-90 m
#: squeezed to 128 px (classify) down to a quarter-frame tile from low altitude (heatmap).
PPM_RANGE = (1.5, 10.0)
PHOTO_MAX_SIDE = 640          # larger photographs are shrunk to this on loading
PHOTO_GROUND = 0.5            # share of images with photo-textured ground or roofs
PHOTO_OBJECTS = 0.4           # share of images with a group of photo-textured objects


def _package_file(package: str, rel: str) -> str:
    """The path of ``rel`` inside the installed ``package`` (not imported: only located)."""
    from train.data import DataError

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip = {"sklearn": "scikit-learn", "skimage": "scikit-image"}[package]
        raise DataError(f"crowd_synth v5 draws on photographs that ship with {pip}, which is not "
                        f"installed: pip install {pip} (or pip install 'edge-students[train]')")
    return os.path.join(list(spec.submodule_search_locations)[0], *rel.split("/"))


@functools.lru_cache(maxsize=1)
def photos() -> Tuple[np.ndarray, ...]:
    """The :data:`PHOTOS` as float32 RGB arrays (long side at most :data:`PHOTO_MAX_SIDE`), each
    checked against its digest; loaded once per process. Raises ``DataError`` when one is missing
    or differs (``python -m train.crowd_drone`` reports it in one line)."""
    import cv2

    from train.data import DataError

    out = []
    for package, rel, digest in PHOTOS:
        path = _package_file(package, rel)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise DataError(f"crowd_synth v5: cannot read the photograph {path}: {e.strerror or e}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError(f"crowd_synth v5: {path} is not the photograph v5 was made with (sha256 differs), "
                            "so the scenes would not be v5's; install the scikit-learn / scikit-image whose "
                            "bundled photographs match, or use --synth-version 3")
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        scale = PHOTO_MAX_SIDE / max(img.shape[:2])
        if scale < 1:
            img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(img[:, :, ::-1], dtype=np.float32))
    return tuple(out)


def _photo_texture(rng: np.random.Generator, out: int, lo: float, hi: float) -> np.ndarray:
    """An [out, out, 3] float32 crop of a random photograph: ``out`` pixels show a square of
    ``lo``-``hi`` (log-uniform) of the photograph's short side, rotated, and recoloured (channels
    permuted, saturation changed, or gray)."""
    import cv2

    pool = photos()
    photo = pool[int(rng.integers(len(pool)))]
    h, w = photo.shape[:2]
    side = math.exp(rng.uniform(math.log(lo), math.log(hi))) * min(h, w)
    k = out / side
    small = cv2.resize(photo, (max(1, round(w * k)), max(1, round(h * k))),
                       interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
    sh, sw = small.shape[:2]
    cx, cy = rng.uniform(0, sw), rng.uniform(0, sh)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), float(rng.uniform(0, 360)), 1.0)
    m[:, 2] += (out / 2 - cx, out / 2 - cy)
    tex = cv2.warpAffine(small, m, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:
        tex = tex[:, :, rng.permutation(3)]
    gray = tex.mean(2, keepdims=True)
    sat = 0.0 if rng.random() < 0.15 else rng.uniform(0.3, 1.1)
    return np.ascontiguousarray(gray + (tex - gray) * sat, dtype=np.float32)


def _toned(rng: np.random.Generator, tex: np.ndarray, like: np.ndarray) -> np.ndarray:
    """``tex`` with its brightness pulled part of the way to the mean of ``like`` and its
    contrast scaled: a photograph laid into a scene is lit like the scene, more or less."""
    mean = tex.mean()
    target = mean + (float(like.mean()) - mean) * rng.uniform(0.3, 1.0)
    return (tex - mean) * rng.uniform(0.5, 1.1) + target


def _photo_ground(sc: Scene) -> None:
    """Photo texture over part of the ground (a smooth random region, 25-100 % of it) or on
    1-8 building-shaped blocks (roofs: people do not stand there)."""
    import cv2

    rng = sc.rng
    tex = _toned(rng, _photo_texture(rng, R, 0.25, 1.0), sc.img)
    if rng.random() < 0.6:
        field = _noise(rng, int(rng.integers(2, 7)))
        cut = np.quantile(field, 1.0 - rng.uniform(0.25, 1.0))
        mask = np.clip((field - cut) * rng.uniform(2, 8), 0, 1)
    else:
        mask = np.zeros((R, R), np.float32)
        for _ in range(int(rng.integers(1, 9))):
            corners = _rect(rng.uniform(0, R, 2), rng.uniform(8, 40) * sc.ppm, rng.uniform(6, 25) * sc.ppm,
                            rng.uniform(0, math.pi))
            cv2.fillConvexPoly(mask, np.round(corners * 4).astype(np.int32), 1.0, cv2.LINE_AA, 2)
        sc.roofs[mask > 0.5] = 1
    sc.img[:] = sc.img + (tex - sc.img) * mask[:, :, None]


def _photo_objects(sc: Scene) -> None:
    """20-150 small objects (1-6 m by 1-3 m) in rows, a grid or a cluster, each a patch of one
    photograph with its own tint: parked cars, boats, stalls, crates, roof units with real texture."""
    import cv2

    rng = sc.rng
    count = int(rng.integers(20, 151))
    length, width = rng.uniform(1.0, 6.0) * sc.ppm, rng.uniform(1.0, 3.0) * sc.ppm
    angle = rng.uniform(0, math.pi)
    centre = rng.uniform(0.2, 0.8, 2) * R
    if rng.random() < 0.6:                                          # rows / a grid
        gap = rng.uniform(1.05, 1.8)
        cols = max(1, int(math.sqrt(count) * rng.uniform(0.5, 2.0)))
        i = np.arange(count)
        grid = np.stack([(i % cols - cols / 2) * length * gap, (i // cols - count / cols / 2) * width * gap * 2], 1)
        c, s = math.cos(angle), math.sin(angle)
        xy = grid @ np.array([[c, s], [-s, c]], np.float32) + centre
        angles = np.full(count, angle)
    else:                                                           # a loose cluster
        radius = math.sqrt(count) * max(length, width) * rng.uniform(0.6, 1.5)
        r, t = radius * np.sqrt(rng.random(count)), rng.uniform(0, 2 * math.pi, count)
        xy = centre + np.stack([r * np.cos(t), r * np.sin(t)], 1)
        angles = rng.uniform(0, math.pi, count)
    tex = _toned(rng, _photo_texture(rng, R, 0.08, 0.5), sc.img)
    mask = np.zeros((R, R), np.float32)
    tint = np.ones((R, R, 3), np.float32)
    for (x, y), a in zip(xy, angles):
        corners = np.round(_rect((x, y), length * rng.uniform(0.8, 1.2), width * rng.uniform(0.8, 1.2), a) * 4)
        corners = corners.astype(np.int32)
        cv2.fillConvexPoly(mask, corners, 1.0, cv2.LINE_AA, 2)
        cv2.fillConvexPoly(tint, corners, tuple(float(v) for v in rng.uniform(0.6, 1.4, 3)), cv2.LINE_8, 2)
    sc.img[:] = sc.img + (tex * tint - sc.img) * mask[:, :, None]


def _clutter(sc: Scene) -> None:
    if sc.rng.random() < PHOTO_GROUND:
        _photo_ground(sc)
    if sc.rng.random() < PHOTO_OBJECTS:
        _photo_objects(sc)


#: a view at 3 px/m or closer is "nominal"; a wider one holds proportionally more of everything
#: (at 1.5 px/m: 4x the ground, 4x the things), and a crowd image shows at least 60 of its people
#: (v4's two measures, on a narrower range of scales).
V5 = Recipe(5, PPM_RANGE, area_ref=3.0, max_area=4.0, crowd_in_view=60, clutter=_clutter)


def render(seed: int, split_id: int, class_id: int, index: int) -> np.ndarray:
    """Image ``index`` of (split, class) as 128x128x3 uint8 RGB; a pure function of its arguments."""
    return render_recipe(V5, seed, split_id, class_id, index)


def ground_scale():
    """The ground scale of v5 scenes (contract 4): 128 px cover 12.8-85.3 m at the centre."""
    return scene_v3.ground_scale(PPM_RANGE)

