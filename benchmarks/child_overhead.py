#!/usr/bin/env python
"""What the evaluation child process costs: milliseconds added to each evaluation by running the
objective in ``adbo.child`` (``ChildEvaluator``, the default) instead of in the worker itself
(``InlineEvaluator``, the anchor), measured in the same run.

Objectives: ``ackley10`` (``SyntheticObjective("ackley", 10)``, no simulated evaluation time,
shipped by reference) and ``trivial`` (a function of this script's ``__main__`` that returns a
float, shipped by value with cloudpickle, as a user's script would). Both evaluators hold the same
objective, are started (and the child made ready) before timing, and evaluate the same ``--n``
parameter dicts drawn from the ackley space, interleaved in blocks of ``--block`` whose order
alternates, so a change of machine load hits both alike. Each evaluation is timed with
``time.perf_counter()`` around ``evaluator.evaluate(params, timeout, abandon)``, exactly the
worker's call; ``--warmup`` untimed evaluations come first. The child's values are checked
against the in-process ones.

Also measured, per objective and ``--starts`` times each: the child's one-time start-up (a fresh
``ChildEvaluator``: ``start()`` to ``ready()`` returning), and the cost of a crash: an objective
that calls ``os._exit(1)`` on a flagged parameter is evaluated once normally, then with the flag
(the time to see the crash is ``crash_detect_s``), then normally again; ``replace_after_crash_s``
is the time from the crash outcome to that next successful evaluation (a new child started,
loaded and evaluating).

Target: median added time (child - inline) <= 5 ms on every objective.

    python benchmarks/child_overhead.py --json [--n 2000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import machine  # noqa: E402

TARGET_ADDED_MEDIAN_MS = 5.0


# -- objectives defined in the script, as a user's would be (they travel by value) -------
def trivial(params: dict[str, Any]) -> float:
    return float(params["x0"])


def crashing(params: dict[str, Any]) -> float:
    if params.get("crash"):
        os._exit(1)
    return float(params["x0"])


def never_abandon() -> bool:
    return False


# -- statistics ------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), ``q`` in [0, 100]."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ms = [t * 1e3 for t in seconds]
    return {"median": round(statistics.median(ms), 4), "p90": round(percentile(ms, 90), 4),
            "p99": round(percentile(ms, 99), 4), "mean": round(statistics.fmean(ms), 4),
            "max": round(max(ms), 4)}


# -- measurements ----------------------------------------------------------------------
def per_evaluation(objective: Callable[..., Any], params: list[dict[str, Any]], block: int, warmup: int,
                   timeout: float | None) -> dict[str, Any]:
    """Per-evaluation wall times of the in-process anchor and the child, interleaved in blocks."""
    from adbo.evaluator import ChildEvaluator, InlineEvaluator
    from adbo.objective_ref import package_objective
    from adbo.rows import OK

    spec = package_objective(objective)
    inline = InlineEvaluator(objective)
    child = ChildEvaluator(spec)
    times: dict[str, list[float]] = {"inline": [], "child": []}
    values: dict[str, list[float]] = {"inline": [], "child": []}
    evaluators = {"inline": inline, "child": child}
    try:
        inline.start()
        child.start()
        inline.ready(never_abandon)
        child.ready(never_abandon)
        for p in params[:warmup]:
            for ev in (inline, child):
                ev.evaluate(p, timeout, never_abandon)
        for b, first in enumerate(range(0, len(params), block)):
            order = ("inline", "child") if b % 2 == 0 else ("child", "inline")
            for name in order:
                ev, out_t, out_v = evaluators[name], times[name], values[name]
                for p in params[first:first + block]:
                    t0 = time.perf_counter()
                    outcome = ev.evaluate(p, timeout, never_abandon)
                    out_t.append(time.perf_counter() - t0)
                    if outcome.status != OK:
                        raise RuntimeError(f"{name} evaluation failed: {outcome.error}")
                    out_v.append(outcome.value)
        if child.starts != 1:
            raise RuntimeError(f"the child was replaced during the run ({child.starts} starts)")
    finally:
        child.close()
        inline.close()
    mismatches = sum(a != b for a, b in zip(values["inline"], values["child"]))
    inline_ms, child_ms = summary_ms(times["inline"]), summary_ms(times["child"])
    added = child_ms["median"] - inline_ms["median"]
    return {"identity": spec.identity, "inline_ms": inline_ms, "child_ms": child_ms,
            "added_median_ms": round(added, 4),
            "added_p90_ms": round(child_ms["p90"] - inline_ms["p90"], 4),
            "added_p99_ms": round(child_ms["p99"] - inline_ms["p99"], 4),
            "ratio_median": round(child_ms["median"] / inline_ms["median"], 1) if inline_ms["median"] > 0 else None,
            "value_mismatches": mismatches,
            "met": added <= TARGET_ADDED_MEDIAN_MS}


def child_start(objective: Callable[..., Any], starts: int) -> list[float]:
    """Seconds from ``start()`` to ``ready()`` returning, each with a fresh child."""
    from adbo.evaluator import ChildEvaluator
    from adbo.objective_ref import package_objective

    spec = package_objective(objective)
    out = []
    for _ in range(starts):
        ev = ChildEvaluator(spec)
        try:
            t0 = time.perf_counter()
            ev.start()
            ev.ready(never_abandon)
            out.append(time.perf_counter() - t0)
        finally:
            ev.close()
    return out


def crash_and_replace(repeats: int, timeout: float | None) -> dict[str, list[float]]:
    """Crash the child with ``os._exit(1)``; time the crash's detection and the replacement."""
    from adbo.evaluator import ChildEvaluator
    from adbo.objective_ref import package_objective
    from adbo.rows import FAILED, OK

    ev = ChildEvaluator(package_objective(crashing))
    detect, replace = [], []
    try:
        ev.ready(never_abandon)
        for _ in range(repeats):
            warm = ev.evaluate({"x0": 0.5}, timeout, never_abandon)  # a loaded, warm child
            if warm.status != OK:
                raise RuntimeError(f"evaluation before the crash failed: {warm.error}")
            t0 = time.perf_counter()
            crashed = ev.evaluate({"x0": 0.5, "crash": True}, timeout, never_abandon)
            t1 = time.perf_counter()
            if crashed.status != FAILED or "exit code 1" not in crashed.error:
                raise RuntimeError(f"expected the crash to be reported, got {crashed}")
            after = ev.evaluate({"x0": 0.25}, timeout, never_abandon)
            t2 = time.perf_counter()
            if after.status != OK or after.value != 0.25:
                raise RuntimeError(f"evaluation after the crash failed: {after}")
            detect.append(t1 - t0)
            replace.append(t2 - t1)
    finally:
        ev.close()
    return {"crash_detect_s": detect, "replace_after_crash_s": replace}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="timed evaluations per evaluator and objective (default: 2000)")
    p.add_argument("--block", type=int, default=100, help="evaluations per interleaved block (default: 100)")
    p.add_argument("--warmup", type=int, default=50, help="untimed evaluations first (default: 50)")
    p.add_argument("--starts", type=int, default=5, help="fresh children timed for start-up, and crashes (default: 5)")
    p.add_argument("--timeout", type=float, default=None,
                   help="evaluation timeout passed to evaluate() (default: none, the worker's default; "
                        "in-process, a timeout runs each evaluation in a thread)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", help="also write the JSON object to this file")
    args = p.parse_args(argv)

    import numpy as np

    from adbo.objectives.synthetic import SyntheticObjective
    from adbo.space import SearchSpace

    ackley10 = SyntheticObjective("ackley", 10)
    space = SearchSpace(ackley10.space())
    params = space.decode(space.sample(args.n + args.warmup, np.random.default_rng(args.seed)))
    warm, timed = params[:args.warmup], params[args.warmup:]
    objectives: dict[str, Callable[..., Any]] = {"ackley10": ackley10, "trivial": trivial}

    t_start = time.perf_counter()
    load_before = load()
    report: dict[str, Any] = {
        "benchmark": "child_overhead", "machine": machine(), "cores": os.cpu_count(),
        "python": sys.version.split()[0], "n": args.n, "block": args.block, "warmup": args.warmup,
        "timeout": args.timeout, "anchor": "InlineEvaluator (in-process)", "objectives": {},
    }
    for name, objective in objectives.items():
        r = per_evaluation(objective, warm + timed, args.block, args.warmup, args.timeout)
        starts = child_start(objective, args.starts)
        r["child_start_s"] = {"median": round(statistics.median(starts), 3),
                              "runs": [round(s, 3) for s in starts]}
        report["objectives"][name] = r
        print(f"{name}: inline median {r['inline_ms']['median']:.4f} ms, child {r['child_ms']['median']:.4f} ms, "
              f"added {r['added_median_ms']:.4f} ms; child start {r['child_start_s']['median']:.3f} s",
              file=sys.stderr)
    crash = crash_and_replace(args.starts, args.timeout)
    headline = report["objectives"]["ackley10"]
    report["child_start_s"] = headline["child_start_s"]["median"]
    report["child_start_note"] = "median over fresh children of the ackley10 objective (imports numpy)"
    report["replace_after_crash_s"] = round(statistics.median(crash["replace_after_crash_s"]), 3)
    report["replace_after_crash_runs_s"] = [round(s, 3) for s in crash["replace_after_crash_s"]]
    report["replace_after_crash_note"] = ("median over crashes of a script-defined objective that imports "
                                          "nothing; a new child plus one evaluation, so an objective's own "
                                          "imports add their start-up time here")
    report["crash_detect_ms"] = round(statistics.median(crash["crash_detect_s"]) * 1e3, 3)
    report["target"] = f"median added time <= {TARGET_ADDED_MEDIAN_MS:g} ms on every objective"
    report["target_added_median_ms"] = TARGET_ADDED_MEDIAN_MS
    report["met"] = all(r["met"] for r in report["objectives"].values())
    report["load_average"] = {"before": load_before, "after": load()}
    report["total_s"] = round(time.perf_counter() - t_start, 1)

    text = json.dumps(report, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    else:
        for name, r in report["objectives"].items():
            print(f"{name:10s} inline {r['inline_ms']['median']:8.4f} ms  child {r['child_ms']['median']:8.4f} ms "
                  f"(p90 {r['child_ms']['p90']:.4f}, p99 {r['child_ms']['p99']:.4f})  added "
                  f"{r['added_median_ms']:.4f} ms  x{r['ratio_median']}")
        print(f"child start-up {report['child_start_s']:.3f} s; replace after crash "
              f"{report['replace_after_crash_s']:.3f} s; target {report['target']}: "
              f"{'met' if report['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
