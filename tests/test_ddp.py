"""DDP equivalence: 2 gloo processes on CPU == 1 process on the same global batch.

Launches ``tests/ddp_worker.py`` twice with torchrun's environment variables (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR=127.0.0.1, MASTER_PORT) and compares the final weights with a
single-process run of the same configuration: CE with local scope (plain DDP), a batch-relational
loss with ``--knn-scope global`` (and POSD/OSKD when registered), and a DDP run resumed midway.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import ddp_worker  # noqa: E402

TOL = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(run: Path):
    from train.checkpoint import load_checkpoint

    return load_checkpoint(run / "model.pt")["state_dict"]


def _max_diff(a, b) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen([sys.executable, str(HERE / "ddp_worker.py"), str(root / "ddp")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=120)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("DDP workers timed out")
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    torch.set_num_threads(1)
    for name in ddp_worker.cases():
        ddp_worker.run_case(name, root / "single")
    return root


@pytest.mark.parametrize("name", sorted(ddp_worker.cases()))
def test_ddp_matches_single_process(runs, name):
    ddp, single = _weights(runs / "ddp" / name), _weights(runs / "single" / name)
    diff = _max_diff(ddp, single)
    moved = _max_diff(single, _initial_weights())
    assert moved > 1e-3, "the test is vacuous: training did not move the weights"
    if name == "pull_local":
        # local scope: each rank's neighbours come from its own half, a different objective
        assert diff > 1e-4, f"local scope should differ from the global batch, max |dw| = {diff:.2e}"
    else:
        assert diff < TOL, f"{name}: max |w_ddp - w_single| = {diff:.2e}"
    print(f"{name}: max |w_ddp - w_single| = {diff:.2e}")


def test_ddp_logs_match_and_only_rank0_writes(runs):
    for name in ("ce_local", "pull_global"):
        d = [json.loads(l) for l in (runs / "ddp" / name / "metrics.jsonl").read_text().splitlines()]
        s = [json.loads(l) for l in (runs / "single" / name / "metrics.jsonl").read_text().splitlines()]
        assert len(d) == len(s) == ddp_worker.EPOCHS          # one writer: no duplicated lines
        for a, b in zip(d, s):
            assert a["test_acc"] == b["test_acc"]
            assert a["train_acc"] == pytest.approx(b["train_acc"], abs=1e-9)
            assert a["train"]["loss"] == pytest.approx(b["train"]["loss"], rel=1e-5)


def test_ddp_background_gathers_both_ranks(runs):
    """The background (p(crowd) of the test images of other classes) is measured on each rank's
    shard and gathered: the DDP run's record is the single process's."""
    from edge.contract import DecisionRule
    from train.checkpoint import load_checkpoint

    n = int((ddp_worker.make_data().test_y != 0).sum())
    for name in ("ce_local", "pull_global"):
        d, s = (DecisionRule.from_dict(load_checkpoint(runs / r / name / "model.pt")["decision"])
                for r in ("ddp", "single"))
        assert d.background.n == s.background.n == n >= 20
        assert max(abs(a - b) for a, b in zip(d.background.quantiles, s.background.quantiles)) <= 2e-6


def test_ddp_resume_matches_uninterrupted(runs):
    resumed = _weights(runs / "ddp" / "resumed" / "ce_local")
    single = _weights(runs / "single" / "ce_local")
    assert _max_diff(resumed, single) < TOL


def _initial_weights():
    from train.models import build_model
    from train.engine import _seed

    torch.manual_seed(_seed(ddp_worker.config("ce_local", Path("/tmp")).seed, 0, 0))
    return build_model("cifar_cnn", num_classes=4, in_channels=1, input_size=16).state_dict()
