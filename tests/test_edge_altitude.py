"""--altitude-log: a video's heatmap tiles follow the height over time (DJI subtitles or a CSV)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge import run as edge_run  # noqa: E402
from edge.altitude import MIN_ALTITUDE_M, SPAN_SLACK_S, read_altitude_log  # noqa: E402
from edge.contract import META_SCALE  # noqa: E402

try:
    from edge_helpers import export_crowd_onnx, write_video
except ImportError:
    from tests.edge_helpers import export_crowd_onnx, write_video

SCALE = {"patch_m": 25.6, "patch_m_range": [16.0, 40.0], "input_width": 64}


def _ts(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def dji_srt(heights, dt: float = 0.1, style: str = "rel_alt", newline: str = "\n") -> str:
    """DJI subtitles, one cue per ``dt`` seconds, in the layout of each firmware family."""
    cues = []
    for i, h in enumerate(heights):
        t = i * dt
        if style == "rel_alt":        # Mini / Air / Mavic 3
            body = (f'<font size="28">FrameCnt: {i + 1}, DiffTime: {int(dt * 1000)}ms\n'
                    f"2024-08-07 12:34:24.380\n[iso: 100] [shutter: 1/3200.0] [fnum: 1.7] [ev: 0] "
                    f"[focal_len: 24.00] [latitude: 69.189116] [longitude: 35.259334] "
                    f"[rel_alt: {h:.3f} abs_alt: {h + 131.5:.3f}] [ct: 5310] </font>")
        elif style == "H":            # Phantom 4 Pro / Mavic 2
            body = (f"F/2.8, SS 320, ISO 100, EV 0, DZOOM 1.000, GPS (8.6615, 49.4183, 19), "
                    f"D 24.86m, H {h:.2f}m, H.S 0.00m/s, V.S 0.00m/s")
        elif style == "BAROMETER":    # Phantom 3 / 4
            body = f"HOME(8.6615,49.4183) 2017.08.05 14:11:51\nGPS(8.6616,49.4185,19) BAROMETER:{h:.1f}"
        else:                         # Mavic 2 era: height above sea level only
            body = (f"[iso : 110] [shutter : 1/200.0] [fnum : 280] [latitude: 0.608553] "
                    f"[longtitude: -1.963763] [altitude: {h + 1400:.6f}]")
        cues.append(f"{i + 1}\n{_ts(t)} --> {_ts(t + dt)}\n{body}\n")
    return newline.join(c.replace("\n", newline) for c in cues)


@pytest.mark.parametrize("style", ["rel_alt", "H", "BAROMETER"])
def test_dji_subtitles_of_each_family_give_the_relative_height(tmp_path, style):
    f = tmp_path / "DJI_0001.SRT"
    f.write_text(dji_srt([10, 10, 40, 40.5, 100], dt=0.5, style=style, newline="\r\n"))
    log = read_altitude_log(f)
    assert log.kind == f"DJI subtitles ({style})" and log.stepwise
    assert log.times_s.tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]
    # a cue holds until the next one starts
    assert log.at(0.0) == (10.0, True) and log.at(0.99)[0] == 10.0 and log.at(1.0)[0] == 40.0
    assert log.at(1.7)[0] == 40.5 and log.at(2.4)[0] == 100.0
    # outside the span: the nearest end, flagged beyond SPAN_SLACK_S
    assert log.at(2.0 + SPAN_SLACK_S) == (100.0, True)
    assert log.at(2.0 + SPAN_SLACK_S + 0.01) == (100.0, False)


def test_csv_is_interpolated_and_clamped(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("time_s,altitude_m\n0,5\n\n3,65\n10,65\n")
    log = read_altitude_log(f)
    assert log.kind == "CSV" and not log.stepwise
    assert log.at(1.5) == (35.0, True) and log.at(0.75)[0] == pytest.approx(20.0)
    assert log.at(12.0) == (65.0, False) and log.at(-0.5) == (5.0, True)
    assert log.describe()["altitude_m"] == [5.0, 65.0]


@pytest.mark.parametrize("name,text,needle", [
    ("a.srt", None, "--altitude-log file not found"),
    ("a.srt", dji_srt([50, 60], style="absolute"), "only the height above sea level"),
    ("a.srt", "1\n00:00:00,000 --> 00:00:00,100\nhello\n", "no subtitle cue with a relative altitude"),
    ("a.srt", "not subtitles at all", "no subtitle cue with a relative altitude"),
    ("a.csv", "t,h\n0,10\n", "must start with the header time_s,altitude_m"),
    ("a.csv", "", "got an empty file"),
    ("a.csv", "time_s,altitude_m\n", "no rows after the header"),
    ("a.csv", "time_s,altitude_m\n0,10\n0,20\n", "line 3: times must increase"),
    ("a.csv", "time_s,altitude_m\n-1,10\n", "line 2: time -1 s is before the video starts"),
    ("a.csv", "time_s,altitude_m\n0,high\n", "line 2: expected two numbers"),
    ("a.csv", "time_s,altitude_m\n0,nan\n", "line 2: time and altitude must be finite"),
    ("a.txt", "time_s,altitude_m\n0,10\n", "expected DJI subtitles (.srt) or a CSV (.csv)"),
])
def test_bad_logs_are_refused_with_what_is_wrong(tmp_path, name, text, needle):
    f = tmp_path / name
    if text is not None:
        f.write_text(text)
    with pytest.raises(ValueError) as e:
        read_altitude_log(f)
    assert needle in str(e.value) and str(f) in str(e.value)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_crowd_onnx(tmp_path_factory.mktemp("m") / "scaled.onnx", size=64, dense=True,
                             extra_meta={META_SCALE: SCALE})


def _expected_tile(h: float, hfov: float, width: int) -> int:
    """The tile that covers patch_m of ground at height h (nadir): the slow way, on paper."""
    ground_width = 2 * max(h, MIN_ALTITUDE_M) * math.tan(math.radians(hfov) / 2)
    return max(1, int(round(SCALE["patch_m"] / (ground_width / width))))


@pytest.mark.parametrize("impl", ["tiles", "dense"])
def test_heatmap_tiles_follow_the_flight(model, tmp_path, impl):
    """A 3 s video at 10 fps climbing 0 -> 20 -> 60 m: every record is tiled for its own height,
    and the summary says what the log held and what was judged."""
    video = write_video(tmp_path / "clip.avi", frames=30, size=(320, 180), fps=10.0)
    srt = tmp_path / "clip.SRT"
    heights = [0.0] * 10 + [20.0] * 10 + [60.0] * 10
    srt.write_text(dji_srt(heights, dt=0.1))
    out, summary = tmp_path / "o.jsonl", tmp_path / "s.json"
    assert edge_run.main(["--model", str(model), "--source", str(video), "--mode", "heatmap",
                          "--altitude-log", str(srt), "--hfov", "90", "--heatmap-impl", impl,
                          "--output", str(out), "--summary-json", str(summary), "--threads", "1",
                          "--no-grid"]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 30
    for r in recs:
        h = heights[r["frame"]]
        assert r["altitude_m"] == max(h, MIN_ALTITUDE_M)
        assert r["verdict"]["tile_px"] == _expected_tile(h, 90.0, 320), r
    s = json.loads(summary.read_text())["altitude_log"]
    assert s["format"] == "DJI subtitles (rel_alt)" and s["samples"] == 30 and s["hfov_deg"] == 90.0
    assert s["judged_at_m"] == [MIN_ALTITUDE_M, 60.0] and s["frames_beyond_span"] == 0
    assert s["tile_sizes"] == 3


def test_a_log_shorter_than_the_video_is_counted(model, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=30, size=(160, 120), fps=10.0)
    log = tmp_path / "h.csv"
    log.write_text("time_s,altitude_m\n0,30\n0.5,30\n")           # 0.5 s of a 2.9 s video
    summary = tmp_path / "s.json"
    assert edge_run.main(["--model", str(model), "--source", str(video), "--mode", "heatmap",
                          "--altitude-log", str(log), "--hfov", "82", "--summary-json", str(summary),
                          "--threads", "1"]) == 0
    s = json.loads(summary.read_text())["altitude_log"]
    # frames after 0.5 s + SPAN_SLACK_S (frames 16-29) took the last height and are counted
    assert s["frames_beyond_span"] == 14 and s["judged_at_m"] == [30.0, 30.0]


@pytest.mark.parametrize("extra,needle", [
    (["--mode", "classify"], "use it with --mode heatmap"),
    (["--mode", "heatmap"], "needs --hfov DEG"),
    (["--mode", "heatmap", "--hfov", "82", "--altitude", "40"], "drop --altitude"),
    (["--mode", "heatmap", "--hfov", "82", "--gsd", "0.05"], "drop --gsd"),
    (["--mode", "heatmap", "--hfov", "200"], "field of view must be in (0, 180)"),
    (["--mode", "heatmap", "--hfov", "82", "SOURCE=FOLDER"], "is not a video file"),
    (["--mode", "heatmap", "--hfov", "82", "SOURCE=MISSING"], "source not found"),
    (["--mode", "heatmap", "--hfov", "82", "LOG=BAD"], "no subtitle cue with a relative altitude"),
    (["--mode", "heatmap", "--hfov", "82", "LOG=MISSING"], "--altitude-log file not found"),
])
def test_bad_altitude_flags_exit_2_and_write_nothing(model, tmp_path, capsys, extra, needle):
    video = write_video(tmp_path / "clip.avi", frames=3)
    (tmp_path / "photos").mkdir()
    cv2.imwrite(str(tmp_path / "photos" / "a.png"), np.zeros((40, 40, 3), np.uint8))
    good = tmp_path / "clip.srt"
    good.write_text(dji_srt([20, 20, 20]))
    (tmp_path / "bad.srt").write_text("1\n00:00:00,000 --> 00:00:00,100\nno height here\n")
    source, log = str(video), str(good)
    for a in extra:
        if a == "SOURCE=FOLDER":
            source = str(tmp_path / "photos")
        elif a == "SOURCE=MISSING":
            source = str(tmp_path / "nope.mp4")
        elif a == "LOG=BAD":
            log = str(tmp_path / "bad.srt")
        elif a == "LOG=MISSING":
            log = str(tmp_path / "nope.srt")
    flags = [a for a in extra if "=" not in a]
    out = tmp_path / "never.jsonl"
    rc = edge_run.main(["--model", str(model), "--source", source, "--altitude-log", log,
                        "--output", str(out), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


def test_a_model_without_a_scale_is_refused(tmp_path, capsys):
    plain = export_crowd_onnx(tmp_path / "plain.onnx", size=64, dense=False)
    video = write_video(tmp_path / "clip.avi", frames=3)
    srt = tmp_path / "clip.srt"
    srt.write_text(dji_srt([20, 20, 20]))
    assert edge_run.main(["--model", str(plain), "--source", str(video), "--mode", "heatmap",
                          "--altitude-log", str(srt), "--hfov", "82"]) == 2
    assert "records no ground scale" in capsys.readouterr().err


def test_the_log_is_read_as_text_even_from_older_firmware(tmp_path):
    """Latin-1 bytes (a degree sign) in older subtitles do not stop the reading."""
    f = tmp_path / "old.srt"
    f.write_bytes(dji_srt([12.5], style="H").encode() + " 25\xb0C".encode("latin-1"))
    assert read_altitude_log(f).at(0.0)[0] == 12.5


def test_the_log_is_never_an_output(model, tmp_path, capsys):
    video = write_video(tmp_path / "clip.avi", frames=3)
    srt = tmp_path / "clip.srt"
    srt.write_text(dji_srt([20, 20, 20]))
    before = srt.read_bytes()
    for flag in ("--output", "--summary-json"):
        assert edge_run.main(["--model", str(model), "--source", str(video), "--mode", "heatmap",
                              "--altitude-log", str(srt), "--hfov", "82", flag, str(srt)]) == 2
        assert "is --altitude-log" in capsys.readouterr().err
        assert srt.read_bytes() == before
