#!/usr/bin/env python
"""Best value found in a fixed wall-clock budget by W real worker processes, on a tabular problem.

Virtual time (``quality.py``) cannot show what users live with: start-up, contention for the
cores, stragglers at the end of the budget. Here every method runs W real worker processes on a
tabular HPO problem (``benchmarks/_tabular.py``) whose evaluation sleeps its recorded training
time times ``--scale`` and then returns the table's value. The budget is counted from the call
that starts the search (``t0``, taken just before it) and lasts ``--budget-s`` seconds:

* ``adbo``: ``adbo.launch(site="local")`` (a BO thread per worker in the launching process, each
  worker's evaluations in a child process), stopped by the run's STOP file at the budget's end.
* ``optuna_tpe``: W processes, each ``optuna.load_study`` on one shared ``JournalStorage(
  JournalFileBackend(file))`` with ``TPESampler(seed=seed * 1000 + w)`` (defaults otherwise),
  asking, sleeping and telling in a loop: Optuna's documented way to run on one machine.
* ``deephyper_decentralized``: W processes, each its own DeepHyper ``CBO`` (defaults) telling it
  the results of all workers that finished since its last step (a shared list in a
  ``multiprocessing`` manager, the role of DeepHyper's shared-memory storage).
* ``random``: W processes sampling the space uniformly.
* ``adbo:KEY=VALUE:...``: adbo with those ``ProposerSettings`` (``adbo:cost_aware=false``)
  or ``adbo.launch`` arguments (``adbo:walltime=70:walltime_margin=0``: the user tells adbo
  when the allocation ends, and workers start no evaluation that would not finish by then).

Reported per method and seed: the best value among the evaluations that *finished* within the
budget and its regret against the table's optimum, the evaluations finished, and the utilization
counted from ``t0`` (busy time of the W workers within [t0, t0 + budget], evaluations still
running cut at the end, over W x budget: start-up counts against it); for adbo also the share of
evaluations proposed during the previous evaluation (``proposed_ahead``, ``overlap``); per method
the medians over seeds. ``--quick`` is a smoke run (2 workers, 8 s, one seed, one cheap method set).

Usage: ``python benchmarks/parallel_wallclock.py --json OUT.json [--problem hpolib_naval_propulsion]
[--workers 8] [--budget-s 70] [--scale 0.01,0.056] [--seeds 5] [--methods adbo,optuna_tpe,...]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _tabular  # noqa: E402
from _report import emit, machine  # noqa: E402

METHODS = ("adbo", "optuna_tpe", "deephyper_decentralized", "random")


# -- worker processes of the anchors ------------------------------------------------------------
def _loop(w: int, propose: Any, record: Any, objective: _tabular.SleepingTable, deadline: float, out: Any) -> None:
    """Propose, evaluate, record until the deadline; each start and each finish goes to ``out``."""
    while time.time() < deadline:
        config = propose()
        t_start = time.time()
        out.put(("start", w, t_start, None, None))
        value = objective(config)
        t_end = time.time()
        record(config, value)
        out.put(("end", w, t_start, t_end, value))


def suggest(trial: Any, name: str, dist: Any) -> Any:
    """One define-by-run suggestion through Optuna's public API, for a distribution of ``_anchors``."""
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_categorical(name, list(dist.choices))


def _optuna_worker(w: int, seed: int, storage_path: str, space: tuple[dict, dict, list],
                   objective: _tabular.SleepingTable, deadline: float, out: Any) -> None:
    import optuna
    from _anchors import is_active
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists, conds, order = space  # Optuna's own vocabulary, built once by the parent: no ConfigSpace here
    storage = JournalStorage(JournalFileBackend(storage_path))
    study = optuna.load_study(study_name="wallclock", storage=storage,
                              sampler=optuna.samplers.TPESampler(seed=seed * 1000 + w))
    trials: list[Any] = []

    def propose() -> dict[str, Any]:
        trial = study.ask()
        params: dict[str, Any] = {}
        for name in order:
            if is_active(name, params, conds):
                params[name] = suggest(trial, name, dists[name])
        trials.append(trial)
        return params

    def record(config: dict[str, Any], value: float) -> None:
        study.tell(trials.pop(), float(value))

    _loop(w, propose, record, objective, deadline, out)


def _deephyper_worker(w: int, seed: int, shared: Any, objective: _tabular.SleepingTable, deadline: float, out: Any) -> None:
    from _anchors import DeepHyperCBO

    cbo = DeepHyperCBO(objective.table.space(), seed=seed * 1000 + w)
    seen = 0

    def propose() -> dict[str, Any]:
        nonlocal seen
        new = shared[seen:]
        if new:
            cbo.tell_many([c for c, _ in new], [v for _, v in new])
            seen += len(new)
        return cbo.ask()

    try:
        _loop(w, propose, lambda c, v: shared.append((c, v)), objective, deadline, out)
    finally:
        cbo.close()


def _random_worker(w: int, seed: int, objective: _tabular.SleepingTable, deadline: float, out: Any) -> None:
    from adbo.space import SearchSpace

    space = SearchSpace(objective.table.space())
    rng = np.random.default_rng([seed, w, 99])
    _loop(w, lambda: space.decode(space.sample(1, rng))[0], lambda c, v: None, objective, deadline, out)


def _run_processes(target: Any, args_of: Any, workers: int, t0: float, budget: float,
                   ctx: Any, out: Any) -> list[tuple[int, float, float, float]]:
    """Start W processes of ``target``, collect their records until the deadline, stop them."""
    procs = [ctx.Process(target=target, args=args_of(w), daemon=True) for w in range(workers)]
    for p in procs:
        p.start()
    deadline = t0 + budget
    started: dict[tuple[int, float], None] = {}
    finished: list[tuple[int, float, float, float]] = []
    while time.time() < deadline:
        try:
            kind, w, t_start, t_end, value = out.get(timeout=max(0.01, min(0.5, deadline - time.time())))
        except queue.Empty:
            continue
        if kind == "start":
            started[(w, t_start)] = None
        else:
            started.pop((w, t_start), None)
            finished.append((w, t_start, t_end, value))
    while True:  # records already queued at the deadline
        try:
            kind, w, t_start, t_end, value = out.get_nowait()
        except queue.Empty:
            break
        if kind == "start":
            started[(w, t_start)] = None
        else:
            started.pop((w, t_start), None)
            finished.append((w, t_start, t_end, value))
    for p in procs:
        p.terminate()
    for p in procs:
        p.join(timeout=10)
    return finished + [(w, s, float("nan"), float("nan")) for (w, s) in started]


def run_anchor(method: str, objective: _tabular.SleepingTable, workers: int, budget: float, seed: int,
               scratch: Path) -> tuple[float, list[tuple[int, float, float, float]]]:
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        out = manager.Queue()
        t0 = time.time()  # the search starts with the call below (study or shared list, then processes)
        deadline = t0 + budget
        if method == "optuna_tpe":
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            path = str(scratch / f"optuna-{seed}.log")
            optuna.create_study(study_name="wallclock", direction="minimize",
                                storage=JournalStorage(JournalFileBackend(path)))
            from _anchors import optuna_distributions, parent_conditions

            cs = objective.table.space()
            space = (optuna_distributions(cs), parent_conditions(cs), list(cs.keys()))
            records = _run_processes(_optuna_worker, lambda w: (w, seed, path, space, objective, deadline, out),
                                     workers, t0, budget, ctx, out)
        elif method == "deephyper_decentralized":
            shared = manager.list()
            records = _run_processes(_deephyper_worker, lambda w: (w, seed, shared, objective, deadline, out),
                                     workers, t0, budget, ctx, out)
        elif method == "random":
            records = _run_processes(_random_worker, lambda w: (w, seed, objective, deadline, out),
                                     workers, t0, budget, ctx, out)
        else:
            raise SystemExit(f"unknown method {method!r}; choose from {list(METHODS)}")
    return t0, records


def run_adbo(objective: _tabular.SleepingTable, workers: int, budget: float, seed: int,
             scratch: Path, options: dict[str, Any] | None = None) -> tuple[float, list[tuple[int, float, float, float]]]:
    import adbo
    from adbo.storage import STOP_FILE, scan_run

    run_dir = scratch / f"adbo-{seed}"
    space = objective.table.space()
    result: dict[str, Any] = {}
    t0 = time.time()
    kwargs = {"max_evals": None, **(options or {})}
    thread = threading.Thread(target=lambda: result.update(summary=adbo.launch(
        objective, space, run_dir, site="local", workers=workers, direction="minimize",
        seed=seed, progress=False, startup_timeout=600, **kwargs)), daemon=True)
    thread.start()
    time.sleep(max(0.0, t0 + budget - time.time()))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STOP_FILE).touch()
    thread.join(timeout=600)
    _, table, _ = scan_run(run_dir)
    records = [(r.worker, r.t_started, r.t_finished if r.status != 0 else float("nan"), r.objective)
               for r in table.rows if np.isfinite(r.t_started)]
    # Evaluations whose configuration was proposed during the worker's previous evaluation (overlap).
    ahead = sum("proposal_age_s" in r.metadata for r in table.rows)
    return t0, records, ahead


def summarize(method: str, seed: int, t0: float, budget: float, workers: int, optimum: float,
              records: list[tuple[int, float, float, float]]) -> dict[str, Any]:
    t1 = t0 + budget
    starts = np.array([r[1] for r in records], dtype=float)
    ends = np.array([r[2] for r in records], dtype=float)
    values = np.array([r[3] for r in records], dtype=float)
    done = np.isfinite(ends) & (ends <= t1) & np.isfinite(values)
    busy = np.clip(np.minimum(np.where(np.isfinite(ends), ends, t1), t1) - np.maximum(starts, t0), 0.0, None)
    best = float(values[done].min()) if done.any() else float("nan")
    out = {"method": method, "seed": seed, "best": best, "regret": best - optimum,
           "evaluations": int(done.sum()), "utilization": float(busy.sum() / (workers * budget)),
           "first_start_s": float(starts.min() - t0) if len(starts) else float("nan")}
    print(f"{method:>24} seed={seed}: best {best:.4g} (regret {out['regret']:.3g}), {out['evaluations']} "
          f"evaluations, utilization {out['utilization']:.2f}, first start after {out['first_start_s']:.1f} s",
          file=sys.stderr, flush=True)
    return out


def launch_value(raw: str) -> Any:
    """A keyword argument of ``adbo.launch`` from its text: true/false and numbers as such, else text."""
    return json.loads(raw.lower()) if raw.lower() in ("true", "false") or raw.replace(".", "", 1).isdigit() else raw


def variant_options(method: str) -> dict[str, Any]:
    """``adbo:cost_aware=false:walltime=70`` -> {"proposer_options": {"cost_aware": False}, "walltime": 70};
    a key is a ``ProposerSettings`` field or else an ``adbo.launch`` argument; anchors take no options."""
    import inspect

    import adbo
    from adbo.proposer import ProposerSettings

    base, *pairs = method.split(":")
    launch_args = set(inspect.signature(adbo.launch).parameters)
    proposer: dict[str, Any] = {}
    options: dict[str, Any] = {"proposer_options": proposer}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        if base == "adbo" and key in ProposerSettings.__dataclass_fields__:
            proposer[key] = ProposerSettings.parse(key, raw)
        elif base == "adbo" and key in launch_args:
            options[key] = launch_value(raw)
        else:
            raise SystemExit(f"{method!r}: only adbo takes options: settings of adbo.ProposerSettings "
                             f"{sorted(ProposerSettings.__dataclass_fields__)} or adbo.launch arguments")
    return options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", default="hpolib_naval_propulsion", help=f"one of {list(_tabular.PROBLEM_NAMES)}")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=70.0, help="wall-clock budget from the starting call")
    parser.add_argument("--scale", default="0.01,0.056", help="comma-separated training-time scales")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 workers, 8 s, 1 seed, adbo,optuna_tpe,random")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--adbo-options", default="",
                        help="keyword arguments of adbo.launch for the adbo runs, KEY=VALUE,... (e.g. overlap=true)")
    parser.add_argument("--log", help="also append each run's summary to this file as one JSON line, as it ends "
                                      "(a long measurement keeps what it finished if it is interrupted)")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.budget_s, args.seeds, args.scale = 2, 8.0, 1, args.scale.split(",")[0]
        if args.methods == ",".join(METHODS):
            args.methods = "adbo,optuna_tpe,random"
    methods = [m for m in args.methods.split(",") if m]
    unknown = {m.split(":")[0] for m in methods} - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)} "
                         "(adbo variants: adbo:KEY=VALUE:..., settings of adbo.ProposerSettings or adbo.launch arguments)")
    variants = {m: variant_options(m) for m in methods}
    scales = [float(s) for s in args.scale.split(",")]
    adbo_options: dict[str, Any] = {}
    for pair in (p for p in args.adbo_options.split(",") if p):
        key, _, raw = pair.partition("=")
        adbo_options[key] = launch_value(raw)
    optimum = _tabular.load(args.problem).optimum
    runs: list[dict[str, Any]] = []
    t_all = time.time()
    with tempfile.TemporaryDirectory(prefix="adbo-wallclock-") as scratch:
        for scale in scales:
            objective = _tabular.SleepingTable(args.problem, scale)
            for seed in range(args.seeds):
                for method in methods:  # methods interleaved per seed, so load drifts hit all alike
                    where = Path(scratch) / f"{method}-{scale}-{seed}"
                    where.mkdir()
                    extra = {}
                    if method.startswith("adbo"):
                        options = {**adbo_options, **variants[method]}
                        t0, records, ahead = run_adbo(objective, args.workers, args.budget_s, seed, where, options)
                        extra["proposed_ahead"] = ahead / max(1, len(records))
                    else:
                        t0, records = run_anchor(method, objective, args.workers, args.budget_s, seed, where)
                    runs.append({"scale": scale, **summarize(method, seed, t0, args.budget_s, args.workers,
                                                             optimum, records), **extra})
                    if args.log:
                        with open(args.log, "a") as fh:
                            fh.write(json.dumps({"problem": args.problem, "workers": args.workers,
                                                 "budget_s": args.budget_s, **runs[-1]}) + "\n")
    medians: dict[str, dict[str, Any]] = {}
    for scale in scales:
        for method in methods:
            rs = [r for r in runs if r["scale"] == scale and r["method"] == method]
            medians.setdefault(str(scale), {})[method] = {
                key: float(np.nanmedian([r[key] for r in rs])) if rs else None
                for key in ("best", "regret", "evaluations", "utilization", "first_start_s")}
    emit({"machine": machine(), "problem": args.problem, "adbo_options": adbo_options, "optimum": optimum, "workers": args.workers,
          "budget_s": args.budget_s, "scales": scales, "seeds": args.seeds, "methods": methods,
          "median": medians, "runs": runs, "seconds": time.time() - t_all}, args.json)


if __name__ == "__main__":
    main()
