"""Synthetic and real accuracy of one run, per epoch, as a PNG (docs/builtin_model.md's plot).

    python -m train.experiments.val_curves runs/default --out curves.png
    python -m train.experiments.val_curves runs/ema --compare runs/raw --compare-label "raw weights" --out c.png

Reads the run's ``metrics.jsonl``: the synthetic test accuracy of every epoch and, when the run
had ``--val-data``, the real frames' balanced accuracy and ROC-AUC in each mode it judged. A run
without ``--val-data`` plots the synthetic curve alone. ``--compare RUN`` draws a second run's
real-frame balanced accuracies beside them, thin and grey (e.g. the same recipe without
``--ema``); the two runs are matched by epoch. Exit status: 0 written, 2 a bad run
folder or output (one line on stderr, nothing written).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from edge.cli_checks import OneLineParser, fail

PROG = "python -m train.experiments.val_curves"


def read_epochs(run: Path) -> List[Dict]:
    """The epoch records of ``run/metrics.jsonl``, in epoch order; ValueError naming the problem."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"{path} not found: not a run folder")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path}:{n} is not JSON") from None
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int) and "test_acc" in rec:
            records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no epoch records")
    return sorted(records, key=lambda r: r["epoch"])


def series(records: Sequence[Dict]) -> Dict[str, List[Optional[float]]]:
    """Named curves, one value per record (None where an epoch lacks it)."""
    out: Dict[str, List[Optional[float]]] = {"synthetic test accuracy": [r["test_acc"] for r in records]}
    modes = sorted({m for r in records for m in (r.get("val") or {})})
    for mode in modes:
        for key, label in (("balanced_accuracy", "balanced accuracy"), ("roc_auc", "ROC-AUC")):
            out[f"real {mode} {label}"] = [((r.get("val") or {}).get(mode) or {}).get(key) for r in records]
    return out


def curves(records: Sequence[Dict], compare: Optional[Sequence[Dict]] = None,
           compare_label: str = "compared run") -> List[Tuple[str, List[float], str]]:
    """(label, values per epoch of ``records`` (NaN where missing), matplotlib style) of every
    curve: the run's own, then the compared run's real balanced accuracies at the same epochs."""
    nan = float("nan")
    out = []
    for name, values in series(records).items():
        style = "-" if name.startswith("synthetic") else ("--" if "ROC" in name else ":")
        out.append((name, [nan if v is None else v for v in values], style))
    if compare:
        other = {r["epoch"]: r for r in compare}
        matched = [other.get(r["epoch"], {"epoch": r["epoch"], "test_acc": None}) for r in records]
        for name, values in series(matched).items():
            if name.endswith("balanced accuracy"):
                out.append((f"{compare_label}: {name}", [nan if v is None else v for v in values], "grey"))
    return out


def plot(records: Sequence[Dict], title: str, out: Path, compare: Optional[Sequence[Dict]] = None,
         compare_label: str = "compared run") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.experiments.table import save_figure

    epochs = [r["epoch"] for r in records]
    lines = curves(records, compare, compare_label)
    fig, ax = plt.subplots(figsize=(8, 4.5 + 0.2 * (len(lines) // 2)))
    for name, values, style in lines:
        if style == "grey":
            ax.plot(epochs, values, "-" if "classify" in name else ":", color="0.6", label=name, linewidth=0.9)
        else:
            ax.plot(epochs, values, style, label=name, linewidth=2 if name.startswith("synthetic") else 1.3)
    ax.set_xlabel("epoch")
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder (with metrics.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--title", default=None, help="the plot's title (default: the run folder's name)")
    p.add_argument("--compare", type=Path, default=None, metavar="RUN",
                   help="another run folder whose real-frame balanced accuracies are drawn beside, in grey")
    p.add_argument("--compare-label", default=None, help="its name in the legend (default: its folder's name)")
    args = p.parse_args(argv)
    if args.out.suffix.lower() != ".png":
        return fail(PROG, f"--out {args.out}: must end in .png")
    try:
        records = read_epochs(args.run)
        compare = read_epochs(args.compare) if args.compare is not None else None
        label = args.compare_label or (args.compare.name if args.compare is not None else "")
        path = plot(records, args.title or args.run.name, args.out, compare, label)
    except ValueError as e:
        return fail(PROG, str(e))
    except OSError as e:
        return fail(PROG, f"cannot write {args.out}: {e.strerror or e}")
    print(f"wrote {path} ({len(records)} epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
