"""An exact evaluation budget without a manager: one ticket file per evaluation started.

Before it evaluates, a worker claims ticket ``n`` by creating ``RUN_DIR/budget/LAUNCH/tNNNNNNNNN``
with ``O_EXCL``; the filesystem lets exactly one worker create each name, so at most
``max_evals - base`` evaluations start in a launch, where ``base`` is what earlier launches stored.
A claim usually costs one create: a worker starts from its own estimate of the tickets taken (what
its scans show, spread by its worker id on the first claim) and only walks on from a taken number.
Tickets skipped that way, and tickets given back by evaluations that were abandoned, are found by
one listing when a worker reaches the end of the range.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import fsops

BUDGET_DIR = "budget"


class BudgetTickets:
    """One worker's access to its launch's tickets."""

    def __init__(self, directory: str | os.PathLike, base: int, max_evals: int, worker: int, mode: int = 0o700) -> None:
        self.dir = Path(directory)
        self.base = int(base)
        self.max_evals = int(max_evals)
        self.worker = int(worker)
        self.dir.mkdir(mode=mode, parents=True, exist_ok=True)
        self.creates = 0
        self.listings = 0

    def _name(self, n: int) -> Path:
        return self.dir / f"t{n:09d}"

    def _try(self, n: int, seq: int) -> bool:
        self.creates += 1
        fsops.count("create")
        try:
            fd = os.open(self._name(n), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        try:
            os.write(fd, f"{self.worker} {seq}\n".encode())
        finally:
            os.close(fd)
        return True

    def claim(self, hint: int, seq: int) -> int | None:
        """A ticket for this worker's evaluation ``seq``, or None when the budget is spent."""
        start = min(max(self.base, hint), self.max_evals)
        for n in range(start, self.max_evals):
            if self._try(n, seq):
                return n
        # Holes below the estimate: skipped numbers and tickets given back.
        self.listings += 1
        fsops.count("listing")
        try:
            taken = {e.name for e in os.scandir(self.dir)}
        except FileNotFoundError:
            taken = set()
        for n in range(self.base, self.max_evals):
            if self._name(n).name not in taken and self._try(n, seq):
                return n
        return None

    def release(self, n: int, seq: int) -> bool:
        """Give back ticket ``n`` if this worker's evaluation ``seq`` holds it (never anyone else's)."""
        path = self._name(n)
        fsops.count("open")
        try:
            owner = path.read_text().split()
        except (OSError, UnicodeDecodeError):
            return False
        if owner != [str(self.worker), str(seq)]:
            return False
        fsops.count("unlink")
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        return True
