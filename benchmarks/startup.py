#!/usr/bin/env python
"""Start-up of a search: seconds from the call to ``adbo.optimize`` to the first evaluation and
to every worker busy, per site, with ``local-threads`` (everything in one process) as the anchor.

Each measurement runs in a fresh Python process (a user's script: module-level imports, the
objective defined in ``__main__``), so imports already paid by an earlier run do not hide costs;
what a script imports before the call (``import adbo``) is not counted. The objective sleeps
``--eval-time`` seconds.

    python benchmarks/startup.py --workers 8 --repeats 3 --json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys, time
    import adbo

    def objective(params):
        time.sleep({eval_time})
        return (params["a"] - 0.3) ** 2 + params["b"] ** 2

    if __name__ == "__main__":
        optimize = adbo.optimize  # resolving the lazy import is the script's own start-up
        t_call = time.time()
        result = optimize(objective, {{"a": (0.0, 1.0), "b": (-1.0, 1.0)}}, sys.argv[1], site="{site}",
                          workers={workers}, max_evals={max_evals}, direction="minimize", progress=False)
        t_back = time.time()
        df = result.results()
        first = df.groupby("worker").t_started.min()
        print(json.dumps({{"first_evaluation_s": float(first.min() - t_call),
                          "all_workers_busy_s": float(first.max() - t_call) if len(first) == {workers} else None,
                          "workers_seen": int(len(first)), "total_s": t_back - t_call,
                          "evaluations": int(len(df))}}))
''')


def measure(site: str, workers: int, eval_time: float, max_evals: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "search.py")
        with open(path, "w") as f:
            f.write(SCRIPT.format(site=site, workers=workers, eval_time=eval_time, max_evals=max_evals))
        out = subprocess.run([sys.executable, path, os.path.join(tmp, "run")], cwd=tmp, capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"{site}: exit {out.returncode}\n{out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--sites", default="local-threads,local,local-processes",
                   help="comma-separated sites; the first is the anchor (default: local-threads,local,local-processes)")
    p.add_argument("--eval-time", type=float, default=1.0, help="seconds each evaluation sleeps (default: 1)")
    p.add_argument("--repeats", type=int, default=3, help="runs per site, interleaved (default: 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    runs: dict[str, list[dict]] = {s: [] for s in sites}
    for _ in range(args.repeats):
        for site in sites:  # interleaved, so load on the machine hits every site alike
            runs[site].append(measure(site, args.workers, args.eval_time, max_evals=2 * args.workers))
    anchor = sites[0]
    report: dict = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                    "workers": args.workers, "eval_time_s": args.eval_time, "repeats": args.repeats,
                    "anchor": anchor, "sites": {}}
    for site, rs in runs.items():
        first = statistics.median(r["first_evaluation_s"] for r in rs)
        busy_values = [r["all_workers_busy_s"] for r in rs if r["all_workers_busy_s"] is not None]
        busy = statistics.median(busy_values) if busy_values else None
        report["sites"][site] = {"first_evaluation_s": round(first, 3),
                                 "all_workers_busy_s": round(busy, 3) if busy is not None else None,
                                 "runs": rs}
    a = report["sites"][anchor]
    for site, r in report["sites"].items():
        r["first_evaluation_vs_anchor"] = round(r["first_evaluation_s"] / a["first_evaluation_s"], 2)
        if r["all_workers_busy_s"] is not None and a["all_workers_busy_s"]:
            r["all_workers_busy_vs_anchor"] = round(r["all_workers_busy_s"] / a["all_workers_busy_s"], 2)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for site, r in report["sites"].items():
            print(f"{site:16s} first evaluation {r['first_evaluation_s']:6.2f} s   all {args.workers} busy "
                  f"{r['all_workers_busy_s'] if r['all_workers_busy_s'] is not None else '-'} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
