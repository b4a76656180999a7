"""What a drone photo says about its camera: height, gimbal pitch and lens, from its JPEG metadata.

DJI drones write into every still:
- XMP (an APP1 segment of XML text): ``drone-dji:RelativeAltitude`` (metres above the take-off
  point) and ``drone-dji:GimbalPitchDegree`` (-90 looks straight down);
- EXIF: ``FocalLengthIn35mmFilm``, the lens as a 35 mm-equivalent focal length, from which the
  field of view follows.

Read here with the standard library (no image library), as the runtime must run on a Jetson with
nothing more than edge/ needs: the JPEG's segments up to the image data, one by one (nothing after
them is read), the TIFF structure of EXIF (either byte order) and the two XMP fields (as attributes
or elements).
"""
from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from edge.altitude import MIN_ALTITUDE_M
from edge.contract import gsd_from_camera

#: the diagonal of a 36 x 24 mm frame: a 35 mm-equivalent focal length f sees 2 atan(D / 2f)
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)
_EXIF_ID, _XMP_ID = b"Exif\x00\x00", b"http://ns.adobe.com/xap/1.0/\x00"
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}          # frame headers (not DHT/JPG/DAC)
_TAG_EXIF_IFD, _TAG_FOCAL_35 = 0x8769, 0xA405


@dataclass(frozen=True)
class PhotoMeta:
    width: Optional[int] = None
    height: Optional[int] = None
    relative_altitude_m: Optional[float] = None
    gimbal_pitch_deg: Optional[float] = None
    focal_35mm: Optional[float] = None

    def hfov_deg(self) -> Optional[float]:
        """Horizontal field of view from the 35 mm-equivalent focal length and the image's aspect
        (the equivalence is defined on the diagonal)."""
        if not self.focal_35mm or not self.width or not self.height:
            return None
        half_diag = FULL_FRAME_DIAGONAL_MM / (2.0 * self.focal_35mm)
        return math.degrees(2.0 * math.atan(half_diag * self.width / math.hypot(self.width, self.height)))


def _xmp_number(xmp: str, name: str) -> Optional[float]:
    m = re.search(r"drone-dji:" + name + r"\s*=\s*[\"']\s*([-+]?\d+(?:\.\d+)?)", xmp) or \
        re.search(r"<drone-dji:" + name + r">\s*([-+]?\d+(?:\.\d+)?)\s*<", xmp)
    return float(m.group(1)) if m else None


def _focal_35(tiff: bytes) -> Optional[float]:
    """FocalLengthIn35mmFilm from a TIFF block (EXIF), or None; never raises on a bad block."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        if struct.unpack(order + "H", tiff[2:4])[0] != 42:
            return None

        def entries(offset: int):
            (n,) = struct.unpack(order + "H", tiff[offset:offset + 2])
            for i in range(n):
                e = offset + 2 + 12 * i
                tag, typ, count = struct.unpack(order + "HHI", tiff[e:e + 8])
                yield tag, typ, count, tiff[e + 8:e + 12]

        (ifd0,) = struct.unpack(order + "I", tiff[4:8])
        exif_ifd = next((struct.unpack(order + "I", raw)[0] for tag, typ, _, raw in entries(ifd0)
                         if tag == _TAG_EXIF_IFD), None)
        if exif_ifd is None:
            return None
        for tag, typ, count, raw in entries(exif_ifd):
            if tag == _TAG_FOCAL_35 and count >= 1:
                value = struct.unpack(order + "H", raw[:2])[0] if typ == 3 else \
                    struct.unpack(order + "I", raw)[0] if typ == 4 else 0
                return float(value) if value > 0 else None
    except (KeyError, struct.error, IndexError):
        return None
    return None


def _segments(f):
    """(marker, payload) of a JPEG's header segments, read one by one from the open file up to the
    image data: only the header is read, however large the photo."""
    if f.read(2) != b"\xff\xd8":
        return
    while True:
        b = f.read(1)
        if b != b"\xff":
            return                                           # not a marker: a damaged header
        marker = f.read(1)
        while marker == b"\xff":                            # fill bytes
            marker = f.read(1)
        if not marker:
            return
        m = marker[0]
        if m == 0x01 or 0xD0 <= m <= 0xD7:                   # markers without a length
            continue
        if m in (0xDA, 0xD9):                                # image data or the end: no more header
            return
        raw = f.read(2)
        if len(raw) < 2:
            return
        (length,) = struct.unpack(">H", raw)
        payload = f.read(max(length - 2, 0))
        yield m, payload
        if len(payload) < length - 2:
            return


def read_photo_meta(path) -> PhotoMeta:
    """The camera facts a JPEG carries (fields it lacks are None); OSError if unreadable."""
    width = height = None
    xmp: Optional[str] = None
    focal: Optional[float] = None
    with open(path, "rb") as f:
        for marker, seg in _segments(f):
            if marker == 0xE1 and seg.startswith(_EXIF_ID) and focal is None:
                focal = _focal_35(seg[len(_EXIF_ID):])
            elif marker == 0xE1 and seg.startswith(_XMP_ID) and xmp is None:
                xmp = seg[len(_XMP_ID):].decode("utf-8", "replace")
            elif marker in _SOF and len(seg) >= 5:
                height, width = struct.unpack(">HH", seg[1:5])
    alt = _xmp_number(xmp, "RelativeAltitude") if xmp else None
    pitch = _xmp_number(xmp, "GimbalPitchDegree") if xmp else None
    return PhotoMeta(width, height, alt, pitch, focal)


def ground_scale(meta: PhotoMeta, hfov_deg: Optional[float] = None,
                 nadir_within_deg: float = 5.0) -> Tuple[str, object]:
    """How a photo's camera row is written: ("altitude", (height, hfov)) for a view within
    ``nadir_within_deg`` of straight down (or with no pitch recorded: the nadir contract),
    ("gsd", metres per pixel at the frame's centre) for an oblique one, or ("skip", why).
    ``hfov_deg`` overrides the lens the photo records."""
    if meta.relative_altitude_m is None:
        return "skip", "no drone-dji:RelativeAltitude in its XMP"
    hfov = hfov_deg if hfov_deg is not None else meta.hfov_deg()
    if hfov is None:
        return "skip", "no 35 mm-equivalent focal length in its EXIF (give --hfov)"
    h = max(float(meta.relative_altitude_m), MIN_ALTITUDE_M)
    pitch = meta.gimbal_pitch_deg
    if pitch is None or abs(pitch + 90.0) <= nadir_within_deg:
        return "altitude", (h, hfov)
    if pitch > -10.0:
        return "skip", f"gimbal pitch {pitch:g} deg: within 10 deg of the horizon, no ground at the centre"
    if not meta.width:
        return "skip", "no image size in its JPEG header"
    slant = h / math.sin(math.radians(-pitch))          # the centre ray's length to the ground
    return "gsd", gsd_from_camera(slant, hfov, meta.width)


def is_jpeg_name(path: Path) -> bool:
    return path.suffix.lower() in (".jpg", ".jpeg")
