"""Choosing the next configuration: UCB with a per-worker exploration schedule.

Decentralized BO has no manager to spread workers over the space; instead each worker takes its
own exploration weight ``kappa_0`` from Exponential(mean 1.96) once, so some workers explore and
some exploit, and decays it periodically (``kappa_t = kappa_0 * exp(-rate * (t mod period))``) so
each worker alternates between broad and focused phases (Egele et al., 2023). The paper draws
kappa_0 independently; by default adbo gives worker i a stratified quantile instead
(``ExplorationSchedule.for_worker(..., worker=i)``), which covers the same distribution evenly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .space import INACTIVE, SearchSpace
from .surrogate import Surrogate


@dataclass(frozen=True)
class ExplorationSchedule:
    kappa0: float
    period: int = 48
    rate: float = 0.1

    @classmethod
    def for_worker(cls, rng: np.random.Generator, mean: float = 1.96, period: int = 48, rate: float = 0.1,
                   worker: int | None = None) -> "ExplorationSchedule":
        """``worker=None`` draws kappa_0 at random; a worker index takes its stratified quantile."""
        drawn = float(rng.exponential(mean))  # always drawn, so the rest of the stream is the same
        kappa0 = drawn if worker is None else exponential_quantile(van_der_corput(worker + 1), mean)
        return cls(kappa0=kappa0, period=max(1, int(period)), rate=float(rate))

    def kappa(self, step: int) -> float:
        return self.kappa0 * math.exp(-self.rate * (step % self.period))


def van_der_corput(i: int) -> float:
    """The i-th point (i >= 1) of the base-2 van der Corput sequence: 1/2, 1/4, 3/4, 1/8, 5/8...

    Every prefix of it is spread evenly over (0, 1), so workers 0..W-1 cover the distribution's
    quantiles evenly whatever W is, without knowing W.
    """
    u, step = 0.0, 0.5
    while i:
        u += step * (i & 1)
        i >>= 1
        step /= 2
    return u


def exponential_quantile(u: float, mean: float) -> float:
    return -mean * math.log1p(-u)


def ucb(mean: np.ndarray, std: np.ndarray, kappa: float) -> np.ndarray:
    """Upper confidence bound for maximization."""
    return mean + kappa * std


def expected_improvement(mean: np.ndarray, std: np.ndarray, best: float, xi: float = 0.01) -> np.ndarray:
    """Expected improvement over ``best`` (maximization); ``xi`` keeps a little exploration."""
    from scipy.stats import norm

    std = np.maximum(std, 1e-12)
    z = (mean - best - xi) / std
    return (mean - best - xi) * norm.cdf(z) + std * norm.pdf(z)


def scale_scores(y: np.ndarray, mode: str = "minmax") -> np.ndarray:
    """Scores to maximize, mapped to [0, 1] so kappa means the same whatever the units.

    ``minmax-log`` (the ADBO paper's choice) takes the log of the min-max scaled distance to the
    best score first, which spreads out the good end of the range and squeezes the bad end: the
    surrogate then spends its splits where the optimum is.

    ``power`` min-max scales the losses' Box-Cox transform (where every loss is positive), its
    exponent fitted by maximum likelihood and held between 0 (the log) and 1 (no change). A
    validation loss that spans orders of magnitude (a diverged training at 7e3 among good ones at
    3e-5) then no longer squeezes every good result into one value; the scores keep their order.

    ``auto`` is ``power`` where the positive losses span at least two orders of magnitude
    (``AUTO_POWER_SPAN``) and ``minmax`` elsewhere: only there does a log-like scale separate
    results that min-max scaling squeezes together, and a loss within a narrow band (an accuracy,
    1 - R2) keeps the plain scaling that served it.
    """
    if mode in ("power", "auto"):
        y = _box_cox_scores(y, min_span=AUTO_POWER_SPAN if mode == "auto" else 1.0)
    lo, hi = float(np.min(y)), float(np.max(y))
    if hi <= lo:
        return np.zeros_like(y)
    unit = (y - lo) / (hi - lo)
    if mode in ("minmax", "power", "auto"):
        return unit
    if mode == "minmax-log":
        gap = np.log((1.0 - unit) + 1e-3)  # 0 at the best, log(1e-3)-ish far away
        return (np.log(1.0 + 1e-3) - gap) / (np.log(1.0 + 1e-3) - np.log(1e-3))
    raise ValueError(f"unknown objective scaling {mode!r}; use 'auto', 'minmax', 'minmax-log' or 'power'")


AUTO_POWER_SPAN = 100.0
"""Largest over smallest positive loss above which ``auto`` scaling takes the Box-Cox transform."""


def _box_cox_scores(y: np.ndarray, min_span: float = 1.0) -> np.ndarray:
    """Scores whose losses (``-y``) are all positive, with the largest at least ``min_span`` times
    the smallest, through a Box-Cox transform with its maximum-likelihood exponent held between 0
    (the log) and 1 (unchanged); others unchanged."""
    from scipy.special import boxcox
    from scipy.stats import boxcox_normmax

    loss = -np.asarray(y, dtype=float)
    if len(loss) < 3 or not np.all(loss > 0) or np.max(loss) <= np.min(loss) * min_span:
        return y
    try:
        lmbda = float(np.clip(boxcox_normmax(loss, method="mle"), 0.0, 1.0))
    except (ValueError, FloatingPointError, RuntimeError):
        return y
    out = boxcox(loss, lmbda)
    return -out if np.all(np.isfinite(out)) else y


def _copies(centres: np.ndarray, n_per_centre: int, rng: np.random.Generator) -> np.ndarray:
    """``n_per_centre`` copies of each centre, inactive coordinates given a random value so that a
    move can switch a conditional parameter on (``canonicalize`` switches it off again if not)."""
    base = np.repeat(centres, n_per_centre, axis=0)
    inactive = base == INACTIVE
    base[inactive] = rng.random(int(inactive.sum()))
    return base


def _redraw_categories(space: SearchSpace, base: np.ndarray, moved: np.ndarray, mask: np.ndarray,
                       rng: np.random.Generator) -> None:
    """In place: where ``mask`` selects an unordered categorical of ``moved``, put a category drawn
    uniformly from the *other* choices of ``base``'s.

    A Gaussian step on such a column would move to the categories listed next to the current one,
    which are no more alike than any other; a redraw treats every other category as equally near.
    Excluding the current category keeps the move a move (a redraw onto itself would only
    duplicate the centre, which is already evaluated).
    """
    for j, k in zip(space.categorical_columns, space.categorical_sizes):
        rows = np.flatnonzero(mask[:, j])
        if len(rows) == 0:
            continue
        old = np.minimum(np.floor(np.clip(base[rows, j], 0.0, 1.0) * k), k - 1)
        new = (old + rng.integers(1, k, len(rows))) % k
        moved[rows, j] = (new + 0.5) / k


def perturb(space: SearchSpace, centres: np.ndarray, scale: float, n_per_centre: int, rng: np.random.Generator,
            unordered: bool = True) -> np.ndarray:
    """Local moves around ``centres``: Gaussian steps on a random subset of coordinates.

    Changing a few coordinates at a time (as a local search would) works far better in 10-30
    dimensions than moving all of them. Inactive coordinates get a random value first, so a move
    can switch a conditional parameter on. With ``unordered`` (the default) a chosen unordered
    categorical changes to another category drawn uniformly instead of stepping along its code;
    ``unordered=False`` is the earlier behaviour, which stepped along every code.
    """
    if len(centres) == 0 or n_per_centre <= 0:
        return np.empty((0, space.dim))
    base = _copies(centres, n_per_centre, rng)
    d = space.dim
    p = min(1.0, 2.0 / d)
    mask = rng.random(base.shape) < p
    mask[np.arange(len(base)), rng.integers(0, d, len(base))] = True
    step = rng.normal(0.0, scale, base.shape)
    moved = np.where(mask, base + step, base)
    # Reflect at the bounds instead of clipping, so the edges do not collect candidates.
    moved = np.abs(moved)
    moved = 1.0 - np.abs(1.0 - moved)
    if unordered:
        _redraw_categories(space, base, moved, mask, rng)
    return space.canonicalize(moved)


def jump(space: SearchSpace, centre: np.ndarray, n: int, rng: np.random.Generator,
         unordered: bool = True) -> np.ndarray:
    """One-parameter jumps: copies of ``centre`` with one parameter redrawn uniformly.

    Local moves keep every parameter near the incumbent's value, so a parameter whose best value
    lies in another basin (far along its own axis) is never found. Hyperparameters often act
    nearly independently (a learning rate, a dropout, a categorical choice), and trees split on
    one parameter at a time, so the surrogate can rank such jumps well. An inactive coordinate is
    redrawn too, so a jump can switch on a conditional parameter. With ``unordered`` a jump on
    an unordered categorical always lands on another category.
    """
    if n <= 0:
        return np.empty((0, space.dim))
    base = _copies(centre[None], n, rng)
    moved = base.copy()
    values = rng.random(n)  # drawn before the columns, as the earlier one-line form did
    cols = rng.integers(0, space.dim, n)
    moved[np.arange(n), cols] = values
    if unordered:
        mask = np.zeros(base.shape, dtype=bool)
        mask[np.arange(n), cols] = True
        _redraw_categories(space, base, moved, mask, rng)
    return space.canonicalize(moved)


def local_centres(X: np.ndarray, scores: np.ndarray, k: int = 10, spacing: float = 0.0) -> np.ndarray:
    """Indices of the results that local moves start from: the ``k`` best, or with ``spacing`` the
    best ones that lie at least that far apart (root-mean-square distance in the unit cube).

    The ten best results usually sit in the incumbent's basin, so all local moves refine one
    region; spacing them keeps a few moves in the next-best basins, where a coordinate stuck in
    a wrong local minimum (Levy, Griewank, Schwefel) gets another chance. Only the best 200 are
    scanned, so the cost stays flat as the run grows. An inactive conditional parameter is encoded
    as -1, so results that differ in which parameters are active count as far apart.
    """
    order = np.argsort(scores)[::-1]
    if spacing <= 0:
        return order[: max(1, min(k, len(scores)))]
    chosen: list[int] = []
    for i in order[: max(20 * k, 200)]:
        if not chosen or np.sqrt(np.mean((X[chosen] - X[i]) ** 2, axis=1)).min() >= spacing:
            chosen.append(int(i))
            if len(chosen) == k:
                break
    return np.array(chosen)


def promised_gain(acq: np.ndarray, acquisition: str, best_score: float) -> np.ndarray:
    """What a candidate promises beyond the best result: UCB above the best score, or EI itself."""
    return np.maximum(acq - best_score, 0.0) if acquisition == "ucb" else np.maximum(acq, 0.0)


def cost_aware_order(acq: np.ndarray, gain: np.ndarray, cost_of: Callable[[np.ndarray], np.ndarray],
                     share: float, head: int = 256) -> np.ndarray:
    """Candidate indices, best first, when evaluations differ in cost.

    Gain per unit of cost alone (Snoek et al., 2012, "EI per second") is known to starve the
    search of expensive optima (Lee et al., 2020); here a cheap candidate wins only if it keeps
    at least ``share`` of the best promised gain (``ProposerSettings.cost_gain_share``), so a
    step gives up at most that much of what the acquisition promised. The candidates below that
    share rank after, by the acquisition alone. With no candidate promising a gain (late,
    exploiting steps of UCB), the acquisition's order stands, and among equal values in its best
    ``head`` (a tree ensemble's plateaus around the best result) the cheaper candidate comes first.
    ``cost_of(indices)`` gives the relative cost of those candidates only: on a machine whose
    cores the workers share, predicting for every candidate would cost more than it saves.
    """
    top = float(gain.max()) if len(gain) else 0.0
    if top <= 0.0:
        order = np.argsort(acq)[::-1]
        best = order[:head]
        best = best[np.lexsort((cost_of(best), -acq[best]))]
        return np.concatenate([best, order[head:]])
    eligible = gain >= share * top
    first = np.flatnonzero(eligible)
    first = first[np.argsort(gain[first] / cost_of(first))[::-1]]
    rest = np.flatnonzero(~eligible)
    rest = rest[np.argsort(acq[rest])[::-1]]
    return np.concatenate([first, rest])


def propose(
    space: SearchSpace,
    model: Surrogate,
    X_obs: np.ndarray,
    scores: np.ndarray,
    kappa: float,
    exclude: set[bytes],
    rng: np.random.Generator,
    n_random: int = 2000,
    n_local: int = 0,
    refine_rounds: int = 0,
    acquisition: str = "ucb",
    local_scale: float = 0.1,
    n_jumps: int = 0,
    local_spacing: float = 0.0,
    unordered: bool = True,
    cost: Callable[[np.ndarray], np.ndarray] | None = None,
    cost_gain_share: float = 0.25,
) -> tuple[np.ndarray | None, float]:
    """Best unseen candidate by UCB over random, local and one-parameter-jump candidates.

    ``scores`` are to be maximized and already scaled. ``model`` is fitted on, and predicts from,
    the same encoded rows the candidates are made of (a feature map, if any, lives in the model).
    ``unordered`` makes local moves and jumps redraw unordered categoricals (see ``perturb``).
    ``cost`` maps candidates to their predicted cost relative to a typical evaluation; with it,
    candidates are ranked by ``cost_aware_order`` with ``cost_gain_share``.
    Returns (row, acquisition value), or (None, nan) when every candidate is already evaluated or
    in flight.
    """
    candidates = [space.sample(n_random, rng)]
    if n_local > 0:
        top = local_centres(X_obs, scores, 10, local_spacing)
        candidates.append(perturb(space, X_obs[top], local_scale, max(1, n_local // len(top)), rng, unordered))
    if n_jumps > 0 and len(scores):
        candidates.append(jump(space, X_obs[int(np.argmax(scores))], n_jumps, rng, unordered))
    C = np.vstack(candidates)
    if acquisition == "ucb":
        def score(m: np.ndarray, s: np.ndarray) -> np.ndarray:
            return ucb(m, s, kappa)
    elif acquisition == "ei":
        best_seen = float(np.max(scores)) if len(scores) else 0.0

        def score(m: np.ndarray, s: np.ndarray) -> np.ndarray:
            return expected_improvement(m, s, best_seen)
    else:
        raise ValueError(f"unknown acquisition {acquisition!r}; use 'ucb' or 'ei'")
    mean, std = model.predict(C, return_std=True)
    acq = score(mean, std)
    for r in range(refine_rounds):
        best = np.argsort(acq)[::-1][:10]
        local = perturb(space, C[best], 0.05 / (r + 1), 50, rng, unordered)
        m, s = model.predict(local, return_std=True)
        C = np.vstack([C, local])
        acq = np.concatenate([acq, score(m, s)])
    if cost is None:
        order = np.argsort(acq)[::-1]
    else:
        best_score = float(np.max(scores)) if len(scores) else 0.0
        order = cost_aware_order(acq, promised_gain(acq, acquisition, best_score), lambda i: cost(C[i]),
                                 cost_gain_share)
    keys = space.keys(C[order[:256]])
    for rank, key in enumerate(keys):
        if key not in exclude:
            i = order[rank]
            return C[i], float(acq[i])
    # The best 256 were all seen (a small discrete space): fall back to any unseen candidate.
    for i in order[256:]:
        if space.keys(C[i : i + 1])[0] not in exclude:
            return C[i], float(acq[i])
    return None, float("nan")
