import time

from adbo.evaluation import evaluate, interpret, objective_identity, resolve_objective
from adbo.storage import FAILED, OK, TIMEOUT


def raises(params):
    raise RuntimeError(f"bad region {params['a']}")


def test_values_dicts_and_bad_returns():
    assert interpret(2.5).status == OK
    out = interpret({"objective": 0.7, "epochs": 3})
    assert out.status == OK and out.value == 0.7 and out.metadata == {"epochs": 3}
    assert "without an 'objective'" in interpret({"loss": 1}).error
    assert interpret(float("nan")).status == FAILED and "nan" in interpret(float("nan")).error
    assert interpret(float("inf")).status == FAILED
    assert "not a number" in interpret("abc").error
    assert interpret({"objective": float("nan"), "error": "loss diverged"}).error == "loss diverged"


def test_exceptions_become_failed_outcomes_with_traceback():
    for timeout in (None, 5.0):
        out = evaluate(raises, {"a": 1}, timeout)
        assert out.status == FAILED and "RuntimeError: bad region 1" in out.error and "Traceback" in out.error


def test_timeout_is_recorded_and_the_caller_moves_on():
    t = time.perf_counter()
    out = evaluate(lambda p: time.sleep(3) or 1.0, {}, 0.3)
    assert out.status == TIMEOUT and "0.3 s" in out.error
    assert time.perf_counter() - t < 2.0


def test_objective_references_resolve():
    from adbo.objectives.synthetic import ackley

    assert resolve_objective("adbo.objectives.synthetic:ackley") is ackley
    assert objective_identity(ackley) == "adbo.objectives.synthetic:ackley"
    for bad, why in (("nosuchmodule_xyz:f", "cannot import"), ("adbo.objectives.synthetic:nope", "no attribute"), (3, "callable")):
        try:
            resolve_objective(bad)
        except ValueError as exc:
            assert why in str(exc)
        else:
            raise AssertionError(f"{bad!r} was accepted")
