"""Counts of the metadata operations adbo's storage layer issues, per process.

On a parallel filesystem every open, listing, create, rename, unlink and stat is a request to the
metadata server, which all jobs on the machine share. Projections to 10,000 workers are only as
good as the operation counts they start from, so the storage code counts what it really does
here, and benchmarks compare those counts with the simulator's.
"""

from __future__ import annotations

import threading
from collections import Counter

KINDS = ("open", "listing", "create", "rename", "unlink", "stat")
"""Metadata operations by kind. ``create`` is a new file (its open included); ``open`` is an open of
an existing file (reading a segment, a lease, fsyncing a file just written); ``stat`` is a getattr."""

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def count(kind: str, n: int = 1) -> None:
    """Record ``n`` operations of ``kind`` (one of ``KINDS``)."""
    with _lock:
        _counts[kind] += n


def snapshot() -> dict[str, int]:
    """This process's counts so far, every kind present (zeros included)."""
    with _lock:
        return {kind: int(_counts[kind]) for kind in KINDS}


def since(before: dict[str, int]) -> dict[str, int]:
    """Operations issued since ``before`` (a ``snapshot()``)."""
    now = snapshot()
    return {kind: now[kind] - before.get(kind, 0) for kind in KINDS}
