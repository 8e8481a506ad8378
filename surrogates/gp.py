"""A Gaussian-process surrogate for small budgets."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel


class GaussianProcessSurrogate:
    """Matern-5/2 GP with a learned noise term; ``predict(return_std=True)`` is the GP posterior.

    The posterior std of a GP is epistemic by construction once the white-noise term is removed,
    so it is dropped from the prediction.
    """

    def __init__(self, seed: int = 0, n_restarts_optimizer: int = 2):
        self.seed = seed
        self.n_restarts_optimizer = n_restarts_optimizer
        self.model: GaussianProcessRegressor | None = None

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GaussianProcessSurrogate":
        dim = X.shape[1]
        kernel = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(
            length_scale=np.full(dim, 0.5), length_scale_bounds=(1e-2, 1e2), nu=2.5
        ) + WhiteKernel(1e-3, (1e-8, 1e-1))
        self.model = GaussianProcessRegressor(
            kernel=kernel,
            normalize_y=True,
            n_restarts_optimizer=self.n_restarts_optimizer,
            random_state=self.seed,
        )
        with warnings.catch_warnings():
            # Length scales at their bounds are routine with few points; the fit is still usable.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.model.fit(X, y)
        return self

    def predict(self, X: np.ndarray, return_std: bool = False) -> Any:
        if self.model is None:
            raise RuntimeError("fit the surrogate before predicting")
        if not return_std:
            return self.model.predict(X)
        mean, std = self.model.predict(X, return_std=True)
        scale = np.asarray(getattr(self.model, "_y_train_std", 1.0), dtype=float).ravel()[0]
        noise = self.model.kernel_.k2.noise_level * scale**2
        return mean, np.sqrt(np.clip(std**2 - noise, 0.0, None))


def gaussian_process(seed: int) -> GaussianProcessSurrogate:
    return GaussianProcessSurrogate(seed=seed)
