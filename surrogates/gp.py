"""A Gaussian-process surrogate for small budgets, fitted by maximum a posteriori.

scikit-learn's ``GaussianProcessRegressor`` with one length scale per input spends about 16 ms per
likelihood gradient at 100 results and 30 inputs (its kernel gradient builds an n x n x d tensor
through generic kernel algebra), and its maximum-likelihood fit wanders to the length-scale
bounds in many dimensions: 5-9 s of CPU per worker step on NAS-Bench-201's one-hot space. This
model writes the Matern-5/2 likelihood and its gradient out in numpy (one n x n product per
input column) and puts weak priors on the hyperparameters, so one L-BFGS run converges in tens of
iterations and stays away from the bounds. BLAS runs on one thread inside the model: at these
sizes a second thread costs more than it gains (0.92 s against 0.14 s for a fit on 200 results
and 30 inputs on a 2-core machine), and a worker's cores are shared with its peers anyway.

The length-scale prior is an equal mixture of two isotropic log-normals (log-variance 3 each):
one around 1, the width of the unit cube every input is scaled to, and one around
exp(sqrt(2) + log(d) / 2), the dimension-scaled centre of Hvarfner, Hellsten and Nardi (ICML 2024;
about 9 for five inputs). L-BFGS starts in each component, so the fit lands in the one the data
favour. Alone, the dimension-scaled centre read Ackley-5 as nearly flat and its upper confidence
bound went to the corners (2 of 5 seeds no better than random search); alone, the centre at 1 was
behind on the tabular HPO problems. See docs/tabular_quality.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import minimize
from threadpoolctl import ThreadpoolController

_SQRT5 = math.sqrt(5.0)
_LOG_LENGTH_BOUNDS = (math.log(1e-3), math.log(1e3))
_LOG_SIGNAL_BOUNDS = (math.log(1e-2), math.log(1e2))
_LOG_NOISE_BOUNDS = (math.log(1e-6), math.log(1.0))
_NOISE_PRIOR_CENTRE = math.log(1e-4)
_NOISY_START = 0.3
_LENGTH_PRIOR_VAR = 3.0
_NOISE_PRIOR_VAR = 4.0
_SIGNAL_PRIOR_VAR = 1.0
_JITTER = 1e-8


_THREADPOOLS: ThreadpoolController | None = None


def _one_blas_thread() -> Any:
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


def _length_prior_centres(dim: int) -> tuple[float, ...]:
    """Log length-scale centres of the prior's two components (see the module docstring)."""
    return (0.0, math.sqrt(2.0) + 0.5 * math.log(dim))


def _length_log_prior(log_len: np.ndarray, centres: tuple[float, ...]) -> tuple[float, np.ndarray]:
    """Log density (up to a constant) of an equal-weight mixture of isotropic log-normal
    components, and its gradient: the MAP then lands in whichever component the data favour."""
    offsets = log_len[None, :] - np.asarray(centres)[:, None]
    quad = (offsets**2).sum(1) / (2 * _LENGTH_PRIOR_VAR)
    relative = np.exp(-(quad - quad.min()))
    weights = relative / relative.sum()
    log_density = math.log(float(relative.sum())) - float(quad.min())
    grad = -(weights @ offsets) / _LENGTH_PRIOR_VAR
    return log_density, grad




def _scaled_sq_dist(A: np.ndarray, B: np.ndarray, inv_len: np.ndarray) -> np.ndarray:
    a, b = A * inv_len, B * inv_len
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d2, 0.0)


def _matern52(r2: np.ndarray, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """Kernel values and their derivative with respect to the squared scaled distance."""
    r = np.sqrt(r2)
    e = np.exp(-_SQRT5 * r)
    k = signal * (1.0 + _SQRT5 * r + (5.0 / 3.0) * r2) * e
    dk_dr2 = -(5.0 / 6.0) * signal * (1.0 + _SQRT5 * r) * e
    return k, dk_dr2


class GaussianProcessSurrogate:
    """Matern-5/2 GP with one length scale per input and a learned noise term.

    ``predict(return_std=True)`` gives the posterior std of the latent function (the noise term
    left out), which is the epistemic uncertainty the acquisition needs.
    ``n_restarts`` adds fits from random starting points to the two fixed ones.
    """

    def __init__(self, seed: int = 0, n_restarts: int = 0, max_iter: int = 200):
        self.seed = seed
        self.n_restarts = n_restarts
        self.max_iter = max_iter
        self.theta_: np.ndarray | None = None

    # -- fitting ---------------------------------------------------------------------------
    def _neg_log_posterior(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray,
                           X2: np.ndarray) -> tuple[float, np.ndarray]:
        n, d = X.shape
        log_len, log_signal, log_noise = theta[:d], theta[d], theta[d + 1]
        inv_len = np.exp(-log_len)
        signal, noise = math.exp(log_signal), math.exp(log_noise)
        k, dk_dr2 = _matern52(_scaled_sq_dist(X, X, inv_len), signal)
        K = k.copy()
        K[np.diag_indices(n)] += noise + _JITTER
        try:
            L = cholesky(K, lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            return 1e25, np.zeros_like(theta)
        alpha = cho_solve((L, True), y, check_finite=False)
        nll = 0.5 * float(y @ alpha) + float(np.log(np.diag(L)).sum()) + 0.5 * n * math.log(2 * math.pi)
        W = cho_solve((L, True), np.eye(n), check_finite=False) - np.outer(alpha, alpha)
        M = W * dk_dr2
        # sum_ij M_ij (x_id - x_jd)^2 per column d, without an n x n x d tensor (M is symmetric).
        weighted = 2.0 * (M.sum(1) @ X2) - 2.0 * np.einsum("id,id->d", X, M @ X)
        grad = np.empty_like(theta)
        grad[:d] = 0.5 * weighted * (-2.0) * inv_len**2
        grad[d] = 0.5 * float((W * k).sum())
        grad[d + 1] = 0.5 * noise * float(np.trace(W))
        log_prior, prior_grad = _length_log_prior(log_len, _length_prior_centres(d))
        nll -= log_prior
        grad[:d] -= prior_grad
        nll += log_signal**2 / (2 * _SIGNAL_PRIOR_VAR)
        grad[d] += log_signal / _SIGNAL_PRIOR_VAR
        nll += (log_noise - _NOISE_PRIOR_CENTRE) ** 2 / (2 * _NOISE_PRIOR_VAR)
        grad[d + 1] += (log_noise - _NOISE_PRIOR_CENTRE) / _NOISE_PRIOR_VAR
        return nll, grad

    def fit(self, X: np.ndarray, y: np.ndarray) -> "GaussianProcessSurrogate":
        with _one_blas_thread():
            return self._fit(X, y)

    def _fit(self, X: np.ndarray, y: np.ndarray) -> "GaussianProcessSurrogate":
        X = np.asarray(X, dtype=float)
        y = np.asarray(y, dtype=float).ravel()
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        z = (y - self.y_mean_) / self.y_std_
        d = X.shape[1]
        bounds = [_LOG_LENGTH_BOUNDS] * d + [_LOG_SIGNAL_BOUNDS, _LOG_NOISE_BOUNDS]
        # Two fixed starts: a near-noiseless fit, and one that explains much of the spread as
        # noise. From the first alone, L-BFGS reads pure noise as a wiggly function with short
        # length scales (a local optimum), which is what a noisy training would look like.
        starts = [np.concatenate([np.full(d, centre), [0.0, log_noise]])
                  for centre in _length_prior_centres(d)
                  for log_noise in (_NOISE_PRIOR_CENTRE, math.log(_NOISY_START))]
        rng = np.random.default_rng(self.seed)
        for _ in range(self.n_restarts):
            lo, hi = np.array(bounds).T
            starts.append(rng.uniform(lo, hi))
        X2 = X * X
        best: tuple[float, np.ndarray] | None = None
        for start in starts:
            res = minimize(self._neg_log_posterior, start, args=(X, z, X2), jac=True, method="L-BFGS-B",
                           bounds=bounds, options={"maxiter": self.max_iter})
            if best is None or res.fun < best[0]:
                best = (float(res.fun), res.x)
        assert best is not None
        self._condition(X, z, best[1])
        return self

    def _condition(self, X: np.ndarray, z: np.ndarray, theta: np.ndarray) -> None:
        d = X.shape[1]
        self.theta_ = theta
        self.X_train_ = X
        self.inv_len_ = np.exp(-theta[:d])
        self.signal_ = math.exp(theta[d])
        self.noise_ = math.exp(theta[d + 1])
        k, _ = _matern52(_scaled_sq_dist(X, X, self.inv_len_), self.signal_)
        k[np.diag_indices(len(X))] += self.noise_ + _JITTER
        self.L_ = cholesky(k, lower=True, check_finite=False)
        self.alpha_ = cho_solve((self.L_, True), z, check_finite=False)

    # -- prediction -------------------------------------------------------------------------
    def predict(self, X: np.ndarray, return_std: bool = False) -> Any:
        if self.theta_ is None:
            raise RuntimeError("fit the surrogate before predicting")
        with _one_blas_thread():
            return self._predict(X, return_std)

    def _predict(self, X: np.ndarray, return_std: bool) -> Any:
        X = np.asarray(X, dtype=float)
        ks, _ = _matern52(_scaled_sq_dist(X, self.X_train_, self.inv_len_), self.signal_)
        mean = self.y_mean_ + self.y_std_ * (ks @ self.alpha_)
        if not return_std:
            return mean
        v = solve_triangular(self.L_, ks.T, lower=True, check_finite=False)
        var = np.clip(self.signal_ - (v * v).sum(0), 0.0, None)
        return mean, self.y_std_ * np.sqrt(var)

    @property
    def length_scales_(self) -> np.ndarray:
        return 1.0 / self.inv_len_


def gaussian_process(seed: int) -> GaussianProcessSurrogate:
    return GaussianProcessSurrogate(seed=seed)
