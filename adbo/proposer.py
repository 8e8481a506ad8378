"""One worker's proposal policy, independent of storage: space-filling start, then surrogate + UCB.

The worker loop feeds it the arrays of every known result; benchmarks drive it the same way, so
what they time is exactly what a worker pays per step.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .acquisition import ExplorationSchedule, propose, scale_scores
from .cost import CostModel
from .rows import BUDGET_STATUSES, IN_FLIGHT, OK, TIMEOUT, VALUED_STATUSES
from .space import SearchSpace
from .surrogate import OnFeatures, Surrogate, make_surrogate

log = logging.getLogger(__name__)


@dataclass
class ProposerSettings:
    """How a worker proposes; every field can be set through ``adbo.launch(proposer_options=...)``."""

    n_initial: int = 10
    """Results needed (across all workers) before the surrogate replaces the space-filling design."""
    surrogate: str = "gp_then_trees"
    """``gp_then_trees``: a Gaussian process while a worker fits at most 200 results, extremely
    randomized trees (``extra_trees``) beyond, whose step cost stays flat at any scale, and sooner
    where the GP step passes a tenth of an evaluation (``Worker.GP_STEP_SHARE``); or
    ``extra_trees``, ``random_forest``, ``gp``. Measured with benchmarks/quality.py at seeds 10-19
    (tuned on 0-4), 100 evaluations: geometric-mean best regret GP / trees 0.81 with 1 worker and
    0.76 with 8 on 12 tabular problems (8 HPOBench MLP tables, 3 NAS-Bench-201 sets, the CANDLE
    Combo surrogate), lower medians on 4 of 6 synthetic functions with 1 worker and 6 of 6 with 8;
    neutral after 50 (0.96, 1.06). See docs/tabular_quality.md."""
    kappa_mean: float = 1.96
    kappa_spread: str = "stratified"
    """How workers' kappa_0 come from Exponential(kappa_mean). ``stratified``: worker i takes the
    distribution's quantile at the (i+1)-th point of the base-2 van der Corput sequence (1/2, 1/4,
    3/4, 1/8, ...), so any number of workers covers it evenly and a lone worker gets its median.
    ``random``: independent draws (the paper's), where a run's few workers can all draw small
    kappas and only exploit. Measured with benchmarks/quality.py (8 workers, 20 seeds): Ackley-5's
    median regret 3.40 -> 2.81, Hartmann6's geometric mean 1.8x lower (both p < 0.05 paired by
    seed), the other four within noise; sequentially neutral. See the README."""
    decay_period: int = 48
    decay_rate: float = 0.1
    n_candidates: int = 2000
    """Uniform random candidates scored by the acquisition at each step."""
    n_local: int = 1000
    """Extra candidates from local moves around ten of the best results (``local_spacing``). Measured with
    benchmarks/quality.py (200 sequential evaluations, 5 seeds): it cut the median regret on
    Ackley-10 from 15.1 to 5.9, Griewank-10 from 27.8 to 3.8 and Schwefel-10 from 1859 to 1390."""
    local_scale: float = 0.1
    """Standard deviation of a local move, in units of each parameter's range (the unit cube)."""
    local_spacing: float = 0.15
    """Local moves start from the ten best results that lie at least this far apart (RMS distance
    in the unit cube; 0 takes the ten best, which usually crowd into one basin). Measured with
    benchmarks/quality.py (200 sequential evaluations, 20 seeds, with ``kappa_spread="stratified"``):
    median regret on Griewank-10 from 2.64 to 1.47, Levy-10 from 6.63 to 4.17; see the README."""
    n_jumps: int = 500
    """Extra candidates that copy the best result and redraw one parameter uniformly over its
    range: a one-parameter move to another basin, which local moves never make. Measured with
    benchmarks/quality.py (200 evaluations, 20 seeds): sequentially, Schwefel-10's median regret
    fell from 1224 to 599 and the other five problems moved within their seed-to-seed spread; with
    8 workers, Levy-10 and Schwefel-10 gained 1.2x and 1.6x, Ackley and Griewank lost 1.2-1.5x."""
    refine_rounds: int = 0
    """Rounds of local refinement around the best-scoring candidates."""
    acquisition: str = "ucb"
    """``ucb`` (mean + kappa std, with the per-worker kappa schedule) or ``ei`` (expected improvement)."""
    scaling: str = "auto"
    """Objective scaling before fitting: ``auto``, ``minmax``, ``minmax-log`` (the ADBO paper's) or
    ``power``. ``power``: when a positive loss is minimized, min-max scaling of its Box-Cox
    transform (exponent fitted, between the log and no change), so that one diverged training at
    7e3 does not squeeze every good result at 3e-5..1e-4 into one value. ``auto`` (default):
    ``power`` where the positive losses span at least two orders of magnitude, ``minmax``
    elsewhere. Measured with benchmarks/quality.py (100 evaluations, 16 tabular problems, seeds
    10-14 and held-out 20-24): ``auto`` gives ``minmax``'s results on the 11 problems whose
    losses stay within that span (the CANDLE Combo surrogate among them, where ``power`` was
    worse), and a lower median best regret on HPOLib's naval, parkinsons and slice tables in 10
    of their 12 cells (1 and 8 workers, two seed sets; the other two tied); of the synthetic
    functions it changes only Griewank-10 (8 workers: 3.76 against 2.93). See
    docs/tabular_quality.md."""
    liar: str = "none"
    """How configurations in flight anywhere enter the fit: ``none``, or a constant lie of the
    ``mean``/``min``/``max`` score seen, so workers started together spread out."""
    categorical: str = "unordered"
    """How unordered categoricals (``Categorical``, not ``OrdinalHyperparameter``) are searched.
    ``unordered``: the surrogate sees one 0/1 column per choice of each such parameter with three
    or more choices (``SearchSpace.features``), and local moves and jumps change such a parameter
    to another category drawn uniformly. ``ranked``: the same moves, but the tree ensemble
    (``surrogate="extra_trees"``) keeps one column per categorical and ranks its categories by
    their mean score at each fit (other surrogates get the one-hot columns). ``ordered``: the
    behaviour before 2026-12-04, one
    column of codes in listing order, moved like a number, as if the listing order meant
    something. Ordinals are ordered in every mode. Measured with benchmarks/quality.py on 11
    tabular problems with unordered categoricals (NAS-Bench-201, HPOBench declared categorical;
    100 evaluations, 10 seeds): with 8 workers ``unordered`` left a median best regret 1.8x lower
    than ``ordered`` (geometric mean over problems and seeds), sequentially within noise of it; see
    docs/categoricals.md."""
    cost_aware: bool = True
    """Prefer the faster of candidates that promise a similar gain. A second model (``adbo.cost``)
    learns each evaluation's duration from the run's finished ones; once the configuration
    explains the durations (out-of-bag R^2 >= 0.3, at least 16 evaluations), candidates that keep
    at least ``cost_gain_share`` of the best promised gain compete on gain per predicted second
    (``acquisition.cost_aware_order``). Where durations do not depend on the configuration the
    model is not trusted and proposals are unchanged. See docs/tabular_quality.md."""
    cost_gain_share: float = 0.25
    """How much of the best promised gain (UCB above the best score, or EI) a faster candidate
    must keep to compete on gain per second: 0 is pure gain per second, which can starve the
    search of good but slow configurations; 1 ignores cost."""
    max_fit_points: int = 1000
    """Above this many results the surrogate is fitted on a subsample: the best quarter of it
    always, the rest drawn at random. Tree fits grow like N log N; this keeps a step's cost flat
    as a run grows to tens of thousands of results, while the region that matters stays dense."""

    @classmethod
    def parse(cls, key: str, raw: str) -> object:
        """A setting's value from its text on a command line (``cost_aware=false``, ``n_local=500``)."""
        default = getattr(cls(), key)
        if isinstance(default, bool):
            if raw.lower() not in ("true", "false", "1", "0", "on", "off"):
                raise ValueError(f"{key} takes true or false, not {raw!r}")
            return raw.lower() in ("true", "1", "on")
        return type(default)(raw) if not isinstance(default, str) else raw


CHEAPER_SURROGATE: dict[str, str] = {"gp_then_trees": "extra_trees"}
"""Surrogates whose cost grows fast, and the model a worker falls back to when it does."""


@dataclass
class Proposal:
    x: np.ndarray | None
    n_observations: int
    kappa: float
    instead_of_fit: bool = False
    """Sampled because the surrogate was not ready (``propose(surrogate_ready=False)``)."""
    predicted_rank: int | None = None
    """How many of the results the surrogate was fitted on it predicts to be better than this
    proposal (0: a new best); None where no surrogate chose it. A stopper's ``protect_best``
    reads it: an evaluation the model expected among the run's best is not stopped on its
    early epochs alone."""


class Proposer:
    """The next configuration for one worker, given everything it knows.

    ``seed`` and ``worker`` together seed its random stream, its exploration weight kappa_0 and
    its scrambled initial design, so workers differ from each other but each is reproducible.
    """

    def __init__(self, space: SearchSpace, maximize: bool = True, seed: int = 0, worker: int = 0,
                 settings: ProposerSettings | None = None):
        self.space = space
        self.maximize = maximize
        self.settings = settings or ProposerSettings()
        s = self.settings
        if s.kappa_spread not in ("random", "stratified"):
            raise ValueError(f"unknown kappa_spread {s.kappa_spread!r}; use 'random' or 'stratified'")
        self.rng = np.random.default_rng([seed, worker])
        self.schedule = ExplorationSchedule.for_worker(
            self.rng, s.kappa_mean, s.decay_period, s.decay_rate,
            worker=worker if s.kappa_spread == "stratified" else None)
        self.design = space.initial_design(max(s.n_initial, 1), seed=seed * 100_003 + worker)
        self.design_used = 0
        self.bo_steps = 0
        self.cheap_surrogate = False
        """Whether ``use_cheaper_surrogate`` has switched this proposer to its cheaper model."""
        self.cost_model = CostModel(seed=seed * 1009 + worker)
        self.log = log
        """Where the proposer says what it changed; a worker points it at its own log file."""
        if s.liar not in ("none", "mean", "min", "max"):
            raise ValueError(f"unknown liar {s.liar!r}; use 'none', 'mean', 'min' or 'max'")
        scale_scores(np.array([0.0, 1.0]), s.scaling)  # an unknown scaling fails here, not mid-run
        if s.acquisition not in ("ucb", "ei"):
            raise ValueError(f"unknown acquisition {s.acquisition!r}; use 'ucb' or 'ei'")
        if s.categorical not in ("unordered", "ranked", "ordered"):
            raise ValueError(f"unknown categorical {s.categorical!r}; use 'unordered', 'ranked' or 'ordered'")

    def training_data(self, X: np.ndarray, y: np.ndarray, status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Finished results as (X, scores to maximize in [0, 1]); failures get the worst score.

        Evaluations stopped early count with the value the worker gives them (``adbo.stopping.
        surrogate_targets``); a NaN there makes them count like failures.

        With a liar, configurations in flight are added with the lie as their score.
        """
        done = np.isin(status, BUDGET_STATUSES)
        pending = X[status == IN_FLIGHT] if self.settings.liar != "none" else X[:0]
        X, y, status = X[done], y[done], status[done]
        scores = np.where(np.isin(status, VALUED_STATUSES), y if self.maximize else -y, np.nan)
        finite = np.isfinite(scores)
        worst = np.min(scores[finite]) if finite.any() else 0.0
        scaled = scale_scores(np.where(finite, scores, worst), self.settings.scaling)
        if len(pending) and len(scaled):
            lie = {"mean": np.mean, "min": np.min, "max": np.max}[self.settings.liar](scaled)
            X = np.vstack([X, pending])
            scaled = np.concatenate([scaled, np.full(len(pending), lie)])
        return X, scaled

    def subsample(self, X: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        limit = self.settings.max_fit_points
        if limit <= 0 or len(X) <= limit:
            return X, scores
        n_best = limit // 4
        order = np.argsort(scores)
        best, rest = order[-n_best:], order[:-n_best]
        chosen = np.concatenate([best, self.rng.choice(rest, size=limit - n_best, replace=False)])
        return X[chosen], scores[chosen]

    def propose(self, X: np.ndarray, y: np.ndarray, status: np.ndarray, exclude: set[bytes],
                surrogate_ready: bool = True, durations: np.ndarray | None = None,
                overhead_s: float = 0.0) -> Proposal:
        """Next configuration not in ``exclude`` (keys of evaluated and in-flight configurations).

        ``durations`` (seconds per row of ``X``, NaN where unknown) feed the cost model
        (``cost_aware``); without them every candidate counts as equally expensive.
        ``overhead_s``: what each evaluation costs the worker besides itself (its BO step), added
        to every predicted duration.

        ``surrogate_ready=False`` says the surrogate's library is still being imported in the
        background: the worker then keeps sampling the space instead of waiting for the import
        (which, on cores shared by many workers, can take longer than an evaluation).
        """
        n_ok = int((status == OK).sum())
        while n_ok < self.settings.n_initial and self.design_used < len(self.design):
            x = self.design[self.design_used]
            self.design_used += 1
            if self.space.keys(x[None])[0] not in exclude:
                return Proposal(x, 0, float("nan"))
        if not surrogate_ready:
            return Proposal(self.random_unseen(exclude), 0, float("nan"), instead_of_fit=True)
        X_fit, scores = self.training_data(X, y, status)
        X_fit, scores = self.subsample(X_fit, scores)
        if len(X_fit) < 2:
            return Proposal(self.random_unseen(exclude), 0, float("nan"))
        kappa = self.schedule.kappa(self.bo_steps)
        s = self.settings
        try:
            name = CHEAPER_SURROGATE[s.surrogate] if self.cheap_surrogate else s.surrogate
            model = make_surrogate(name, seed=int(self.rng.integers(2**31)))
            unordered = s.categorical != "ordered"
            if unordered and len(self.space.categorical_columns):
                model = self._unordered_view(model)
            model.fit(X_fit, scores)
            x, _ = propose(self.space, model, X_fit, scores, kappa, exclude, self.rng,
                           n_random=s.n_candidates, n_local=s.n_local, refine_rounds=s.refine_rounds,
                           acquisition=s.acquisition, local_scale=s.local_scale,
                           n_jumps=s.n_jumps, local_spacing=s.local_spacing, unordered=unordered,
                           cost=self._cost(X, status, durations, overhead_s), cost_gain_share=s.cost_gain_share)
        except Exception:  # noqa: BLE001 - a bad fit must not kill the worker: explore instead
            self.log.error("surrogate step failed, proposing at random:\n%s", traceback.format_exc())
            return Proposal(self.random_unseen(exclude), 0, kappa)
        self.bo_steps += 1
        if x is None:
            return Proposal(self.random_unseen(exclude), len(X_fit), kappa)
        return Proposal(x, len(X_fit), kappa, predicted_rank=self._predicted_rank(model, x, scores))

    def _predicted_rank(self, model: Surrogate, x: np.ndarray, scores: np.ndarray) -> int | None:
        """Fitted scores above the model's mean at ``x`` (scores are maximized); None if it fails."""
        try:
            mean = float(np.ravel(model.predict(x[None]))[0])
        except Exception:  # noqa: BLE001 - the rank is advice for stoppers, never worth a failed step
            self.log.warning("could not predict the proposal's rank:\n%s", traceback.format_exc())
            return None
        return int((scores > mean).sum()) if np.isfinite(mean) else None

    def _cost(self, X: np.ndarray, status: np.ndarray, durations: np.ndarray | None,
              overhead_s: float = 0.0) -> Callable[[np.ndarray], np.ndarray] | None:
        """The relative-cost function for this step, or None while costs are unknown or noise.

        Finished and timed-out evaluations teach it (a timeout's duration is a lower bound, and
        still says "slow"); stopped ones do not, since they ran only part of their training.
        A failing cost model is logged and ignored: it must not take the proposal down with it.
        """
        if not self.settings.cost_aware or durations is None:
            return None
        known = np.isin(status, (OK, TIMEOUT)) & np.isfinite(durations)
        n = int(known.sum())
        if self.cost_model.stale(n):
            trusted = self.cost_model.informative
            recent = np.flatnonzero(known)[-self.settings.max_fit_points:]
            try:
                self.cost_model.fit(self.space.features(X[recent]), durations[recent])
            except Exception:  # noqa: BLE001
                self.log.warning("cost model failed to fit; proposing without it:\n%s", traceback.format_exc())
                self.cost_model.informative = False
            if self.cost_model.informative != trusted:
                self.log.info("cost model: %s (out-of-bag R^2 %.2f over %d evaluation times)",
                              "the configuration explains evaluation times; preferring the faster of "
                              "similarly promising candidates" if self.cost_model.informative
                              else "evaluation times no longer follow the configuration; ignoring them",
                              self.cost_model.r2, n)
        if not self.cost_model.informative:
            return None
        return lambda C: self.cost_model.predict(self.space.features(C), overhead_s)

    def use_cheaper_surrogate(self) -> bool:
        """Go on with the cheaper model of a surrogate that has one (``CHEAPER_SURROGATE``), for
        good; True if this call switched. The worker calls it when the step costs too large a
        share of an evaluation (``Worker.GP_STEP_SHARE``)."""
        if self.cheap_surrogate or not isinstance(self.settings.surrogate, str) \
                or self.settings.surrogate not in CHEAPER_SURROGATE:
            return False
        self.cheap_surrogate = True
        return True

    def _unordered_view(self, model: Surrogate) -> Surrogate:
        """The model on one-hot features; with ``categorical="ranked"`` the model itself when it
        can treat unordered categoricals as unordered on its own (the default tree ensemble ranks
        their categories by the data)."""
        setter = getattr(model, "set_categories", None)
        if (self.settings.categorical == "ranked" and setter is not None
                and setter(self.space.categorical_columns, self.space.categorical_sizes)):
            return model
        if self.space.feature_dim == self.space.dim:
            return model
        return OnFeatures(model, self.space.features)

    def random_unseen(self, exclude: set[bytes]) -> np.ndarray | None:
        C = self.space.sample(256, self.rng)
        for x, key in zip(C, self.space.keys(C)):
            if key not in exclude:
                return x
        return None
