"""Packing the user's objective so that any worker process, anywhere, can load it.

Users write their objective where it is natural: in the script they run (module ``__main__``, with
module-level imports and helpers), in a sibling module, or as a ``"module:function"`` string. A
worker process started by Parsl or Globus Compute has none of the launcher's ``__main__`` and may
not have the script's directory on its path. So the launcher packs the objective once:

* functions and objects of ``__main__`` travel by value with the globals they use (cloudpickle),
  while the modules they import travel by name;
* functions and objects of importable modules travel by reference;
* strings stay strings and are imported where they run;
* the script's directory and the launcher's working directory go along, and the loader puts them
  on ``sys.path`` before unpickling (where the filesystem is shared, that is all it takes).

This module imports nothing heavy: the evaluation child process loads it before the objective.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable


class ObjectiveLoadError(RuntimeError):
    """The objective cannot be loaded where it must run; the search cannot go on."""


@dataclass
class ObjectiveSpec:
    """Everything a worker needs to load the objective; plain data that any serializer can move."""

    identity: str
    """Stable name stored in run.json (``module:qualname``, or the object's ``adbo_identity()``)."""
    payload: bytes | None = None
    """cloudpickle of the callable, or None for a ``module:function`` reference."""
    reference: str | None = None
    paths: list[str] = field(default_factory=list)
    """Directories put first on ``sys.path`` before loading: the script's and the working one."""
    extra_paths: list[str] = field(default_factory=list)
    """The launcher's other import directories outside the Python installation (PYTHONPATH, ...),
    put last on ``sys.path``."""
    workdir: str | None = None
    """The launcher's working directory: evaluations run there when it exists on their host."""
    fingerprint: str | None = None
    """Digest of the objective's code, so an edited objective is not mixed into an old run."""
    argv: list[str] = field(default_factory=list)
    """The launcher's ``sys.argv``: an objective that reads the script's arguments sees them."""


def objective_identity(objective: Any) -> str:
    """A stable name for the objective, stored in run.json so relaunches can be checked.

    Objects may define ``adbo_identity()`` (the packaged objectives do, to include their problem
    and size); functions are named by module and qualified name.
    """
    if isinstance(objective, ObjectiveSpec):
        return objective.identity
    if isinstance(objective, str):
        return objective
    ident = getattr(objective, "adbo_identity", None)
    if callable(ident):
        return str(ident())
    module = getattr(objective, "__module__", None) or type(objective).__module__
    qualname = getattr(objective, "__qualname__", None) or type(objective).__qualname__
    return f"{module}:{qualname}"


def resolve_reference(reference: str) -> Callable[..., Any]:
    """Import ``"package.module:function"`` (dots after the colon walk attributes)."""
    if not isinstance(reference, str) or ":" not in reference:
        raise ValueError(f"objective must be a callable or a 'module:function' string, got {reference!r}")
    module_name, _, attr = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(
            f"cannot import objective module {module_name!r}: {exc}. Run from the directory that holds "
            f"{module_name.split('.')[0]}.py, or install it, or put its directory on PYTHONPATH"
        ) from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
    if not callable(target):
        raise ValueError(f"objective {reference!r} is not callable")
    return target


def _script_directory() -> str | None:
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.dirname(os.path.abspath(path)) if path else None


def _own_code(target: Any) -> str | None:
    try:
        return inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        return None if code is None else repr((code.co_code, code.co_consts, code.co_names))


def _names(code: Any) -> set[str]:
    """Global names a code object uses, nested code (comprehensions, lambdas, inner functions) included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _names(const)
    return names


def _code_digest(obj: Any) -> str | None:
    """Digest of the source (or, without source, the bytecode) of ``obj`` and of the functions and
    classes of its own module that it calls, so that editing a helper counts as editing the objective."""
    if isinstance(obj, functools.partial):
        inner = _code_digest(obj.func)
        return None if inner is None else _sha(inner + repr((obj.args, sorted(obj.keywords.items()))))
    target = obj if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj) else type(obj)
    module = getattr(target, "__module__", None)
    parts: list[str] = []
    seen: set[int] = set()
    todo = [target]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        text = _own_code(item)
        if text is None:
            if item is target:
                return None
            continue
        parts.append(text)
        functions = [item] if inspect.isfunction(item) else [
            f for f in vars(item).values() if inspect.isfunction(f)] if inspect.isclass(item) else []
        for fn in functions:
            for name in _names(fn.__code__):
                ref = fn.__globals__.get(name)
                if (inspect.isfunction(ref) or inspect.isclass(ref)) and getattr(ref, "__module__", None) == module:
                    todo.append(ref)
    return _sha("\n".join(parts))


def _sha(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:16]


def objective_fingerprint(objective: Any) -> str | None:
    """What changes when the user edits the objective's code (None where it cannot be told).

    Packaged objectives that name themselves (``adbo_identity``) carry their settings in that name
    and are versioned with adbo, so they have no fingerprint.
    """
    if isinstance(objective, ObjectiveSpec):
        return objective.fingerprint
    if isinstance(objective, str):
        try:
            objective = resolve_reference(objective)
        except ValueError:
            return None
    if callable(getattr(objective, "adbo_identity", None)):
        return None
    return _code_digest(objective)


def _user_import_dirs(first: list[str]) -> list[str]:
    """The launcher's import directories that are not part of a Python installation."""
    installs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
    extra = []
    for entry in sys.path:
        path = os.path.realpath(entry or os.getcwd())
        if path in first or not os.path.isdir(path):
            continue
        if any(path == root or path.startswith(root + os.sep) for root in installs):
            continue
        extra.append(path)
    return list(dict.fromkeys(extra))


def package_objective(objective: Any) -> ObjectiveSpec:
    """Pack a callable or a ``module:function`` string; raises ValueError if it cannot travel."""
    if isinstance(objective, ObjectiveSpec):
        return objective
    paths = list(dict.fromkeys(p for p in (_script_directory(), os.getcwd()) if p))
    common = {"paths": paths, "extra_paths": _user_import_dirs(paths), "workdir": os.getcwd(),
              "fingerprint": objective_fingerprint(objective), "argv": list(sys.argv)}
    if isinstance(objective, str):
        resolve_reference(objective)  # fail here, in the launcher, with the import error
        return ObjectiveSpec(objective_identity(objective), reference=objective, **common)
    if not callable(objective):
        raise ValueError(f"objective must be a callable or a 'module:function' string, got {objective!r}")
    import cloudpickle

    try:
        payload = cloudpickle.dumps(objective)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing to the user
        raise ValueError(
            f"the objective {objective_identity(objective)} cannot be sent to worker processes: {exc}. "
            "Define it at module level (not inside another function) and keep open files, locks and "
            "connections out of its globals, or pass it as a 'module:function' string"
        ) from None
    return ObjectiveSpec(objective_identity(objective), payload=payload, **common)


def load_objective(spec: "ObjectiveSpec | Callable[..., Any] | str") -> Callable[..., Any]:
    """The callable behind ``spec``, in this process; raises ObjectiveLoadError with the reason."""
    if callable(spec) and not isinstance(spec, ObjectiveSpec):
        return spec
    if isinstance(spec, str):
        spec = ObjectiveSpec(spec, reference=spec)
    for path in reversed(spec.paths):
        if path not in sys.path and os.path.isdir(path):
            sys.path.insert(0, path)
    for path in spec.extra_paths:
        if path not in sys.path and os.path.isdir(path):
            sys.path.append(path)
    try:
        if spec.reference is not None:
            return resolve_reference(spec.reference)
        import cloudpickle

        return cloudpickle.loads(spec.payload)
    except Exception as exc:  # noqa: BLE001 - reported to the user as one message
        where = f" (searched {', '.join(spec.paths)})" if spec.paths else ""
        raise ObjectiveLoadError(
            f"cannot load the objective {spec.identity} in a worker on {os.uname().nodename}: "
            f"{type(exc).__name__}: {exc}{where}. Workers need the modules the objective imports: "
            "install them in the workers' environment or keep them beside the script on a shared filesystem"
        ) from None
