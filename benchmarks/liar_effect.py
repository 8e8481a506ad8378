#!/usr/bin/env python
"""Effect of accounting for peers' in-flight work (constant liar) with 8 asynchronous workers.

A virtual-time simulation of the real proposal code: 8 ``Proposer``s share one history; evaluation
times are drawn from N(10, 3) virtual seconds, so workers finish out of order and always see their
peers' configurations in flight. The objective is evaluated instantly. For each liar setting and
seed it reports the best value after the budget; prints JSON.
"""

from __future__ import annotations

import argparse
import heapq
import time

import numpy as np

from _report import emit, machine

from adbo.objectives.synthetic import SyntheticObjective
from adbo.proposer import Proposer, ProposerSettings
from adbo.rows import IN_FLIGHT, OK
from adbo.space import SearchSpace


def simulate(problem: str, dim: int | None, workers: int, budget: int, seed: int, liar: str) -> float:
    objective = SyntheticObjective(problem, dim)
    space = SearchSpace(objective.space())
    rng = np.random.default_rng(seed + 1000)
    proposers = [Proposer(space, maximize=False, seed=seed, worker=w, settings=ProposerSettings(liar=liar))
                 for w in range(workers)]
    X = np.empty((0, space.dim))
    y = np.empty(0)
    status = np.empty(0, dtype=np.int8)
    exclude: set[bytes] = set()
    events: list[tuple[float, int, int]] = []  # (finish time, worker, row index)

    def start(w: int, now: float) -> None:
        nonlocal X, y, status
        p = proposers[w].propose(X, y, status, exclude)
        X = np.vstack([X, p.x])
        y = np.append(y, np.nan)
        status = np.append(status, IN_FLIGHT).astype(np.int8)
        exclude.add(space.keys(p.x[None])[0])
        heapq.heappush(events, (now + max(0.1, rng.normal(10, 3)), w, len(y) - 1))

    for w in range(workers):
        start(w, 0.0)
    started = workers
    while events:
        now, w, i = heapq.heappop(events)
        y[i] = objective.value(space.decode(X[i][None])[0])
        status[i] = OK
        if started < budget:
            start(w, now)
            started += 1
    return float(np.nanmin(y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problem", default="ackley")
    parser.add_argument("--dim", type=int, default=10)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--liars", default="none,mean,max")
    parser.add_argument("--json")
    args = parser.parse_args()
    t0 = time.time()
    results = {}
    for liar in args.liars.split(","):
        best = [simulate(args.problem, args.dim, args.workers, args.budget, s, liar) for s in range(args.seeds)]
        results[liar] = {"best": best, "median": float(np.median(best)),
                         "quartiles": [float(np.percentile(best, 25)), float(np.percentile(best, 75))]}
        print(liar, results[liar], flush=True)
    out = {"machine": machine(), "problem": args.problem,
           "dim": args.dim, "workers": args.workers, "budget": args.budget, "seeds": args.seeds,
           "results": results, "seconds": time.time() - t0}
    emit(out, args.json)


if __name__ == "__main__":
    main()
