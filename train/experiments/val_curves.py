"""Synthetic and real accuracy of one run, per epoch, as a PNG (docs/builtin_model.md's plot).

    python -m train.experiments.val_curves runs/default --out curves.png

Reads the run's ``metrics.jsonl``: the synthetic test accuracy of every epoch and, when the run
had ``--val-data``, the real frames' balanced accuracy and ROC-AUC in each mode it judged. A run
without ``--val-data`` plots the synthetic curve alone. Exit status: 0 written, 2 a bad run
folder or output (one line on stderr, nothing written).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

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


def plot(records: Sequence[Dict], title: str, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from train.experiments.table import save_figure

    epochs = [r["epoch"] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, values in series(records).items():
        style = "-" if name.startswith("synthetic") else ("--" if "ROC" in name else ":")
        ax.plot(epochs, [float("nan") if v is None else v for v in values], style, label=name,
                linewidth=2 if name.startswith("synthetic") else 1.3)
    ax.set_xlabel("epoch")
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower center", ncol=3)
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path, help="a run folder (with metrics.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="the PNG to write")
    p.add_argument("--title", default=None, help="the plot's title (default: the run folder's name)")
    args = p.parse_args(argv)
    if args.out.suffix.lower() != ".png":
        return fail(PROG, f"--out {args.out}: must end in .png")
    try:
        records = read_epochs(args.run)
        path = plot(records, args.title or args.run.name, args.out)
    except ValueError as e:
        return fail(PROG, str(e))
    except OSError as e:
        return fail(PROG, f"cannot write {args.out}: {e.strerror or e}")
    print(f"wrote {path} ({len(records)} epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
