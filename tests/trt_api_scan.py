"""Which TensorRT names the project uses, read from its syntax trees, and whether a real
``tensorrt`` module has them (tests/test_trt_bindings.py runs the check per TensorRT version).

Static side (:func:`scan`, no TensorRT needed): every expression that reaches TensorRT is
followed from its root (``import tensorrt as trt``, a function returning that module, a parameter
a call site passes it to, ``self.x = ...``) through attribute accesses and calls, e.g.
``builder = trt.Builder(logger); builder.create_network(0)`` -> ``trt .Builder () .create_network``.

Resolving side (:func:`resolve`, in a process where ``tensorrt`` imports): the chain is walked on
the real module; a call's result type is read from the bindings' own docstrings (pybind11 writes
``create_network(self: tensorrt.Builder, flags: int = 0) -> tensorrt.INetworkDefinition``), and
each attribute must exist on the class it is looked up on. Names used under ``hasattr`` or a
``getattr`` with a default are *guarded*: they may be missing from some versions.
"""
from __future__ import annotations

import ast
import inspect
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

ROOT = ("tensorrt",)
CALL = "()"
Path_ = Tuple[str, ...]


@dataclass(frozen=True)
class Use:
    file: str
    line: int
    chain: Path_          # ("tensorrt", ".Builder", "()", ".create_network")
    guarded: bool

    def text(self) -> str:
        return "".join(self.chain)


# ------------------------------------------------------------------------- static side
class _Module:
    def __init__(self, path: Path, rel: str) -> None:
        self.rel = rel
        self.tree = ast.parse(path.read_text(), str(path))
        self.funcs: Dict[str, Tuple[ast.AST, Optional[str]]] = {}   # qualname -> (def, class)
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.funcs[node.name] = (node, None)
            elif isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        self.funcs[f"{node.name}.{item.name}"] = (item, node.name)


class _Scanner:
    """A small fixed-point dataflow over assignments, returns and call sites."""

    def __init__(self, modules: List[_Module]) -> None:
        self.modules = modules
        self.returns: Dict[str, object] = {}                  # qualname -> path | [paths]
        self.params: Dict[str, Dict[str, Path_]] = {}         # qualname -> {param: path}
        self.selfs: Dict[str, Dict[str, Path_]] = {}          # "mod:Class" -> {attr: path}
        self.by_name: Dict[str, List[str]] = {}
        for m in modules:
            for q in m.funcs:
                self.by_name.setdefault(q.split(".")[-1], []).append(f"{m.rel}:{q}")
        self.changed = False
        self.depth = 0

    # -- expression -> path
    def path_of(self, e, env, m: _Module, cls: Optional[str]):
        if isinstance(e, ast.Name):
            return env.get(e.id)
        if isinstance(e, ast.Attribute):
            if isinstance(e.value, ast.Name) and e.value.id == "self" and cls:
                return self.selfs.get(f"{m.rel}:{cls}", {}).get(e.attr)
            base = self.path_of(e.value, env, m, cls)
            return base + ("." + e.attr,) if isinstance(base, tuple) else None
        if isinstance(e, ast.Call):
            f = e.func
            if isinstance(f, ast.Name) and f.id == "getattr" and len(e.args) >= 2 \
                    and isinstance(e.args[1], ast.Constant) and isinstance(e.args[1].value, str):
                base = self.path_of(e.args[0], env, m, cls)
                return base + ("." + e.args[1].value,) if isinstance(base, tuple) else None
            target = self.callee(f, m, cls)
            if target is not None:
                return self.call_result(target, e, env, m, cls)
            base = self.path_of(f, env, m, cls)
            return base + (CALL,) if isinstance(base, tuple) else None
        if isinstance(e, ast.IfExp):
            return self.path_of(e.body, env, m, cls) or self.path_of(e.orelse, env, m, cls)
        if isinstance(e, ast.Tuple):
            parts = [self.path_of(x, env, m, cls) for x in e.elts]
            return parts if any(parts) else None
        return None

    def callee(self, f, m: _Module, cls: Optional[str]) -> Optional[str]:
        """The project function a call goes to (same module first, else a unique name)."""
        if isinstance(f, ast.Name):
            if f.id in m.funcs:
                return f"{m.rel}:{f.id}"
            cands = self.by_name.get(f.id, [])
            return cands[0] if len(cands) == 1 else None
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "self" \
                and cls and f"{cls}.{f.attr}" in m.funcs:
            return f"{m.rel}:{cls}.{f.attr}"
        return None

    def call_result(self, target: str, call: ast.Call, env, m, cls):
        """What a call to a project function returns, evaluated with this call's arguments
        (``create_trt_object(trt, trt.Builder, logger)`` is a Builder here, a Runtime there)."""
        args = self.arguments(target, call, env, m, cls)
        if not args or self.depth > 3:
            return self.returns.get(target)
        rel, qual = target.split(":")
        mod = next(x for x in self.modules if x.rel == rel)
        fn, fcls = mod.funcs[qual]
        self.depth += 1
        try:
            env2 = self.visit(mod, qual, fn, fcls, params=args, pure=True)
            for node in ast.walk(fn):
                if isinstance(node, ast.Return) and node.value is not None:
                    v = self.path_of(node.value, env2, mod, fcls)
                    if v is not None:
                        return v
        finally:
            self.depth -= 1
        return self.returns.get(target)

    def arguments(self, target: str, call: ast.Call, env, m, cls) -> Dict[str, Path_]:
        rel, qual = target.split(":")
        mod = next(x for x in self.modules if x.rel == rel)
        fn, fcls = mod.funcs[qual]
        names = [a.arg for a in fn.args.args][1 if fcls is not None else 0:]
        out = {}
        for name, arg in zip(names, call.args):
            v = self.path_of(arg, env, m, cls)
            if isinstance(v, tuple):
                out[name] = v
        for kw in call.keywords:
            v = self.path_of(kw.value, env, m, cls)
            if kw.arg in names and isinstance(v, tuple):
                out[kw.arg] = v
        return out

    def _set(self, table: dict, key, value) -> None:
        """First value wins (a parameter fed from two call sites keeps the first): the passes
        only ever add facts, so they reach a fixed point."""
        if value is not None and key not in table:
            table[key] = value
            self.changed = True

    # -- one pass over a function
    def visit(self, m: _Module, qual: str, fn, cls: Optional[str], params=None,
              pure: bool = False) -> Dict[str, object]:
        """The function's environment (name -> path); unless ``pure``, also records its returns,
        its ``self.x`` attributes and the paths it passes to other project functions."""
        key = f"{m.rel}:{qual}"
        env: Dict[str, object] = dict(self.params.get(key, {}) if params is None else params)
        for node in _in_order(fn):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == "tensorrt":
                        env[a.asname or a.name] = ROOT
            elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                value = self.path_of(node.value, env, m, cls)
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                    self._bind(t, value, env, m, cls, pure)
            elif pure:
                continue
            elif isinstance(node, ast.Return) and node.value is not None:
                self._set(self.returns, key, self.path_of(node.value, env, m, cls))
            elif isinstance(node, ast.Call):
                target = self.callee(node.func, m, cls)
                if target is not None:
                    table = self.params.setdefault(target, {})
                    for name, v in self.arguments(target, node, env, m, cls).items():
                        self._set(table, name, v)
        return env

    def _bind(self, target, value, env, m, cls, pure: bool) -> None:
        if isinstance(target, ast.Name):
            if value is not None:
                env[target.id] = value
        elif isinstance(target, ast.Tuple) and isinstance(value, list):
            for t, v in zip(target.elts, value):
                self._bind(t, v, env, m, cls, pure)
        elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) \
                and target.value.id == "self" and cls and not pure:
            self._set(self.selfs.setdefault(f"{m.rel}:{cls}", {}), target.attr, value)

    def run(self) -> List[Use]:
        for _ in range(30):
            self.changed = False
            for m in self.modules:
                for qual, (fn, cls) in m.funcs.items():
                    self.visit(m, qual, fn, cls)
            if not self.changed:
                break
        uses: List[Use] = []
        for m in self.modules:
            for qual, (fn, cls) in m.funcs.items():
                uses += self.uses_in(m, qual, fn, cls)
        return sorted(set(uses), key=lambda u: (u.file, u.line, u.chain))

    def uses_in(self, m: _Module, qual: str, fn, cls) -> List[Use]:
        env = self.visit(m, qual, fn, cls)
        guarded = {c.args[1].value for c in ast.walk(fn) if isinstance(c, ast.Call)
                   and isinstance(c.func, ast.Name) and c.func.id == "hasattr" and len(c.args) == 2
                   and isinstance(c.args[1], ast.Constant)}
        out = []
        for node in ast.walk(fn):
            if isinstance(node, ast.Attribute):
                base = self.path_of(node.value, env, m, cls)
                if isinstance(base, tuple):
                    out.append(Use(m.rel, node.lineno, base + ("." + node.attr,), node.attr in guarded))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("getattr", "hasattr") and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                base = self.path_of(node.args[0], env, m, cls)
                if isinstance(base, tuple):
                    soft = node.func.id == "hasattr" or len(node.args) == 3
                    out.append(Use(m.rel, node.lineno, base + ("." + node.args[1].value,), soft))
        return out


def _in_order(fn) -> Iterable[ast.AST]:
    """The function's nodes in source order (assignments before the uses below them)."""
    return sorted((n for n in ast.walk(fn) if hasattr(n, "lineno")),
                  key=lambda n: (n.lineno, n.col_offset))


def scan(repo: Path, packages: Iterable[str] = ("edge", "export"),
         extra: Iterable[Path] = ()) -> List[Use]:
    """Every use of a TensorRT name in ``packages`` of ``repo`` (plus ``extra`` files)."""
    files = [p for pkg in packages for p in sorted((repo / pkg).rglob("*.py"))] + list(extra)
    modules = [_Module(p, str(p.relative_to(repo)) if p.is_relative_to(repo) else str(p))
               for p in files]
    return _Scanner(modules).run()


# ------------------------------------------------------------------------- resolving side
_SIG = re.compile(r"^\s*(?:\d+\.\s+)?\w+\((.*)\)\s*->\s*(.+?)\s*$", re.M)


def return_class(trt, func) -> Optional[type]:
    """The TensorRT class a bound/unbound pybind11 function or property getter returns, from
    its docstring signature; None for builtins (int, str, bytes...) or when it says nothing."""
    doc = getattr(func, "__doc__", None) or ""
    m = _SIG.search(doc)
    if not m:
        return None
    name = m.group(2).strip()
    name = re.sub(r"^Optional\[(.*)\]$", r"\1", name)
    cls = getattr(trt, name.split(".")[-1], None)
    return cls if isinstance(cls, type) else None


def resolve(trt, chain: Path_) -> Tuple[str, str]:
    """``("ok" | "missing" | "unknown", detail)`` for one chain on the real module."""
    kind, value, where = "obj", trt, "tensorrt"
    steps = chain[1:]
    for i, step in enumerate(steps):
        if step == CALL:
            if kind == "obj" and isinstance(value, type):
                kind = "inst"                     # a class called: an instance of it
            elif kind in ("obj", "meth"):
                cls = return_class(trt, value)
                if cls is None:
                    return "unknown", f"{where}() returns no TensorRT class"
                kind, value = "inst", cls
            else:
                return "unknown", f"{where} is not callable as seen here"
            where += "()"
            continue
        name = step[1:]
        if not hasattr(value, name):
            owner = value.__name__ if isinstance(value, type) else where
            return "missing", f"{owner} has no attribute {name!r}"
        where = f"{value.__name__ if isinstance(value, type) else where}.{name}"
        if i == len(steps) - 1:
            return "ok", where
        if kind == "inst":
            raw = inspect.getattr_static(value, name)
            if isinstance(raw, property):
                cls = return_class(trt, raw.fget)
                if cls is None:
                    return "unknown", f"{where} is not a TensorRT object"
                kind, value = "inst", cls
            else:
                kind, value = "meth", getattr(value, name)
        else:
            value = getattr(value, name)
    return "ok", where


def check(trt, uses: Iterable[Use]) -> List[dict]:
    """Resolve every use; one dict per use (its fields plus ``status`` and ``detail``)."""
    out = []
    for u in uses:
        status, detail = resolve(trt, u.chain)
        out.append({**asdict(u), "chain": list(u.chain), "status": status, "detail": detail})
    return out
