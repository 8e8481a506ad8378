"""This machine, everything in one process: a thread per worker, evaluations in that thread.

The lightest way to run: no extra processes, nothing listening on any port. Workers share the
GIL, so this suits objectives that release it (sleeping, I/O, numpy/torch kernels), objectives
that cannot be sent to another process, and tests. A timeout is recorded but cannot stop the
objective, and a crash of the objective ends the search: prefer ``local`` otherwise.
"""

from __future__ import annotations

import os

from parsl.config import Config
from parsl.executors import ThreadPoolExecutor

DESCRIPTION = "this machine: one thread per worker, evaluations in that thread (Parsl ThreadPoolExecutor)"
DEFAULT_EVALUATION = "in-process"


def make_config(workers: int, run_dir: str, **_: object) -> Config:
    # Parsl's ThreadPoolExecutor defaults to two threads: more workers would wait for a slot.
    return Config(
        executors=[ThreadPoolExecutor(label="adbo_threads", max_threads=workers)],
        run_dir=os.path.join(run_dir, "logs", "parsl"),
        usage_tracking=0,
        exit_mode="wait",
        strategy="none",
    )
