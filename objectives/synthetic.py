"""Synthetic test functions with known optima, for checking and benchmarking the search.

All are classic minimization problems (Surjanovic & Bingham's Virtual Library of Simulation
Experiments lists the definitions and optima used here). ``SyntheticObjective`` wraps one as an
adbo objective, optionally sleeping for a simulated evaluation time drawn from a normal
distribution, the way the ADBO paper emulated expensive training runs (it used N(60 s, 20 s)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


def ackley(x: np.ndarray) -> float:
    d = len(x)
    return float(
        -20.0 * math.exp(-0.2 * math.sqrt(float(np.sum(x**2)) / d))
        - math.exp(float(np.sum(np.cos(2 * math.pi * x))) / d)
        + 20.0
        + math.e
    )


def branin(x: np.ndarray) -> float:
    x1, x2 = x
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    t = 1 / (8 * math.pi)
    return float((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10)


_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x: np.ndarray) -> float:
    inner = np.sum(_H6_A * (x[None, :] - _H6_P) ** 2, axis=1)
    return float(-np.sum(_H6_ALPHA * np.exp(-inner)))


def levy(x: np.ndarray) -> float:
    w = 1 + (x - 1) / 4
    head = math.sin(math.pi * w[0]) ** 2
    mid = np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2))
    tail = (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    return float(head + mid + tail)


def griewank(x: np.ndarray) -> float:
    i = np.arange(1, len(x) + 1)
    return float(np.sum(x**2) / 4000 - np.prod(np.cos(x / np.sqrt(i))) + 1)


def schwefel(x: np.ndarray) -> float:
    return float(418.9829 * len(x) - np.sum(x * np.sin(np.sqrt(np.abs(x)))))


@dataclass(frozen=True)
class Problem:
    function: Callable[[np.ndarray], float]
    bounds: tuple[float, float] | list[tuple[float, float]]
    optimum: float
    fixed_dim: int | None = None


PROBLEMS: dict[str, Problem] = {
    "ackley": Problem(ackley, (-32.768, 32.768), 0.0),
    "branin": Problem(branin, [(-5.0, 10.0), (0.0, 15.0)], 0.397887, fixed_dim=2),
    "hartmann6": Problem(hartmann6, (0.0, 1.0), -3.32237, fixed_dim=6),
    "levy": Problem(levy, (-10.0, 10.0), 0.0),
    "griewank": Problem(griewank, (-600.0, 600.0), 0.0),
    "schwefel": Problem(schwefel, (-500.0, 500.0), 0.0),
}


class SyntheticObjective:
    """A named test function over ``x0..x{d-1}``, to be minimized, with optional simulated cost.

    Instances are plain picklable objects so Parsl can ship them to worker processes.
    """

    direction = "minimize"

    def __init__(self, problem: str, dim: int | None = None, eval_time: tuple[float, float] | None = None, seed: int = 0):
        if problem not in PROBLEMS:
            raise ValueError(f"unknown problem {problem!r}; choose one of {sorted(PROBLEMS)}")
        spec = PROBLEMS[problem]
        if spec.fixed_dim is not None:
            if dim not in (None, spec.fixed_dim):
                raise ValueError(f"{problem} is defined only in {spec.fixed_dim} dimensions, not {dim}")
            dim = spec.fixed_dim
        if dim is None or dim < 1:
            raise ValueError(f"{problem} needs a dimension of at least 1 (--dim)")
        if eval_time is not None and (eval_time[0] < 0 or eval_time[1] < 0):
            raise ValueError(f"eval_time mean and std must be >= 0, got {eval_time}")
        self.problem = problem
        self.dim = int(dim)
        self.eval_time = eval_time
        self.seed = seed
        self.optimum = spec.optimum
        self._rng: np.random.Generator | None = None

    @property
    def bounds(self) -> list[tuple[float, float]]:
        b = PROBLEMS[self.problem].bounds
        return list(b) if isinstance(b, list) else [b] * self.dim

    def space(self) -> dict[str, tuple[float, float]]:
        """The search space in adbo's dict shorthand."""
        return {f"x{i}": (float(lo), float(hi)) for i, (lo, hi) in enumerate(self.bounds)}

    def value(self, params: dict[str, Any]) -> float:
        x = np.array([params[f"x{i}"] for i in range(self.dim)], dtype=float)
        return PROBLEMS[self.problem].function(x)

    def __call__(self, params: dict[str, Any]) -> float:
        if self.eval_time is not None and self.eval_time[0] > 0:
            if self._rng is None:  # per process: a fresh generator after unpickling on a worker
                self._rng = np.random.default_rng()
            mean, std = self.eval_time
            time.sleep(max(0.0, float(self._rng.normal(mean, std))))
        return self.value(params)

    def adbo_identity(self) -> str:
        return f"adbo.objectives.synthetic:{self.problem}(dim={self.dim})"

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_rng"] = None
        return state
