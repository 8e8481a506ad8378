"""Cost-aware proposals: the faster of similarly promising configurations, and nothing changed
when evaluation times do not depend on the configuration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from adbo.acquisition import cost_aware_order
from adbo.cost import MIN_DURATIONS, CostModel
from adbo.proposer import Proposer, ProposerSettings
from adbo.rows import IN_FLIGHT, OK
from adbo.space import SearchSpace
from user_scripts import UserRun, rows, write


def test_the_cost_model_is_trusted_only_where_the_configuration_explains_the_durations():
    rng = np.random.default_rng(0)
    X = rng.random((60, 4))
    slow_when_wide = np.exp(2.0 * X[:, 0] + 0.1 * rng.normal(size=60))
    model = CostModel().fit(X, slow_when_wide)
    assert model.informative and model.r2 > 0.8
    relative = model.predict(np.array([[0.05, 0.5, 0.5, 0.5], [0.95, 0.5, 0.5, 0.5]]))
    assert relative[1] / relative[0] > 3.0
    # A worker's own step costs every evaluation the same: it narrows the gap, never reverses it.
    with_step = model.predict(np.array([[0.05, 0.5, 0.5, 0.5], [0.95, 0.5, 0.5, 0.5]]), overhead_s=2.0)
    assert 1.0 < with_step[1] / with_step[0] < relative[1] / relative[0]
    noise = rng.normal(10.0, 3.0, 60).clip(0.1)
    model = CostModel().fit(X, noise)
    assert not model.informative
    assert np.all(model.predict(X[:5]) == 1.0)
    assert not CostModel().fit(X[: MIN_DURATIONS - 1], slow_when_wide[: MIN_DURATIONS - 1]).informative


def test_a_cheap_candidate_wins_only_while_it_keeps_half_the_best_promised_gain():
    acq = np.array([1.10, 1.08, 1.02, 0.90])
    gain = acq - 1.0  # promised gain over the best score, 1.0
    cost = np.array([4.0, 1.0, 0.1, 0.01])
    order = cost_aware_order(acq, gain, cost.__getitem__, share=0.5)
    # Candidate 1 keeps 0.08 / 0.10 of the best gain at a quarter of the cost: first. Candidate 2
    # is far cheaper but keeps only 0.2 of it, below the share: after the eligible ones.
    assert list(order) == [1, 0, 2, 3]
    # With a share of 0.1 it competes, and its gain per unit of cost is the best.
    assert list(cost_aware_order(acq, gain, cost.__getitem__, share=0.1)) == [2, 1, 0, 3]
    # A share of 1 leaves the acquisition's order; so does a step where no candidate promises a gain.
    assert list(cost_aware_order(acq, gain, cost.__getitem__, share=1.0)) == [0, 1, 2, 3]
    assert list(cost_aware_order(acq - 2.0, np.zeros(4), cost.__getitem__, share=0.5)) == [0, 1, 2, 3]
    # ... except that equal values (a tree ensemble's plateau) go cheapest first.
    plateau = np.array([0.9, 1.0, 1.0, 1.0])
    assert list(cost_aware_order(plateau, np.zeros(4), np.array([1.0, 3.0, 0.5, 2.0]).__getitem__, share=0.5)) == [2, 3, 1, 0]


def _history(space: SearchSpace, durations_of, n: int = 40, seed: int = 1):
    rng = np.random.default_rng(seed)
    X = space.sample(n, rng)
    y = (X[:, 1] - 0.3) ** 2  # the value ignores x0, which sets the evaluation time
    return X, y, np.full(n, OK, dtype=np.int8), durations_of(X, rng)


def _proposals(space, X, y, status, durations, cost_aware: bool, steps: int = 8) -> np.ndarray:
    proposer = Proposer(space, maximize=False, seed=3, settings=ProposerSettings(cost_aware=cost_aware))
    exclude = set(space.keys(X))
    return np.array([proposer.propose(X, y, status, exclude, durations=durations).x for _ in range(steps)])


def test_the_proposer_prefers_fast_configurations_only_when_times_follow_the_configuration():
    space = SearchSpace({"width": (0.0, 1.0), "lr": (0.0, 1.0), "dropout": (0.0, 1.0)})
    X, y, status, durations = _history(space, lambda X, rng: 1.0 + 20.0 * X[:, 0] ** 2)
    blind = _proposals(space, X, y, status, durations, cost_aware=False)
    aware = _proposals(space, X, y, status, durations, cost_aware=True)
    assert np.median(aware[:, 0]) < 0.2 < np.median(blind[:, 0])
    assert abs(np.median(aware[:, 1]) - 0.3) < 0.15  # still where the value is best
    # Evaluation times that are noise (a shared machine) leave every proposal as it was.
    X, y, status, noise = _history(space, lambda X, rng: rng.normal(10.0, 3.0, len(X)).clip(0.1))
    np.testing.assert_array_equal(_proposals(space, X, y, status, noise, cost_aware=True),
                                  _proposals(space, X, y, status, None, cost_aware=True))
    # Rows in flight have no duration yet and must not count.
    status[-5:] = IN_FLIGHT
    noise[-5:] = np.nan
    assert len(_proposals(space, X, y, status, noise, cost_aware=True, steps=1)) == 1


SEARCH = """
    import sys
    import time
    import adbo

    BASE, SLOPE = float(sys.argv[3]), float(sys.argv[4])

    def train(params):
        time.sleep(BASE + SLOPE * params["width"])  # wider networks train longer
        return (params["lr"] - 0.3) ** 2

    if __name__ == "__main__":
        result = adbo.optimize(train, {"width": (0.0, 1.0), "lr": (0.0, 1.0)}, sys.argv[1], workers=2,
                               max_evals=int(sys.argv[2]), direction="minimize", seed=4)
        sys.exit(adbo.exit_code(result))
"""


def _search(tmp_path, name: str, evaluations: int, base: float, slope: float) -> tuple[pd.DataFrame, str]:
    run = UserRun(tmp_path, "search.py", name, str(evaluations), str(base), str(slope))
    assert run.wait(240) == 0, run.stderr[-3000:]
    done = pd.DataFrame([{"t": r.t_started, "width": r.params["width"], "lr": r.params["lr"]}
                         for r in rows(tmp_path / name) if r.status == OK]).sort_values("t")
    logs = "".join(p.read_text() for p in (tmp_path / name / "logs").glob("worker-*.log"))
    return done, logs


def test_a_users_search_prefers_faster_trainings_once_their_times_follow_a_parameter(tmp_path):
    write(tmp_path, "search.py", SEARCH)
    # Trainings of 1-3 s: the BO step is a small share of one, so the time each takes is used.
    done, logs = _search(tmp_path, "long", 36, 1.0, 2.0)
    assert len(done) == 36
    assert "cost model: the configuration explains evaluation times" in logs
    late = done.tail(12)  # proposed once 16+ durations taught the model
    assert late.width.median() < 0.2, late  # the value ignores width: a blind search leaves it near 0.5-0.8
    assert (late.lr - 0.3).abs().median() < 0.1, late
    # Evaluations of 20-320 ms: the step is too large a share of one for shorter ones to pay.
    _, logs = _search(tmp_path, "short", 30, 0.02, 0.3)
    assert "evaluation times not used while the step is this large a share" in logs


def test_settings_parse_from_command_line_text():
    assert ProposerSettings.parse("cost_aware", "false") is False
    assert ProposerSettings.parse("cost_aware", "On") is True
    assert ProposerSettings.parse("n_local", "500") == 500 and ProposerSettings.parse("surrogate", "gp") == "gp"
    with pytest.raises(ValueError, match="cost_aware takes true or false"):
        ProposerSettings.parse("cost_aware", "maybe")


def test_a_relaunch_starts_with_a_cost_model_trained_on_the_earlier_launch(tmp_path):
    import re
    import time

    import adbo

    def train(params):
        time.sleep(0.02 + 0.2 * params["width"])
        return (params["lr"] - 0.3) ** 2

    space = {"width": (0.0, 1.0), "lr": (0.0, 1.0)}
    run_dir = str(tmp_path / "run")
    first = adbo.launch(train, space, run_dir, site="local-threads", workers=1, max_evals=20,
                        direction="minimize", progress=False)
    assert not first.worker_errors
    log_path = tmp_path / "run" / "logs" / "worker-000000.log"
    before = log_path.read_text()
    second = adbo.launch(train, space, run_dir, site="local-threads", workers=1, max_evals=23,
                         direction="minimize", progress=False)
    assert not second.worker_errors
    relaunch_log = log_path.read_text()[len(before):]
    # Its first surrogate step already fits the 20 stored durations of the earlier launch.
    counts = [int(n) for n in re.findall(r"cost model: the configuration explains.* over (\d+) evaluation times",
                                         relaunch_log)]
    assert counts and counts[0] >= 20, relaunch_log[-2000:]
