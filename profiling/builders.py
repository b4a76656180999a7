"""Build the four tables (complexity, storage, memory, time) for a list of pairs."""
from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from typing import Dict, List, Sequence

import torch

from profiling import notes
from profiling.complexity import MacCount, count_macs, count_params, training_macs
from profiling.paper_counter import count_paper_flops
from profiling.memory import training_memory
from profiling.report import Table, mib, size
from profiling.specs import Pair, build
from profiling.steps import METHODS, make_step
from profiling.storage import storage_report
from profiling.timing import ratios, step_times

TABLES = ("complexity", "storage", "memory", "time")
PAPER_MODELS = ("resnet32", "resnet110", "wrn_16_2", "wrn_40_2")
PAPER_COUNTER_COLUMN = "pytorch-estimate-flops: ops / image (the paper's counter)"
FVCORE_COLUMN = "fvcore: MACs / image (eval)"

# The paper's figures (Tables 14-17), keyed by what they describe.
PAPER_T14 = {("posd", "resnet32"): "0.07 G (0.5 M)", ("kd", "resnet32"): "0.33 G (1.7 M + 0.5 M)",
             ("posd", "wrn_16_2"): "0.10 G (0.7 M)", ("kd", "wrn_16_2"): "0.43 G (2.26 M + 0.7 M)"}
PAPER_STORAGE = {"cifar_cnn": "248 KiB (T16)", "fashion_cnn": "303.9 KiB (T16)",
                 "resnet32": "3.6 MiB (T17)", "resnet110": "13.4 MiB (T17)",
                 "wrn_16_2": "5.4 MiB (T17)", "wrn_40_2": "17.2 MiB (T17)"}
PAPER_T15 = {("posd", "resnet32"): "1222", ("kd_teacher", "resnet32"): "1974",
             ("kd_student", "resnet32"): "1222", ("kd_sum", "resnet32"): "3196",
             ("posd", "wrn_16_2"): "1256", ("kd_sum", "wrn_16_2"): "2950",
             ("posd", "cifar_cnn"): "918 (CIFAR-10)", ("posd", "fashion_cnn"): "920"}


@lru_cache(maxsize=None)
def _counts(name: str, pair: Pair):
    """(params, fvcore eval-mode MACs, the paper counter's ops, 100-class params) of ``name`` on
    ``pair``'s input."""
    model = build(name, pair)
    ev = count_macs(model, pair.input_size, pair.in_channels, "eval")
    paper = count_paper_flops(model, pair.input_size, pair.in_channels).total
    p100 = count_params(build(name, pair, num_classes=100))
    return count_params(model), ev, paper, p100


def _g(n: int) -> str:
    return f"{n / 1e9:.2f} G ({n / 1e6:.2f} M)"


def _uncounted(*counts: MacCount) -> str:
    merged: Dict[str, int] = {}
    for c in counts:
        for op, n in c.uncounted.items():
            merged[op] = merged.get(op, 0) + n
    return ", ".join(f"{op} ×{n}" for op, n in sorted(merged.items())) or "none"


def complexity_table(pairs: Sequence[Pair]) -> Table:
    cols = ["Method", "Models", "Input", "Parameters", PAPER_COUNTER_COLUMN, FVCORE_COLUMN,
            "fvcore: FLOPs = 2 × MACs", "fvcore: training MACs / image / step",
            "fvcore: not counted (operator × calls)", "Paper (Table 14)"]
    rows, raw = [], []
    for pair in pairs:
        ps, es, ops_s, ps100 = _counts(pair.student, pair)
        pt, et, ops_t, pt100 = _counts(pair.teacher, pair)
        inp = f"{pair.in_channels}×{pair.input_size}×{pair.input_size}"
        entries = [
            ("POSD", pair.student, [ps], [ps100], [es], [ops_s], training_macs(es.total)),
            ("KD", f"{pair.teacher} + {pair.student}", [pt, ps], [pt100, ps100], [et, es],
             [ops_t, ops_s], training_macs(es.total, et.total)),
            ("DML", f"{pair.student} × 2", [ps, ps], [ps100, ps100], [es, es], [ops_s, ops_s],
             training_macs(2 * es.total)),
        ]
        for method, models, params, p100, ev, ops, train in entries:
            macs, paper_ops = sum(c.total for c in ev), sum(ops)
            rows.append([method, models, inp, " + ".join(f"{p / 1e6:.2f} M" for p in params),
                         _g(paper_ops), _g(macs), _g(2 * macs), _g(train), _uncounted(*ev),
                         PAPER_T14.get((method.lower(), pair.student), "—")])
            raw.append({"method": method, "student": pair.student, "teacher": pair.teacher,
                        "input": inp, "num_classes": pair.num_classes, "params": params,
                        "params_100_classes": p100, "pthflops_ops": paper_ops, "macs_eval": macs,
                        "flops_eval": 2 * macs, "training_macs_per_image_step": train,
                        "uncounted": _uncounted(*ev), "plot_label": f"{method} {models}",
                        "plot_value": macs / 1e9, "plot_unit": "GMACs / image (forward)"})
    return Table("complexity", "Complexity (paper Table 14 and beyond)", cols, rows,
                 notes.COMPLEXITY, raw)


def _is_cifar10(pair: Pair) -> bool:
    return (pair.input_size, pair.in_channels, pair.num_classes) == (32, 3, 10)


def _storage_models(pairs: Sequence[Pair]):
    seen, out = set(), []
    for pair in pairs:
        for name in (pair.student, pair.teacher):
            key = (name, pair.input_size, pair.in_channels, pair.num_classes)
            if key not in seen:
                seen.add(key)
                out.append((name, pair))
    for name, pair in list(out):  # the paper's models again with a 100-class (CIFAR-100) head
        if name in PAPER_MODELS and _is_cifar10(pair):
            out.append((name, replace(pair, num_classes=100)))
    return out


def storage_table(pairs: Sequence[Pair], onnx: bool = True) -> Table:
    cols = ["Model", "Input", "Classes", "Parameters", "fp32 weights", "torch.save(state_dict)",
            "same, legacy format", "checkpoint + SGD momentum", "checkpoint, legacy format",
            "ONNX file", "fp16 weights", "int8 weights", "Paper"]
    rows, raw = [], []
    for name, pair in _storage_models(pairs):
        torch.manual_seed(0)
        r = storage_report(build(name, pair), pair.input_size, pair.in_channels,
                           pair.num_classes, onnx=onnx)
        paper = PAPER_STORAGE.get(name, "—") if _is_cifar10(pair) or name == "fashion_cnn" else "—"
        rows.append([name, f"{pair.in_channels}×{pair.input_size}×{pair.input_size}",
                     pair.num_classes, f"{r['params']:,}", size(r["fp32_weight_bytes"]),
                     size(r["state_dict_file"]), size(r["state_dict_file_legacy"]),
                     size(r["checkpoint_sgd_file"]), size(r["checkpoint_sgd_file_legacy"]),
                     size(r.get("onnx_file", "n/a (--no-onnx)")),
                     size(r["fp16_weight_bytes"]), size(r["int8_weight_bytes"]), paper])
        raw.append({"model": name, "input_size": pair.input_size, "in_channels": pair.in_channels,
                    "num_classes": pair.num_classes, **r,
                    "plot_label": f"{name} ({pair.num_classes} cls)",
                    "plot_value": r["checkpoint_sgd_file"] / 2 ** 20,
                    "plot_unit": "MiB, checkpoint with SGD momentum"})
    return Table("storage", "Storage (paper Tables 16-17): three definitions side by side", cols,
                 rows, notes.STORAGE, raw)


def _memory_rows(pair: Pair, mem: Dict[str, dict], device: str):
    label = {"posd": ("POSD", "one phase", pair.student),
             "ce": ("CE (no distillation, reference)", "one phase", pair.student),
             "kd_teacher": ("KD", "phase 1: train teacher", pair.teacher),
             "kd_student": ("KD", "phase 2: distil student", f"{pair.teacher} (frozen) -> "
                                                             f"{pair.student}"),
             "dml": ("DML", "one phase, two peers", f"{pair.student} × 2")}
    for m in ("posd", "ce", "kd_teacher", "kd_student", "dml"):
        yield m, label[m], mem[m]
    a, b = mem["kd_teacher"], mem["kd_student"]
    for key, phase, f in (("kd_sum", "phase 1 + phase 2 (the paper's sum)", lambda x, y: x + y),
                          ("kd_max", "max(phase 1, phase 2)", max)):
        yield key, ("KD", phase, f"{pair.teacher} -> {pair.student}"), {
            k: f(a[k], b[k]) for k in ("tensor_peak", "analytic_peak", "cuda_max_allocated")
            if k in a} | {"batch_size": a["batch_size"], "device": device}


def memory_table(pairs: Sequence[Pair], mem_by_pair: Dict[Pair, Dict[str, dict]],
                 device: str) -> Table:
    cuda = torch.device(device).type == "cuda"
    cols = ["Method", "Phase", "Model(s)", "Batch · dtype · optimiser · device",
            "Measured tensor peak (MiB)", "Analytic peak (MiB)", "Measured / analytic",
            "Params + buffers", "Gradients", "Optimiser state", "Saved activations",
            "Batch tensors", "Backward working set", "Teacher fwd working set"]
    if cuda:
        cols += ["CUDA max_memory_allocated (MiB)", "Device memory in use, incl. context (MiB)"]
    cols += ["Paper, GTX 1080 (MiB)"]
    rows, raw = [], []
    for pair in pairs:
        for key, (method, phase, models), r in _memory_rows(pair, mem_by_pair[pair], device):
            ratio = r["tensor_peak"] / r["analytic_peak"]
            parts = [mib(r.get(k, "")) if k in r else "" for k in
                     ("params", "gradients", "optimizer_state", "saved_activations", "batch",
                      "backward_working_set", "teacher_forward_working_set")]
            if "params" in r:
                parts[0] = mib(r["params"] + r["buffers"])
            row = [method, phase, models, f"{r['batch_size']} · fp32 · SGD m=0.9 · {device}",
                   mib(r["tensor_peak"]), mib(r["analytic_peak"]), f"{ratio:.3f}", *parts]
            if cuda:
                row += [mib(r.get("cuda_max_allocated", "")), mib(r.get("cuda_device_in_use", "—"))]
            row.append(PAPER_T15.get((key, pair.student), "—"))
            rows.append(row)
            raw.append({"key": key, "student": pair.student, "teacher": pair.teacher,
                        "input_size": pair.input_size, **{k: v for k, v in r.items()},
                        "plot_label": f"{pair.student}: {key}",
                        "plot_value": r["tensor_peak"] / 2 ** 20, "plot_unit": "MiB (tensor peak)"})
    return Table("memory", "Training memory of one step (paper Table 15)", cols, rows,
                 notes.memory(device), raw)


def time_table(pairs: Sequence[Pair], times_by_pair: Dict[Pair, Dict[str, float]], device: str,
               repeats: int) -> Table:
    cols = ["Pair", "Batch · dtype · optimiser · device · threads", "CE", "POSD", "KD phase 1 (teacher)",
            "KD phase 2 (student)", "KD both phases", "DML", "POSD / CE", "KD (both) / POSD",
            "DML / POSD"]
    rows, raw = [], []
    for pair in pairs:
        t = times_by_pair[pair]
        r = ratios(t)
        ms = {k: f"{v * 1e3:.1f} ms" for k, v in t.items()}
        rows.append([f"{pair.teacher} -> {pair.student} @{pair.input_size}",
                     f"{pair.batch_size} · fp32 · SGD m=0.9 · {device} · "
                     f"{torch.get_num_threads()}", ms["ce"],
                     ms["posd"], ms["kd_teacher"], ms["kd_student"],
                     f"{(t['kd_teacher'] + t['kd_student']) * 1e3:.1f} ms", ms["dml"],
                     f"{r['posd_over_ce']:.2f}", f"{r['kd_over_posd']:.2f}",
                     f"{r['dml_over_posd']:.2f}"])
        for m, v in t.items():
            raw.append({"student": pair.student, "teacher": pair.teacher, "method": m,
                        "seconds": v, "batch_size": pair.batch_size, "device": device,
                        "threads": torch.get_num_threads(), "repeats": repeats, **r,
                        "plot_label": f"{pair.student}: {m}", "plot_value": v * 1e3,
                        "plot_unit": "ms per training step"})
    return Table("time", "Wall time per training step", cols, rows, notes.time(repeats), raw)


def run_steps(pair: Pair, device: str, memory: bool, timing: bool, repeats: int):
    """Memory (one tracked call per method), then interleaved timing after one untimed round."""
    steps = [make_step(m, pair, pair.batch_size, device) for m in METHODS]
    mem = {s.method: training_memory(s) for s in steps} if memory else {}
    times = step_times(steps, repeats, warmup=1) if timing else {}
    return mem, times


def build_tables(pairs: Sequence[Pair], which: Sequence[str] = TABLES, device: str = "cpu",
                 repeats: int = 3, onnx: bool = True) -> List[Table]:
    for name in which:
        if name not in TABLES:
            raise ValueError(f"unknown table {name!r}; valid: {', '.join(TABLES)}")
    for pair in pairs:  # fail fast on a bad name or size, before any long measurement
        build(pair.student, pair), build(pair.teacher, pair)
    tables = []
    if "complexity" in which:
        tables.append(complexity_table(pairs))
    if "storage" in which:
        tables.append(storage_table(pairs, onnx))
    if "memory" in which or "time" in which:
        mem, times = {}, {}
        for pair in pairs:
            mem[pair], times[pair] = run_steps(pair, device, "memory" in which, "time" in which,
                                               repeats)
        if "memory" in which:
            tables.append(memory_table(pairs, mem, device))
        if "time" in which:
            tables.append(time_table(pairs, times, device, repeats))
    return tables
