"""One evaluation as stored, and its life cycle of statuses."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

IN_FLIGHT, OK, FAILED, TIMEOUT, INTERRUPTED = 0, 1, 2, 3, 4
STATUS_NAMES = {IN_FLIGHT: "in_flight", OK: "ok", FAILED: "failed", TIMEOUT: "timeout", INTERRUPTED: "interrupted"}
FINAL_STATUSES = (OK, FAILED, TIMEOUT, INTERRUPTED)
BUDGET_STATUSES = (OK, FAILED, TIMEOUT)
"""Statuses that use up the evaluation budget (an interrupted evaluation is not counted)."""


@dataclass
class EvalRow:
    """One evaluation: published in flight first, then final under the same (worker, seq).

    ``gen`` is the generation of the segment that first published this row; compaction keeps it,
    so a reader can tell which rows of a compacted segment it has already read.
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

    def evolve(self, **changes: Any) -> "EvalRow":
        return replace(self, **changes)
