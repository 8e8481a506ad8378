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
from .rows import FAILED, OK, STOPPED, TIMEOUT
from .trial import Decide, Trial, is_pruned, wants_trial

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
    curve: list[tuple[float, float]] | None = None
    """(step, value) pairs the objective reported, if any."""

    def to_message(self) -> tuple[Any, ...]:
        """Plain values for the pipe from the evaluation's process to its worker."""
        return ("outcome", self.status, self.value, self.metadata, self.error, self.curve)

    @staticmethod
    def from_message(message: tuple[Any, ...]) -> "Outcome":
        _, status, value, metadata, error, curve = message
        return Outcome(status, value, metadata, error, curve)


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


def call(objective: Objective, params: dict[str, Any], decide: Decide | None = None,
         eval_id: str = "", catch: type[BaseException] = Exception) -> Outcome:
    """Call the objective once (with a trial handle if it takes one) and say how it went.

    ``catch``: what becomes a failed row. In the worker's own thread a KeyboardInterrupt must
    still reach the launcher; in a child process or a helper thread everything is caught.
    """
    trial = Trial(dict(params), decide, eval_id) if wants_trial(objective) else None
    try:
        result = objective(dict(params), trial) if trial is not None else objective(dict(params))
    except catch as exc:  # noqa: BLE001 - the worker must survive any objective error
        if trial is not None and is_pruned(exc):
            return _stopped(trial, {})
        outcome = Outcome(FAILED, error=_error_text(exc))
    else:
        outcome = interpret(result)
        if trial is not None and trial.should_prune():
            return _stopped(trial, outcome.metadata)
    if trial is not None and trial.steps:
        outcome.curve = list(zip(trial.steps, trial.values))
    return outcome


def _stopped(trial: Trial, metadata: dict[str, Any]) -> Outcome:
    """An evaluation ended early: its value is its last report (NaN if it never reported)."""
    if not trial.steps:
        return Outcome(FAILED, metadata=metadata,
                       error="the objective raised TrialPruned before reporting any value (trial.report)")
    reason = trial.stop_reason or "the objective stopped itself (TrialPruned)"
    return Outcome(STOPPED, trial.values[-1], {**metadata, "step": trial.steps[-1], "stop_reason": reason},
                   curve=list(zip(trial.steps, trial.values)))


def evaluate(objective: Objective, params: dict[str, Any], timeout: float | None,
             decide: Decide | None = None, eval_id: str = "") -> Outcome:
    """Run one evaluation, with a time limit when ``timeout`` is set.

    Without a timeout the objective runs in the calling thread (what GPU libraries and signal
    handlers expect). With one, it runs in a daemon thread; when the limit passes, the worker
    records a timeout and moves on. Python cannot kill a thread, so an objective that ignores its
    time limit keeps its thread (and its device) busy until it returns: long-running objectives
    should also stop themselves, for example by bounding epochs by wall time.
    """
    if timeout is None:
        return call(objective, params, decide, eval_id)
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["outcome"] = call(objective, params, decide, eval_id, catch=BaseException)
        finally:
            done.set()

    thread = threading.Thread(target=target, name="adbo-objective", daemon=True)
    thread.start()
    if not done.wait(timeout):
        return Outcome(TIMEOUT, error=f"evaluation exceeded the timeout of {timeout:g} s")
    return box["outcome"]


def _error_text(exc: BaseException) -> str:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    text = "".join(tb)
    return text[-4000:]  # enough to locate the fault; bounded so shards stay small
