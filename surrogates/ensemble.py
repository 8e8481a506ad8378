"""Tree ensembles as surrogates: the mean and spread of their members' predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor


class EnsembleSurrogate:
    """Wraps any fitted-ensemble regressor exposing ``estimators_`` (sklearn forests, bagging).

    The across-member standard deviation is epistemic: members agree where data is dense and
    disagree where it is sparse, which is what an upper confidence bound needs to explore.
    """

    def __init__(self, regressor: Any, leaf_variance: bool = True):
        self.regressor = regressor
        self.leaf_variance = leaf_variance

    def fit(self, X: np.ndarray, y: np.ndarray) -> "EnsembleSurrogate":
        self.regressor.fit(X, y)
        return self

    def member_predictions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-member means, and per-member leaf variances where members are sklearn trees."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        n_members = len(self.regressor.estimators_)
        means = np.empty((n_members, X.shape[0]))
        variances: np.ndarray | None = np.empty_like(means) if self.leaf_variance else None
        # The low-level tree_ API skips sklearn's per-call input validation, which otherwise
        # dominates the cost of predicting with many small trees.
        for i, est in enumerate(self.regressor.estimators_):
            tree = getattr(est, "tree_", None)
            if tree is None:
                means[i] = est.predict(X)
                variances = None
                continue
            leaves = tree.apply(X)
            means[i] = tree.value[leaves, 0, 0]
            if variances is not None:
                variances[i] = tree.impurity[leaves]
        return means, variances

    def predict(self, X: np.ndarray, return_std: bool = False) -> Any:
        """Mean over members; std by the law of total variance over members and their leaves.

        The spread of member means alone vanishes near observed points; adding each leaf's
        variance keeps an honest uncertainty where leaves pool several different results.
        """
        means, variances = self.member_predictions(X)
        mean = means.mean(axis=0)
        if not return_std:
            return mean
        var = means.var(axis=0)
        if variances is not None:
            var = var + variances.mean(axis=0)
        return mean, np.sqrt(np.clip(var, 0.0, None))


def extra_trees(seed: int, n_estimators: int = 16, min_samples_leaf: int = 1) -> EnsembleSurrogate:
    return EnsembleSurrogate(
        ExtraTreesRegressor(
            n_estimators=n_estimators,
            min_samples_leaf=min_samples_leaf,
            max_features=1.0,
            bootstrap=False,
            n_jobs=1,
            random_state=seed,
        )
    )


def random_forest(seed: int, n_estimators: int = 16, min_samples_leaf: int = 1) -> EnsembleSurrogate:
    return EnsembleSurrogate(
        RandomForestRegressor(
            n_estimators=n_estimators,
            min_samples_leaf=min_samples_leaf,
            max_features=1.0,
            bootstrap=True,
            n_jobs=1,
            random_state=seed,
        )
    )
