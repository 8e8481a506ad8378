import numpy as np
import pytest

import adbo
from adbo.objectives.synthetic import SyntheticObjective
from adbo.space import SearchSpace
from adbo.storage import open_run
from adbo.worker import Worker, WorkerSettings

from failing_objectives import always_raises, flaky


def test_failures_become_rows_and_the_run_completes(tmp_path):
    run_dir = str(tmp_path / "run")
    result = adbo.launch(flaky, {"a": (0.0, 1.0), "b": (-1.0, 1.0)}, run_dir, site="local-threads", workers=3,
                         max_evals=45, direction="minimize", eval_timeout=0.5, n_initial=20, progress=False)
    assert not result.worker_errors
    df = adbo.load_results(run_dir)
    assert (df.status.isin(["ok", "failed", "timeout"])).sum() >= 45
    raised = df[df.params_a < 0.2]
    nan = df[(df.params_a >= 0.2) & (df.params_a < 0.35)]
    slow = df[df.params_a > 0.9]
    assert len(raised) and (raised.status == "failed").all() and raised.error.str.contains("region a<0.2").all()
    assert len(nan) and (nan.status == "failed").all() and nan.error.str.contains("nan").all()
    assert len(slow) and (slow.status == "timeout").all() and slow.error.str.contains("timeout").all()
    ok = df[df.status == "ok"]
    assert (ok.metadata_note == "fine").all()
    assert result.summary["failures"] == len(raised) + len(nan) + len(slow)
    assert 0.35 <= result.best_params["a"] <= 0.9


def test_an_objective_that_always_fails_still_ends(tmp_path):
    result = adbo.launch(always_raises, {"a": (0.0, 1.0)}, str(tmp_path / "r"), site="local-threads", workers=2,
                         max_evals=15, progress=False)
    assert result.summary["failures"] == 15 and not result.worker_errors  # exactly the budget, no more
    with pytest.raises(adbo.NoSuccessfulEvaluation, match="this objective is broken"):
        result.best_value
    with pytest.raises(ValueError, match="no evaluation .* succeeded"):
        result.best_params
    assert result.failures.most_common == "RuntimeError: this objective is broken"
    assert result.failures.most_common_count == 15


def run_sequential(tmp_path, seed, budget, random_only):
    objective = SyntheticObjective("ackley", 5)
    space = SearchSpace(objective.space())
    run_dir = tmp_path / f"{'rs' if random_only else 'bo'}-{seed}"
    open_run(run_dir, space, objective.adbo_identity(), "minimize")
    # Random search is the same worker with a space-filling design as long as the budget.
    settings = WorkerSettings(max_evals=budget, seed=seed, n_initial=budget if random_only else 10)
    if random_only:
        worker = Worker(run_dir, 0, objective, settings)
        worker.design = space.sample(budget, np.random.default_rng(seed))
        report = worker.run()
    else:
        report = Worker(run_dir, 0, objective, settings).run()
    return report.best_objective


def test_bo_beats_random_search_on_ackley5(tmp_path):
    seeds, budget = range(5), 100
    bo = [run_sequential(tmp_path, s, budget, False) for s in seeds]
    rs = [run_sequential(tmp_path, s, budget, True) for s in seeds]
    # Random search's median best at 100 evaluations is about 17; BO's is far lower.
    assert np.median(bo) < 0.6 * np.median(rs), (bo, rs)
    assert sum(b < r for b, r in zip(bo, rs)) >= 4, (bo, rs)


@pytest.mark.parametrize("surrogate", ["random_forest", "gp"])
def test_other_surrogates_drive_the_search(tmp_path, surrogate):
    objective = SyntheticObjective("branin")
    run_dir = tmp_path / surrogate
    # One worker with instant evaluations proposes the same sequence on every run: with two, the
    # order in which results arrive varies, and the random forest's best after 40 ranged from 0.4
    # to 1.3 across runs of the same seed (3.8 once after 60), which made this a coin toss.
    result = adbo.launch(objective, objective.space(), str(run_dir), site="local-threads", workers=1,
                         max_evals=40, direction="minimize", surrogate=surrogate, progress=False)
    assert not result.worker_errors
    # Branin's optimum is 0.398; random search's median best after 40 points is about 1.3.
    assert result.best_value < 1.2
    df = result.results()
    assert (df.n_observations > 0).sum() >= 25
    logs = "".join(p.read_text() for p in (run_dir / "logs").glob("worker-*.log"))
    assert "surrogate step failed" not in logs
