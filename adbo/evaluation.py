"""Calling the user's objective so that nothing it does can stop the worker.

An objective returns a float, or a dict holding ``"objective"`` plus any extra metadata. An
exception, a NaN or infinite value, a malformed return or a timeout all become a failed
evaluation with its error text; the worker carries on with its next proposal.
"""

from __future__ import annotations

import math
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .objective_ref import objective_identity, resolve_reference
from .rows import FAILED, OK, TIMEOUT

Objective = Callable[[dict[str, Any]], Any]

__all__ = ["Objective", "Outcome", "evaluate", "interpret", "objective_identity", "resolve_objective"]


def resolve_objective(objective: "Objective | str") -> Objective:
    """Accept a callable or a ``"package.module:function"`` reference."""
    return objective if callable(objective) else resolve_reference(objective)


@dataclass
class Outcome:
    status: int
    value: float = float("nan")
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def interpret(result: Any) -> Outcome:
    """Turn what the objective returned into an outcome (see the module docstring)."""
    metadata: dict[str, Any] = {}
    value = result
    if isinstance(result, Mapping):
        if "objective" not in result:
            return Outcome(
                FAILED,
                error=f"objective returned a dict without an 'objective' key (keys: {sorted(result)})",
            )
        metadata = {k: v for k, v in result.items() if k != "objective"}
        value = result["objective"]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return Outcome(FAILED, metadata=metadata, error=f"objective returned {value!r}, not a number")
    if not math.isfinite(number):
        reason = metadata.get("error") or f"objective returned {number}"
        return Outcome(FAILED, metadata=metadata, error=str(reason))
    return Outcome(OK, number, metadata)


def evaluate(objective: Objective, params: dict[str, Any], timeout: float | None) -> Outcome:
    """Run one evaluation, with a time limit when ``timeout`` is set.

    Without a timeout the objective runs in the calling thread (what GPU libraries and signal
    handlers expect). With one, it runs in a daemon thread; when the limit passes, the worker
    records a timeout and moves on. Python cannot kill a thread, so an objective that ignores its
    time limit keeps its thread (and its device) busy until it returns: long-running objectives
    should also stop themselves, for example by bounding epochs by wall time.
    """
    if timeout is None:
        try:
            return interpret(objective(dict(params)))
        except Exception as exc:  # noqa: BLE001 - the worker must survive any objective error
            return Outcome(FAILED, error=_error_text(exc))
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["result"] = objective(dict(params))
        except BaseException as exc:  # noqa: BLE001
            box["error"] = _error_text(exc)
        finally:
            done.set()

    thread = threading.Thread(target=target, name="adbo-objective", daemon=True)
    thread.start()
    if not done.wait(timeout):
        return Outcome(TIMEOUT, error=f"evaluation exceeded the timeout of {timeout:g} s")
    if "error" in box:
        return Outcome(FAILED, error=box["error"])
    return interpret(box.get("result"))


def _error_text(exc: BaseException) -> str:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(tb)
    return text[-4000:]  # enough to locate the fault; bounded so shards stay small
