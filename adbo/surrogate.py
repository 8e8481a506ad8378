"""The contract between the worker loop and any surrogate model.

It is scikit-learn's regressor contract plus the ``return_std`` keyword of
``GaussianProcessRegressor.predict``: ``fit(X, y)`` and ``predict(X, return_std=True)`` returning
the mean and an *epistemic* standard deviation (how unsure the model is, not the noise).
Ensembles meet it by the spread of their members (see ``adbo.surrogates.EnsembleSurrogate``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Surrogate(Protocol):
    def fit(self, X: np.ndarray, y: np.ndarray) -> Any: ...

    def predict(self, X: np.ndarray, return_std: bool = False) -> Any: ...


def make_surrogate(spec: "str | Surrogate", seed: int) -> Surrogate:
    """A surrogate from a registered name (``adbo.surrogates.REGISTRY``) or a ready instance."""
    if not isinstance(spec, str):
        if not isinstance(spec, Surrogate):
            raise TypeError(
                f"surrogate {spec!r} lacks fit(X, y) / predict(X, return_std=True); wrap an sklearn "
                "ensemble with adbo.surrogates.EnsembleSurrogate"
            )
        return spec
    from .surrogates import REGISTRY  # surrogates are a plug-in layer: imported on demand

    try:
        factory = REGISTRY[spec]
    except KeyError:
        raise ValueError(f"unknown surrogate {spec!r}; choose one of {sorted(REGISTRY)}") from None
    return factory(seed)
