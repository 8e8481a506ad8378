"""Surrogate models for adbo's workers (installed as ``adbo.surrogates``).

All follow scikit-learn's estimator contract with ``predict(X, return_std=True)``:

* ``extra_trees`` (default): extremely randomized trees; cheap to refit at every step and robust
  to mixed, conditional spaces. The std is the spread across trees.
* ``random_forest``: bootstrapped trees; a little slower, sometimes smoother.
* ``gp``: a Gaussian process with a Matern kernel; strong with small budgets (a few hundred
  evaluations), cubic in the number of results, so avoid it beyond ~1,000.
"""

from __future__ import annotations

from typing import Callable

from .ensemble import EnsembleSurrogate, ExtraTreesEnsemble, extra_trees, random_forest
from .gp import GaussianProcessSurrogate, gaussian_process

REGISTRY: dict[str, Callable[[int], object]] = {
    "extra_trees": extra_trees,
    "random_forest": random_forest,
    "gp": gaussian_process,
}

__all__ = [
    "EnsembleSurrogate",
    "ExtraTreesEnsemble",
    "GaussianProcessSurrogate",
    "REGISTRY",
    "extra_trees",
    "gaussian_process",
    "random_forest",
]
