"""The hand-written GP and the size-switching surrogate, on real data and real fits."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import approx_fprime
from threadpoolctl import threadpool_info

from adbo.surrogates import REGISTRY, GaussianProcessSurrogate, GPThenTrees
from adbo.surrogates.ensemble import EnsembleSurrogate


def smooth(X: np.ndarray) -> np.ndarray:
    return np.sin(6 * X[:, 0]) + X[:, 1] ** 2


def test_the_likelihood_gradient_matches_finite_differences():
    rng = np.random.default_rng(1)
    X = rng.random((30, 4))
    z = smooth(X) + 0.01 * rng.normal(size=30)
    z = (z - z.mean()) / z.std()
    gp = GaussianProcessSurrogate()
    for _ in range(3):
        theta = np.concatenate([rng.normal(0.0, 1.0, 4), [rng.normal(0.0, 0.5), np.log(1e-3)]])
        _, analytic = gp._neg_log_posterior(theta, X, z, X * X)
        numeric = approx_fprime(theta, lambda t: gp._neg_log_posterior(t, X, z, X * X)[0], 1e-6)
        assert np.allclose(analytic, numeric, rtol=1e-4, atol=1e-4), (analytic, numeric)


def test_the_gp_learns_a_smooth_function_and_which_inputs_matter():
    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    gp = GaussianProcessSurrogate().fit(X, smooth(X))
    X_test = rng.random((500, 4))
    mean, std = gp.predict(X_test, return_std=True)
    assert np.sqrt(np.mean((mean - smooth(X_test)) ** 2)) < 0.05
    # The two inputs the function ignores get far longer length scales than the two it uses.
    assert gp.length_scales_[2:].min() > 5 * gp.length_scales_[:2].max()
    # Uncertainty: near zero at the data, larger away from it.
    _, at_data = gp.predict(X[:10], return_std=True)
    assert at_data.max() < 0.05 * std.mean() + 1e-3
    _, far = gp.predict(np.full((1, 4), 3.0), return_std=True)
    assert far[0] > 10 * std.mean()


def test_the_gp_learns_the_noise_and_its_std_leaves_it_out():
    # A smooth function under noise of std 0.3: the GP estimates the noise variance (0.09) and
    # does not chase the noise, and the std it reports is of the function, well below the noise.
    rng = np.random.default_rng(2)
    X = rng.random((150, 2))
    y = smooth(X) + rng.normal(0.0, 0.3, 150)
    gp = GaussianProcessSurrogate().fit(X, y)
    noise_variance = gp.noise_ * gp.y_std_**2
    assert 0.03 < noise_variance < 0.27
    assert gp.length_scales_.min() > 0.2
    _, std = gp.predict(X, return_std=True)
    assert std.mean() < 0.5 * 0.3


def test_the_gp_leaves_the_callers_blas_threads_as_they_were():
    before = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    X = np.random.default_rng(0).random((50, 3))
    GaussianProcessSurrogate().fit(X, smooth(X)).predict(X, return_std=True)
    after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert before == after


def test_gp_then_trees_switches_to_trees_past_its_limit():
    rng = np.random.default_rng(3)
    model = REGISTRY["gp_then_trees"](0)
    assert isinstance(model, GPThenTrees)
    X = rng.random((40, 3))
    model.fit(X, smooth(X))
    assert isinstance(model.model, GaussianProcessSurrogate)
    X = rng.random((model.max_gp_points + 1, 3))
    model.fit(X, smooth(X))
    assert isinstance(model.model, EnsembleSurrogate)
    mean, std = model.predict(X[:5], return_std=True)
    assert mean.shape == std.shape == (5,)


def test_predicting_before_fitting_is_refused():
    with pytest.raises(RuntimeError, match="fit the surrogate"):
        GaussianProcessSurrogate().predict(np.zeros((1, 2)))
    with pytest.raises(RuntimeError, match="fit the surrogate"):
        GPThenTrees().predict(np.zeros((1, 2)))
