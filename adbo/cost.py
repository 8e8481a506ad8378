"""How long an evaluation of a configuration will take, learned from the run's own evaluations.

Deep-learning configurations differ several-fold in training time (batch size, width, depth),
and a search that ignores it spends its allocation on the slow ones when faster ones promise as
much. The model here predicts the log of an evaluation's duration; the acquisition
(``adbo.acquisition.propose``) uses it to prefer the cheaper of candidates that promise a
similar gain.

Durations are often noise (a shared machine, a queue, a fixed number of epochs): then the model
must stay out of the way. It is trusted only when its out-of-bag R^2 shows that the
configuration explains the durations (``MIN_R2``), so a run whose durations do not depend on the
configuration proposes exactly as without it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_DURATIONS = 16
"""Finished evaluations needed before the model is fitted at all."""
MIN_R2 = 0.3
"""Out-of-bag R^2 of log duration needed before the model's predictions are used."""


class CostModel:
    """Relative evaluation cost of configurations: 1 is the median duration seen so far.

    ``fit`` is cheap (20 bootstrapped extremely randomized trees), the proposer refits only when
    enough new durations arrived (``stale``), and it asks for the cost of the few candidates that
    compete on cost, so the model adds a few milliseconds to a step.
    """

    def __init__(self, seed: int = 0, n_estimators: int = 20):
        self.seed = seed
        self.n_estimators = n_estimators
        self.n_fitted = 0
        self.r2 = float("nan")
        self.informative = False
        self._model: Any = None
        self._centre = 0.0

    def stale(self, n_durations: int) -> bool:
        """Whether ``n_durations`` known durations warrant a refit (5 more, or 10% more)."""
        return n_durations >= MIN_DURATIONS and n_durations - self.n_fitted >= max(5, 0.1 * self.n_fitted)

    def fit(self, X: np.ndarray, durations: np.ndarray) -> "CostModel":
        keep = np.isfinite(durations) & (durations > 0)
        X, log_d = X[keep], np.log(durations[keep])
        self.n_fitted = len(log_d)
        self.informative = False
        if self.n_fitted < MIN_DURATIONS or np.ptp(log_d) <= 0:
            return self
        # Imported here: workers import scikit-learn in the background at start (``Worker._warm_up``).
        from sklearn.ensemble import ExtraTreesRegressor

        model = ExtraTreesRegressor(n_estimators=self.n_estimators, bootstrap=True, oob_score=True,
                                    min_samples_leaf=2, random_state=self.seed, n_jobs=1)
        model.fit(X, log_d)
        self._model = model
        self._centre = float(np.median(log_d))
        self.r2 = float(model.oob_score_)
        self.informative = self.r2 >= MIN_R2
        return self

    def predict(self, X: np.ndarray, overhead_s: float = 0.0) -> np.ndarray:
        """Predicted cost over the cost of a median evaluation; ones when the model is not trusted.

        ``overhead_s`` is what every evaluation costs its worker besides the evaluation itself
        (the BO step, starting the evaluation): with it, a configuration that trains in no time
        still costs something, so short evaluations are not favoured beyond what they save.
        """
        if not self.informative or self._model is None:
            return np.ones(len(X))
        overhead = max(0.0, float(overhead_s))
        return (np.exp(self._model.predict(X)) + overhead) / (np.exp(self._centre) + overhead)
