"""Failures made visible: the first error of a run and the most common one, in a few lines.

A search in which every evaluation fails must not end with a bar at ``failures=43`` and nothing
else: the user needs the traceback's last lines on the screen, and a count of what went wrong.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from .rows import FAILED, OK, STOPPED, TIMEOUT, EvalRow

TAIL_LINES = 6


def error_key(error: str) -> str:
    """The line that names an error: a traceback's last non-empty line, or the message itself."""
    lines = [ln.strip() for ln in error.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no error text)"


@dataclass
class FailureDigest:
    failed: int = 0
    finished: int = 0
    first_error: str = ""
    first_eval_id: str = ""
    most_common: str = ""
    most_common_count: int = 0

    @classmethod
    def of(cls, rows: Iterable[EvalRow]) -> "FailureDigest":
        rows = sorted(rows, key=lambda r: (r.t_finished, r.worker, r.seq))
        failed = [r for r in rows if r.status in (FAILED, TIMEOUT)]
        finished = sum(1 for r in rows if r.status in (OK, FAILED, TIMEOUT, STOPPED))
        if not failed:
            return cls(0, finished)
        counts = Counter(error_key(r.error) for r in failed)
        common, count = counts.most_common(1)[0]
        return cls(len(failed), finished, failed[0].error, failed[0].eval_id, common, count)

    def first_error_tail(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.first_error.rstrip().splitlines()[-lines:])

    def report(self, any_ok: bool) -> str | None:
        """What to print at the end of a search, or None when nothing failed."""
        if not self.failed:
            return None
        if not any_ok:
            tail = "\n".join("    " + ln for ln in self.first_error_tail().splitlines())
            return (f"no evaluation succeeded ({self.failed} failed). The first error ({self.first_eval_id}):\n{tail}\n"
                    f"Fix the objective and relaunch; `adbo export RUN_DIR -o all.csv` has every error.")
        return (f"{self.failed} of {self.finished} evaluations failed; most common error "
                f"({self.most_common_count}x): {self.most_common}")
