"""Objectives that misbehave on purpose, for the failure-handling tests."""

import math
import time


def flaky(params):
    """Raises on one region, returns NaN on another, hangs on a third; fine elsewhere."""
    a = params["a"]
    if a < 0.2:
        raise ValueError(f"region a<0.2 is invalid (a={a:.3f})")
    if a < 0.35:
        return float("nan")
    if a > 0.9:
        time.sleep(3.0)  # longer than the timeout the test sets
    return {"objective": (a - 0.6) ** 2 + params["b"] ** 2, "note": "fine"}


def always_raises(params):
    raise RuntimeError("this objective is broken")


def quadratic(params):
    return math.fsum((v - 0.3) ** 2 for v in params.values())


def slow_on_high_a(params):
    """Quick on most of the space, far too slow where a >= 0.7 (to be cut by a deadline)."""
    time.sleep(0.2 if params["a"] < 0.7 else 5.0)
    return (params["a"] - 0.3) ** 2


def quadratic_after_peers(params):
    """``quadratic``, but the first call waits until ``ADBO_TEST_PEERS`` processes have called.

    Fast objectives let the first worker to start use a whole small budget before its peers have
    imported anything; a test that needs every worker to evaluate waits for them here (60 s at most).
    """
    import os
    from pathlib import Path

    barrier = Path(os.environ["ADBO_TEST_BARRIER"])
    barrier.mkdir(parents=True, exist_ok=True)
    (barrier / str(os.getpid())).touch()
    give_up = time.monotonic() + 60.0
    while len(list(barrier.iterdir())) < int(os.environ["ADBO_TEST_PEERS"]) and time.monotonic() < give_up:
        time.sleep(0.05)
    return quadratic(params)
