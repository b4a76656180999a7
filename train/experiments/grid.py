"""A sweep grid -> a deterministic list of jobs (one ``python -m train`` run each) -> shards."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

#: methods whose result depends on --knn / --lambda; the others get one run per seed
KNN_METHODS = ("posd", "oskd")
LAM_METHODS = ("posd", "oskd")


@dataclass(frozen=True)
class Grid:
    pairs: Tuple[Tuple[str, str], ...]              # (dataset, model)
    methods: Tuple[str, ...] = ("ce",)
    knn: Tuple[int, ...] = (2,)
    lam: Tuple[Optional[float], ...] = (None,)      # None: the method's default (POSD 1e-4)
    batch_size: Tuple[Optional[int], ...] = (None,)  # None: the train preset's
    seeds: Tuple[int, ...] = (0,)
    epochs: Optional[int] = None
    train_args: Tuple[str, ...] = ()                # extra `python -m train` flags for every run
    teacher: Optional[str] = None                   # KD teacher path; may use {dataset} {model} {seed}


@dataclass(frozen=True)
class Job:
    setting: str                  # folder of the setting, e.g. digits-cifar_cnn-b64-posd-k4
    seed: int
    argv: Tuple[str, ...] = field(default=())   # `python -m train` flags without --out

    @property
    def name(self) -> str:
        return f"{self.setting}/s{self.seed}"

    def out(self, root: Path) -> Path:
        return Path(root) / self.setting / f"s{self.seed}"


def setting_name(dataset: str, model: str, batch: int, method: str,
                 knn: Optional[int], lam: Optional[float]) -> str:
    parts = [dataset, model, f"b{batch}", method]
    if knn is not None:
        parts.append(f"k{knn}")
    if lam is not None:
        parts.append(f"lam{lam:g}")
    return "-".join(parts)


def expand(grid: Grid) -> List[Job]:
    """Every job of the grid, in a fixed order (pair, batch, method, k, lambda, seed).

    k and lambda multiply only the methods that use them, so ``--methods ce posd --knn 2 4``
    is 1 CE + 2 POSD settings per seed, not 2 identical CE runs.
    """
    if "kd" in grid.methods and not grid.teacher and "--teacher" not in grid.train_args:
        raise ValueError("method kd needs --teacher PATH (may contain {dataset}, {model}, {seed})")
    jobs: List[Job] = []
    for dataset, model in grid.pairs:
        for batch in grid.batch_size:
            for method in grid.methods:
                for knn in (grid.knn if method in KNN_METHODS else (None,)):
                    for lam in (grid.lam if method in LAM_METHODS else (None,)):
                        for seed in grid.seeds:
                            jobs.append(_job(grid, dataset, model, batch, method, knn, lam, seed))
    names = [j.name for j in jobs]
    if len(set(names)) != len(names):
        raise ValueError("the grid repeats a setting (a value given twice?)")
    return jobs


def _job(grid: Grid, dataset, model, batch, method, knn, lam, seed) -> Job:
    argv: List[str] = ["--dataset", dataset, "--model", model, "--method", method, "--seed", str(seed)]
    if batch is not None:
        argv += ["--batch-size", str(batch)]
    if knn is not None:
        argv += ["--knn", str(knn)]
    if lam is not None:
        argv += ["--lambda", repr(float(lam))]
    if grid.epochs is not None:
        argv += ["--epochs", str(grid.epochs)]
    if method == "kd" and grid.teacher:
        argv += ["--teacher", teacher_path(grid.teacher, dataset, model, seed)]
    argv += list(grid.train_args)
    resolved_batch = batch if batch is not None else _preset_batch(model, grid.train_args)
    return Job(setting_name(dataset, model, resolved_batch, method, knn, lam), seed, tuple(argv))


def teacher_path(template: str, dataset: str, model: str, seed: int) -> str:
    """``--teacher`` with its fields filled in; any other ``{...}`` is a ValueError naming it."""
    try:
        return template.format(dataset=dataset, model=model, seed=seed)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"--teacher {template!r} may use only {{dataset}}, {{model}} and {{seed}} "
                         f"(write {{{{ and }}}} for literal braces): {e}") from None


def _preset_batch(model: str, train_args: Sequence[str]) -> int:
    """The batch size `python -m train` will use when --batch-size is not given."""
    from train.config import PRESETS, TrainConfig, preset_for_model

    args = list(train_args)
    if "--batch-size" in args:
        return int(args[args.index("--batch-size") + 1])
    preset = args[args.index("--preset") + 1] if "--preset" in args else preset_for_model(model)
    return int(PRESETS[preset].get("batch_size", TrainConfig.batch_size))


def parse_shard(text: str) -> Tuple[int, int]:
    """``"3/8"`` -> (3, 8): the third of eight shards (1-based, as array-job indices usually are
    not: with SLURM use ``--shard $((SLURM_ARRAY_TASK_ID + 1))/8`` for a 0-based array)."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like I/N (e.g. 3/8), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise ValueError(f"--shard {text}: need 1 <= I <= N")
    return i, n


def shard(jobs: Sequence[Job], i: int, n: int) -> List[Job]:
    """Shard ``i`` of ``n``: every n-th job of the fixed order, so the shards are disjoint, cover
    the grid exactly once, and each holds a mix of settings (similar run times)."""
    return list(jobs[i - 1::n])
