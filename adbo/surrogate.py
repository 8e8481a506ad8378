"""The contract between the worker loop and any surrogate model.

It is scikit-learn's regressor contract plus the ``return_std`` keyword of
``GaussianProcessRegressor.predict``: ``fit(X, y)`` and ``predict(X, return_std=True)`` returning
the mean and an *epistemic* standard deviation (how unsure the model is, not the noise).
Ensembles meet it by the spread of their members (see ``adbo.surrogates.EnsembleSurrogate``).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

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


class OnFeatures:
    """A surrogate that sees ``transform(X)`` instead of the encoded rows ``X``.

    The acquisition and candidate generation work on the stored encoding (one column per
    hyperparameter, the run directory's format), while the model may need another view of the
    same rows, such as one-hot columns for unordered categoricals (``SearchSpace.features``).
    Wrapping keeps that view in one place: every fit and every prediction go through it.
    """

    def __init__(self, model: Surrogate, transform: Callable[[np.ndarray], np.ndarray]):
        self.model = model
        self.transform = transform

    def fit(self, X: np.ndarray, y: np.ndarray) -> "OnFeatures":
        self.model.fit(self.transform(X), y)
        return self

    def predict(self, X: np.ndarray, return_std: bool = False) -> Any:
        return self.model.predict(self.transform(X), return_std=return_std)
