"""adbo: asynchronous decentralized Bayesian optimization for large-scale hyperparameter search.

Every worker runs its own BO loop and shares results through immutable HDF5 shards in a run
directory; Parsl places the workers. Start with ``adbo.optimize`` (alias of ``adbo.launch``).
"""

from .launch import RunSummary, format_summary, launch
from .results import load_results, summarize
from .space import SearchSpace, SpaceError
from .storage import RunDirectoryError

optimize = launch

__version__ = "0.1.0"

__all__ = [
    "RunDirectoryError",
    "RunSummary",
    "SearchSpace",
    "SpaceError",
    "format_summary",
    "launch",
    "load_results",
    "optimize",
    "summarize",
]
