"""This machine, the default: each worker's BO loop in a thread, its evaluations in a child process.

The evaluations, where the user's code and nearly all the time go, run in a process per worker
(``adbo.child``): they use every core, a timeout kills them and a crash is a failed row. The BO
loops are light (tens of milliseconds per step) and share the launcher's process and imports, so
a search starts in about a second instead of paying for a Parsl worker pool and one Python
start-up with Parsl, numpy and scikit-learn per worker. Nothing listens on any port.
"""

from __future__ import annotations

import os

from parsl.config import Config
from parsl.executors import ThreadPoolExecutor

DESCRIPTION = "this machine: a thread per worker's BO loop, a child process per worker for its evaluations (default)"
DEFAULT_EVALUATION = "process"


def make_config(workers: int, run_dir: str, **_: object) -> Config:
    # Parsl's ThreadPoolExecutor defaults to two threads: more workers would wait for a slot.
    return Config(
        executors=[ThreadPoolExecutor(label="adbo_local", max_threads=workers)],
        run_dir=os.path.join(run_dir, "logs", "parsl"),
        usage_tracking=0,
        exit_mode="wait",
        strategy="none",
    )
