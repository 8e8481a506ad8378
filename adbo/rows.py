"""One evaluation as stored, and its life cycle of statuses."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

IN_FLIGHT, OK, FAILED, TIMEOUT, INTERRUPTED, STOPPED = 0, 1, 2, 3, 4, 5
STATUS_NAMES = {IN_FLIGHT: "in_flight", OK: "ok", FAILED: "failed", TIMEOUT: "timeout", INTERRUPTED: "interrupted",
                STOPPED: "stopped"}
FINAL_STATUSES = (OK, FAILED, TIMEOUT, INTERRUPTED, STOPPED)
BUDGET_STATUSES = (OK, FAILED, TIMEOUT, STOPPED)
"""Statuses that use up the evaluation budget (an interrupted evaluation is not counted; one stopped
early by the stopper is, as a pruned trial counts in Optuna's ``n_trials``)."""
VALUED_STATUSES = (OK, STOPPED)
"""Statuses whose objective is a value the surrogate learns from (a stopped one: its last report)."""


@dataclass
class EvalRow:
    """One evaluation: published in flight first, then final under the same (worker, seq).

    ``gen`` is the generation of the segment that first published this row; compaction keeps it,
    so a reader can tell which rows of a compacted segment it has already read. A running
    evaluation that reports a learning curve is republished in flight with its longer curve at
    the stopper's decision points; readers keep the longest.
    """

    worker: int
    seq: int
    status: int
    x: np.ndarray
    params: dict[str, Any]
    objective: float = float("nan")
    metadata: dict[str, Any] = field(default_factory=dict)
    t_submitted: float = float("nan")
    t_started: float = float("nan")
    t_finished: float = float("nan")
    bo_overhead_s: float = float("nan")
    n_observations: int = 0
    hostname: str = ""
    error: str = ""
    eval_id: str = ""
    gen: int = 0
    curve: np.ndarray | None = None
    """What the objective reported so far: (steps, 2) rows of (step, value); None when nothing."""

    def evolve(self, **changes: Any) -> "EvalRow":
        return replace(self, **changes)


def curve_length(row: EvalRow) -> int:
    return 0 if row.curve is None else len(row.curve)
