"""``python -m train.sweep``: multi-seed grids of ``python -m train`` runs, and their report.

    python -m train.sweep --preset table3 --out runs/table3 --download      # Table 3: CE + POSD 2/4/8/10NN, 5 seeds
    python -m train.sweep --dataset crowd_synth --model crowd_fcn --methods ce posd oskd --knn 2 4 \\
        --seeds 5 --epochs 30 --jobs 2 --out runs/crowd
    python -m train.sweep --out runs/table3 --report                         # tables + curves of what has finished
    python -m train.sweep --preset table3 --shard 3/8 --out /shared/runs/table3   # machine 3 of 8 (1-based)
    python -m train.sweep --preset table3 --out runs/table3 --dry-run        # list the jobs and their state
    python -m train.sweep --preset offline --out runs/offline --jobs 2       # what docs/results.md shows
    python -m train.sweep --out runs/offline --report --report-dir docs --title "Results (offline)"
    python -m train.sweep --report --from-csv docs/results.csv --report-dir docs   # again, runs gone

Every run is an ordinary ``python -m train`` run in ``OUT/<setting>/s<seed>``; rerunning a sweep
skips finished runs and resumes interrupted ones (or ones asked for more ``--epochs``). Grid
flags given with ``--preset`` replace the preset's values. ``--report`` never trains; it reads
whatever folders exist (all shards, finished or not) and writes ``OUT/report/`` (or
``--report-dir``): results.md, results.csv, results.tex, curves/*.png.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

from edge.cli_checks import OneLineParser, fail
from train.cli_checks import check_int, check_output_dir, describe_os_error
from train.experiments.grid import Grid, expand, parse_shard, shard
from train.experiments.presets import PRESETS

MANIFEST = ".sweep"
PROG = "python -m train.sweep"


def build_parser() -> argparse.ArgumentParser:
    from train.data import list_datasets
    from train.losses import list_losses
    from train.models import list_models

    p = OneLineParser(prog=PROG, description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_preset_help())
    p.add_argument("--out", metavar="DIR", default=None,
                   help="root folder of the sweep's runs (required, except for --report --from-csv)")
    g = p.add_argument_group("grid (with --preset: replaces the preset's value)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None, help="the paper's settings (see below)")
    g.add_argument("--dataset", nargs="+", choices=list_datasets(), default=None)
    g.add_argument("--model", nargs="+", choices=list_models(), default=None,
                   help="every model is run on every --dataset")
    g.add_argument("--pairs", nargs="+", metavar="DATASET:MODEL", default=None,
                   help="dataset/model pairs instead of the --dataset x --model product")
    g.add_argument("--methods", nargs="+", default=None, help=f"of: {', '.join(list_losses())}")
    g.add_argument("--knn", nargs="+", type=int, default=None, help="POSD/OSKD neighbours (paper: 2 4 8 10)")
    g.add_argument("--lam", "--lambda", dest="lam", nargs="+", type=float, default=None,
                   help="POSD/OSKD weights (default: the method's)")
    g.add_argument("--batch-size", nargs="+", type=int, default=None)
    g.add_argument("--seeds", type=int, default=None, metavar="N", help="seeds 0..N-1 (paper: 5)")
    g.add_argument("--seed-list", nargs="+", type=int, default=None, metavar="S", help="these seeds instead")
    g.add_argument("--epochs", type=int, default=None)
    g.add_argument("--teacher", default=None, metavar="PATH",
                   help="KD teacher checkpoint; may use {dataset}, {model}, {seed}")
    g.add_argument("--train-args", default=None, metavar="FLAGS",
                   help="extra `python -m train` flags for every run, e.g. \"--device cuda --amp\"")
    g = p.add_argument_group("running")
    g.add_argument("--jobs", type=int, default=1, help="runs at once on this machine (1: in this process)")
    g.add_argument("--gpus", nargs="+", default=None, metavar="ID",
                   help="spread the --jobs slots over these CUDA devices (CUDA_VISIBLE_DEVICES)")
    g.add_argument("--shard", default=None, metavar="I/N", help="run only shard I of N (1-based)")
    g.add_argument("--download", action="store_true", help="fetch torchvision datasets once before running")
    g.add_argument("--redo-broken", action="store_true",
                   help="rerun (--overwrite) folders whose results cannot be continued, instead of skipping them")
    g.add_argument("--break-locks", action="store_true",
                   help="take over run folders locked by another machine (a crashed or unplugged one: make "
                        "sure nothing trains there); locks of live processes on this machine always hold")
    g.add_argument("--dry-run", action="store_true", help="list the jobs and the state of their folders")
    g = p.add_argument_group("report")
    g.add_argument("--report", action="store_true", help="aggregate OUT into tables and curves; trains nothing")
    g.add_argument("--report-dir", default=None, metavar="DIR", help="where the report goes (default OUT/report)")
    g.add_argument("--title", default="Results", help="report title")
    g.add_argument("--note", default="", help="a paragraph under the title (provenance, caveats)")
    g.add_argument("--from-csv", default=None, metavar="CSV",
                   help="render the report again from a results.csv it wrote (when the run folders are "
                        "gone); curves already in --report-dir/curves are kept")
    g.add_argument("--command", action="append", default=None, metavar="TEXT",
                   help="a command to list in the report (repeatable; default: the commands the sweep "
                        "recorded in OUT)")
    return p


def _preset_help() -> str:
    lines = ["presets:"]
    for name, p in PRESETS.items():
        lines.append(f"  {name:8s} {p['table'] or '':9s} {p['about']}")
    return "\n".join(lines)


def _check_args(args: argparse.Namespace) -> None:
    """The sweep's own flags (each run's flags are checked by `python -m train`'s rules)."""
    check_int("--jobs", args.jobs, 1)
    check_int("--seeds", args.seeds, 1)
    check_int("--epochs", args.epochs, 1)
    if not str(args.out).strip():
        raise ValueError("--out is empty; give the sweep's folder")
    if not args.dry_run:
        check_output_dir(args.out, "--out")


def grid_from_args(args: argparse.Namespace) -> Grid:
    base = dict(PRESETS[args.preset]) if args.preset else {}
    if args.pairs:
        pairs = tuple(tuple(_pair(s)) for s in args.pairs)
    elif args.dataset or args.model:
        datasets = args.dataset or [d for d, _ in base.get("pairs", ())]
        models = args.model or sorted({m for _, m in base.get("pairs", ())})
        if not datasets or not models:
            raise ValueError("give both --dataset and --model (or --pairs, or a --preset)")
        pairs = tuple((d, m) for d in datasets for m in models)
    elif "pairs" in base:
        pairs = base["pairs"]
    else:
        raise ValueError("nothing to sweep: give --preset, or --dataset and --model, or --pairs")
    methods = tuple(args.methods or base.get("methods", ("ce",)))
    from train.losses import list_losses

    missing = [m for m in methods if m not in list_losses()]
    if missing:
        raise ValueError(f"method(s) {', '.join(missing)} not registered; available: {', '.join(list_losses())}")
    seeds = tuple(args.seed_list) if args.seed_list else tuple(range(args.seeds or base.get("seeds", 1)))
    train_args = tuple(base.get("train_args", ())) + tuple(shlex.split(args.train_args or ""))
    return Grid(pairs=pairs, methods=methods,
                knn=tuple(args.knn or base.get("knn", (2,))), lam=tuple(args.lam or base.get("lam", (None,))),
                batch_size=tuple(args.batch_size or base.get("batch_size", (None,))), seeds=seeds,
                epochs=args.epochs or base.get("epochs"), train_args=train_args, teacher=args.teacher)


def _pair(text: str) -> List[str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pairs takes DATASET:MODEL, got {text!r}")
    return parts


def regenerate_commands() -> List[str]:
    """The commands that rebuild each paper table on a GPU machine (from the presets)."""
    out = []
    for name, p in PRESETS.items():
        if p["table"]:
            out.append(f"python -m train.sweep --preset {name} --out runs/{name} --download "
                       f"--train-args \"--device cuda\"   # {p['table']}: {p['about']}")
    out.append("python -m train.sweep --out runs/table3 --report   # then, per table: the report")
    return out


def report(args: argparse.Namespace) -> int:
    from train.experiments.report import write_report, write_report_from_csv

    if args.from_csv:
        if not args.report_dir:
            return fail(PROG, "--from-csv needs --report-dir")
        report_dir = Path(args.report_dir)
        try:
            check_output_dir(report_dir, "--report-dir")
            res = write_report_from_csv(Path(args.from_csv), report_dir, commands=args.command or (),
                                        title=args.title, regenerate=regenerate_commands(), note=args.note)
        except OSError as e:
            return fail(PROG, f"--from-csv: cannot read {args.from_csv} ({e.strerror})"
                        if e.filename == args.from_csv else describe_os_error(e))
        except (ValueError, KeyError) as e:
            return fail(PROG, f"--from-csv: {e}")
    else:
        out = Path(args.out)
        if not out.is_dir():
            return fail(PROG, f"no sweep folder {out}")
        report_dir = Path(args.report_dir or out / "report")
        try:
            check_output_dir(report_dir, "--report-dir" if args.report_dir else "--out")
            res = write_report(out, report_dir, commands=args.command or _commands(out), title=args.title,
                               regenerate=regenerate_commands(), note=args.note)
        except ValueError as e:
            return fail(PROG, str(e))
        except OSError as e:              # a full disk
            return fail(PROG, describe_os_error(e))
    print(f"{res.runs} runs{' (as recorded in the CSV)' if args.from_csv else ' folders'}, "
          f"{res.finished} finished, {res.settings} settings -> "
          f"{res.markdown}, {res.csv}, {res.latex}, {len(res.curves)} curve PNGs")
    for path, why in res.problems:
        print(f"skipped {path}: {why}", file=sys.stderr)
    return 0


def _commands(out: Path) -> List[str]:
    path = out / MANIFEST / "commands.jsonl"
    seen: List[str] = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                cmd = json.loads(line)["command"]
            except (ValueError, KeyError, TypeError):
                continue
            if cmd not in seen:
                seen.append(cmd)
    return seen


def _record_command(out: Path, argv: Sequence[str]) -> None:
    (out / MANIFEST).mkdir(parents=True, exist_ok=True)
    cmd = "python -m train.sweep " + " ".join(shlex.quote(a) for a in argv)
    with open(out / MANIFEST / "commands.jsonl", "a") as f:
        f.write(json.dumps({"command": cmd, "time": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
    from train.experiments import runner

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None and not (args.report and args.from_csv):
        parser.error("--out is required (except for --report --from-csv)")
    if args.report:
        return report(args)
    try:
        _check_args(args)
        jobs = expand(grid_from_args(args))
        if args.shard:
            jobs = shard(jobs, *parse_shard(args.shard))
        planned = runner.plan(jobs, Path(args.out), redo_broken=args.redo_broken,
                              break_locks=args.break_locks)
    except ValueError as e:
        return fail(PROG, str(e))
    counts = {}
    for p in planned:
        counts[p.status] = counts.get(p.status, 0) + 1
    print(f"{len(planned)} runs" + (f" (shard {args.shard})" if args.shard else "") + ": "
          + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    for p in planned:
        if args.dry_run or not p.runnable:
            print(f"  {p.status:8s} {p.job.name}" + (f"  ({p.detail})" if p.detail else ""))
    if args.dry_run:
        return 0
    todo = [p for p in planned if p.runnable]
    if not todo:
        return 0
    try:
        _record_command(Path(args.out), argv)
        if args.download:
            _prefetch(todo)
        result = runner.run_all(todo, jobs=args.jobs, gpus=args.gpus or ())
    except OSError as e:              # the sweep's own files: a full disk, a read-only folder
        return fail(PROG, describe_os_error(e))
    except ValueError as e:           # --download: a dataset that cannot be fetched
        return fail(PROG, str(e))
    print(f"sweep: {result['ok']} finished, {result['failed']} failed, {result['interrupted']} interrupted, "
          f"{result['skipped']} taken by another process; "
          f"report: python -m train.sweep --out {args.out} --report")
    if result["interrupted"]:
        return 130
    return 1 if result["failed"] else 0


def _prefetch(todo) -> None:
    """Download each torchvision dataset once, so parallel runs never download concurrently."""
    from train.data import build_dataset

    for name in sorted({p.job.argv[p.job.argv.index("--dataset") + 1] for p in todo}):
        if name in ("cifar10", "cifar100", "svhn", "fashion_mnist"):   # the torchvision ones
            print(f"fetching {name}", flush=True)
            build_dataset(name, download=True)
