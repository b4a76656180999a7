"""python -m train.experiments.val_curves: a run's synthetic and real curves per epoch as a PNG."""
from __future__ import annotations

import json

import pytest

from train.experiments import val_curves as V


def _run(tmp_path, val: bool = True):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    lines = []
    for e in range(1, 6):
        rec = {"epoch": e, "test_acc": 0.5 + 0.05 * e}
        if val:
            rec["val"] = {"classify": {"balanced_accuracy": 0.6, "roc_auc": 0.8 + 0.01 * e},
                          "heatmap": {"balanced_accuracy": 0.55, "roc_auc": 0.7}}
        lines.append(json.dumps(rec))
    (run / "metrics.jsonl").write_text("\n".join(lines[::-1]) + "\n")      # any order
    return run


def test_curves_follow_the_records(tmp_path):
    records = V.read_epochs(_run(tmp_path))
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    s = V.series(records)
    assert s["synthetic test accuracy"] == pytest.approx([0.55, 0.6, 0.65, 0.7, 0.75])
    assert s["real classify ROC-AUC"] == pytest.approx([0.81, 0.82, 0.83, 0.84, 0.85])
    assert set(s) == {"synthetic test accuracy", "real classify balanced accuracy", "real classify ROC-AUC",
                      "real heatmap balanced accuracy", "real heatmap ROC-AUC"}
    assert set(V.series(V.read_epochs(_run(tmp_path / "b", val=False)))) == {"synthetic test accuracy"}


def test_writes_a_png(tmp_path, capsys):
    out = tmp_path / "c.png"
    assert V.main([str(_run(tmp_path)), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "5 epochs" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["no run", "not json", "jpg"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    run = _run(tmp_path)
    out = tmp_path / ("c.jpg" if case == "jpg" else "c.png")
    if case == "no run":
        run = tmp_path / "nowhere"
    if case == "not json":
        (run / "metrics.jsonl").write_text("{oops\n")
    assert V.main([str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".c.*"))


def test_a_compared_run_adds_its_real_balanced_accuracies_matched_by_epoch(tmp_path, capsys):
    mine = V.read_epochs(_run(tmp_path / "a"))
    other = [r for r in V.read_epochs(_run(tmp_path / "b")) if r["epoch"] != 3]   # epoch 3 missing
    for r in other:
        r["val"]["classify"]["balanced_accuracy"] = 0.1 * r["epoch"]
    got = {name: (values, style) for name, values, style in V.curves(mine, other, "raw")}
    assert set(got) == set(V.series(mine)) | {"raw: real classify balanced accuracy",
                                              "raw: real heatmap balanced accuracy"}
    values, style = got["raw: real classify balanced accuracy"]
    assert style == "grey" and values[:2] == pytest.approx([0.1, 0.2]) and values[3:] == pytest.approx([0.4, 0.5])
    assert values[2] != values[2]                                          # NaN where it has no epoch
    out = tmp_path / "c.png"
    assert V.main([str(tmp_path / "a" / "run"), "--compare", str(tmp_path / "b" / "run"), "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert V.main([str(tmp_path / "a" / "run"), "--compare", str(tmp_path / "nowhere"), "--out",
                   str(tmp_path / "d.png")]) == 2
    assert "not a run folder" in capsys.readouterr().err and not (tmp_path / "d.png").exists()
