"""Writer and reader processes for the crash and concurrency tests (run as scripts).

Rows are deterministic functions of (worker, seq), so a reader can tell a partial or corrupted
row from a good one: objective = 1000 * worker + seq, x = (seq mod 97 / 97, worker / 1000).
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np

from adbo.storage import IN_FLIGHT, INTERRUPTED, OK, EvalRow, ResultTable, SegmentReader, SegmentWriter

DIM = 2


def make_row(worker: int, seq: int, status: int) -> EvalRow:
    x = np.array([(seq % 97) / 97.0, worker / 1000.0])
    return EvalRow(worker=worker, seq=seq, status=status, x=x, params={"seq": seq, "worker": worker},
                   objective=float(1000 * worker + seq) if status == OK else float("nan"),
                   t_started=time.time(), eval_id=f"w{worker}-s{seq}")


def row_is_intact(r: EvalRow) -> bool:
    good = make_row(r.worker, r.seq, r.status)
    same_objective = (r.status != OK) or r.objective == good.objective
    return bool(np.array_equal(r.x, good.x)) and same_objective and r.params == good.params


def writer(run_dir: str, run_id: str, worker: int, compact_every: int, duration: float) -> None:
    """Append rows forever (or for ``duration`` s), printing an ACK after each append returns."""
    print("READY", flush=True)  # imports done: from here on, a kill hits recovery or appends
    w = SegmentWriter(run_dir, worker, run_id, DIM, compact_every=compact_every)
    stale = [r for r in w.rows if r.status == IN_FLIGHT]
    if stale:
        w.append([r.evolve(status=INTERRUPTED) for r in stale])
        for r in stale:
            print(f"ACK {worker} {r.seq} {INTERRUPTED}", flush=True)
    seq = w.next_seq()
    end = time.time() + duration
    while time.time() < end:
        for status in (IN_FLIGHT, OK):
            w.append([make_row(worker, seq, status)])
            print(f"ACK {worker} {seq} {status}", flush=True)
        seq += 1


def reader(run_dir: str, run_id: str, duration: float) -> None:
    """Scan continuously; print how many scans, errors and partial rows it saw."""
    r = SegmentReader(run_dir, run_id, DIM)
    table = ResultTable(DIM)
    scans = errors = partial = 0
    end = time.time() + duration
    while time.time() < end:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                rows = r.scan()
            except Exception as exc:  # noqa: BLE001 - counted, that is the point
                errors += 1
                print(f"ERROR {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                continue
        errors += len(caught)
        for w in caught:
            print(f"WARNING {w.message}", file=sys.stderr, flush=True)
        partial += sum(not row_is_intact(row) for row in rows)
        table.upsert(rows)
        scans += 1
    print(f"RESULT scans={scans} errors={errors} partial={partial} rows={len(table)}", flush=True)


def aggregator(run_dir: str, run_id: str, worker: int, heartbeat: float, compact_every: int) -> None:
    """Hold or wait for the aggregator role forever, a round every 20 ms while holding."""
    from adbo.digests import Aggregator

    role = Aggregator(run_dir, worker, run_id, DIM, None, period_s=lambda: 0.02, heartbeat_s=heartbeat)
    role.COMPACT_EVERY = compact_every  # whole-run digests often: long writes for kills to land in
    print("READY", flush=True)
    held = False
    while True:
        delay = role.step()
        if role.holding and not held:
            print(f"HOLDING {role.incarnation}", flush=True)
        held = role.holding
        time.sleep(min(delay, heartbeat / 2))


if __name__ == "__main__":
    kind, run_dir, run_id = sys.argv[1:4]
    if kind == "aggregator":
        aggregator(run_dir, run_id, int(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]))
    elif kind == "writer":
        writer(run_dir, run_id, int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]))
    else:
        reader(run_dir, run_id, float(sys.argv[4]))
