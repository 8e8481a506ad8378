"""Surrogate models for adbo's workers (installed as ``adbo.surrogates``).

All follow scikit-learn's estimator contract with ``predict(X, return_std=True)``:

* ``extra_trees``: extremely randomized trees; cheap to refit at every step and robust
  to mixed, conditional spaces. The std is the spread across trees.
* ``random_forest``: bootstrapped trees; a little slower, sometimes smoother.
* ``gp``: a Gaussian process with a Matern-5/2 kernel, one length scale per input, fitted by
  maximum a posteriori; strong with small budgets, cubic in the number of results, so avoid it
  beyond ~1,000 (``surrogates/gp.py``).
* ``gp_then_trees`` (default): the GP while a worker fits at most 200 results, the extra trees beyond.
"""

from __future__ import annotations

from typing import Callable

from .ensemble import EnsembleSurrogate, ExtraTreesEnsemble, extra_trees, random_forest
from .gp import GaussianProcessSurrogate, gaussian_process
from .switching import GPThenTrees, gp_then_trees

REGISTRY: dict[str, Callable[[int], object]] = {
    "extra_trees": extra_trees,
    "random_forest": random_forest,
    "gp": gaussian_process,
    "gp_then_trees": gp_then_trees,
}

__all__ = [
    "EnsembleSurrogate",
    "ExtraTreesEnsemble",
    "GaussianProcessSurrogate",
    "GPThenTrees",
    "REGISTRY",
    "extra_trees",
    "gaussian_process",
    "gp_then_trees",
    "random_forest",
]
