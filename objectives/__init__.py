"""Objectives (black boxes) for adbo, installed as ``adbo.objectives``.

``synthetic``: classic test functions with known optima and optional simulated evaluation time.
``candle_combo`` and ``candle_data``: the CANDLE Pilot1 Combo benchmark in PyTorch (import them
directly; they are not imported here, so that ``adbo.objectives`` does not load torch).
"""

from .synthetic import PROBLEMS, SyntheticObjective

__all__ = ["PROBLEMS", "SyntheticObjective"]
