"""Choosing the next configuration: UCB with a per-worker exploration schedule.

Decentralized BO has no manager to spread workers over the space; instead each worker draws its
own exploration weight ``kappa_0 ~ Exponential(mean 1.96)`` once, so some workers explore and some
exploit, and decays it periodically (``kappa_t = kappa_0 * exp(-rate * (t mod period))``) so
each worker alternates between broad and focused phases (Egele et al., 2023).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .space import INACTIVE, SearchSpace
from .surrogate import Surrogate


@dataclass(frozen=True)
class ExplorationSchedule:
    kappa0: float
    period: int = 48
    rate: float = 0.1

    @classmethod
    def for_worker(cls, rng: np.random.Generator, mean: float = 1.96, period: int = 48, rate: float = 0.1) -> "ExplorationSchedule":
        return cls(kappa0=float(rng.exponential(mean)), period=max(1, int(period)), rate=float(rate))

    def kappa(self, step: int) -> float:
        return self.kappa0 * math.exp(-self.rate * (step % self.period))


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
    """
    lo, hi = float(np.min(y)), float(np.max(y))
    if hi <= lo:
        return np.zeros_like(y)
    unit = (y - lo) / (hi - lo)
    if mode == "minmax":
        return unit
    if mode == "minmax-log":
        gap = np.log((1.0 - unit) + 1e-3)  # 0 at the best, log(1e-3)-ish far away
        return (np.log(1.0 + 1e-3) - gap) / (np.log(1.0 + 1e-3) - np.log(1e-3))
    raise ValueError(f"unknown objective scaling {mode!r}; use 'minmax' or 'minmax-log'")


def _copies(centres: np.ndarray, n_per_centre: int, rng: np.random.Generator) -> np.ndarray:
    """``n_per_centre`` copies of each centre, inactive coordinates given a random value so that a
    move can switch a conditional parameter on (``canonicalize`` switches it off again if not)."""
    base = np.repeat(centres, n_per_centre, axis=0)
    inactive = base == INACTIVE
    base[inactive] = rng.random(int(inactive.sum()))
    return base


def perturb(space: SearchSpace, centres: np.ndarray, scale: float, n_per_centre: int, rng: np.random.Generator) -> np.ndarray:
    """Local moves around ``centres``: Gaussian steps on a random subset of coordinates.

    Changing a few coordinates at a time (as a local search would) works far better in 10-30
    dimensions than moving all of them. Inactive coordinates get a random value first, so a move
    can switch a conditional parameter on.
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
    return space.canonicalize(moved)


def jump(space: SearchSpace, centre: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """One-parameter jumps: copies of ``centre`` with one parameter redrawn uniformly.

    Local moves keep every parameter near the incumbent's value, so a parameter whose best value
    lies in another basin (far along its own axis) is never found. Hyperparameters often act
    nearly independently (a learning rate, a dropout, a categorical choice), and trees split on
    one parameter at a time, so the surrogate can rank such jumps well. An inactive coordinate is
    redrawn too, so a jump can switch on a conditional parameter.
    """
    if n <= 0:
        return np.empty((0, space.dim))
    base = _copies(centre[None], n, rng)
    base[np.arange(n), rng.integers(0, space.dim, n)] = rng.random(n)
    return space.canonicalize(base)


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
) -> tuple[np.ndarray | None, float]:
    """Best unseen candidate by UCB over random, local and one-parameter-jump candidates.

    ``scores`` are to be maximized and already scaled. Returns (row, acquisition value), or
    (None, nan) when every candidate is already evaluated or in flight.
    """
    candidates = [space.sample(n_random, rng)]
    if n_local > 0:
        top = np.argsort(scores)[::-1][: max(1, min(10, len(scores)))]
        candidates.append(perturb(space, X_obs[top], local_scale, max(1, n_local // len(top)), rng))
    if n_jumps > 0 and len(scores):
        candidates.append(jump(space, X_obs[int(np.argmax(scores))], n_jumps, rng))
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
        local = perturb(space, C[best], 0.05 / (r + 1), 50, rng)
        m, s = model.predict(local, return_std=True)
        C = np.vstack([C, local])
        acq = np.concatenate([acq, score(m, s)])
    order = np.argsort(acq)[::-1]
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
