import numpy as np
import pytest

from adbo.objectives.synthetic import PROBLEMS, SyntheticObjective

OPTIMA = {
    "ackley": np.zeros(7),
    "branin": np.array([np.pi, 2.275]),
    "hartmann6": np.array([0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573]),
    "levy": np.ones(7),
    "griewank": np.zeros(7),
    "schwefel": np.full(7, 420.9687),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_known_optimum_is_reached_at_its_argmin(name):
    x = OPTIMA[name]
    obj = SyntheticObjective(name, len(x))
    params = {f"x{i}": float(v) for i, v in enumerate(x)}
    assert obj(params) == pytest.approx(obj.optimum, abs=2e-4)
    rng = np.random.default_rng(0)
    for _ in range(200):  # no random point beats the optimum
        lo, hi = np.array(obj.bounds).T
        p = {f"x{i}": float(v) for i, v in enumerate(rng.uniform(lo, hi))}
        assert obj(p) >= obj.optimum - 1e-4


def test_simulated_evaluation_time_sleeps():
    import time

    obj = SyntheticObjective("ackley", 2, eval_time=(0.2, 0.0))
    t = time.perf_counter()
    obj({"x0": 0.0, "x1": 0.0})
    assert time.perf_counter() - t >= 0.19


def test_bad_problem_and_dimension():
    with pytest.raises(ValueError, match="unknown problem"):
        SyntheticObjective("rosen", 2)
    with pytest.raises(ValueError, match="only in 6 dimensions"):
        SyntheticObjective("hartmann6", 3)
