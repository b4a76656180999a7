"""Aggregate sweep folders into the paper's tables and curves (``python -m train.sweep --report``).

Per setting (every configuration value except the seed and run bookkeeping): mean ± sample std
of the best test accuracy of each finished run (the paper's protocol: "max test accuracy", 5
runs) and of the last epoch's, the number of finished seeds, the difference to the CE baseline of
the same context with a Welch 95% confidence interval and p-value, and the paper's value where
one exists. Writes ``results.md``, ``results.csv``, ``results.tex`` and ``curves/*.png`` (mean
test accuracy per epoch with a ±1 std band, like the paper's Figs. 7-13). Folders that cannot be
read are listed, never fatal. Nothing here trains or imports torch.
"""
from __future__ import annotations

import csv
import json
import re
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from edge.cli_checks import write_text_output
from train.experiments.paper_results import PAPER, PaperValue, lookup
from train.experiments.stats import TTest, mean_std, paired, welch
from train.experiments.table import Cell, Table, csv_text, latex, markdown, save_figure, tex

#: run bookkeeping, not part of a setting
IGNORED = {"seed", "out", "resume", "overwrite", "device", "eval_batch_size", "data_root", "download", "preset"}
#: what defines the method inside a context (the CE baseline shares everything else)
METHOD_FIELDS = ("method", "knn", "lam", "kernel_d", "feature_layer", "qmi", "teacher", "temperature",
                 "kd_alpha", "peer_model")
KNN_METHODS = ("posd", "oskd")
#: settings added after runs were recorded, with the value the older runs ran with: a run that
#: holds this value and one that predates the key share a setting
LATER_KEYS = {"ce_reduction": "mean"}
RUN_FILES = ("config.json", "metrics.jsonl", "metrics.json", "state.pt")


@dataclass
class Run:
    path: Path
    config: Dict[str, Any]
    finished: bool
    best: Optional[float] = None
    final: Optional[float] = None
    curve: List[float] = field(default_factory=list)   # test accuracy per epoch
    note: str = ""


@dataclass
class Setting:
    context: Tuple                 # everything but the method fields
    method_key: Tuple
    runs: List[Run] = field(default_factory=list)

    @property
    def config(self) -> Dict[str, Any]:
        return self.runs[0].config

    @property
    def finished(self) -> List[Run]:
        return [r for r in self.runs if r.finished]


# ---------------------------------------------------------------------------------- reading
def collect(root: Path, skip: Sequence[Path] = ()) -> Tuple[List[Run], List[Tuple[Path, str]]]:
    """Every run folder under ``root``; returns (readable runs, [(folder, problem)])."""
    skip = [Path(s).resolve() for s in skip]
    folders = sorted({p.parent for name in RUN_FILES for p in Path(root).rglob(name)})
    runs, problems = [], []
    for folder in folders:
        if any(folder.resolve().is_relative_to(s) for s in skip):
            continue
        try:
            runs.append(read_run(folder))
        except ValueError as e:
            problems.append((folder, str(e)))
    return runs, problems


def read_run(folder: Path) -> Run:
    """One run folder; ValueError says why it cannot be used."""
    try:
        config = json.loads((folder / "config.json").read_text())["config"]
    except FileNotFoundError:
        raise ValueError("no config.json") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"unreadable config.json ({e.__class__.__name__})") from None
    curve, note = _read_curve(folder / "metrics.jsonl")
    summary_path = folder / "metrics.json"
    if not summary_path.is_file():
        return Run(folder, config, False, curve=curve, note=note or f"{len(curve)}/{config['epochs']} epochs")
    try:
        s = json.loads(summary_path.read_text())
        done, best, final = int(s["epochs_done"]), float(s["best_test_acc"]), float(s["final_test_acc"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"unreadable metrics.json ({e.__class__.__name__}: {e})") from None
    finished = done >= int(config["epochs"])
    return Run(folder, config, finished, best, final, curve[:done], note)


def _read_curve(path: Path) -> Tuple[List[float], str]:
    """Test accuracy per epoch from metrics.jsonl. A resumed run may repeat an epoch (killed
    between the log line and the state save): the last line of an epoch wins. A half-written
    last line is ignored; a bad line elsewhere makes the folder unusable."""
    if not path.is_file():
        return [], ""
    by_epoch: Dict[int, float] = {}
    lines = path.read_text().splitlines()
    note = ""
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            by_epoch[int(rec["epoch"])] = float(rec["test_acc"])
        except (ValueError, KeyError, TypeError):
            if i == len(lines) - 1:
                note = "half-written last line of metrics.jsonl ignored"
                continue
            raise ValueError(f"metrics.jsonl line {i + 1} is unreadable") from None
    return [by_epoch[e] for e in sorted(by_epoch)], note


# ---------------------------------------------------------------------------------- grouping
def _freeze(v: Any) -> Any:
    return tuple(_freeze(x) for x in v) if isinstance(v, list) else \
        tuple(sorted((k, _freeze(x)) for k, x in v.items())) if isinstance(v, dict) else v


def setting_keys(config: Dict[str, Any]) -> Tuple[Tuple, Tuple]:
    method = config["method"]
    relevant = set(METHOD_FIELDS) if method in KNN_METHODS else {"method", "teacher", "temperature",
                                                                  "kd_alpha", "peer_model"}
    mkey = tuple((k, _freeze(config.get(k))) for k in METHOD_FIELDS if k in relevant)
    ckey = tuple(sorted((k, _freeze(v)) for k, v in config.items()
                        if k not in IGNORED and k not in METHOD_FIELDS
                        and not (k in LATER_KEYS and v == LATER_KEYS[k])))
    return ckey, mkey


def group(runs: Sequence[Run]) -> List[Setting]:
    settings: Dict[Tuple, Setting] = OrderedDict()
    for r in runs:
        ckey, mkey = setting_keys(r.config)
        settings.setdefault((ckey, mkey), Setting(ckey, mkey)).runs.append(r)
    return sorted(settings.values(), key=lambda s: (s.context, _method_order(s.config)))


def _method_order(c: Dict[str, Any]) -> Tuple:
    order = {"ce": 0, "posd": 1, "oskd": 2, "kd": 3, "dml": 4}
    return (order.get(c["method"], 9), c["method"], c.get("knn") or 0, -(c.get("lam") or 0))


def method_label(c: Dict[str, Any], show_lam: bool = False) -> str:
    m = c["method"]
    if m == "ce":
        return "W/o distillation (CE)"
    if m in KNN_METHODS:
        label = f"{m.upper()}-{c['knn']}NN"
        if c.get("qmi"):
            label += " (QMI)"
        if show_lam or c.get("lam") is not None:
            label += f" λ={c['lam']:g}" if c.get("lam") is not None else " λ=default"
        return label
    return m.upper()


# ---------------------------------------------------------------------------------- rows
@dataclass
class ResultRow:
    """One setting of the report (one line of results.csv): what ran, how many seeds finished,
    the accuracies in %, the tests against the CE baseline of the same data, model and recipe,
    and the paper's figure for the setting."""
    dataset: str
    model: str
    batch_size: int
    epochs: int
    method: str                   # the label, e.g. "POSD-4NN"
    method_name: str              # the loss's registry name, e.g. "posd"
    knn: Optional[int]            # for the methods that take k, else None
    lam: Optional[float]
    finished: int
    runs: int
    seeds: List[int]              # of the finished runs
    best_mean: Optional[float]    # None: no finished run
    best_std: Optional[float]
    last_mean: Optional[float]
    last_std: Optional[float]
    vs_ce: Optional[TTest]        # Welch, best accuracy against CE's
    paired: Optional[TTest]       # the same, paired by seed
    paper_mean: Optional[float]   # None: the paper has no figure for the setting
    paper_std: Optional[float]
    paper_table: Optional[str]
    optimizer: Optional[str]
    lr: Optional[float]


def rows(settings: Sequence[Setting]) -> List[ResultRow]:
    baselines = {s.context: s for s in settings if s.config["method"] == "ce"}
    out = []
    for s in settings:
        c, fin = s.config, s.finished
        best = [100 * r.best for r in fin]
        last = [100 * r.final for r in fin]
        knn = c.get("knn") if c["method"] in KNN_METHODS else None
        vs_ce = paired_test = None
        base = baselines.get(s.context)
        if base is not None and base is not s:
            vs_ce = welch(best, [100 * r.best for r in base.finished])
            mine = {r.config["seed"]: 100 * r.best for r in fin}
            theirs = {r.config["seed"]: 100 * r.best for r in base.finished}
            common = sorted(set(mine) & set(theirs))
            paired_test = paired([mine[k] for k in common], [theirs[k] for k in common])
        best_mean, best_std = mean_std(best) if best else (None, None)
        last_mean, last_std = mean_std(last) if last else (None, None)
        paper = lookup(_data_name(c), c["model"], c["batch_size"], c["method"], knn, c.get("lam"))
        out.append(ResultRow(
            dataset=_data_name(c), model=c["model"], batch_size=c["batch_size"], epochs=c["epochs"],
            method=method_label(c), method_name=c["method"], knn=knn, lam=c.get("lam"), finished=len(fin),
            runs=len(s.runs), seeds=sorted(int(r.config["seed"]) for r in fin),
            best_mean=best_mean, best_std=best_std, last_mean=last_mean, last_std=last_std,
            vs_ce=vs_ce, paired=paired_test, paper_mean=None if paper is None else paper.mean,
            paper_std=None if paper is None else paper.std, paper_table=None if paper is None else paper.table,
            optimizer=c.get("optimizer"), lr=c.get("lr")))
    return out


def _data_name(c: Dict[str, Any]) -> str:
    return Path(c["data"]).name if c.get("data") else c["dataset"]


def _pm(m: Optional[float], s: Optional[float], digits: int = 2) -> str:
    return "–" if m is None else f"{m:.{digits}f} ± {s:.{digits}f}"


def _delta(d: Optional[TTest]) -> str:
    return "–" if d is None else f"{d.diff:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}]"


def _p(d: Optional[TTest]) -> str:
    return "–" if d is None else f"{d.p:.3f}"


def _paper(r: ResultRow) -> str:
    if r.paper_mean is None:
        return "–"
    val = f"{r.paper_mean:.2f}" + (f" ± {r.paper_std:.2f}" if r.paper_std is not None else "")
    return f"{val} ({r.paper_table})"


def _gap(r: ResultRow) -> str:
    return "–" if r.paper_mean is None or r.best_mean is None else f"{r.best_mean - r.paper_mean:+.2f}"


# ---------------------------------------------------------------------------------- tables
LONG_COLUMNS = ("dataset", "model", "batch", "epochs", "method", "seeds", "best acc % (mean ± std)",
                "last-epoch acc %", "Δ best vs CE, pp [95% CI]", "p (Welch)", "paired Δ (same seeds) [95% CI]",
                "p (paired)", "paper (best)", "ours − paper")

#: data the paper did not use, and what its figures were measured on instead
STAND_INS = {"crowd_synth": ("synthetic crowd_synth data", "the real Crowd-drone set")}
#: the recipe behind each table's figures (the presets of train.config)
PAPER_RECIPES = {"Table 1": "lightweight", "Table 2": "lightweight", "Table 3": "lightweight",
                 "Table 4": "lightweight", "Table 5": "lightweight", "Table 6": "crowd",
                 "Table 7": "wrn", "Table 8": "resnet", "Table 9": "resnet", "text, Tables 8-9": "resnet",
                 "Table 10": "wrn_28_10", "Table 11": "wrn_28_10", "Table 12": "wrn_20_8",
                 "Table 13": "wrn_20_8"}


def _recipe(optimizer: Optional[str], lr: Optional[float], epochs: Optional[int]) -> str:
    opt = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}.get(optimizer or "", optimizer or "optimiser not recorded")
    return opt + (f" lr {lr:g}" if lr is not None else "") + (f", {epochs} epochs" if epochs else "")


def _paper_recipe(table: str) -> Tuple[Optional[str], Optional[float], Optional[int]]:
    from train.config import PRESETS

    preset = PRESETS.get(PAPER_RECIPES.get(table, ""), {})
    return preset.get("optimizer"), preset.get("lr"), preset.get("epochs")


@dataclass
class Comparison:
    """What one "ours − paper" figure compares: our data and recipe against the paper's."""
    dataset: str
    ours_data: str
    paper_data: str
    ours: str                     # the recipe, e.g. "Adam lr 0.001, 30 epochs"
    paper: str
    like_for_like: bool           # the same data and the recipe of the paper's table
    tables: List[str] = field(default_factory=list)


def comparisons(table_rows: Sequence[ResultRow]) -> List[Comparison]:
    """What each "ours − paper" figure compares: per dataset with paper figures, our data and
    recipe, the paper's, and whether they are the same (like for like)."""
    out: "OrderedDict[Tuple, Comparison]" = OrderedDict()
    for r in table_rows:
        if r.paper_table is None:
            continue
        ours_data, paper_data = STAND_INS.get(r.dataset, (r.dataset, r.dataset))
        table = r.paper_table
        ours = (r.optimizer, r.lr, r.epochs)
        theirs = _paper_recipe(table)
        key = (r.dataset, r.model, ours, table if theirs == (None, None, None) else theirs)
        entry = out.setdefault(key, Comparison(r.dataset, ours_data, paper_data, _recipe(*ours), _recipe(*theirs),
                                               ours_data == paper_data and ours == theirs))
        if table not in entry.tables:
            entry.tables.append(table)
    return list(out.values())


def gap_heading(table_rows: Sequence[ResultRow]) -> str:
    """The heading of the "ours − paper" column: what is set against what, and if it is fair."""
    parts = []
    for c in comparisons(table_rows):
        verdict = "like for like" if c.like_for_like else "NOT like for like"
        parts.append(f"ours on {c.ours_data}, {c.ours} − paper on {c.paper_data}, "
                     f"{c.paper} ({', '.join(c.tables)}): {verdict}")
    return "ours − paper, pp" + (" (" + "; ".join(parts) + ")" if parts else "")


def long_cells(r: ResultRow) -> List[str]:
    return [r.dataset, r.model, str(r.batch_size), str(r.epochs), r.method, f"{r.finished}/{r.runs}",
            _pm(r.best_mean, r.best_std), _pm(r.last_mean, r.last_std), _delta(r.vs_ce), _p(r.vs_ce),
            _delta(r.paired), _p(r.paired), _paper(r), _gap(r)]


@dataclass
class Pivot:
    """One table of the paper's layout: methods down, datasets across."""
    title: str
    datasets: List[str] = field(default_factory=list)
    methods: List[str] = field(default_factory=list)
    cells: Dict[Tuple[str, str], ResultRow] = field(default_factory=dict)   # (method, dataset) -> row

    def best_per_column(self) -> Dict[str, str]:
        """dataset -> the method with the highest mean best accuracy."""
        best = {}
        for d in self.datasets:
            cands = [(r.best_mean, m) for (m, dd), r in self.cells.items() if dd == d and r.best_mean is not None]
            if cands:
                best[d] = max(cands)[1]
        return best

    def table(self) -> Table:
        """The best mean per column in bold; the LaTeX cells in math mode without the run counts."""
        bold = self.best_per_column()
        body = []
        for m in self.methods:
            cells: List[Any] = [m]
            for d in self.datasets:
                r = self.cells.get((m, d))
                text = "–" if r is None else _pm(r.best_mean, r.best_std) + f" (n={r.finished})"
                tx = "--" if r is None or r.best_mean is None else \
                    f"${r.best_mean:.2f}\\% \\pm {r.best_std:.2f}\\%$"
                if bold.get(d) == m:
                    text, tx = f"**{text}**", f"{{\\boldmath {tx}}}"
                cells.append(Cell(text, tx))
            body.append(cells)
        return Table(_slug(self.title), self.title, ["Method"] + self.datasets, body)


def pivots(table_rows: Sequence[ResultRow]) -> List[Pivot]:
    """The paper's layout: per (model, batch, epochs, recipe) a table, methods down, datasets across."""
    out: "OrderedDict[str, Pivot]" = OrderedDict()
    for r in table_rows:
        title = f"{r.model}, batch {r.batch_size}, {r.epochs} epochs"
        if r.optimizer:
            title += f", {_recipe(r.optimizer, r.lr, None)}"
        t = out.setdefault(title, Pivot(title))
        if r.dataset not in t.datasets:
            t.datasets.append(r.dataset)
        if r.method not in t.methods:
            t.methods.append(r.method)
        t.cells[(r.method, r.dataset)] = r
    return list(out.values())


def pivot_tables(table_rows: Sequence[ResultRow]) -> List[Table]:
    return [p.table() for p in pivots(table_rows)]


def latex_document(tables: Sequence[Table]) -> str:
    """results.tex: the pivots as booktabs tables like the paper's."""
    return "\n".join(["% generated by python -m train.sweep --report; needs \\usepackage{booktabs}"]
                     + [latex(t, booktabs=True, caption="Test accuracy (mean $\\pm$ std of the best epoch "
                                                        f"over runs), {tex(t.title)}") for t in tables])


CSV_COLUMNS = ("dataset", "model", "batch_size", "epochs", "method", "method_name", "knn", "lam", "finished",
               "runs", "seeds", "best_mean", "best_std", "last_mean", "last_std", "delta_vs_ce", "ci95_lo",
               "ci95_hi", "p_welch", "paired_delta", "paired_lo", "paired_hi", "p_paired", "paper_mean",
               "paper_std", "paper_table", "optimizer", "lr")


def csv_table(table_rows: Sequence[ResultRow]) -> Table:
    """results.csv: one line per setting, the statistics to 4 decimals (``None``: empty)."""
    body = [[r.dataset, r.model, r.batch_size, r.epochs, r.method, r.method_name, r.knn, r.lam, r.finished,
             r.runs, " ".join(map(str, r.seeds)), _num(r.best_mean), _num(r.best_std), _num(r.last_mean),
             _num(r.last_std), *_test_cells(r.vs_ce), *_test_cells(r.paired), r.paper_mean, r.paper_std,
             r.paper_table, r.optimizer, None if r.lr is None else repr(float(r.lr))] for r in table_rows]
    return Table("results", "Results", list(CSV_COLUMNS), body)


def _num(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.4f}"


def _test_cells(t: Optional[TTest]) -> List[str]:
    return ["", "", "", ""] if t is None else [_num(t.diff), _num(t.lo), _num(t.hi), _num(t.p)]


def read_csv(path: Path) -> List[ResultRow]:
    """The rows of a results.csv written by :func:`write_files`, to render the report again when
    the run folders are gone (figures as rounded in the file). ValueError names what is missing."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        table = list(reader)
        fields = reader.fieldnames          # read while the file is open (None: an empty file)
    if not fields:
        raise ValueError(f"{path} is empty, not a results.csv")
    missing = [c for c in CSV_COLUMNS if c not in fields]
    if missing:
        raise ValueError(f"{path} lacks the column(s) {', '.join(missing)} (a results.csv from before "
                         "they were written? render it from the run folders)")

    def num(v: str) -> Optional[float]:
        return None if v == "" else float(v)

    def stat(d: Dict[str, str], diff: str, lo: str, hi: str, pv: str) -> Optional[TTest]:
        return None if d[diff] == "" else TTest(float(d[diff]), float(d[lo]), float(d[hi]), float(d[pv]))

    return [ResultRow(
        dataset=d["dataset"], model=d["model"], batch_size=int(d["batch_size"]), epochs=int(d["epochs"]),
        method=d["method"], method_name=d["method_name"], knn=None if d["knn"] == "" else int(d["knn"]),
        lam=num(d["lam"]), finished=int(d["finished"]), runs=int(d["runs"]),
        seeds=[int(v) for v in d["seeds"].split()], best_mean=num(d["best_mean"]), best_std=num(d["best_std"]),
        last_mean=num(d["last_mean"]), last_std=num(d["last_std"]),
        vs_ce=stat(d, "delta_vs_ce", "ci95_lo", "ci95_hi", "p_welch"),
        paired=stat(d, "paired_delta", "paired_lo", "paired_hi", "p_paired"),
        paper_mean=num(d["paper_mean"]) if d["paper_table"] else None,
        paper_std=num(d["paper_std"]) if d["paper_table"] else None, paper_table=d["paper_table"] or None,
        optimizer=d["optimizer"] or None, lr=num(d["lr"])) for d in table]


def write_report_from_csv(csv_path: Path, out_dir: Path, commands: Sequence[str] = (), title: str = "Results",
                          regenerate: Sequence[str] = (), note: str = "") -> Written:
    """:func:`write_report` from a results.csv instead of run folders: the same tables and text,
    with the curves already in ``out_dir/curves`` (they need the runs to be drawn again)."""
    out_dir = Path(out_dir)
    table_rows = read_csv(Path(csv_path))
    found = {p.stem: p for p in (out_dir / "curves").glob("*.png")}
    order = [_slug(f"{r.dataset}-{r.model}-b{r.batch_size}-e{r.epochs}") for r in table_rows]
    curves = [found.pop(stem) for stem in dict.fromkeys(order) if stem in found] + sorted(found.values())
    md = render_markdown(table_rows, [], [], curves, out_dir, commands, title, regenerate, note,
                         source=f"`{Path(csv_path).name}`, the run folders' figures as it records them")
    return write_files(out_dir, md, table_rows, curves, settings=len(table_rows),
                       runs=sum(r.runs for r in table_rows), finished=sum(r.finished for r in table_rows),
                       problems=[])


# ---------------------------------------------------------------------------------- curves
def plot_curves(settings: Sequence[Setting], out_dir: Path) -> List[Path]:
    """One PNG per context: mean test accuracy per epoch of each method, ±1 std band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_context: Dict[Tuple, List[Setting]] = defaultdict(list)
    for s in settings:
        if any(r.curve for r in s.finished):
            by_context[s.context].append(s)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ctx, group_ in by_context.items():
        c = group_[0].config
        title = f"{_data_name(c)}, {c['model']}, batch {c['batch_size']}"
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for s in group_:
            curves = [r.curve for r in s.finished if r.curve]
            n = min(len(cv) for cv in curves)
            stats = [mean_std([100 * cv[e] for cv in curves]) for e in range(n)]
            xs = list(range(1, n + 1))
            mu = [m for m, _ in stats]
            sd = [v for _, v in stats]
            line, = ax.plot(xs, mu, label=f"{method_label(s.config)} (n={len(curves)})", lw=1.4)
            ax.fill_between(xs, [m - v for m, v in zip(mu, sd)], [m + v for m, v in zip(mu, sd)],
                            color=line.get_color(), alpha=0.15, lw=0)
        ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{title}: mean ± 1 std over seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / (_slug(f"{_data_name(c)}-{c['model']}-b{c['batch_size']}-e{c['epochs']}") + ".png")
        if path in paths:
            path = path.with_name(f"{path.stem}-{len(paths)}.png")
        paths.append(save_figure(fig, path, dpi=110))
    return paths


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)


# ---------------------------------------------------------------------------------- document
def conclusions(table_rows: Sequence[ResultRow]) -> List[str]:
    """One sentence per distillation setting against its CE baseline, from the numbers above."""
    lines = []
    above = below = welch_sig = paired_sig = 0
    for r in table_rows:
        d, pr = r.vs_ce, r.paired
        if r.method_name == "ce" or d is None:
            continue
        if abs(d.diff) < 0.005:
            where = "the same mean as CE"
        else:
            where = "above CE" if d.diff > 0 else "below CE"
            above, below = above + (d.diff > 0), below + (d.diff < 0)
        welch_sig += d.p < 0.05
        text = (f"- {r.method} on {r.dataset} ({r.model}, batch {r.batch_size}, {r.epochs} epochs): "
                f"{d.diff:+.2f} pp, {where}; Welch 95% CI [{d.lo:+.2f}, {d.hi:+.2f}], p = {d.p:.3f}{_sig(d.p)}")
        if pr is not None:
            paired_sig += pr.p < 0.05
            text += f"; paired by seed [{pr.lo:+.2f}, {pr.hi:+.2f}], p = {pr.p:.3f}{_sig(pr.p)}"
        lines.append(text + ".")
    if lines:
        lines.insert(0, f"{len(lines)} distillation settings against their CE baseline: {above} above, {below} below, "
                        f"{len(lines) - above - below} equal (mean best accuracy). Significant at 5%: {welch_sig} by "
                        f"Welch's test, {paired_sig} by the paired test (each test on its own, no correction for "
                        f"the {len(lines)} comparisons).")
        lines.insert(1, "")
    return lines


def _paper_posd_gains(dataset: str, model: str) -> Tuple[List[float], str]:
    """The paper's POSD − CE differences (pp) for this data and model, or, where it has none,
    those of its lightweight-net tables (Tables 2-4); and where they come from."""
    def gains(values: Sequence[PaperValue]) -> List[Tuple[str, float]]:
        ce = {(v.table, v.dataset): v.mean for v in values if v.method == "ce"}
        return [(v.table, v.mean - ce[(v.table, v.dataset)]) for v in values
                if v.method == "posd" and (v.table, v.dataset) in ce]

    own = gains([v for v in PAPER if (v.dataset, v.model) == (dataset, model)])
    if own:
        where = ", ".join(sorted({t for t, _ in own}))
        if dataset in STAND_INS:
            where += f", on {STAND_INS[dataset][1]}"
        return [g for _, g in own], where
    light = [v for v in PAPER if v.table in ("Table 2", "Table 3", "Table 4")]
    names = {"cifar10": "CIFAR-10", "svhn": "SVHN", "fashion_mnist": "Fashion-MNIST"}
    data = ", ".join(names.get(d, d) for d in dict.fromkeys(v.dataset for v in light))
    return [g for _, g in gains(light)], f"Tables 2-4, on {data}; the paper has no {dataset} figures"


def direction(table_rows: Sequence[ResultRow]) -> List[str]:
    """Per data set and recipe: does POSD beat CE, as the paper reports it does in every one of
    its settings? A plain verdict with the effect sizes, from the paired (same-seed) differences."""
    lines = []
    contexts: "OrderedDict[Tuple, List[ResultRow]]" = OrderedDict()
    for r in table_rows:
        if r.method_name in KNN_METHODS and r.paired is not None:
            key = (r.dataset, r.model, r.batch_size, r.epochs, r.optimizer, r.lr)
            contexts.setdefault(key, []).append(r)
    for (dataset, model, batch, epochs, opt, lr), group_ in contexts.items():
        posd = [r for r in group_ if r.method_name == "posd"]
        if not posd:
            continue
        diffs = [r.paired.diff for r in posd]
        up = sum(r.paired.lo > 0 for r in posd)
        down = sum(r.paired.hi < 0 for r in posd)
        if up == len(posd):
            verdict = "**Yes**"
        elif up == 0:
            verdict = "**No**"
        else:
            verdict = "**Not clearly**"
        gains, where = _paper_posd_gains(dataset, model)
        paper = (f"the paper reports POSD above CE in every setting, by {min(gains):+.2f} to "
                 f"{max(gains):+.2f} pp ({where})")
        text = (f"- {dataset}, {model}, batch {batch}, {_recipe(opt, lr, epochs)}: {verdict}. POSD is above "
                f"CE in {sum(d > 0 for d in diffs)} of {len(posd)} settings, significantly (paired 95% CI "
                f"above 0, uncorrected) in {up}, significantly below in {down}; the differences are "
                f"{min(diffs):+.2f} to {max(diffs):+.2f} pp (paired, mean of same-seed differences), "
                f"where {paper}.")
        oskd = [r for r in group_ if r.method_name == "oskd"]
        if oskd:
            od = [r.paired.diff for r in oskd]
            text += (f" OSKD (not in the POSD paper): {min(od):+.2f} to {max(od):+.2f} pp, significantly "
                     f"above CE in {sum(r.paired.lo > 0 for r in oskd)} of {len(oskd)}.")
        lines.append(text)
    return lines


def _sig(p: float) -> str:
    return " (significant at 5%)" if p < 0.05 else " (not significant)"


def render_markdown(table_rows: Sequence[ResultRow], settings: Sequence[Setting],
                    problems: Sequence[Tuple[Path, str]], curves: Sequence[Path], out_dir: Path,
                    commands: Sequence[str], title: str, regenerate: Sequence[str], note: str = "",
                    source: str = "the run folders") -> str:
    unfinished = [(r.path, r.note) for s in settings for r in s.runs if not r.finished]
    md = [f"# {title}", "",
          f"Generated by `python -m train.sweep --report` from {source}; do not edit by hand.",
          "Accuracy: for each run the best test accuracy over its epochs (the paper's protocol) and the "
          "last epoch's; mean ± sample std over the finished seeds. Δ vs CE: difference of the mean best "
          "accuracy to the CE run of the same data, model and recipe, with Welch's 95% confidence "
          "interval and two-sided p-value. Paired Δ: the mean of the per-seed differences (a seed fixes "
          "the initial weights, batch order and augmentation, so same-seed runs differ only by the "
          "method), with a paired-t 95% interval.", ""]
    if note:
        md += [note, ""]
    if commands:
        md += ["## Commands", "", "```"] + list(commands) + ["```", ""]
    md += ["## Results (paper layout: best test accuracy %, best per column in bold)", ""]
    md += [markdown(t) for t in pivot_tables(table_rows)]
    header = list(LONG_COLUMNS[:-1]) + [gap_heading(table_rows)]
    md += [markdown(Table("settings", "All settings", header, [long_cells(r) for r in table_rows]), level=2)]
    verdicts = direction(table_rows)
    if verdicts:
        md += ["## Does it reproduce the paper's direction?", ""] + verdicts + [""]
    said = conclusions(table_rows)
    if said:
        md += ["## What the numbers say", ""] + said + [""]
    if curves:
        md += ["## Test accuracy per epoch (mean ± 1 std over seeds)", ""]
        md += [f"![{p.stem}]({p.relative_to(out_dir).as_posix()})" for p in curves] + [""]
    if any(r.paper_table for r in table_rows):
        md += ["Paper values: POSD paper, the table named beside each; `crowd_synth` is a synthetic "
               "stand-in, so its paper column (Table 6) is the real Crowd-drone set's.", ""]
    if unfinished or problems:
        md += ["## Not included", ""]
        md += [f"- `{p}`: unfinished ({note})" for p, note in unfinished]
        md += [f"- `{p}`: skipped, {why}" for p, why in problems]
        md += [""]
    if regenerate:
        md += ["## Regenerating the paper's tables (GPU)", "", "```"] + list(regenerate) + ["```", ""]
    return "\n".join(md)


@dataclass
class Written:
    """What a report wrote, and from how much."""
    markdown: Path
    csv: Path
    latex: Path
    curves: List[Path]
    settings: int
    runs: int                     # run folders read (or, from a CSV, the runs it counts)
    finished: int
    problems: List[Tuple[Path, str]]   # folders left out, and why


def write_files(out_dir: Path, md: str, table_rows: Sequence[ResultRow], curves: List[Path], settings: int,
                runs: int, finished: int, problems: List[Tuple[Path, str]]) -> Written:
    """results.md (``md``), results.csv and results.tex, each written atomically."""
    written = Written(out_dir / "results.md", out_dir / "results.csv", out_dir / "results.tex", curves,
                      settings, runs, finished, problems)
    write_text_output(written.markdown, md)
    # the csv module's own line ends (RFC 4180), as results.csv has always had
    write_text_output(written.csv, csv_text(csv_table(table_rows), lineterminator="\r\n"))
    write_text_output(written.latex, latex_document(pivot_tables(table_rows)))
    return written


def write_report(root: Path, out_dir: Path, commands: Sequence[str] = (), title: str = "Results",
                 regenerate: Sequence[str] = (), note: str = "") -> Written:
    """Aggregate ``root`` into ``out_dir``; returns paths and counts (and the problems found)."""
    out_dir = Path(out_dir)
    runs, problems = collect(root, skip=[out_dir])
    if not runs and not problems:
        raise ValueError(f"no run folders under {root}: nothing to report (is --out the "
                         "sweep's folder?)")
    settings = group(runs)
    table_rows = rows(settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    curves = plot_curves(settings, out_dir / "curves")
    md = render_markdown(table_rows, settings, problems, curves, out_dir, commands, title, regenerate, note)
    return write_files(out_dir, md, table_rows, curves, settings=len(settings), runs=len(runs),
                       finished=sum(len(s.finished) for s in settings), problems=problems)
