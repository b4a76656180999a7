"""python -m edge.cameras: a cameras file from the photos' own metadata (DJI XMP, EXIF lens)."""
from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge import cameras as cams  # noqa: E402
from edge import evaluate as ev  # noqa: E402
from edge.contract import META_SCALE  # noqa: E402
from edge.files import current_umask  # noqa: E402
from edge.photo_meta import PhotoMeta, ground_scale, read_photo_meta  # noqa: E402

try:
    from edge_helpers import export_crowd_onnx
except ImportError:
    from tests.edge_helpers import export_crowd_onnx

SCALE = {"patch_m": 25.6, "patch_m_range": [16.0, 40.0], "input_width": 64}


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def exif(focal_35: int, order: str = "<") -> bytes:
    """A minimal EXIF block: IFD0 points to an Exif IFD holding FocalLengthIn35mmFilm."""
    tiff = (b"II" if order == "<" else b"MM") + struct.pack(order + "HI", 42, 8)
    tiff += struct.pack(order + "H", 1) + struct.pack(order + "HHII", 0x8769, 4, 1, 26) + b"\0" * 4
    tiff += struct.pack(order + "H", 1) + struct.pack(order + "HHIHH", 0xA405, 3, 1, focal_35, 0) + b"\0" * 4
    return b"Exif\x00\x00" + tiff


def xmp(altitude=None, pitch=None, elements: bool = False) -> bytes:
    fields = {"RelativeAltitude": altitude, "GimbalPitchDegree": pitch}
    if elements:
        body = "".join(f"<drone-dji:{k}>{v:+.2f}</drone-dji:{k}>" for k, v in fields.items() if v is not None)
        desc = f"<rdf:Description>{body}</rdf:Description>"
    else:
        attrs = " ".join(f'drone-dji:{k}="{v:+.2f}"' for k, v in fields.items() if v is not None)
        desc = f"<rdf:Description {attrs} drone-dji:AbsoluteAltitude=\"+512.00\"/>"
    return (b"http://ns.adobe.com/xap/1.0/\x00" +
            f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>{desc}</rdf:RDF></x:xmpmeta>'.encode())


def drone_jpeg(path: Path, size=(400, 300), altitude=None, pitch=None, focal_35=None,
               order="<", elements=False, value=128) -> Path:
    w, h = size
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), value, np.uint8))
    assert ok
    data = buf.tobytes()
    extra = b""
    if focal_35 is not None:
        extra += _segment(0xE1, exif(focal_35, order))
    if altitude is not None or pitch is not None:
        extra += _segment(0xE1, xmp(altitude, pitch, elements))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[:2] + extra + data[2:])
    return path


def hfov_4_3(focal_35: float) -> float:
    """The slow way: a 4:3 frame with the full-frame diagonal (43.27 mm) is 34.6 mm wide."""
    width_mm = math.hypot(36, 24) * 4 / 5
    return math.degrees(2 * math.atan(width_mm / (2 * focal_35)))


@pytest.mark.parametrize("order,elements", [("<", False), (">", True)])
def test_metadata_is_read_in_either_byte_order_and_xmp_form(tmp_path, order, elements):
    f = drone_jpeg(tmp_path / "a.jpg", altitude=40.2, pitch=-89.9, focal_35=24, order=order,
                   elements=elements)
    m = read_photo_meta(f)
    assert (m.width, m.height) == (400, 300)
    assert m.relative_altitude_m == 40.2 and m.gimbal_pitch_deg == -89.9 and m.focal_35mm == 24.0
    assert m.hfov_deg() == pytest.approx(hfov_4_3(24), abs=1e-9)
    assert read_photo_meta(drone_jpeg(tmp_path / "plain.jpg")) == PhotoMeta(400, 300)


def test_nadir_oblique_and_unusable_views():
    m = PhotoMeta(4000, 3000, 60.0, -90.0, 24.0)
    assert ground_scale(m) == ("altitude", (60.0, pytest.approx(hfov_4_3(24))))
    # 45 deg down from 60 m: the centre ray is 60 / sin 45 = 84.9 m long
    kind, gsd = ground_scale(PhotoMeta(4000, 3000, 60.0, -45.0, 24.0))
    assert kind == "gsd"
    ray = 60 / math.sin(math.radians(45))
    assert gsd == pytest.approx(ray * 2 * math.tan(math.radians(hfov_4_3(24)) / 2) / 4000)
    assert ground_scale(PhotoMeta(4000, 3000, 60.0, -5.0, 24.0))[0] == "skip"          # the horizon
    assert "RelativeAltitude" in ground_scale(PhotoMeta(4000, 3000, None, -90.0, 24.0))[1]
    assert "give --hfov" in ground_scale(PhotoMeta(4000, 3000, 60.0, -90.0, None))[1]
    assert ground_scale(PhotoMeta(4000, 3000, 60.0, -90.0, None), hfov_deg=80.0) == ("altitude", (60.0, 80.0))
    assert ground_scale(PhotoMeta(4000, 3000, 0.2, None, 24.0))[1][0] == 1.0             # on the ground


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_crowd_onnx(tmp_path_factory.mktemp("m") / "scaled.onnx", size=64, dense=True,
                             extra_meta={META_SCALE: SCALE})


def test_written_file_reads_back_and_sizes_the_evaluation(model, tmp_path, capsys):
    """The command's file, given to edge.evaluate --cameras: each photo tiled at its own scale."""
    data = tmp_path / "photos"
    drone_jpeg(data / "crowd" / "low.jpg", altitude=20.0, pitch=-90.0, focal_35=24, value=200)
    drone_jpeg(data / "no_crowd" / "high.jpg", altitude=80.0, pitch=-90.0, focal_35=24, value=40)
    drone_jpeg(data / "no_crowd" / "tilted.jpg", altitude=30.0, pitch=-60.0, focal_35=24, value=40)
    drone_jpeg(data / "no_crowd" / "nometa.jpg", value=40)
    cv2.imwrite(str(data / "crowd" / "frame.png"), np.full((300, 400, 3), 200, np.uint8))
    out = tmp_path / "cams.csv"
    assert cams.main([str(data), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "3 photos written" in err and "2 nadir" in err and "1 oblique" in err and "2 skipped" in err
    assert "no drone-dji:RelativeAltitude" in err and "not a JPEG" in err
    rows = {r["path"]: r for r in csv.DictReader(out.open())}
    assert set(rows) == {"crowd/low.jpg", "no_crowd/high.jpg", "no_crowd/tilted.jpg"}
    assert float(rows["crowd/low.jpg"]["altitude"]) == 20.0
    assert float(rows["crowd/low.jpg"]["hfov"]) == pytest.approx(hfov_4_3(24), abs=0.005)
    assert rows["no_crowd/tilted.jpg"]["altitude"] == "" and float(rows["no_crowd/tilted.jpg"]["gsd"]) > 0
    assert out.stat().st_mode & 0o777 == 0o666 & ~current_umask()          # normal permissions

    csv_out, js = tmp_path / "rows.csv", tmp_path / "rep.json"
    assert ev.main(["--model", str(model), "--data", str(data), "--mode", "heatmap", "--cameras",
                    str(out), "--csv", str(csv_out), "--json", str(js), "--gsd", "0.1"]) == 0
    tiles = {r["path"]: int(r["tile_px"]) for r in csv.DictReader(csv_out.open())}

    def tile(h, hfov):          # 25.6 m of ground at the GSD of a nadir view h metres up
        return round(25.6 / (2 * h * math.tan(math.radians(hfov) / 2) / 400))

    hfov = float(rows["crowd/low.jpg"]["hfov"])
    assert tiles["crowd/low.jpg"] == tile(20.0, hfov) and tiles["no_crowd/high.jpg"] == tile(80.0, hfov)
    assert tiles["no_crowd/tilted.jpg"] == round(25.6 / float(rows["no_crowd/tilted.jpg"]["gsd"]))
    assert tiles["no_crowd/nometa.jpg"] == tiles["crowd/frame.png"] == 256          # --gsd 0.1
    assert json.loads(js.read_text())["judge"]["cameras"]["photos"] == 3


@pytest.mark.parametrize("case,needle", [
    ("missing", "folder not found"),
    ("nometa", "no photo in"),
    ("hfov", "field of view must be in (0, 180)"),
    ("nadir", "--nadir-within"),
    ("outdir", "is a folder; give a file path"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, case, needle):
    data = tmp_path / "photos"
    drone_jpeg(data / "crowd" / "a.jpg", altitude=None if case == "nometa" else 30.0, pitch=-90.0,
               focal_35=24)
    out = tmp_path / "cams.csv"
    argv = [str(tmp_path / "nope") if case == "missing" else str(data),
            "--out", str(tmp_path) if case == "outdir" else str(out)]
    argv += {"hfov": ["--hfov", "190"], "nadir": ["--nadir-within", "-1"]}.get(case, [])
    assert cams.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_out_is_never_one_of_the_photos(tmp_path, capsys):
    photo = drone_jpeg(tmp_path / "photos" / "crowd" / "a.jpg", altitude=30.0, pitch=-90.0, focal_35=24)
    before = photo.read_bytes()
    assert cams.main([str(tmp_path / "photos"), "--out", str(photo)]) == 2
    assert "is the photo" in capsys.readouterr().err
    assert photo.read_bytes() == before


def test_damaged_and_foreign_files_give_what_they_have(tmp_path):
    """Only the header segments are read: a photo cut off inside its image data still gives its
    camera; a PNG named .jpg and a header cut inside a segment give what was read before."""
    whole = drone_jpeg(tmp_path / "a.jpg", altitude=25.0, pitch=-90.0, focal_35=24).read_bytes()
    sos = whole.index(b"\xff\xda")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[:sos + 40])
    assert read_photo_meta(cut) == read_photo_meta(tmp_path / "a.jpg")
    half = tmp_path / "half.jpg"
    half.write_bytes(whole[:whole.index(b"http://ns.adobe.com") + 20])      # inside the XMP
    m = read_photo_meta(half)
    assert m.focal_35mm == 24.0 and m.relative_altitude_m is None
    ok, png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "png.jpg").write_bytes(png.tobytes())
    assert read_photo_meta(tmp_path / "png.jpg") == PhotoMeta()
