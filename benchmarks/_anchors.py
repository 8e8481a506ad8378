"""The anchors adbo is compared with, driven through their public ask/tell APIs.

Shared by the benchmarks (not part of the installed package). Each anchor takes the same
ConfigSpace that adbo uses, translated into the anchor's own vocabulary:

* DeepHyper 0.13 ``deephyper.hpo.CBO`` with its defaults (ET surrogate, UCBd, ``mixedga``
  acquisition optimizer, 10,000 sampled points): the space becomes ``HpProblem(configspace)``;
  ``CBO.tell([(config, objective), ...])`` ingests results and refits (it also optimizes the
  acquisition and caches the next point), ``CBO.ask(1)`` returns that point. DeepHyper maximizes
  and wants every parameter in a configuration: an inactive conditional parameter is given its
  lower bound (first choice for categoricals), as DeepHyper itself does.
* Optuna 5 ``GPSampler()`` with its defaults (Matern-5/2 GP with ARD, log EI; q-batch log EI
  over running trials): the same study set-up as TPE below, only the sampler differs.
* Optuna 5 ``TPESampler()`` with its defaults (multivariate for one objective, constant liar on):
  the space becomes Optuna distributions; a past result is a ``optuna.trial.create_trial``
  with only its active parameters (``Study.add_trials``); one step is ``Study.ask()``, the
  define-by-run ``suggest_*`` calls (conditional parameters only when their condition holds),
  and ``Study.tell``.

Both packages are optional (``.venv-bench``; proposed extra ``adbo[bench]``); import lazily.
"""

from __future__ import annotations

import tempfile
from typing import Any, Callable, Mapping, Sequence

from ConfigSpace import (
    CategoricalHyperparameter,
    ConfigurationSpace,
    Constant,
    EqualsCondition,
    InCondition,
    OrdinalHyperparameter,
)
from ConfigSpace.hyperparameters import FloatHyperparameter, IntegerHyperparameter

Config = dict[str, Any]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def parent_conditions(cs: ConfigurationSpace) -> dict[str, list[tuple[str, tuple[Any, ...]]]]:
    """child -> [(parent, allowed values)] for the simple conditions the benchmarks use."""
    out: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    for cond in cs.conditions:
        if type(cond) is EqualsCondition:
            allowed = (_plain(cond.value),)
        elif type(cond) is InCondition:
            allowed = tuple(_plain(v) for v in cond.values)
        else:
            raise NotImplementedError(
                f"anchor translation supports Equals/In conditions only, not {type(cond).__name__}"
            )
        out.setdefault(cond.child.name, []).append((cond.parent.name, allowed))
    return out


def is_active(name: str, params: Mapping[str, Any], conds: Mapping[str, list[tuple[str, tuple[Any, ...]]]]) -> bool:
    return all(p in params and params[p] in allowed for p, allowed in conds.get(name, []))


# -- DeepHyper ---------------------------------------------------------------------------
class DeepHyperCBO:
    """``deephyper.hpo.CBO`` with its defaults, minimizing ``objective`` over ``cs``."""

    name = "deephyper_cbo"

    def __init__(self, cs: ConfigurationSpace, seed: int = 0):
        from deephyper.hpo import CBO, HpProblem

        self.names = list(cs.keys())
        self.fill_value: Config = {}
        for hp in cs.values():
            if isinstance(hp, (IntegerHyperparameter, FloatHyperparameter)):
                self.fill_value[hp.name] = _plain(hp.lower)
            elif isinstance(hp, CategoricalHyperparameter):
                self.fill_value[hp.name] = _plain(hp.choices[0])
            elif isinstance(hp, OrdinalHyperparameter):
                self.fill_value[hp.name] = _plain(hp.sequence[0])
            elif isinstance(hp, Constant):
                self.fill_value[hp.name] = _plain(hp.value)
        self._tmp = tempfile.TemporaryDirectory(prefix="adbo-bench-dh-")
        self.problem = HpProblem(cs)
        # Everything at DeepHyper's defaults except where results go (a scratch folder) and the seed.
        self.search = CBO(self.problem, random_state=seed, log_dir=self._tmp.name)

    def settings(self) -> dict[str, Any]:
        """The effective defaults, read back from the search (for the record)."""
        kw = self.search._opt_kwargs
        est = kw["base_estimator"]
        return {
            "class": "deephyper.hpo.CBO",
            "surrogate": f"{type(est).__name__}({', '.join(f'{k}={v!r}' for k, v in sorted(est.get_params().items()) if k in ('n_estimators', 'min_impurity_decrease', 'splitter', 'max_features', 'bootstrap', 'n_jobs'))})",
            "acq_func": kw["acq_func"],
            "acq_optimizer": kw["acq_optimizer"],
            "acq_optimizer_kwargs": {k: kw["acq_optimizer_kwargs"][k] for k in ("n_points", "acq_optimizer_freq", "n_jobs", "filter_duplicated")},
            "n_initial_points": kw["n_initial_points"],
            "objective_scaler": kw["objective_scaler"],
        }

    def _full(self, config: Mapping[str, Any]) -> Config:
        return {k: config.get(k, self.fill_value[k]) for k in self.names}

    def tell_many(self, configs: Sequence[Mapping[str, Any]], values: Sequence[float]) -> None:
        self.search.tell([(self._full(c), -float(v)) for c, v in zip(configs, values)])

    def ask(self) -> Config:
        return self.search.ask(1)[0]

    def tell(self, config: Config, value: float) -> None:
        self.search.tell([(config, -float(value))])

    def close(self) -> None:
        self._tmp.cleanup()


# -- Optuna ------------------------------------------------------------------------------
def optuna_distributions(cs: ConfigurationSpace) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    dists: dict[str, Any] = {}
    for hp in cs.values():
        if isinstance(hp, IntegerHyperparameter):
            dists[hp.name] = IntDistribution(int(hp.lower), int(hp.upper), log=bool(hp.log))
        elif isinstance(hp, FloatHyperparameter):
            dists[hp.name] = FloatDistribution(float(hp.lower), float(hp.upper), log=bool(hp.log))
        elif isinstance(hp, CategoricalHyperparameter):
            dists[hp.name] = CategoricalDistribution([_plain(c) for c in hp.choices])
        elif isinstance(hp, OrdinalHyperparameter):
            dists[hp.name] = CategoricalDistribution([_plain(c) for c in hp.sequence])
        elif isinstance(hp, Constant):
            dists[hp.name] = CategoricalDistribution([_plain(hp.value)])
        else:
            raise NotImplementedError(f"no Optuna distribution for {type(hp).__name__}")
    return dists


class OptunaTPE:
    """``optuna.samplers.TPESampler()`` (defaults, seeded) in an in-memory study, minimizing."""

    name = "optuna_tpe"

    def __init__(self, cs: ConfigurationSpace, seed: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.dists = optuna_distributions(cs)
        self.order = list(cs.keys())  # ConfigSpace keeps parents before children
        self.conds = parent_conditions(cs)
        self.study = optuna.create_study(direction="minimize", sampler=self._sampler(seed))
        self._trial = None

    def _sampler(self, seed: int) -> Any:
        return self.optuna.samplers.TPESampler(seed=seed)

    def tell_many(self, configs: Sequence[Mapping[str, Any]], values: Sequence[float]) -> None:
        create = self.optuna.trial.create_trial
        self.study.add_trials(
            create(params=dict(c), distributions={k: self.dists[k] for k in c}, value=float(v))
            for c, v in zip(configs, values)
        )

    def ask(self) -> Config:
        trial = self.study.ask()
        params: Config = {}
        for name in self.order:
            if is_active(name, params, self.conds):
                params[name] = self._suggest(trial, name, self.dists[name])
        self._trial = trial
        return params

    def settings(self) -> dict[str, Any]:
        sampler = self.study.sampler
        if not isinstance(sampler, self.optuna.samplers.TPESampler):
            return {"class": f"optuna.samplers.{type(sampler).__name__}", "storage": type(self.study._storage).__name__,
                    "n_startup_trials": sampler._n_startup_trials}
        return {
            "class": "optuna.samplers.TPESampler",
            "storage": type(self.study._storage).__name__,
            "multivariate": sampler._is_multivariate(self.study),
            "constant_liar": sampler._constant_liar,
            "n_startup_trials": sampler._n_startup_trials,
            "n_ei_candidates": sampler._n_ei_candidates,
        }

    def _suggest(self, trial: Any, name: str, dist: Any) -> Any:
        d = self.optuna.distributions
        if isinstance(dist, d.IntDistribution):
            return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
        if isinstance(dist, d.FloatDistribution):
            return trial.suggest_float(name, dist.low, dist.high, log=dist.log)
        return trial.suggest_categorical(name, list(dist.choices))

    def tell(self, config: Config, value: float) -> None:
        self.study.tell(self._trial, float(value))
        self._trial = None

    def close(self) -> None:
        pass


class OptunaGP(OptunaTPE):
    """``optuna.samplers.GPSampler()`` (defaults, seeded): Optuna's own Gaussian-process BO."""

    name = "optuna_gp"

    def _sampler(self, seed: int) -> Any:
        return self.optuna.samplers.GPSampler(seed=seed)


ANCHORS: dict[str, Callable[..., Any]] = {
    DeepHyperCBO.name: DeepHyperCBO,
    OptunaTPE.name: OptunaTPE,
    OptunaGP.name: OptunaGP,
}
ANCHOR_MODULES = {DeepHyperCBO.name: "deephyper", OptunaTPE.name: "optuna", OptunaGP.name: "optuna"}
