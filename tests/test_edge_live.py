"""Live sources give up on time: loopback servers on 127.0.0.1 that the tests start (one that
accepts and never answers, an MJPEG stream that stalls mid-run, one that comes back), and the
watchdog that bounds every OpenCV open and read. ``edge.run`` must report the loss as a record
and exit 3 within --reconnect-timeout + 2 s."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from edge import run as edge_run  # noqa: E402
from edge.sources import (SourceLost, WatchedCapture, _TIMED_OUT, live_frames,  # noqa: E402
                          stall_after)

try:
    from edge_helpers import export_crowd_onnx
except ImportError:
    from tests.edge_helpers import export_crowd_onnx

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 1.5            # --reconnect-timeout of these tests, seconds
SLACK = 2.0             # the promise: the loss is reported within the timeout + 2 s


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_crowd_onnx(tmp_path_factory.mktemp("m") / "crowd.onnx", size=32, dense=False)


class Loopback:
    """A TCP server on 127.0.0.1; ``behaviours[i]`` serves the i-th connection (the last one
    serves every later connection). Records when each connection came and each frame left."""

    def __init__(self, behaviours) -> None:
        self.behaviours = list(behaviours)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/stream.mjpg"
        self.accepted, self.sent, self.conns = [], [], []
        self.closing = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(time.monotonic())
            self.conns.append(conn)
            serve = self.behaviours[min(len(self.accepted), len(self.behaviours)) - 1]
            threading.Thread(target=serve, args=(self, conn), daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.sock.close()
        for c in self.conns:        # ends FFmpeg reads still waiting in abandoned workers
            c.close()


def hang(server, conn) -> None:
    """Accept, never answer."""
    server.closing.wait()


def mjpeg(frames: int, then_hang: bool = True):
    img = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    part = (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
            + jpg + b"\r\n")

    def serve(server, conn) -> None:
        try:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; "
                         b"boundary=frame\r\n\r\n")
            for _ in range(frames):
                conn.sendall(part)
                server.sent.append(time.monotonic())
                time.sleep(0.04)
        except OSError:
            return
        if then_hang:
            server.closing.wait()           # the stream stalls: the socket stays open, silent
    return serve


@pytest.fixture
def serve():
    servers = []

    def start(*behaviours):
        servers.append(Loopback(behaviours))
        return servers[-1]
    yield start
    for s in servers:
        s.close()


def _records(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _summary(err: str) -> dict:
    return json.loads([l for l in err.splitlines() if l.startswith('{"summary"')][-1])["summary"]


def test_server_that_accepts_and_never_answers(model, serve, capsys):
    server = serve(hang)
    rc = edge_run.main(["--model", str(model), "--source", server.url, "--threads", "1",
                        "--reconnect-timeout", str(BUDGET)])
    done = time.monotonic()
    err = capsys.readouterr().err
    assert rc == 3, err
    assert server.accepted, "edge.run never connected"
    took = done - server.accepted[0]
    assert BUDGET - 0.3 <= took <= BUDGET + SLACK, took      # kept trying, then gave up on time
    assert "could not be opened within --reconnect-timeout 1.5 s" in err
    assert _summary(err)["stopped_by"].startswith("source lost")


def test_mjpeg_stream_that_stalls_mid_run(model, serve, tmp_path, capsys):
    server = serve(mjpeg(8), hang)
    out = tmp_path / "flight.jsonl"
    rc = edge_run.main(["--model", str(model), "--source", server.url, "--threads", "1",
                        "--reconnect-timeout", str(BUDGET), "--output", str(out), "--no-fsync"])
    done = time.monotonic()
    err = capsys.readouterr().err
    assert rc == 3, err
    recs = _records(out)
    good = [r for r in recs if not r.get("skipped")]
    stalls = [r for r in recs if r.get("skipped")]
    assert len(good) >= 6                                    # the stream ran before it stalled
    assert len(stalls) == 1 and "stalled" in stalls[0]["error"]   # the stall is on record
    assert done - server.sent[-1] <= BUDGET + SLACK
    assert "stalled" in err and "did not come back" in err
    summary = _summary(err)
    assert summary["stopped_by"].startswith("source lost") and summary["skipped"] == 1


def test_stream_that_comes_back_after_a_stall(model, serve, tmp_path, capsys):
    server = serve(mjpeg(5), mjpeg(100, then_hang=False))
    out = tmp_path / "flight.jsonl"
    rc = edge_run.main(["--model", str(model), "--source", server.url, "--threads", "1",
                        "--reconnect-timeout", "3", "--output", str(out), "--no-fsync",
                        "--max-frames", "14"])
    assert rc == 0, capsys.readouterr().err
    recs = _records(out)
    flags = [bool(r.get("skipped")) for r in recs]
    assert len(recs) == 14 and flags.count(True) == 1
    first_gap = flags.index(True)
    assert 3 <= first_gap <= 5 and not any(flags[first_gap + 1:])   # frames again after it
    assert len(server.accepted) == 2


def test_the_process_exits_despite_a_stuck_backend(model, serve):
    """In a subprocess: the abandoned worker thread must not keep the process alive."""
    server = serve(hang)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "edge.run", "--model", str(model), "--source",
                             server.url, "--threads", "1", "--reconnect-timeout", "1"],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    done = time.monotonic()
    assert proc.returncode == 3, err
    assert server.accepted and done - server.accepted[0] <= 1 + SLACK


# --- the watchdog -------------------------------------------------------------------------------
class BlockingCapture:
    """A capture whose read blocks until released by the test (a backend that ignores timeouts)."""

    def __init__(self) -> None:
        self.unblock = threading.Event()
        self.released = threading.Event()

    def isOpened(self):
        return True

    def read(self):
        self.unblock.wait(30)
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self):
        self.released.set()


def test_watchdog_abandons_a_blocked_read_and_releases_it_later():
    cap = BlockingCapture()
    w = WatchedCapture("test")
    assert w.open(lambda: cap, 1.0)
    t0 = time.monotonic()
    assert w.read(0.2) is _TIMED_OUT
    assert 0.15 <= time.monotonic() - t0 < 1.0
    assert not cap.released.is_set()         # never released under the blocked call's feet
    cap.unblock.set()
    assert cap.released.wait(5)               # the worker releases it once the call returns


def test_watchdog_bounds_a_blocked_open():
    gate = threading.Event()
    w = WatchedCapture("test")
    t0 = time.monotonic()
    assert not w.open(lambda: (gate.wait(30), BlockingCapture())[1], 0.2)
    assert time.monotonic() - t0 < 1.0
    gate.set()


def test_stall_is_yielded_then_the_source_is_lost():
    caps = [BlockingCapture()]
    got = []
    it = live_frames("rtsp://cam", lambda: caps[0] if len(got) == 0 else None,
                     reconnect_timeout=0.6, backoff=0.05, stall_timeout=0.3)
    t0 = time.monotonic()
    with pytest.raises(SourceLost, match="stalled .* did not come back"):
        for f in it:
            got.append(f)
    assert [f.error for f in got] == ["source stalled (no frame for 0.3 s); reconnecting"]
    assert time.monotonic() - t0 <= 0.6 + SLACK
    caps[0].unblock.set()


@pytest.mark.parametrize("timeout,expect", [(0.1, 0.25), (1.5, 0.75), (3.0, 1.5), (60.0, 2.0)])
def test_stall_threshold(timeout, expect):
    assert stall_after(timeout) == expect
