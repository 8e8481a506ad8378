"""What the launcher shows while a search runs, read from the run directory alone.

On a terminal: a live bar (evaluations, best, failures, active workers). Into a file or a batch
log, or with ``progress=False``: one line at the start and one line every ``LINE_EVERY_S`` seconds
when something changed, so that logs stay readable (a bar redrawn into a file is one endless line).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
from tqdm.auto import tqdm

from .rows import BUDGET_STATUSES, FAILED, IN_FLIGHT, OK, STOPPED, TIMEOUT
from .storage import ResultTable, SegmentReader

LINE_EVERY_S = 30.0


def say(message: str) -> None:
    """One line for the user, on stderr, that does not break a live bar."""
    tqdm.write(message, file=sys.stderr)


class Monitor:
    """Progress from the run directory alone; ``update()`` scans at most as often as it is called."""

    def __init__(self, run_dir: str, run_id: str, dim: int, maximize: bool, budget: int | None, workers: int,
                 show: bool, max_workers: int | None = None) -> None:
        self.reader = SegmentReader(run_dir, run_id, dim, max_workers)
        self.table = ResultTable(dim, keep_rows=False)
        self.maximize = maximize
        self.workers = workers
        self.budget = budget
        self.bar_mode = show and sys.stderr.isatty()
        self.bar = tqdm(total=budget, desc="evaluations", unit="eval", dynamic_ncols=True, file=sys.stderr,
                        disable=not self.bar_mode)
        self.started: set[int] = set()
        """Workers of this launch that have published a row (rows submitted since it began)."""
        self._recent: dict[tuple[int, int], int] = {}
        self.done = 0
        self.failures = 0
        self.stopped = 0
        self.active = 0
        self.best: float | None = None
        self._last_line = 0.0
        self._last_state: tuple | None = None
        self.t0 = time.time()

    def update(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for batch in self.reader.scan_batches(with_text=False):
                self.table.upsert_batch(batch)
                self._note_recent(batch.numeric)
        _, y, st = self.table.view()
        self.done = int(np.isin(st, BUDGET_STATUSES).sum())
        ok = st == OK
        self.best = float(np.max(y[ok]) if self.maximize else np.min(y[ok])) if ok.any() else None
        self.failures = int(np.isin(st, (FAILED, TIMEOUT)).sum())
        self.stopped = int((st == STOPPED).sum())
        self.active = len({w for (w, _), status in self._recent.items() if status == IN_FLIGHT})
        if self.bar_mode:
            if self.bar.total is not None and self.done > self.bar.total:
                self.bar.total = self.done
            self.bar.n = self.done
            extra = {"stopped": self.stopped} if self.stopped else {}
            self.bar.set_postfix(best=self._best_text(), failures=self.failures, **extra,
                                 active=f"{self.active}/{self.workers}", refresh=False)
            self.bar.refresh()
        else:
            self._line()

    def _note_recent(self, numeric: np.ndarray) -> None:
        """Rows of this launch only: earlier launches' workers and stale in-flight rows are not ours."""
        mine = numeric[numeric["t_submitted"] >= self.t0 - 1.0]
        for w, q, status in zip(mine["worker"].tolist(), mine["seq"].tolist(), mine["status"].tolist()):
            self.started.add(w)
            if status != IN_FLIGHT or (w, q) not in self._recent:
                self._recent[(w, q)] = status

    def _best_text(self) -> str:
        return f"{self.best:.6g}" if self.best is not None else "-"

    def _line(self, force: bool = False) -> None:
        now = time.time()
        state = (self.done, self.failures, self.stopped, self.best, self.active)
        if not force and (now - self._last_line < LINE_EVERY_S or state == self._last_state):
            return
        self._last_line, self._last_state = now, state
        budget = f"/{self.budget}" if self.budget else ""
        say(f"adbo: {now - self.t0:6.0f} s  evaluations {self.done}{budget}  best {self._best_text()}  "
            f"failures {self.failures}  " + (f"stopped {self.stopped}  " if self.stopped else "")
            + f"active {self.active}/{self.workers}")

    def close(self) -> None:
        if self.bar_mode:
            self.bar.close()
        else:
            self._line(force=True)
