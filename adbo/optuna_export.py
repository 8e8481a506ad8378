"""``adbo export RUN_DIR --optuna-storage URL``: a run as an Optuna study.

Users who know Optuna can then use its tools on an adbo search: ``optuna-dashboard URL``,
``optuna.visualization``, ``study.trials_dataframe()``. Each stored evaluation becomes one trial
with the distributions of the search space, its value, its state and adbo's own fields as user
attributes. Optuna has no "interrupted" state: those trials are FAIL with ``adbo_status``
saying so. The study is created fresh; an existing study of that name is refused, never mixed.
"""

from __future__ import annotations

import os
from typing import Any

from .rows import FAILED, IN_FLIGHT, INTERRUPTED, OK, STATUS_NAMES, STOPPED, TIMEOUT
from .storage import scan_run


def _distributions(space: Any) -> dict[str, Any]:
    """Optuna distributions for each hyperparameter, from adbo's compiled space."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for name, codec in zip(space.names, space.codecs):
        if codec.kind == "float":
            out[name] = FloatDistribution(codec.lower, codec.upper, log=codec.log)
        elif codec.kind == "int":
            out[name] = IntDistribution(int(codec.lower), int(codec.upper), log=codec.log)
        else:
            out[name] = CategoricalDistribution([codec.to_user(i) for i in range(len(codec.choices))])
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def export_to_optuna(run_dir: str | os.PathLike, storage: str, study_name: str | None = None) -> tuple[str, int]:
    """Write every evaluation of ``run_dir`` into a new study; returns (study name, trials)."""
    import datetime

    import optuna

    info, table, _ = scan_run(run_dir)
    space = info.space
    distributions = _distributions(space)
    name = study_name or f"adbo-{info.run_id[:8]}"
    study = optuna.create_study(storage=storage, study_name=name, direction=info.direction, load_if_exists=False)
    study.set_user_attr("adbo_run_dir", os.path.abspath(os.fspath(run_dir)))
    study.set_user_attr("adbo_objective", info.objective)
    states = {OK: optuna.trial.TrialState.COMPLETE, FAILED: optuna.trial.TrialState.FAIL,
              TIMEOUT: optuna.trial.TrialState.FAIL, INTERRUPTED: optuna.trial.TrialState.FAIL,
              IN_FLIGHT: optuna.trial.TrialState.RUNNING, STOPPED: optuna.trial.TrialState.PRUNED}
    trials = []
    for r in sorted(table.rows, key=lambda r: (r.t_submitted, r.worker, r.seq)):
        params = {k: v for k, v in r.params.items() if k in distributions}
        state = states[r.status]
        start = datetime.datetime.fromtimestamp(r.t_started) if r.t_started == r.t_started else None
        attrs = {"adbo_eval_id": r.eval_id, "adbo_worker": r.worker, "adbo_seq": r.seq,
                 "adbo_status": STATUS_NAMES[r.status], "adbo_hostname": r.hostname,
                 "adbo_bo_overhead_s": r.bo_overhead_s if r.bo_overhead_s == r.bo_overhead_s else None,
                 **{f"metadata_{k}": _jsonable(v) for k, v in r.metadata.items()}}
        if r.error:
            attrs["adbo_error"] = r.error[-2000:]
        curve = {} if r.curve is None else {int(step): float(value) for step, value in r.curve.tolist()
                                             if float(step).is_integer() and value == value}
        trial = optuna.trial.create_trial(
            state=state, value=r.objective if state == optuna.trial.TrialState.COMPLETE else None,
            params=params, distributions={k: distributions[k] for k in params}, user_attrs=attrs,
            intermediate_values=curve)
        if start is not None:
            trial.datetime_start = start
            if state != optuna.trial.TrialState.RUNNING and r.t_finished == r.t_finished:
                trial.datetime_complete = datetime.datetime.fromtimestamp(r.t_finished)
        trials.append(trial)
    study.add_trials(trials)
    return name, len(trials)
