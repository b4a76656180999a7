"""A table as data (title, columns, rows of cells, note) and its Markdown, CSV and LaTeX forms;
the charts beside the tables written as PNG.

The one renderer of the sweep report (:mod:`train.experiments.report`: the pivots, the list of
settings, results.csv, results.tex) and of the profiling tables (:mod:`profiling.report`).
Standard library and :mod:`edge.files` only (matplotlib when a figure is saved), no torch: the
torch-free report imports it, and so does ``profiling``.

A cell is any value (written with ``str``), or a :class:`Cell` when its LaTeX is not its text
escaped (math, bold).
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

from edge.files import atomic_write


@dataclass(frozen=True)
class Cell:
    """A cell whose LaTeX is given (e.g. ``{\\boldmath $65.1\\% \\pm 0.5\\%$}``) rather than
    escaped from its text (Markdown and CSV show the text)."""
    text: str
    latex: str

    def __str__(self) -> str:
        return self.text


@dataclass
class Table:
    key: str                  # the file name stem of its CSV / LaTeX file
    title: str
    columns: List[str]
    rows: List[List[Any]]
    note: str = ""            # a paragraph under the Markdown table

    def column(self, name: str) -> List[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


def markdown(t: Table, level: int = 3) -> str:
    """The title as a heading of ``level``, the table (a ``|`` inside a cell becomes ``/``), the
    note; ends with a newline."""
    lines = [f"{'#' * level} {t.title}", "", "| " + " | ".join(t.columns) + " |",
             "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in t.rows]
    if t.note:
        lines += ["", t.note]
    return "\n".join(lines) + "\n"


def csv_text(t: Table, lineterminator: str = "\n") -> str:
    """A header line of the columns, then one line per row (``None`` is an empty field)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator=lineterminator)
    w.writerow(t.columns)
    w.writerows(t.rows)
    return buf.getvalue()


_TEX = (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
        ("->", r"$\rightarrow$"), ("×", r"$\times$"), ("—", "--"), ("–", "--"), ("λ", r"$\lambda$"),
        ("≈", r"$\approx$"), ("±", r"$\pm$"))


def tex(s: Any) -> str:
    """Text for LaTeX: its special characters escaped, the symbols the tables use in math."""
    s = str(s)
    for a, b in _TEX:
        s = s.replace(a, b)
    return s


def latex(t: Table, booktabs: bool = False, caption: Optional[str] = None) -> str:
    """A ``table`` float. ``booktabs``: ``\\toprule``/``\\midrule``/``\\bottomrule``, the first
    column left-aligned and the others centred, like the paper's tables (needs
    ``\\usepackage{booktabs}``); else ``\\hline`` rules and ``\\small`` left-aligned columns.
    ``caption``: LaTeX as it is (default: the title, escaped). Ends with a newline."""
    top, mid, bottom = (r"\toprule", r"\midrule", r"\bottomrule") if booktabs else (r"\hline",) * 3
    align = "l" + "c" * (len(t.columns) - 1) if booktabs else "l" * len(t.columns)
    lines = [r"\begin{table}[t]", r"\centering"] + ([] if booktabs else [r"\small"])
    lines += [r"\begin{tabular}{" + align + "}", top, " & ".join(tex(c) for c in t.columns) + r" \\", mid]
    lines += [" & ".join(c.latex if isinstance(c, Cell) else tex(c) for c in r) + r" \\" for r in t.rows]
    lines += [bottom, r"\end{tabular}", r"\caption{" + (tex(t.title) if caption is None else caption) + "}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


def save_figure(fig, path, dpi: int) -> Path:
    """A matplotlib figure as a PNG at ``path``, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    png = io.BytesIO()
    fig.savefig(png, dpi=dpi, format="png")
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(png.getvalue()))
