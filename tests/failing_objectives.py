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
