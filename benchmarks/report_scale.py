#!/usr/bin/env python
"""How long ``adbo report`` takes on a large run, against reading that run once (``summarize``).

Builds a run directory of real HDF5 segments as W writers of R rows each would leave it (the
22-parameter mixed Combo-like space, some failures and rows in flight, 40 hosts), then times
``adbo.report.write_report`` and, as the anchor in the same run, ``adbo.summarize``.

    python benchmarks/report_scale.py --workers 2000 --rows 50 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np


def build(run_dir: str, workers: int, rows: int, seed: int = 0) -> None:
    from adbo.objectives.candle_combo import combo_space
    from adbo.rows import FAILED, IN_FLIGHT, OK, EvalRow
    from adbo.space import SearchSpace
    from adbo.storage import SegmentWriter, open_run

    space = SearchSpace(combo_space())
    info = open_run(run_dir, space, "bench:report", "maximize", settings={"workers": workers, "max_evals": None})
    rng = np.random.default_rng(seed)
    t0 = time.time() - 3600.0
    for w in range(workers):
        X = space.sample(rows, rng)
        params = space.decode(X)
        starts = t0 + np.sort(rng.uniform(0, 3500, rows))
        out = []
        for q in range(rows):
            status = IN_FLIGHT if q == rows - 1 else (FAILED if rng.random() < 0.05 else OK)
            value = float(np.tanh(X[q, :3].sum() - 1.5) + 0.05 * rng.normal()) if status == OK else float("nan")
            out.append(EvalRow(worker=w, seq=q, status=status, x=X[q], params=params[q], objective=value,
                               t_submitted=starts[q] - 0.05, t_started=starts[q],
                               t_finished=float("nan") if status == IN_FLIGHT else starts[q] + rng.uniform(30, 90),
                               bo_overhead_s=float(rng.lognormal(-3, 0.5)), n_observations=q * workers,
                               hostname=f"node{w // 50:03d}", metadata={"scan_s": float(rng.lognormal(-5, 0.5))},
                               error="Traceback (most recent call last):\nRuntimeError: CUDA out of memory"
                               if status == FAILED else "", eval_id=f"{info.run_id[:8]}-w{w}-s{q}"))
        SegmentWriter(run_dir, w, info.run_id, space.dim).append(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=2000)
    p.add_argument("--rows", type=int, default=50, help="rows per worker (default: 50)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import adbo
    from adbo.report import write_report

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        t = time.perf_counter()
        build(run_dir, args.workers, args.rows)
        built = time.perf_counter() - t
        t = time.perf_counter()
        adbo.summarize(run_dir)
        anchor = time.perf_counter() - t
        t = time.perf_counter()
        page = write_report(run_dir, os.path.join(tmp, "out"))
        report_s = time.perf_counter() - t
        size = page.stat().st_size
    result = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
              "workers": args.workers, "rows": args.workers * args.rows, "build_s": round(built, 2),
              "summarize_s": round(anchor, 2), "report_s": round(report_s, 2),
              "report_vs_summarize": round(report_s / anchor, 2), "html_bytes": size,
              "load_average": list(os.getloadavg())}
    print(json.dumps(result, indent=1) if args.json else
          f"{result['rows']} rows: report {report_s:.1f} s, summarize {anchor:.1f} s, page {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
