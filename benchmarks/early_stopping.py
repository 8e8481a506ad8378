#!/usr/bin/env python
"""Early stopping at equal compute: adbo with and without stopping against the anchors' pruners.

Every search runs in *virtual time* on the real proposal and stopping code of each package. An
evaluation is a learning curve of ``max_step`` training steps (epochs); each step takes virtual
time (a per-evaluation step duration with some spread, so workers desynchronize), and after each
step the evaluation reports its value and its method decides whether to stop it. The budget is a
number of *training steps* summed over all evaluations (``--budget`` full trainings, default
``50 x max_step``), the same for every method; when it is spent the run ends (evaluations still
running then are not counted). The proposal's own CPU time is *ignored* (a worker's BO step
takes no virtual time): the budget and both figures are in training steps, not seconds.

Problems (all offline):

* Synthetic learning-curve families over the unit cube, ``max_step`` 50, the final value from a
  standard test function of x and the curve's shape from x too, with Gaussian noise on every
  report. ``powerlaw_hartmann6``: saturating power laws ``F(x) + A(x) (t^-c(x) - T^-c)/(1 - T^-c)``
  (Hartmann-6). ``exp_ackley5``: exponential approach ``F + A (e^-(t-1)/tau - ...)`` with
  time constants 1-25 steps (Ackley-5 on [-5, 5]^5). ``crossing_levy8``: x0 acts like a learning
  rate: fast learners start low and end worse (a penalty 20 x0^2 on the final value), slow ones
  start high and overtake them: the curves cross (Levy-7 on [-10, 10]^7 for the other seven).
  A method's result is judged on the *noise-free* value of each evaluation at its last step (the
  model a user would keep), so a method gains nothing from lucky noise.
* ``candle_combo``: the real CANDLE Combo model and training (``objectives/candle_combo.py``) on
  the generator's synthetic data with the real schema (``candle_data.synthetic_dataset('tiny',
  n_rows=1000)``, 600/200/200 split), 50 epochs, CPU, one thread. Training for every benchmark
  evaluation is far too slow here, so a fixed pool of 256 configurations drawn from the full 22-
  parameter space (seed 2026) is trained once and its per-epoch validation R2 (clipped at -1, as
  DeepHyper's benchmark does) cached on disk (``candle_pool-*.jsonl`` in ``--cache``; built on first
  use with progress lines, about 25 min on this machine, resumable). The objective of the search is
  then the *nearest pool member* (RMS distance in adbo's unit-cube encoding, inactive parameters at
  -1): a deterministic, piecewise-constant function of the whole space, as a tabular benchmark is;
  every method proposes in the real space and may hit the same member twice (the repeat costs its
  steps again). Keras-style early stopping inside a configuration ends its curve early (it then
  finishes, status ok); a diverged training reports its finished epochs, then fails. A step lasts the
  configuration's measured seconds per epoch.

Methods (``--methods``):

* ``adbo`` (no stopping), ``adbo+asha``, ``adbo+median``, ``adbo+extrapolate``: W workers, each
  with its own ``adbo.proposer.Proposer`` (default ``ProposerSettings``) over one shared history of
  finished, stopped and in-flight rows, and its own ``adbo.stopping.CurveBook``: the worker's own
  running curve goes into its book at every step (the stopper decides on that book), peers' running
  curves reach it only at the steps where ``stopper.publish_step`` says the worker republishes, and
  every curve at its end (the final row). Before each proposal the values of stopped rows are
  replaced by ``surrogate_targets(..., mode)`` on the proposing worker's book (NaN: like a failure).
  Options: ``adbo+asha:partial=last:min_peers=1:reduction=2:min_step=3`` (partial mode and any
  stopper option of ``make_stopper``). The default partial mode is ``rank``.
* ``random`` / ``random+asha``: uniform proposals; with adbo's ``SuccessiveHalving`` (defaults) on
  the same per-worker books (random search with ASHA).
* ``tpe`` / ``tpe+sha`` / ``tpe+hyperband``: one Optuna study (``TPESampler(seed)`` defaults) asked
  and told by all W workers, with ``SuccessiveHalvingPruner()`` (defaults) or
  ``HyperbandPruner(min_resource=1, max_resource=max_step)``; each step is ``trial.report(value,
  step)`` then ``trial.should_prune()``; a pruned trial is told ``TrialState.PRUNED`` (Optuna then
  keeps its last intermediate value, which TPE learns from), a diverged one ``FAIL``.
* ``cbo`` / ``cbo+sha``: DeepHyper 0.13's decentralized mode, one ``deephyper.hpo.CBO`` per worker
  (defaults, see ``_anchors.DeepHyperCBO``), told every result that finished since its last ask;
  with ``deephyper.stopper.SuccessiveHalvingStopper(max_steps=max_step)`` (defaults) on one shared
  DeepHyper ``MemoryStorage``, driven through ``RunningJob.record``/``stopped`` as DeepHyper's
  evaluators do; a stopped job's objective is its last recorded value, as ``RunningJob.objective``
  returns it. Not run on ``candle_combo``: DeepHyper 0.13.2 crashes there (``CBO_FAILS``).

Figures, per problem, worker count and method, over seeds: ``best_at_budget`` (median and
quartiles of the best noise-free value at the end of any finished or stopped evaluation when the
budget is spent, in the problem's direction: a loss to minimize for the synthetic families, R2 to
maximize for Combo), ``steps_to_target`` (training steps spent, all workers together, until an
evaluation ending at or better than the target; runs that never get there count as infinite, so a
median is finite only when most runs reach it), ``evaluations`` started, the share ``stopped``, and
``ratio_vs_adbo``: median steps_to_target of ``adbo`` (no stopping) at the same worker count divided
by the method's. The target of a problem at a worker count is the worse quartile over seeds of ``adbo``'s (no
stopping) best_at_budget there: one value for every method of that problem and worker count, and
one that most runs of ``adbo`` reach, so its median steps_to_target is finite.
Verdicts: the default stopper's ratio against 3, and whether its median best_at_budget beats every
anchor's early-stopping variant (``tpe+sha``, ``tpe+hyperband``, ``cbo+sha``, ``random+asha``).
``option_sweep`` ranks the adbo stopping variants by median best_at_budget in every problem and
worker-count cell (the synthetic cells for the option variants; every cell for the others).

Every run is cached as JSON in ``--cache`` (default ``benchmarks/results/early_stopping``); runs go
seed by seed, so an interrupted measurement still covers every method for the seeds it finished,
and ``--report-only`` assembles whatever is cached. ``--quick`` is a smoke run (< 1 min).
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import emit, machine  # noqa: E402

from adbo.objectives.synthetic import ackley, hartmann6, levy  # noqa: E402
from adbo.proposer import Proposer, ProposerSettings  # noqa: E402
from adbo.rows import FAILED, IN_FLIGHT, OK, STOPPED  # noqa: E402
from adbo.space import SearchSpace  # noqa: E402
from adbo.stopping import PARTIAL_MODES, CurveBook, make_stopper, surrogate_targets  # noqa: E402

MAX_STEP = 50
DEFAULT_PARTIAL = "rank"
ES_ANCHORS = ("tpe+sha", "tpe+hyperband", "cbo+sha", "random+asha")
MAIN_METHODS = ("adbo", "adbo+asha", "adbo+median", "adbo+extrapolate", "adbo+asha:partial=last",
                "adbo+asha:partial=worst", "random", "random+asha", "tpe", "tpe+sha", "tpe+hyperband",
                "cbo+sha")
CBO_FAILS = {"candle_combo": (
    "DeepHyper 0.13.2 crashes on the Combo space: partway through the first run (1 worker, seed 0), its optimizer's own next point has "
    "base_lr = 9.999999999999999e-06 (exp(log(1e-5)) rounded below the log-scale lower bound 1e-05) and "
    "ConfigSpace's deactivate_inactive_hyperparameters raises IllegalValueError inside CBO.tell")}
"""Anchors that cannot run on a problem, and why (the report carries it)."""
OPTIONAL_METHODS = ("cbo",)
"""DeepHyper CBO without stopping: about 1 s of CPU per ask here, so not run by default."""
SWEEP_METHODS = ("adbo+asha:min_peers=1", "adbo+asha:min_peers=5", "adbo+asha:reduction=2",
                 "adbo+asha:reduction=4")


# -- problems -------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """One evaluation's curve as the method sees it and as it is judged."""

    reported: np.ndarray
    """The value reported at steps 1..len (user's direction)."""
    true: np.ndarray
    """The noise-free value at each step (what the evaluation is judged on)."""
    failed: bool
    """After its reports, the training fails (one more step is spent)."""
    step_s: float


def _g_pow(t: np.ndarray, c: float, T: int) -> np.ndarray:
    return (t ** -c - T ** -c) / (1 - T ** -c)


def _g_exp(t: np.ndarray, tau: float, T: int) -> np.ndarray:
    end = math.exp(-(T - 1) / tau)
    return (np.exp(-(t - 1) / tau) - end) / (1 - end)


class CurveFamily:
    """A synthetic learning-curve problem over the unit cube (a loss to minimize)."""

    maximize = False

    def __init__(self, name: str, dim: int, curve: Callable[[np.ndarray, np.ndarray], np.ndarray], noise: float,
                 max_step: int = MAX_STEP):
        self.name, self.dim, self.curve, self.noise, self.max_step = name, dim, curve, noise, max_step
        self.space = SearchSpace({f"x{i}": (0.0, 1.0) for i in range(dim)})

    def instance(self, seed: int) -> "CurveFamily":
        return self

    def evaluate(self, config: dict[str, Any], rng: np.random.Generator) -> Evaluation:
        x = np.array([float(config[f"x{i}"]) for i in range(self.dim)])
        t = np.arange(1, self.max_step + 1, dtype=float)
        true = self.curve(x, t)
        step_s = (0.6 + 0.8 * x[-1]) * float(rng.lognormal(0.0, 0.25))
        return Evaluation(true + self.noise * rng.standard_normal(len(t)), true, False, step_s)


def _powerlaw_hartmann6(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    amplitude = 0.4 + 2.6 * (x[1] + x[4]) / 2
    exponent = 0.3 + 1.5 * (x[0] + x[3]) / 2
    return hartmann6(x) + amplitude * _g_pow(t, exponent, len(t))


def _exp_ackley5(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    z = -5.0 + 10.0 * x
    tau = 1.0 + 24.0 * (0.5 + 0.5 * math.sin(3.0 * x[0] + 2.0 * x[2] + 1.0))
    amplitude = 2.0 + 10.0 * (x[1] + x[3]) / 2
    return ackley(z) + amplitude * _g_exp(t, tau, len(t))


def _crossing_levy8(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    rate = x[0]                            # like a learning rate: fast early, worse at the end
    z = -10.0 + 20.0 * x[1:]
    tau = 1.5 + 30.0 * (1.0 - rate) ** 2
    amplitude = 20.0 + 80.0 * (1.0 - rate)
    return levy(z) + 20.0 * rate ** 2 + amplitude * _g_exp(t, tau, len(t))


SYNTHETIC = {
    "powerlaw_hartmann6": lambda: CurveFamily("powerlaw_hartmann6", 6, _powerlaw_hartmann6, noise=0.03),
    "exp_ackley5": lambda: CurveFamily("exp_ackley5", 5, _exp_ackley5, noise=0.1),
    "crossing_levy8": lambda: CurveFamily("crossing_levy8", 8, _crossing_levy8, noise=0.5),
}
# -- CANDLE Combo: a pool of real learning curves ---------------------------------------------------
CANDLE_POOL = {"size": 256, "spec": "tiny", "n_rows": 1000, "data_seed": 0, "epochs": 50, "space_seed": 2026,
               "train_seed": 0}


def candle_pool(cache: Path, size: int | None = None, log=print) -> list[dict[str, Any]]:
    """The pool's configurations and their per-epoch validation R2, trained once and kept on disk.

    One JSON line per configuration (``candle_pool-<recipe>.jsonl``), appended as each training
    ends, so an interrupted build resumes where it stopped.
    """
    recipe = dict(CANDLE_POOL, size=size or CANDLE_POOL["size"])
    tag = hashlib.sha256(json.dumps({k: v for k, v in recipe.items() if k != "size"}, sort_keys=True).encode()).hexdigest()[:10]
    path = cache / f"candle_pool-{tag}.jsonl"
    done: list[dict[str, Any]] = []
    if path.exists():
        done = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if len(done) >= recipe["size"]:
        return done[:recipe["size"]]
    import torch

    from adbo.objectives import candle_combo as cc, candle_data as cd

    torch.set_num_threads(1)
    data = cd.synthetic_dataset(recipe["spec"], seed=recipe["data_seed"], n_rows=recipe["n_rows"])
    split = data.split(2017)
    cs = cc.combo_space(seed=recipe["space_seed"])
    configs = [dict(c) for c in cs.sample_configuration(2000)][:recipe["size"]]  # a larger pool extends a smaller one
    configs = [{k: (v.item() if hasattr(v, "item") else v) for k, v in c.items()} for c in configs]
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    log(f"CANDLE pool: training {recipe['size'] - len(done)} of {recipe['size']} configurations "
        f"({recipe['epochs']} epochs, synthetic '{recipe['spec']}' data, {recipe['n_rows']} rows) into {path}")
    with path.open("a") as fh:
        for i in range(len(done), recipe["size"]):
            res = cc.train_and_evaluate(configs[i], data, split, epochs=recipe["epochs"], device="cpu",
                                        seed=recipe["train_seed"])
            curve = [max(-1.0, h["val_r2"]) if math.isfinite(h["val_r2"]) else -1.0 for h in res.history]
            entry = {"i": i, "config": configs[i], "curve": curve, "error": res.error, "stopped": res.stopped,
                     "seconds": round(res.train_seconds, 3)}
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            done.append(entry)
            if (i + 1) % 10 == 0 or i + 1 == recipe["size"]:
                elapsed = time.time() - t0
                log(f"  CANDLE pool {i + 1}/{recipe['size']} ({elapsed:.0f} s; best final R2 so far "
                    f"{max((e['curve'][-1] for e in done if e['curve'] and not e['error']), default=float('nan')):.3f})")
    return done


class CandleCombo:
    """Combo's pool as a problem: the nearest pool member's real curve (validation R2, maximize)."""

    maximize = True
    name = "candle_combo"

    def __init__(self, cache: Path, size: int | None = None, log=print):
        from adbo.objectives.candle_combo import combo_space

        self.max_step = CANDLE_POOL["epochs"]
        self.space = SearchSpace(combo_space())
        self.pool = candle_pool(cache, size, log)
        self.X = self.space.encode([p["config"] for p in self.pool])

    def instance(self, seed: int) -> "CandleCombo":
        return self

    def evaluate(self, config: dict[str, Any], rng: np.random.Generator) -> Evaluation:
        x = self.space.encode([config])[0]
        member = self.pool[int(np.argmin(((self.X - x) ** 2).sum(axis=1)))]
        curve = np.array(member["curve"], dtype=float)
        per_epoch = member["seconds"] / max(1, len(curve) + bool(member["error"]))
        return Evaluation(curve, curve, bool(member["error"]), per_epoch * float(rng.lognormal(0.0, 0.1)))


PROBLEMS = (*SYNTHETIC, "candle_combo")


def make_problem(name: str, cache: Path, log=print) -> Any:
    if name in SYNTHETIC:
        return SYNTHETIC[name]()
    if name == "candle_combo":
        return CandleCombo(cache, log=log)
    raise SystemExit(f"unknown problem {name!r}; choose from {list(PROBLEMS)}")


# -- the searches: ask(w) -> (config, handle); report(w, handle, step, value) -> stop?; finish ----
class CurveSharing:
    """Per-worker curve books as the workers' storage makes them: own curve at every step, peers'
    running curves at their publish steps, every curve at its end."""

    def __init__(self, workers: int, maximize: bool, stopper: Any):
        self.books = [CurveBook(maximize) for _ in range(workers)]
        self.stopper = stopper
        self.curves: dict[tuple[int, int], list[float]] = {}

    def report(self, w: int, key: tuple[int, int], step: int, value: float, keep: bool = False) -> bool:
        """Whether the evaluation stops here; ``keep``: the stopper's veto (``protect_best``) holds."""
        values = self.curves.setdefault(key, [])
        values.append(value)
        steps = np.arange(1, len(values) + 1, dtype=float)
        vals = np.array(values)
        self.books[w].update(key, steps, vals)
        stop = self.stopper.should_stop(self.books[w], key) is not None and not keep
        if not stop and self.stopper.publish_step(step - 1, step):
            for v, book in enumerate(self.books):
                if v != w:
                    book.update(key, steps, vals)
        return stop

    def finish(self, key: tuple[int, int]) -> None:
        values = self.curves.pop(key, None)
        if values:
            steps, vals = np.arange(1, len(values) + 1, dtype=float), np.array(values)
            for book in self.books:
                book.update(key, steps, vals)


def parse_options(text: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in text:
        key, _, raw = pair.partition("=")
        try:
            out[key] = int(raw)
        except ValueError:
            try:
                out[key] = float(raw)
            except ValueError:
                out[key] = raw
    return out


class AdboSearch:
    """adbo's workers (or random proposals) over one shared history, stopping with adbo.stopping."""

    def __init__(self, problem: Any, workers: int, seed: int, stopper: str, options: dict[str, Any],
                 random_proposals: bool = False):
        options = dict(options)
        self.partial = options.pop("partial", DEFAULT_PARTIAL)
        if self.partial not in PARTIAL_MODES:
            raise SystemExit(f"unknown partial mode {self.partial!r}; choose from {PARTIAL_MODES}")
        self.space = problem.space
        self.maximize = problem.maximize
        self.random = random_proposals
        self.rng = np.random.default_rng([seed, 99])
        self.proposers = [Proposer(self.space, maximize=self.maximize, seed=seed, worker=w,
                                   settings=ProposerSettings()) for w in range(workers)]
        self.stopper = make_stopper(stopper, **options)
        self.sharing = CurveSharing(workers, self.maximize, self.stopper)
        self.protected: set[int] = set()
        """Rows whose proposal the surrogate predicted among the best (the stopper's ``protect_best``)."""
        self.X = np.empty((0, self.space.dim))
        self.y = np.empty(0)
        self.status = np.empty(0, dtype=np.int8)
        self.keys: list[tuple[int, int]] = []
        self.exclude: set[bytes] = set()
        self.seq = [0] * workers

    def ask(self, w: int) -> tuple[dict[str, Any], int]:
        if self.random:
            x = self.space.sample(1, self.rng)[0]
        else:
            y = self.y
            stopped = self.status == STOPPED
            if stopped.any():
                y = surrogate_targets(self.y, stopped, self.keys, self.sharing.books[w], self.status == OK, self.partial)
            proposal = self.proposers[w].propose(self.X, y, self.status, self.exclude)
            x = proposal.x
            if self.stopper.protects(proposal.predicted_rank):
                self.protected.add(len(self.y))
        self.X = np.vstack([self.X, x[None]])
        self.y = np.append(self.y, np.nan)
        self.status = np.append(self.status, np.int8(IN_FLIGHT))
        self.keys.append((w, self.seq[w]))
        self.seq[w] += 1
        self.exclude.add(self.space.keys(x[None])[0])
        return self.space.decode(x[None])[0], len(self.y) - 1

    def report(self, w: int, row: int, step: int, value: float) -> bool:
        return self.sharing.report(w, self.keys[row], step, value, keep=row in self.protected)

    def finish(self, w: int, row: int, status: int, value: float) -> None:
        self.y[row] = value
        self.status[row] = status
        self.sharing.finish(self.keys[row])


class OptunaSearch:
    """One Optuna study (TPE defaults) shared by all workers, with a pruner."""

    def __init__(self, problem: Any, workers: int, seed: int, pruner: str, options: dict[str, Any]):
        import optuna
        from _anchors import OptunaTPE

        self.optuna = optuna
        self.tpe = OptunaTPE(problem.space.configspace, seed=seed)
        pruners = {"none": optuna.pruners.NopPruner(), "sha": optuna.pruners.SuccessiveHalvingPruner(),
                   "hyperband": optuna.pruners.HyperbandPruner(min_resource=1, max_resource=problem.max_step)}
        self.tpe.study = optuna.create_study(direction="maximize" if problem.maximize else "minimize",
                                             sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruners[pruner])
        self.prunes = pruner != "none"
        self.trials: dict[int, Any] = {}

    def ask(self, w: int) -> tuple[dict[str, Any], Any]:
        config = self.tpe.ask()
        return config, self.tpe._trial

    def report(self, w: int, trial: Any, step: int, value: float) -> bool:
        if not self.prunes:
            return False
        trial.report(float(value), step)
        return trial.should_prune()

    def finish(self, w: int, trial: Any, status: int, value: float) -> None:
        State = self.optuna.trial.TrialState
        if status == OK:
            self.tpe.study.tell(trial, float(value))
        elif status == STOPPED:
            self.tpe.study.tell(trial, state=State.PRUNED)
        else:
            self.tpe.study.tell(trial, state=State.FAIL)


class DeepHyperSearch:
    """DeepHyper's decentralized CBO, one per worker, with its SuccessiveHalvingStopper."""

    def __init__(self, problem: Any, workers: int, seed: int, stopper: str, options: dict[str, Any]):
        from _anchors import DeepHyperCBO
        from deephyper.evaluator import RunningJob
        from deephyper.evaluator.storage import MemoryStorage
        from deephyper.stopper import SuccessiveHalvingStopper

        self.sign = 1.0 if problem.maximize else -1.0  # DeepHyper maximizes
        self.cbos = [DeepHyperCBO(problem.space.configspace, seed=seed * 1000 + w) for w in range(workers)]
        self.finished: list[tuple[dict[str, Any], Any]] = []
        self.seen = [0] * workers
        self.storage = MemoryStorage()
        self.search_id = self.storage.create_new_search()
        self.RunningJob = RunningJob
        self.make_stopper = (lambda: SuccessiveHalvingStopper(max_steps=problem.max_step)) if stopper == "sha" else None

    def ask(self, w: int) -> tuple[dict[str, Any], Any]:
        new = self.finished[self.seen[w]:]
        if new:
            self.cbos[w].search.tell([(self.cbos[w]._full(c), v) for c, v in new])
            self.seen[w] = len(self.finished)
        config = self.cbos[w].ask()
        stopper = self.make_stopper() if self.make_stopper else None
        job = self.RunningJob(id=self.storage.create_new_job(self.search_id), parameters=config,
                              storage=self.storage, stopper=stopper)
        if stopper is not None:
            stopper.job = job
        return {k: v for k, v in config.items()}, job

    def report(self, w: int, job: Any, step: int, value: float) -> bool:
        if job.stopper is None:
            return False
        job.record(step, self.sign * float(value))
        return bool(job.stopped())

    def finish(self, w: int, job: Any, status: int, value: float) -> None:
        if status == FAILED:
            objective: Any = "F"
        elif job.stopper is not None and status == STOPPED:
            objective = float(job.objective)
        else:
            objective = self.sign * float(value)
        self.finished.append((job.parameters, objective))

    def close(self) -> None:
        for cbo in self.cbos:
            cbo.close()


def parse_method(method: str) -> tuple[str, str, dict[str, Any]]:
    """``adbo+asha:reduction=2`` -> ("adbo", "asha", {"reduction": 2})."""
    head, *pairs = method.split(":")
    base, _, stop = head.partition("+")
    stop = stop or "none"
    allowed = {"adbo": ("none", "asha", "median", "extrapolate"), "random": ("none", "asha"),
               "tpe": ("none", "sha", "hyperband"), "cbo": ("none", "sha")}
    if base not in allowed or stop not in allowed[base]:
        raise SystemExit(f"unknown method {method!r}; bases and stoppers: {allowed}")
    if pairs and base != "adbo":
        raise SystemExit(f"{method!r}: only adbo variants take options")
    options = parse_options(pairs)
    if base == "adbo":
        make_stopper(stop, **{k: v for k, v in options.items() if k != "partial"})  # unknown options fail here
    return base, stop, options


def make_search(method: str, problem: Any, workers: int, seed: int) -> Any:
    base, stop, options = parse_method(method)
    if base == "adbo":
        return AdboSearch(problem, workers, seed, stop, options)
    if base == "random":
        return AdboSearch(problem, workers, seed, stop, {"partial": "last"}, random_proposals=True)
    if base == "tpe":
        return OptunaSearch(problem, workers, seed, stop, options)
    return DeepHyperSearch(problem, workers, seed, stop, options)


# -- one run in virtual time ----------------------------------------------------------------------
def simulate(method: str, problem: Any, workers: int, seed: int, budget_steps: int) -> dict[str, Any]:
    """Run ``method`` until ``budget_steps`` training steps are spent; one record per run."""
    search = make_search(method, problem, workers, seed)
    sign = -1.0 if problem.maximize else 1.0  # to losses
    events: list[tuple[float, int, int]] = []
    running: dict[int, dict[str, Any]] = {}
    spent = started = 0
    counter = 0
    end_steps: list[int] = []
    end_loss: list[float] = []
    end_status: list[int] = []
    end_length: list[int] = []

    def start(w: int, now: float) -> None:
        nonlocal started, counter
        config, handle = search.ask(w)
        ev = problem.evaluate(config, np.random.default_rng([seed, 7, started]))
        running[w] = {"handle": handle, "ev": ev, "t": 0}
        started += 1
        counter += 1
        heapq.heappush(events, (now + ev.step_s, counter, w))

    def end(w: int, status: int, value: float, t: int) -> None:
        state = running.pop(w)
        ev = state["ev"]
        search.finish(w, state["handle"], status, value)
        end_steps.append(spent)
        true = ev.true[t - 1] if status != FAILED and t >= 1 else math.nan
        end_loss.append(sign * float(true) if math.isfinite(true) else math.inf)
        end_status.append(status)
        end_length.append(t)

    for w in range(workers):
        start(w, 0.0)
    while events and spent < budget_steps:
        now, _, w = heapq.heappop(events)
        state = running[w]
        ev = state["ev"]
        state["t"] += 1
        t = state["t"]
        spent += 1
        if t > len(ev.reported):  # the failing step of a diverged training
            end(w, FAILED, math.nan, t)
        else:
            value = float(ev.reported[t - 1])
            stop = search.report(w, state["handle"], t, value)
            if t == len(ev.reported) and not ev.failed:
                end(w, OK, value, t)
            elif stop:
                end(w, STOPPED, value, t)
            else:
                heapq.heappush(events, (now + ev.step_s, (counter := counter + 1), w))
                continue
        if spent < budget_steps:
            start(w, now)
    if hasattr(search, "close"):
        search.close()
    return {"method": method, "problem": problem.name, "workers": workers, "seed": seed, "budget_steps": budget_steps,
            "maximize": problem.maximize, "started": started, "end_steps": end_steps, "end_loss": end_loss,
            "end_status": end_status, "end_length": end_length}


# -- cache ----------------------------------------------------------------------------------------
RECORD_VERSION = 1


def method_signature(method: str) -> dict[str, Any]:
    """What a cached run of ``method`` was made with, so runs under other defaults are redone."""
    base, stop, options = parse_method(method)
    sig: dict[str, Any] = {"version": RECORD_VERSION, "max_step": MAX_STEP}
    if base in ("adbo", "random"):
        stopper = make_stopper(stop, **{k: v for k, v in options.items() if k != "partial"})
        # The veto came after runs were cached: off, it changes nothing, so it leaves them valid.
        sig["stopper"] = {f.name: getattr(stopper, f.name) for f in fields(stopper)
                          if not (f.name == "protect_best" and not stopper.protect_best)}
        if base == "adbo":
            sig["proposer"] = {f.name: getattr(ProposerSettings(), f.name) for f in fields(ProposerSettings)}
            sig["partial"] = options.get("partial", DEFAULT_PARTIAL)
    return sig


def cache_path(cache: Path, method: str, problem: str, workers: int, seed: int, budget: int) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", method)
    return cache / "runs" / f"w{workers}-b{budget}-{problem}-{safe}-s{seed}.json"


def run_or_load(cache: Path, method: str, problem: Any, workers: int, seed: int, budget: int,
                rerun: bool = False, log=print) -> dict[str, Any]:
    path = cache_path(cache, method, problem.name, workers, seed, budget)
    sig = method_signature(method)
    if path.exists() and not rerun:
        record = json.loads(path.read_text())
        if record.get("signature") == sig:
            return record
        log(f"  {path.name}: cached under other settings; running again")
    t0 = time.process_time()
    record = simulate(method, problem, workers, seed, budget)
    record["cpu_s"] = time.process_time() - t0
    record["signature"] = sig
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
    best = min(record["end_loss"], default=math.inf)
    best = -best if problem.maximize else best
    log(f"  {method:>28} {problem.name:>18} W={workers} seed={seed}: best {best:.4g}, "
        f"{record['started']} evaluations ({record['cpu_s']:.0f} s CPU)")
    return record


# -- the report -----------------------------------------------------------------------------------
def best_loss(record: dict[str, Any]) -> float:
    return min(record["end_loss"], default=math.inf)


def steps_to(record: dict[str, Any], target_loss: float) -> float:
    for steps, loss in zip(record["end_steps"], record["end_loss"]):
        if loss <= target_loss:
            return float(steps)
    return math.inf


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def quartiles(values: list[float], sign: float = 1.0) -> dict[str, float | None]:
    """Median and quartiles (sign -1 turns losses back into the user's direction, flipping q1/q3
    so that q1 is always the lower number)."""
    if not values:
        return {"median": None, "q1": None, "q3": None}
    q = np.percentile(np.array(values, dtype=float), [25, 50, 75])
    q = [sign * v for v in q]
    lo, hi = sorted((q[0], q[2]))
    return {"median": _num(q[1]), "q1": _num(lo), "q3": _num(hi)}


def _median_inf(values: list[float]) -> float:
    """Median where infinities count (the middle order statistic; the mean of the two middle ones)."""
    v = sorted(values)
    n = len(v)
    if not n:
        return math.nan
    if n % 2:
        return v[n // 2]
    a, b = v[n // 2 - 1], v[n // 2]
    return math.inf if math.isinf(a) or math.isinf(b) else (a + b) / 2


def report(records: list[dict[str, Any]], default_method: str) -> dict[str, Any]:
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["problem"], r["workers"], r["method"]), []).append(r)
    problems = sorted({r["problem"] for r in records}, key=lambda p: PROBLEMS.index(p) if p in PROBLEMS else 99)
    worker_counts = sorted({r["workers"] for r in records})
    out: dict[str, Any] = {"targets": {}, "table": {}, "verdicts": {}}
    for problem in problems:
        maximize = next(r["maximize"] for r in records if r["problem"] == problem)
        sign = -1.0 if maximize else 1.0
        for workers in worker_counts:
            base = groups.get((problem, workers, "adbo"))
            if not base:
                continue
            target = float(np.percentile([best_loss(r) for r in base], 75))  # the worse quartile, as a loss
            out["targets"].setdefault(problem, {"direction": "maximize" if maximize else "minimize"})[f"{workers}w"] = {
                "value": sign * target,
                "from": f"worse quartile of adbo's (no stopping) best_at_budget over {len(base)} seeds"}
            rows: dict[str, Any] = {}
            adbo_runs = groups.get((problem, workers, "adbo"), [])
            adbo_steps = _median_inf([steps_to(r, target) for r in adbo_runs]) if adbo_runs else math.nan
            for (p, w, method), runs in groups.items():
                if p != problem or w != workers:
                    continue
                steps = [steps_to(r, target) for r in runs]
                med = _median_inf(steps)
                ratio = (adbo_steps / med if math.isfinite(med) and med > 0 else 0.0) if math.isfinite(adbo_steps) else None
                statuses = [s for r in runs for s in r["end_status"]]
                rows[method] = {
                    "seeds": len(runs),
                    "best_at_budget": quartiles([best_loss(r) for r in runs], sign),
                    "steps_to_target": {"median": _num(med),
                                        "q1": _num(float(np.percentile(steps, 25, method="nearest"))) if steps else None,
                                        "q3": _num(float(np.percentile(steps, 75, method="nearest"))) if steps else None,
                                        "reached": f"{sum(math.isfinite(s) for s in steps)}/{len(steps)}"},
                    "ratio_vs_adbo": None if ratio is None else round(ratio, 3),
                    "evaluations": float(np.median([r["started"] for r in runs])),
                    "stopped_share": round(statuses.count(STOPPED) / max(1, len(statuses)), 3),
                    "cpu_s_per_run": round(float(np.mean([r.get("cpu_s", math.nan) for r in runs])), 1),
                }
            order = {m: i for i, m in enumerate((*MAIN_METHODS, *SWEEP_METHODS))}
            rows = dict(sorted(rows.items(), key=lambda kv: (order.get(kv[0], 99), kv[0])))
            out["table"].setdefault(problem, {})[f"{workers}w"] = rows
            mine = rows.get(default_method)
            if mine is None:
                continue
            beats = {}
            for anchor in ES_ANCHORS:
                if anchor in rows and rows[anchor]["best_at_budget"]["median"] is not None:
                    a, m = rows[anchor]["best_at_budget"]["median"], mine["best_at_budget"]["median"]
                    beats[anchor] = bool(m > a if maximize else m < a)
            out["verdicts"].setdefault(problem, {})[f"{workers}w"] = {
                "method": default_method, "ratio_vs_adbo": mine["ratio_vs_adbo"],
                "ratio_at_least_3": bool(mine["ratio_vs_adbo"] is not None and mine["ratio_vs_adbo"] >= 3),
                "best_median_beats": beats, "beats_every_es_anchor": bool(beats) and all(beats.values())}
    cells = [v for p in out["verdicts"].values() for v in p.values()]
    out["verdict_summary"] = {
        "cells": len(cells), "ratio_at_least_3": sum(c["ratio_at_least_3"] for c in cells),
        "beats_every_es_anchor": sum(c["beats_every_es_anchor"] for c in cells)}
    out["option_sweep"] = sweep(out["table"])
    return out


def sweep(table: dict[str, Any]) -> dict[str, Any]:
    """The adbo stopping variants ranked by median best_at_budget (1 = best) in each problem x
    worker-count cell, with their steps_to_target ratios: ``synthetic`` ranks every variant on the
    cells of the synthetic families (where the option sweep runs); ``every_problem`` ranks the
    variants run on every problem, on every cell. Mean rank, cells, and the geometric mean of the
    ratio (a ratio of 0, most runs never reaching the target, counts as 0.001)."""

    def rank(cells: list[tuple[str, dict[str, Any]]], variants: set[str]) -> dict[str, Any]:
        ranks: dict[str, list[float]] = {}
        ratios: dict[str, list[float]] = {}
        for problem, rows in cells:
            maximize = problem == "candle_combo"
            ordered = sorted(variants, key=lambda m: rows[m]["best_at_budget"]["median"], reverse=maximize)
            for i, m in enumerate(ordered):
                ranks.setdefault(m, []).append(i + 1)
                if rows[m]["ratio_vs_adbo"] is not None:
                    ratios.setdefault(m, []).append(max(rows[m]["ratio_vs_adbo"], 1e-3))
        return {m: {"mean_rank": round(float(np.mean(ranks[m])), 2), "cells": len(ranks[m]),
                    "geomean_ratio_vs_adbo": round(float(np.exp(np.mean(np.log(ratios[m])))), 2) if ratios.get(m) else None}
                for m in sorted(ranks, key=lambda m: np.mean(ranks[m]))}

    cells = [(problem, {m: r for m, r in rows.items() if m.startswith("adbo+") and r["best_at_budget"]["median"] is not None})
             for problem, by_workers in table.items() for rows in by_workers.values()]
    cells = [c for c in cells if len(c[1]) >= 2]
    out: dict[str, Any] = {}
    synthetic = [c for c in cells if c[0] in SYNTHETIC]
    if synthetic:
        common = set.intersection(*(set(rows) for _, rows in synthetic))
        out["synthetic"] = rank(synthetic, common)
    if cells:
        common = set.intersection(*(set(rows) for _, rows in cells))
        out["every_problem"] = rank(cells, common)
    return out


def print_table(out: dict[str, Any]) -> None:
    """A compact text table on stderr (the JSON goes to stdout)."""
    for problem, by_workers in out["table"].items():
        print(f"\n{problem}", file=sys.stderr)
        for wk, rows in by_workers.items():
            print(f"  {wk} target {out['targets'][problem][wk]['value']:.4g}", file=sys.stderr)
            for m, r in rows.items():
                b = r["best_at_budget"]
                s = r["steps_to_target"]
                print(f"  {wk:>3} {m:>28}: best {b['median']:.4g} [{b['q1']:.4g}, {b['q3']:.4g}]  steps_to_target "
                      f"{s['median'] if s['median'] is not None else 'inf':>7} ({s['reached']})  ratio "
                      f"{r['ratio_vs_adbo']}  evals {r['evaluations']:.0f}  stopped {r['stopped_share']:.2f}",
                      file=sys.stderr)


# -- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join((*MAIN_METHODS, *SWEEP_METHODS)),
                        help="comma-separated (see above); adbo variants take :key=value options")
    parser.add_argument("--sweep-problems", default=",".join(SYNTHETIC),
                        help="problems on which the option-sweep variants run (default: the synthetic ones)")
    parser.add_argument("--problems", default=",".join(PROBLEMS), help=f"comma-separated from {list(PROBLEMS)}")
    parser.add_argument("--workers", default="1,8", help="comma-separated worker counts (default 1,8)")
    parser.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (default 10)")
    parser.add_argument("--budget", type=int, default=50, help="budget in full trainings of max_step steps (default 50)")
    parser.add_argument("--default-method", default="adbo+asha", help="the variant the verdicts judge")
    parser.add_argument("--cache", default="benchmarks/results/early_stopping", help="folder of cached runs and the Combo pool")
    parser.add_argument("--rerun", action="store_true", help="ignore cached runs")
    parser.add_argument("--report-only", action="store_true", help="only assemble the report from the cache")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 seeds, 1 and 4 workers, two synthetic problems, budget 12 trainings")
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args()

    if args.quick:
        args.seeds, args.budget = 2, 12
        args.workers = "1,4"
        if args.problems == ",".join(PROBLEMS):
            args.problems = "powerlaw_hartmann6,crossing_levy8"
        if args.methods == parser.get_default("methods"):
            args.methods = "adbo,adbo+asha,adbo+median,random+asha,tpe+sha"
        if args.cache == parser.get_default("cache"):
            args.cache = str(Path(args.cache) / "quick")
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        parse_method(m)
    problems = [p for p in args.problems.split(",") if p]
    sweep_problems = set(p for p in args.sweep_problems.split(",") if p)
    worker_counts = [int(w) for w in args.workers.split(",")]
    cache = Path(args.cache)
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    loaded = {p: make_problem(p, cache, log) for p in problems}
    budget = args.budget * MAX_STEP
    records = []
    t0 = time.time()
    skipped = set()
    for seed in range(args.seeds):
        for workers in worker_counts:
            for problem in problems:
                for method in methods:
                    if method in SWEEP_METHODS and problem not in sweep_problems:
                        continue
                    path = cache_path(cache, method, problem, workers, seed, budget)
                    if args.report_only:
                        if path.exists():
                            records.append(json.loads(path.read_text()))
                        continue
                    if method.startswith("cbo") and ("cbo" in skipped or problem in CBO_FAILS):
                        continue
                    try:
                        records.append(run_or_load(cache, method, loaded[problem], workers, seed, budget,
                                                   args.rerun, log))
                    except ImportError as exc:
                        log(f"  {method}: cannot run ({exc}); skipped")
                        skipped.add(method.split("+")[0])
        log(f"seed {seed} done ({time.time() - t0:.0f} s)")
    out = {"machine": machine(), "max_step": MAX_STEP, "budget_steps": budget, "seeds": args.seeds,
           "workers": worker_counts, "methods": methods, "partial_default": DEFAULT_PARTIAL,
           "bo_step_time": "ignored (virtual time advances only with training steps)",
           "candle_pool": {k: v for k, v in CANDLE_POOL.items()} if "candle_combo" in problems else None,
           "skipped": sorted(skipped), "not_run": {f"cbo* on {p}": why for p, why in CBO_FAILS.items() if p in problems}, **report(records, args.default_method), "seconds": round(time.time() - t0, 1)}
    print_table(out)
    emit(out, args.json)


if __name__ == "__main__":
    main()
