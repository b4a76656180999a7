"""Training memory of one step: measured at tensor level, and an analytic breakdown beside it.

Measured (every device): :class:`LiveTensorTracker`, a ``TorchDispatchMode`` that sees every
tensor an operator returns, counts each storage once while it is alive (a weak reference tells it
when the storage is freed) and keeps the peak of live tensor bytes. It starts from the tensors
that exist before the step (parameters, buffers, optimiser state, the batch). Allocations made
inside one kernel and freed before it returns (e.g. a convolution's scratch space) are below the
operator boundary and are not seen; nor is the allocator's caching or the CUDA context.
On CUDA the step also reports ``torch.cuda.max_memory_allocated`` and the device memory in use
(``torch.cuda.mem_get_info``: all processes, including the CUDA context).

Analytic: parameters + buffers + gradients + optimiser state + the batch + the activations
autograd saves for backward (counted with ``torch.autograd.graph.saved_tensors_hooks``, each
storage once, attributed to the layer that first saves it), and during backward the two
activation gradients of the layer being differentiated. Backward is walked layer by layer in
reverse: at layer j the saved activations of layers <= j, the gradients of the parameters
already reached and layer j's input/output gradients are alive; the peak is the largest sum.
A frozen teacher's no-grad forward adds, at each of its layers, that layer's input and output and
the inputs of the enclosing calls still on the Python stack (a residual block's input) to the
activations the student has saved by then (the KD loss runs the teacher after the student's
forward, as training does); functional temporaries between layers are not in it.
"""
from __future__ import annotations

import weakref
from typing import Dict, Iterable, List

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from profiling.steps import Step


def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class LiveTensorTracker(TorchDispatchMode):
    """Peak of live tensor bytes on one device type while the mode is active."""

    def __init__(self, device_type: str = "cpu") -> None:
        super().__init__()
        self.device_type = device_type
        self.live: Dict[int, int] = {}
        self._refs: Dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0

    def add(self, t) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type != self.device_type:
            return
        st = t.untyped_storage()
        key, n = st.data_ptr(), st.nbytes()
        if n == 0 or key in self.live:
            return
        self.live[key] = n
        self.current += n
        self.peak = max(self.peak, self.current)
        self._refs[key] = weakref.ref(st, lambda _r, key=key: self._free(key))

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            self.add(t)
        return out


def _static_tensors(step: Step) -> Dict[str, List[torch.Tensor]]:
    nets = step.trained + step.frozen
    state = [v for s in step.optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"params": [p for m in nets for p in m.parameters()],
            "buffers": [b for m in nets for b in m.buffers()],
            "optimizer_state": state, "batch": list(step.inputs)}


def _unique_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen = {t.untyped_storage().data_ptr(): _nbytes(t) for t in tensors}
    return sum(seen.values())


def measure(step: Step) -> Dict[str, object]:
    """Run ``step`` once under the tracker (and the CUDA allocator's counters on CUDA)."""
    device_type = torch.device(step.device).type
    tracker = LiveTensorTracker(device_type)
    for ts in _static_tensors(step).values():
        for t in ts:
            tracker.add(t)
    out: Dict[str, object] = {}
    if device_type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    with tracker:
        step.run()
    out["tensor_peak"] = tracker.peak
    if device_type == "cuda":
        torch.cuda.synchronize()
        out["cuda_max_allocated"] = torch.cuda.max_memory_allocated()
        free, total = torch.cuda.mem_get_info()
        out["cuda_device_in_use"] = total - free
    return out


class _Recorder:
    """Module hooks + saved-tensor hooks that record, per layer call, what the analytic model needs."""

    def __init__(self, step: Step) -> None:
        self.static_keys = {t.untyped_storage().data_ptr()
                            for ts in _static_tensors(step).values() for t in ts}
        self.trained_ids = {id(m) for net in step.trained for m in net.modules()}
        self.layers: List[dict] = []  # per leaf call: module, trained?, in/out bytes, live bytes
        self.saved: Dict[int, tuple] = {}  # storage -> (first layer index, bytes)
        self.stack: List[Dict[int, int]] = []  # inputs of the module calls in progress
        self.handles = []
        for net in step.trained + step.frozen:
            for m in net.modules():
                self.handles.append(m.register_forward_pre_hook(self._pre))
                self.handles.append(m.register_forward_hook(self._post))

    def _storages(self, tensors) -> Dict[int, int]:
        return {t.untyped_storage().data_ptr(): _nbytes(t) for t in tensors
                if torch.is_tensor(t) and t.untyped_storage().data_ptr() not in self.static_keys}

    def _pre(self, module, args) -> None:
        ins = [a for a in args if torch.is_tensor(a)]
        self.stack.append(self._storages(ins))
        if not list(module.children()):
            self.layers.append({"module": module, "trained": id(module) in self.trained_ids,
                                "in_grad": sum(a.nbytes for a in ins if a.requires_grad),
                                "out": 0, "live": 0})

    def _post(self, module, args, output) -> None:
        if not list(module.children()):
            outs = [t for t in tree_flatten(output)[0] if torch.is_tensor(t)]
            self.layers[-1]["out"] = sum(t.nbytes for t in outs)
            # live in a no-grad forward: this layer's input and output and the inputs of every
            # enclosing call still on the Python stack (a residual block's input, for one)
            live: Dict[int, int] = self._storages(outs)
            for frame in self.stack:
                live.update(frame)
            self.layers[-1]["live"] = sum(live.values())
        self.stack.pop()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in self.static_keys and key not in self.saved:
            self.saved[key] = (max(len(self.layers) - 1, 0), st.nbytes())
        return t

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _analytic(step: Step, rec: _Recorder, static: Dict[str, int]) -> Dict[str, int]:
    """The breakdown described in the module docstring, from one recorded call of ``step``."""
    grads = sum(p.numel() * p.element_size() for m in step.trained for p in m.parameters())
    saved_total = sum(n for _, n in rec.saved.values())
    bwd_peak, bwd_ws = 0, 0
    for j, layer in enumerate(rec.layers):
        if not layer["trained"]:
            continue
        alive = sum(n for first, n in rec.saved.values() if first <= j)
        reached = {id(p): p.numel() * p.element_size() for lay in rec.layers[j:] if lay["trained"]
                   for p in lay["module"].parameters()}
        ws = layer["out"] + layer["in_grad"]
        if alive + ws + sum(reached.values()) > bwd_peak:
            bwd_peak, bwd_ws = alive + ws + sum(reached.values()), ws
    teacher_ws, teacher_peak = 0, 0    # the frozen teacher's forward, over what is saved by then
    for i, layer in enumerate(rec.layers):
        if not layer["trained"]:
            saved_by_then = sum(n for first, n in rec.saved.values() if first < i)
            teacher_ws = max(teacher_ws, layer["live"])
            teacher_peak = max(teacher_peak, saved_by_then + layer["live"])
    peak = sum(static.values()) + max(bwd_peak, saved_total, teacher_peak)
    return {**static, "gradients": grads, "saved_activations": saved_total,
            "backward_working_set": bwd_ws, "teacher_forward_working_set": teacher_ws,
            "analytic_peak": peak}


def training_memory(step: Step) -> Dict[str, object]:
    """Measured peak and analytic breakdown of one call of ``step`` (bytes), with its settings.

    One call serves both: the hooks only read sizes and allocate nothing the tracker could see.
    """
    result = {"method": step.method, "model": step.extra["model"], "teacher": step.extra["teacher"],
              "batch_size": step.batch_size, "device": step.device, "dtype": "float32",
              "optimizer": "SGD(momentum=0.9)"}
    static = {k: _unique_bytes(v) for k, v in _static_tensors(step).items()}
    rec = _Recorder(step)
    try:
        with torch.autograd.graph.saved_tensors_hooks(rec.pack, lambda t: t):
            measured = measure(step)
    finally:
        rec.remove()
    result.update(_analytic(step, rec, static))
    result.update(measured)
    result["measured_over_analytic"] = result["tensor_peak"] / result["analytic_peak"]
    return result
