#!/usr/bin/env python
"""Shard storage at scale: scan cost, filesystem operations and a worker's memory.

Builds a run directory with W writers holding R rows each of a 22-parameter space (the default,
200 x 200 = 40,000 rows, is what one worker holds late in a large run), then measures on this
machine's filesystem:

* a cold scan by a new worker (every segment opened once), its listings and opens;
* a warm scan after every writer published one more segment: what each worker pays per step;
* a warm scan after every writer compacted: readers skip or partially read compacted segments;
* the anchor, in the same run: a naive reader that re-reads every segment on every scan
  (what re-reading all job ids on every gather costs), and the ratio;
* a worker's memory: the resident-set growth of holding the 40,000 rows for fitting;
* shared reading (``adbo.digests``): an aggregator taking the role over (reading every segment
  once), one aggregator round after every writer published once more, and a worker's warm scan
  through the digests against the same scan of the shards.

Every phase also reports the metadata operations the storage code issued (``adbo.fsops``).

``--curves N`` gives rows learning curves as a run with early stopping stores them (a full
evaluation reports N steps; with ASHA's reduction 3, two thirds stop at step 1, two ninths at 3,
and so on) and scans as a worker with a stopper does: curves read and kept in a ``CurveBook``.
Compare with the same command without ``--curves``.

Prints JSON; ``--json FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__)))
from space_speed import combo_like_space  # noqa: E402

from adbo import fsops  # noqa: E402
from adbo.digests import Aggregator, SharedReader  # noqa: E402
from adbo.space import SearchSpace  # noqa: E402
from adbo.stopping import CurveBook  # noqa: E402
from adbo.storage import OK, EvalRow, ResultTable, SegmentReader, SegmentWriter, open_run  # noqa: E402

CURVE_STEPS = 0


def asha_like_curve(rng: np.random.Generator) -> np.ndarray | None:
    """A curve as long as ASHA (reduction 3, rungs 1, 3, 9, 27) would let it run."""
    if not CURVE_STEPS:
        return None
    length, rung = 1, 1
    while rung < CURVE_STEPS and rng.random() < 1 / 3:
        rung *= 3
        length = min(rung, CURVE_STEPS)
    if rung >= CURVE_STEPS:
        length = CURVE_STEPS
    steps = np.arange(1, length + 1, dtype=float)
    return np.column_stack([steps, 1.0 / steps + 0.01 * rng.random(length)])


def read_into(reader: SegmentReader, table: ResultTable, book: CurveBook | None) -> None:
    for batch in reader.scan_batches(with_text=False, with_curves=book is not None):
        table.upsert_batch(batch)
        if book is not None and batch.curves:
            workers, seqs = batch.numeric["worker"], batch.numeric["seq"]
            for i, points in batch.curves.items():
                book.update((int(workers[i]), int(seqs[i])), points[:, 0], points[:, 1])


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_rows(space: SearchSpace, worker: int, start: int, n: int, rng: np.random.Generator) -> list[EvalRow]:
    X = space.sample(n, rng)
    params = space.decode(X)
    now = time.time()
    return [
        EvalRow(worker=worker, seq=start + i, status=OK, x=X[i], params=params[i], objective=float(rng.normal()),
                metadata={"epochs": 10, "train_loss": 0.1}, t_submitted=now, t_started=now, t_finished=now + 60,
                bo_overhead_s=0.05, n_observations=start + i, hostname="x3001c0s13b0n0", eval_id=f"w{worker}-s{start + i}",
                curve=asha_like_curve(rng))
        for i in range(n)
    ]


def naive_scan(reader_dir: str, run_id: str, dim: int) -> tuple[float, int]:
    """Anchor: a fresh reader each time, i.e. every segment re-read on every scan."""
    t = time.perf_counter()
    reader = SegmentReader(reader_dir, run_id, dim)
    rows = sum(len(b) for b in reader.scan_batches(with_text=False))
    return time.perf_counter() - t, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=200)
    parser.add_argument("--rows", type=int, default=200, help="rows per writer")
    parser.add_argument("--batch", type=int, default=10, help="rows per published segment while building")
    parser.add_argument("--dir", default=None, help="where to build the run (default: a temporary directory)")
    parser.add_argument("--json", help="also write the JSON here")
    parser.add_argument("--curves", type=int, default=0,
                        help="learning-curve steps of a full evaluation (0: no curves, a run without early stopping)")
    args = parser.parse_args()
    global CURVE_STEPS
    CURVE_STEPS = args.curves
    warnings.simplefilter("error")  # a skipped segment would be a bug here

    space = SearchSpace(combo_like_space())
    base = args.dir or tempfile.mkdtemp(prefix="adbo-storage-")
    run_dir = os.path.join(base, "run")
    info = open_run(run_dir, space, "bench:rows", "maximize", {"workers": args.writers})
    rng = np.random.default_rng(0)
    t = time.perf_counter()
    writers = [SegmentWriter(run_dir, w, info.run_id, space.dim) for w in range(args.writers)]
    for start in range(0, args.rows, args.batch):
        for w in writers:
            w.append(make_rows(space, w.worker, start, min(args.batch, args.rows - start), rng))
    build_s = time.perf_counter() - t
    n_files = sum(len(files) for _, _, files in os.walk(os.path.join(run_dir, "shards")))

    gc.collect()
    rss0 = rss_mb()
    reader = SegmentReader(run_dir, info.run_id, space.dim, args.writers)
    table = ResultTable(space.dim, keep_rows=False)
    book = CurveBook() if args.curves else None
    t = time.perf_counter()
    read_into(reader, table, book)
    cold_s = time.perf_counter() - t
    cold = {"seconds": cold_s, "listings": reader.listings, "opens": reader.opens, "rows": len(table)}
    gc.collect()
    worker_rss_growth = rss_mb() - rss0

    for w in writers:  # one new evaluation per writer
        w.append(make_rows(space, w.worker, args.rows, 1, rng))
    l0, o0, r0 = reader.listings, reader.opens, reader.rows_read
    ops0 = fsops.snapshot()
    t = time.perf_counter()
    read_into(reader, table, book)
    warm = {"seconds": time.perf_counter() - t, "listings": reader.listings - l0, "opens": reader.opens - o0,
            "rows_read": reader.rows_read - r0, "metadata_ops": fsops.since(ops0)}

    # Shared reading: the aggregator takes the role (reads everything once), then a round after
    # every writer published one more evaluation; a worker's warm scan of the digests against
    # the direct reader's scan of the same new segments.
    role = Aggregator(run_dir, 0, info.run_id, space.dim, args.writers)
    ops0, t = fsops.snapshot(), time.perf_counter()
    role.step()
    takeover = {"seconds": time.perf_counter() - t, "metadata_ops": fsops.since(ops0)}
    shared_reader = SharedReader(run_dir, info.run_id, space.dim, args.writers)
    shared_table = ResultTable(space.dim, keep_rows=False)
    ops0, t = fsops.snapshot(), time.perf_counter()
    read_into(shared_reader, shared_table, CurveBook() if args.curves else None)
    shared_cold = {"seconds": time.perf_counter() - t, "metadata_ops": fsops.since(ops0), "rows": len(shared_table)}
    for w in writers:
        w.append(make_rows(space, w.worker, args.rows + 1, 1, rng))
    ops0, t = fsops.snapshot(), time.perf_counter()
    role.step()
    round_ = {"seconds": time.perf_counter() - t, "metadata_ops": fsops.since(ops0)}
    ops0, t = fsops.snapshot(), time.perf_counter()
    read_into(shared_reader, shared_table, None)
    shared_warm = {"seconds": time.perf_counter() - t, "metadata_ops": fsops.since(ops0), "mode": shared_reader.mode}
    ops0, t = fsops.snapshot(), time.perf_counter()
    read_into(reader, table, book)
    direct_warm = {"seconds": time.perf_counter() - t, "metadata_ops": fsops.since(ops0)}
    assert len(shared_table) == len(table), (len(shared_table), len(table))

    naive_s, naive_rows = naive_scan(run_dir, info.run_id, space.dim)  # anchor, before compaction
    for w in writers:
        w.compact()
    l0, o0, r0 = reader.listings, reader.opens, reader.rows_read
    t = time.perf_counter()
    read_into(reader, table, book)
    after_compaction = {"seconds": time.perf_counter() - t, "listings": reader.listings - l0,
                        "opens": reader.opens - o0, "rows_read": reader.rows_read - r0}

    result = {
        "machine": f"{platform.node()} ({os.cpu_count()} cores), python {platform.python_version()}, "
                   f"filesystem of {base}",
        "writers": args.writers,
        "curve_steps": args.curves,
        "curve_points": int(sum(len(v) for v in book.steps.values())) if book is not None else 0,
        "rows": len(table),
        "parameters": space.dim,
        "build_seconds": build_s,
        "files_after_build": n_files,
        "max_files_per_directory": max(len(f) for _, _, f in os.walk(os.path.join(run_dir, "shards"))),
        "cold_scan": cold,
        "warm_scan_one_new_segment_per_writer": warm,
        "scan_after_every_writer_compacted": after_compaction,
        "anchor_full_rescan_same_moment_as_warm_scan": {"seconds": naive_s, "rows_read": naive_rows},
        "shared_reading": {
            "aggregator_takes_over": takeover,
            "worker_first_scan_of_digests": shared_cold,
            "aggregator_round_one_new_segment_per_writer": round_,
            "worker_warm_scan_of_digests": shared_warm,
            "anchor_worker_warm_scan_of_shards_same_segments": direct_warm,
            "worker_scan_ops_shards_over_digests": (sum(direct_warm["metadata_ops"].values())
                                                    / max(1, sum(shared_warm["metadata_ops"].values()))),
            "worker_scan_seconds_shards_over_digests": direct_warm["seconds"] / shared_warm["seconds"],
        },
        "full_rescan_over_warm_scan": naive_s / warm["seconds"] if warm["seconds"] > 0 else None,
        "worker_table_mb": table.nbytes() / 2**20,
        "worker_rss_growth_mb_for_rows": worker_rss_growth,
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    if not args.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
