"""This machine, one process per worker, through Parsl's HighThroughputExecutor.

The same machinery as the batch sites (an interchange, a worker pool, a process per BO loop), on
one machine: the way to try a batch site's path locally, and to keep BO steps of many workers off
one GIL. It starts slower than ``local`` (every worker process imports Parsl and adbo). The executor listens on loopback only: without ``address=``
Parsl would probe every address finder it has, including an HTTPS query to a public service.
"""

from __future__ import annotations

import os

from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.providers import LocalProvider

DESCRIPTION = "this machine: one process per worker (Parsl HighThroughputExecutor, loopback only), as batch sites"


def make_config(workers: int, run_dir: str, address: str = "127.0.0.1", retries: int = 1, **_: object) -> Config:
    """A config with exactly ``workers`` worker slots on this machine.

    Parsl starts min(max_workers_per_node, cores / cores_per_worker) workers; BO workers mostly
    wait on their objective, so each is given a sliver of a core and the slot count is set by
    ``max_workers_per_node`` alone. With fewer slots than workers, the extra ones would silently
    queue until others finish.
    """
    cores = os.cpu_count() or 1
    return Config(
        executors=[
            HighThroughputExecutor(
                label="adbo_local_processes",
                address=address,
                loopback_address=address,
                max_workers_per_node=workers,
                cores_per_worker=cores / (workers + 1),
                provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1),
                heartbeat_period=15,
                heartbeat_threshold=120,
            )
        ],
        run_dir=os.path.join(run_dir, "logs", "parsl"),
        retries=retries,
        usage_tracking=0,
        exit_mode="wait",
        strategy="none",
    )
