"""The profiling tables in their formats: Markdown, CSV and LaTeX by the shared renderer
(:mod:`train.experiments.table`), JSON with the unformatted figures, and bar charts."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

from edge.cli_checks import write_text_output
from train.experiments import table
from train.experiments.table import csv_text, latex, markdown, save_figure

FORMATS = ("markdown", "csv", "json", "latex")
EXT = {"markdown": "md", "csv": "csv", "json": "json", "latex": "tex"}


@dataclass
class Table(table.Table):
    raw: List[Dict[str, Any]] = field(default_factory=list)  # unformatted figures, for JSON and plots


def size(n) -> str:
    """KiB below 1 MiB, MiB above."""
    if not isinstance(n, (int, float)):
        return str(n)
    return f"{n / 1024:.1f} KiB" if n < 2 ** 20 else f"{n / 2 ** 20:.2f} MiB"


def mib(n) -> str:
    return f"{n / 2 ** 20:.1f}" if isinstance(n, (int, float)) else str(n)


def render(tables: Sequence[Table], fmt: str, header: str = "") -> str:
    """All tables in one document of format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps({"header": header, "tables": [asdict(t) for t in tables]}, indent=1,
                          default=str) + "\n"
    if fmt == "csv":
        return "\n".join(f"# {t.title}\n{csv_text(t)}" for t in tables)
    one = markdown if fmt == "markdown" else latex
    head = header + "\n\n" if header and fmt == "markdown" else ""
    return head + "\n".join(one(t) for t in tables)


def write(tables: Sequence[Table], fmt: str, out_dir, header: str = "") -> List[Path]:
    """One file per table (CSV, LaTeX) or one file for all (Markdown, JSON) under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if fmt in ("csv", "latex"):
        paths = []
        for t in tables:
            p = out / f"{t.key}.{EXT[fmt]}"
            write_text_output(p, csv_text(t) if fmt == "csv" else latex(t))
            paths.append(p)
        return paths
    p = out / f"profiling_tables.{EXT[fmt]}"
    write_text_output(p, render(tables, fmt, header))
    return [p]


def plot(tables: Sequence[Table], out_dir) -> List[Path]:
    """Bar charts of cost per method, one PNG per table that has a 'plot' spec in its raw rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for t in tables:
        bars = [(r["plot_label"], r["plot_value"]) for r in t.raw if "plot_value" in r]
        if not bars:
            continue
        fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(bars)), 4))
        ax.bar(range(len(bars)), [v for _, v in bars], color="tab:blue")
        ax.set_xticks(range(len(bars)), [lab for lab, _ in bars], rotation=70, ha="right",
                      fontsize=7)
        ax.set_ylabel(t.raw[0].get("plot_unit", ""))
        ax.set_title(t.title, fontsize=9)
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"{t.key}.png", dpi=120))
    return paths
