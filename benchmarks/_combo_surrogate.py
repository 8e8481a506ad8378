"""A surrogate benchmark of the CANDLE Combo search space, for ``quality.py`` (problem ``candle_combo``).

Training Combo for every evaluation of a quality run is far too slow here, so the problem is a
regression model of real trainings, the way surrogate benchmarks (HPOBench's, YAHPO's) stand in for
expensive ones. The trainings are the pool that ``early_stopping.py`` trains once and caches
(``candle_pool``: configurations drawn from the full 22-parameter Combo space, the real model and
training code on generated data with the real schema, 50 epochs each). The model is a random forest
(scikit-learn, 100 trees, fixed seed) fitted on adbo's feature encoding of each configuration
(one-hot unordered categoricals, inactive conditional parameters at -1) to the loss
``1 - R2`` of the final validation R2 (clipped at -1, so a diverged training counts 2). The value of
a configuration is the forest's prediction: deterministic and defined everywhere, unlike the
nearest-pool-member lookup of ``early_stopping.py``, whose cells are piecewise-constant regions of
very uneven size in 22 dimensions.

The optimum is not known exactly: ``optimum`` is the best prediction found by a wide search of
the forest (the pool, 50,000 uniform configurations, then local moves from the best 20), computed
once per pool and cached. A search that beats it has a negative regret, reported as it is.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

POOL_SIZE = 256
DEFAULT_POOL_DIR = Path(os.environ.get("ADBO_COMBO_POOL", "benchmarks/results/early_stopping"))


class ComboSurrogate:
    """``space()``, ``value(config)`` (loss ``1 - R2``, minimize) and ``optimum``, as tabular problems have."""

    name = "candle_combo"

    def __init__(self, pool_dir: Path = DEFAULT_POOL_DIR, size: int = POOL_SIZE, log=print) -> None:
        from sklearn.ensemble import RandomForestRegressor

        from adbo.objectives.candle_combo import combo_space
        from adbo.space import SearchSpace
        from early_stopping import candle_pool

        self._cs = combo_space()
        self.space_ = SearchSpace(self._cs)
        pool = candle_pool(Path(pool_dir), size, log)
        finals = np.array([(e["curve"][-1] if e["curve"] else -1.0) for e in pool], dtype=float)
        finals = np.where(np.isfinite(finals), np.clip(finals, -1.0, None), -1.0)
        X = self.space_.features(self.space_.encode([e["config"] for e in pool]))
        self.model = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, random_state=0, n_jobs=1)
        self.model.fit(X, 1.0 - finals)
        self.pool_best = float((1.0 - finals).min())
        self.optimum = self._optimum(Path(pool_dir), len(pool), X)

    def space(self) -> Any:
        return self._cs

    def _predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(self.space_.features(x))

    def value(self, config: dict[str, Any]) -> float:
        return float(self._predict(self.space_.encode([config]))[0])

    def _optimum(self, pool_dir: Path, size: int, X_pool: np.ndarray) -> float:
        cached = pool_dir / f"combo_surrogate_optimum-{size}.json"
        if cached.exists():
            return float(json.loads(cached.read_text())["optimum"])
        from adbo.acquisition import perturb

        rng = np.random.default_rng(2026)
        best = [float(self.model.predict(X_pool).min())]
        x = self.space_.sample(50_000, rng)
        y = self._predict(x)
        best.append(float(y.min()))
        top = x[np.argsort(y)[:20]]
        for _ in range(20):  # local moves around the best points, keeping improvements
            cand = perturb(self.space_, top, 0.05, 25, rng)
            yc = self._predict(cand)
            pool_x, pool_y = np.concatenate([top, cand]), np.concatenate([self._predict(top), yc])
            order = np.argsort(pool_y)[:20]
            top = pool_x[order]
            best.append(float(pool_y[order[0]]))
        optimum = min(best)
        cached.write_text(json.dumps({"optimum": optimum, "pool_best": self.pool_best}))
        return optimum
