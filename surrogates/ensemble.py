"""Tree ensembles as surrogates: the mean and spread of their members' predictions."""

from __future__ import annotations

from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import RandomForestRegressor
from sklearn.tree import ExtraTreeRegressor

_MAX_SEED = np.iinfo(np.int32).max


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

    def set_categories(self, columns: np.ndarray, sizes: np.ndarray) -> bool:
        """Declare unordered categorical columns (codes ``(i + 0.5) / k``); True if the regressor
        can treat them as unordered itself (``ExtraTreesEnsemble`` can), False if it cannot."""
        setter = getattr(self.regressor, "set_categories", None)
        return bool(setter(columns, sizes)) if setter is not None else False

    def member_predictions(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-member means, and per-member leaf variances where members are sklearn trees."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        n_members = len(self.regressor.estimators_)
        means = np.empty((n_members, X.shape[0]))
        variances: np.ndarray | None = np.empty_like(means) if self.leaf_variance else None
        prepare = getattr(self.regressor, "prepare_input", None)
        if prepare is not None:  # the regressor's own view of the rows (ExtraTreesEnsemble's categories)
            X = prepare(X)
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


class ExtraTreesEnsemble:
    """The trees ``sklearn.ensemble.ExtraTreesRegressor(max_features=1.0, bootstrap=False)`` grows,
    fitted without the forest's per-tree machinery.

    A worker refits its surrogate at every step. The forest clones, re-validates and re-seeds each
    tree through generic parameter introspection, which cost about a fifth of a 16-tree fit on
    1,000 points (an eighth of a whole step at 20,000 results). This grows the same trees (same
    per-tree seeds, drawn the way the forest draws them) with the public ``fit(check_input=False)``,
    converting the input once. Only the fitted trees (``estimators_``) are used for prediction.
    """

    def __init__(self, n_estimators: int = 16, min_samples_leaf: int = 1, random_state: int = 0):
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state
        self.estimators_: list[ExtraTreeRegressor] = []
        self.categories: list[tuple[int, int]] = []
        self.relabel_: list[np.ndarray] = []

    def set_categories(self, columns: np.ndarray, sizes: np.ndarray) -> bool:
        """Columns holding unordered categorical codes: the trees see them ranked by the data.

        A tree splits a column at a threshold, so on codes in listing order it can only group
        categories that happen to be listed next to each other, and what it learns depends on an
        order that means nothing. At each fit the categories of such a column are instead ranked
        by the mean score of the results that have them (for squared error, the best binary split
        of a categorical lies among the splits of that ranking, Breiman et al. 1984), so a
        threshold parts good categories from bad ones and the model no longer depends on the
        listing order, while keeping one column per categorical (one-hot columns split one category
        off at a time). Used by ``ProposerSettings(categorical="ranked")``; the default, one-hot
        columns, did as well sequentially and better with 8 workers (docs/categoricals.md).
        """
        self.categories = [(int(c), int(k)) for c, k in zip(columns, sizes) if int(k) >= 3]
        return True

    @staticmethod
    def _target_order(col: np.ndarray, y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
        """New codes for the k categories of one column: ranked by the mean target of the results
        that have them (unseen categories at the overall mean, ties in random order)."""
        active = col >= 0.0
        index = np.minimum((col[active] * k).astype(np.intp), k - 1)
        counts = np.bincount(index, minlength=k)
        sums = np.bincount(index, weights=y[active], minlength=k)
        overall = float(y[active].mean()) if active.any() else 0.0
        means = np.where(counts > 0, sums / np.maximum(counts, 1), overall)
        rank = np.empty(k, dtype=np.intp)
        rank[np.lexsort((rng.random(k), means))] = np.arange(k)
        return ((rank + 0.5) / k).astype(np.float32)

    def prepare_input(self, X: np.ndarray) -> np.ndarray:
        """``X`` as the trees saw it in training (categorical codes replaced by their rank codes)."""
        if not self.categories:
            return X
        X = np.array(X, dtype=np.float32, copy=True)
        for (j, k), relabel in zip(self.categories, self.relabel_):
            col = X[:, j]
            active = col >= 0.0  # INACTIVE (-1) stays as it is
            index = np.minimum((col[active] * k).astype(np.intp), k - 1)
            col[active] = relabel[index]
        return X

    def fit(self, X: np.ndarray, y: np.ndarray) -> "ExtraTreesEnsemble":
        X = np.ascontiguousarray(X, dtype=np.float32)
        y = np.ascontiguousarray(y, dtype=np.float64).reshape(-1, 1)
        if X.ndim != 2 or len(X) != len(y) or not (np.isfinite(X).all() and np.isfinite(y).all()):
            raise ValueError(f"need finite X of shape (n, d) and y of length n; got {X.shape} and {len(y)} values")
        seeds = np.random.RandomState(self.random_state)
        ties = np.random.default_rng([self.random_state, 1])  # a stream apart from the trees' seeds
        self.relabel_ = [self._target_order(X[:, j], y[:, 0], k, ties) for j, k in self.categories]
        if self.categories:
            X = np.ascontiguousarray(self.prepare_input(X))
        trees = []
        with sklearn.config_context(skip_parameter_validation=True):
            for _ in range(self.n_estimators):
                tree = ExtraTreeRegressor(min_samples_leaf=self.min_samples_leaf, max_features=1.0,
                                          random_state=seeds.randint(_MAX_SEED))
                trees.append(tree.fit(X, y, check_input=False))
        self.estimators_ = trees
        return self


def extra_trees(seed: int, n_estimators: int = 16, min_samples_leaf: int = 1) -> EnsembleSurrogate:
    return EnsembleSurrogate(ExtraTreesEnsemble(n_estimators, min_samples_leaf, random_state=seed))


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
