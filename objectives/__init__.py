"""Objectives (black boxes) for adbo, installed as ``adbo.objectives``.

``synthetic``: classic test functions with known optima and optional simulated evaluation time.
"""

from .synthetic import PROBLEMS, SyntheticObjective

__all__ = ["PROBLEMS", "SyntheticObjective"]
