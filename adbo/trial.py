"""The handle an objective receives to report intermediate values and learn whether to stop.

An objective that takes a second argument gets a ``Trial``::

    def objective(params, trial):
        for epoch in range(1, 51):
            r2 = train_one_epoch(...)
            trial.report(r2, step=epoch)
            if trial.should_prune():
                raise adbo.TrialPruned()   # or: return r2
        return r2

The names are Optuna's (``report``, ``should_prune``, ``TrialPruned``), so an Optuna objective
moves over with its ``trial.suggest_*`` calls replaced by ``params[...]``; ``should_stop`` is the
same as ``should_prune`` for readers of DeepHyper. Objectives that take only ``params`` keep working.
Whatever the objective does after it is told to stop, the evaluation is stored as ``stopped``
with the step it reached and its last reported value.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

__all__ = ["Trial", "TrialPruned", "wants_trial"]


class TrialPruned(Exception):
    """Raise from an objective to end an evaluation that ``trial.should_prune()`` said to stop."""


Decide = Callable[[float, float], "str | None"]
"""(step, value) -> why the evaluation should stop, or None: the worker's stopper."""


class Trial:
    """One evaluation's reporting handle; see the module docstring."""

    def __init__(self, params: dict[str, Any], decide: Decide | None = None, eval_id: str = "") -> None:
        self.params = params
        self.eval_id = eval_id
        self._decide = decide
        self.steps: list[float] = []
        self.values: list[float] = []
        self.stop_reason: str | None = None

    def report(self, value: float, step: "int | float") -> None:
        """Record ``value`` at ``step`` (an epoch, a number of batches...); steps must increase."""
        try:
            step = float(step)
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"trial.report(value, step) takes two numbers, got value={value!r}, step={step!r}") from None
        if not math.isfinite(step) or step < 0:
            raise ValueError(f"trial.report: step must be a finite number >= 0, not {step}")
        if self.steps and step <= self.steps[-1]:
            raise ValueError(f"trial.report: steps must increase; step {step:g} comes after step {self.steps[-1]:g}")
        self.steps.append(step)
        self.values.append(value)
        if self.stop_reason is None and self._decide is not None:
            self.stop_reason = self._decide(step, value)

    def should_prune(self) -> bool:
        """True once the worker's stopper has decided this evaluation should stop."""
        return self.stop_reason is not None

    should_stop = should_prune

    @property
    def last_step(self) -> float | None:
        return self.steps[-1] if self.steps else None


def wants_trial(objective: Callable[..., Any]) -> bool:
    """Whether ``objective`` takes a trial handle: a second positional parameter, or one named ``trial``."""
    try:
        signature = inspect.signature(objective)
    except (TypeError, ValueError):
        return False
    positional = [p for p in signature.parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if "trial" in signature.parameters:
        return True
    if any(p.kind == p.VAR_POSITIONAL for p in signature.parameters.values()):
        return False
    return len(positional) >= 2 and positional[1].default is inspect.Parameter.empty


def is_pruned(exc: BaseException) -> bool:
    """adbo's ``TrialPruned`` or one of the same name (Optuna's), so ported objectives work unchanged."""
    return isinstance(exc, TrialPruned) or type(exc).__name__ == "TrialPruned"
