"""A table as data (title, columns, rows, note) and its Markdown, CSV, JSON and LaTeX forms."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Sequence

from edge.files import atomic_write

FORMATS = ("markdown", "csv", "json", "latex")
EXT = {"markdown": "md", "csv": "csv", "json": "json", "latex": "tex"}


@dataclass
class Table:
    key: str
    title: str
    columns: List[str]
    rows: List[List[Any]]
    note: str = ""
    raw: List[Dict[str, Any]] = field(default_factory=list)  # unformatted figures, for JSON

    def column(self, name: str) -> List[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def size(n) -> str:
    """KiB below 1 MiB, MiB above."""
    if not isinstance(n, (int, float)):
        return str(n)
    return f"{n / 1024:.1f} KiB" if n < 2 ** 20 else f"{n / 2 ** 20:.2f} MiB"


def mib(n) -> str:
    return f"{n / 2 ** 20:.1f}" if isinstance(n, (int, float)) else str(n)


def to_markdown(t: Table) -> str:
    lines = [f"### {t.title}", "", "| " + " | ".join(t.columns) + " |",
             "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(t.columns)
    w.writerows(t.rows)
    return buf.getvalue()


def _tex(s: Any) -> str:
    s = str(s)
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#"), ("->", r"$\rightarrow$"), ("×", r"$\times$"), ("—", "--"),
                 ("λ", r"$\lambda$"), ("≈", r"$\approx$")):
        s = s.replace(a, b)
    return s


def to_latex(t: Table) -> str:
    lines = [r"\begin{table}[t]", r"\centering", r"\small",
             r"\begin{tabular}{" + "l" * len(t.columns) + "}", r"\hline",
             " & ".join(_tex(c) for c in t.columns) + r" \\", r"\hline"]
    lines += [" & ".join(_tex(c) for c in r) + r" \\" for r in t.rows]
    lines += [r"\hline", r"\end{tabular}", r"\caption{" + _tex(t.title) + "}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def render(tables: Sequence[Table], fmt: str, header: str = "") -> str:
    """All tables in one document of format ``fmt``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps({"header": header, "tables": [asdict(t) for t in tables]}, indent=1,
                          default=str) + "\n"
    if fmt == "csv":
        return "\n".join(f"# {t.title}\n{to_csv(t)}" for t in tables)
    one = to_markdown if fmt == "markdown" else to_latex
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
            _write_text(p, to_csv(t) if fmt == "csv" else to_latex(t))
            paths.append(p)
        return paths
    p = out / f"profiling_tables.{EXT[fmt]}"
    _write_text(p, render(tables, fmt, header))
    return [p]


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


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
        p = out / f"{t.key}.png"
        png = io.BytesIO()
        fig.savefig(png, dpi=120, format="png")
        plt.close(fig)
        atomic_write(p, lambda f: f.write(png.getvalue()))
        paths.append(p)
    return paths
