"""A surrogate that picks its model by the number of results: a GP while few, trees after."""

from __future__ import annotations

from typing import Any

import numpy as np

from .ensemble import extra_trees
from .gp import GaussianProcessSurrogate


class GPThenTrees:
    """A Gaussian process up to ``max_gp_points`` results, extremely randomized trees beyond (the default).

    A GP models a smooth response from few points better than trees do, which is what the first
    hundreds of evaluations of an expensive training need; its fit grows like the cube of the
    results (0.1-0.3 s at 200 results and 0.6 s at 400 on one core here, against 0.05 s for the
    trees), so a run with thousands of results, as a few hundred workers make within hours, goes
    on with the trees, whose cost stays flat (``ProposerSettings.max_fit_points``). A worker also
    hands over for good once the GP step passes a tenth of its evaluations (``Worker.GP_STEP_SHARE``).
    """

    def __init__(self, seed: int = 0, max_gp_points: int = 200):
        self.seed = seed
        self.max_gp_points = max_gp_points
        self.model: Any = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GPThenTrees":
        if len(X) <= self.max_gp_points:
            self.model = GaussianProcessSurrogate(seed=self.seed)
        else:
            self.model = extra_trees(self.seed)
        self.model.fit(X, y)
        return self

    def predict(self, X: np.ndarray, return_std: bool = False) -> Any:
        if self.model is None:
            raise RuntimeError("fit the surrogate before predicting")
        return self.model.predict(X, return_std=return_std)


def gp_then_trees(seed: int) -> GPThenTrees:
    return GPThenTrees(seed=seed)
