"""adbo: asynchronous decentralized Bayesian optimization for large-scale hyperparameter search.

Every worker runs its own BO loop and shares results through immutable HDF5 shards in a run
directory; Parsl places the workers. Start with ``adbo.optimize`` (alias of ``adbo.launch``).

Names are imported on first use: a process that only reads or writes shards (a worker being
restarted, ``adbo status``) should not pay for importing Parsl and scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "launch": "adbo.launcher",
    "optimize": "adbo.launcher",
    "RunSummary": "adbo.launcher",
    "NoSuccessfulEvaluation": "adbo.launcher",
    "ObjectiveLoadError": "adbo.objective_ref",
    "format_summary": "adbo.launcher",
    "exit_code": "adbo.launcher",
    "load_results": "adbo.results",
    "load_curves": "adbo.results",
    "Trial": "adbo.trial",
    "TrialPruned": "adbo.trial",
    "summarize": "adbo.results",
    "SearchSpace": "adbo.space",
    "SpaceError": "adbo.space",
    "RunDirectoryError": "adbo.runinfo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'adbo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), "launch" if name == "optimize" else name)
    globals()[name] = value
    return value
