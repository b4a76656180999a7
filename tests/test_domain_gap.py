"""train.experiments.domain_gap: the statistics against slow per-pixel references, the letterbox
without its bands, the report on a made folder, and bad input (exit 2, one line, nothing written)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from train.experiments import domain_gap as dg


def _laplacian_reference(luma: np.ndarray) -> float:
    """mean |4 c - up - down - left - right| with mirrored borders (OpenCV's BORDER_REFLECT_101
    is not it: BORDER_REFLECT repeats the edge pixel)."""
    h, w = luma.shape
    total = 0.0
    for y in range(h):
        for x in range(w):
            def at(yy, xx):
                yy = -yy - 1 if yy < 0 else (2 * h - yy - 1 if yy >= h else yy)
                xx = -xx - 1 if xx < 0 else (2 * w - xx - 1 if xx >= w else xx)
                return float(luma[yy, xx])
            total += abs(at(y - 1, x) + at(y + 1, x) + at(y, x - 1) + at(y, x + 1) - 4 * at(y, x))
    return total / (h * w)


def _saturation_reference(rgb: np.ndarray) -> float:
    """HSV saturation per pixel, (max - min) / max, as OpenCV's 8-bit S (rounded to 0..255)."""
    out = []
    for r, g, b in rgb.reshape(-1, 3).astype(float):
        mx, mn = max(r, g, b), min(r, g, b)
        out.append(0.0 if mx == 0 else math.floor(255 * (mx - mn) / mx + 0.5))
    return float(np.mean(out)) / 255.0


def test_stats_match_per_pixel_references():
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)
    got = dg.image_stats(rgb)
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    ref_luma = np.floor(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2] + 0.5)
    assert np.abs(luma.astype(int) - ref_luma.astype(int)).max() <= 1        # ITU-R 601 luma
    assert got["sharpness"] == pytest.approx(_laplacian_reference(luma), rel=1e-6)
    assert got["saturation"] == pytest.approx(_saturation_reference(rgb), abs=1.5 / 255)
    assert got["brightness"] == pytest.approx(luma.mean() / 255.0, rel=1e-9)
    flat = np.full((8, 8, 3), 77, np.uint8)
    assert dg.image_stats(flat) == {"sharpness": 0.0, "saturation": 0.0, "brightness": pytest.approx(77 / 255)}


def test_letterbox_picture_has_no_bands_and_other_policies_fill_the_input():
    wide = np.zeros((60, 240, 3), np.uint8)
    assert dg.picture(wide, 128, "letterbox").shape == (32, 128, 3)
    assert dg.picture(wide, 128, "stretch").shape == (128, 128, 3)
    assert dg.picture(wide, 128, "center-crop").shape == (128, 128, 3)
    tall = np.zeros((500, 100, 3), np.uint8)
    assert dg.picture(tall, 64, "letterbox").shape == (64, 13, 3)


def _folder(tmp_path: Path) -> Path:
    data = tmp_path / "frames"
    (data / "busy").mkdir(parents=True)
    (data / "flat").mkdir()
    yy, xx = np.mgrid[:256, :384]
    busy = (((yy // 2 + xx // 2) % 2) * 255).astype(np.uint8)               # 2-px checkerboard
    for i in range(3):
        cv2.imwrite(str(data / "busy" / f"b{i}.png"), np.stack([busy] * 3, -1))
        cv2.imwrite(str(data / "flat" / f"f{i}.png"), np.full((256, 384, 3), 60 + 40 * i, np.uint8))
    return data


def test_report_on_a_made_folder(tmp_path, capsys):
    data = _folder(tmp_path)
    (data / "flat" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "gap.json"
    assert dg.main(["--data", str(data), "--per-class", "4", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "| busy | 3 |" in captured.out and "| flat | 3 |" in captured.out
    assert "skipped 1 unreadable image" in captured.err and "broken.jpg" in captured.err
    rep = json.loads(out.read_text())
    groups = rep["groups"]
    synthetic = [k for k in groups if k.startswith("crowd_synth v")]
    assert len(synthetic) == 2 and all(groups[k]["n"] == 4 for k in synthetic)
    # a checkerboard shrunk by area averaging is finer than any scene; flat frames have no detail
    assert groups["busy"]["sharpness"]["above_synthetic_p90"] == 1.0
    assert groups["flat"]["sharpness"] == {"median": 0.0, "q25": 0.0, "q75": 0.0, "above_synthetic_p90": 0.0}
    assert groups["flat"]["saturation"]["median"] == 0.0
    assert groups["flat"]["brightness"]["median"] == pytest.approx(100 / 255, abs=1e-4)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)                      # normal permissions


@pytest.mark.parametrize("case", ["missing", "empty", "per-class", "json-folder", "unreadable", "json-is-a-frame"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    data = _folder(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"nope")
    argv, needle = {
        "missing": (["--data", str(tmp_path / "nowhere")], "is not a folder"),
        "empty": (["--data", str(empty)], "holds no images"),
        "per-class": (["--data", str(data), "--per-class", "0"], "--per-class 0"),
        "json-folder": (["--data", str(data), "--json", str(empty)], "is a folder"),
        "unreadable": (["--data", str(junk)], "none of its 1 images could be read"),
        "json-is-a-frame": (["--data", str(data), "--json", str(data / "busy" / "b0.png")],
                            "is an image of --data"),
    }[case]
    def snapshot():
        return sorted((str(p), p.read_bytes() if p.is_file() else b"") for p in tmp_path.rglob("*"))

    before = snapshot()
    assert dg.main(argv + ["--per-class", "2"] if case != "per-class" else argv) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and "Traceback" not in err[0] and needle in err[0], err
    assert snapshot() == before
