"""Any PBS Pro cluster: nodes, GPUs per node, queue and launcher given as options.

The generic counterpart of ``polaris``: nothing about the machine is assumed, so the network
interface (or address) that compute nodes reach the login node on must be given. Queue limits
are the site's own; PBS refuses a job that breaks them at submission.
"""

from __future__ import annotations

from typing import Any

from parsl.config import Config
from parsl.launchers import MpiExecLauncher, SingleNodeLauncher
from parsl.launchers.base import Launcher

from ._hpc import (
    generic_plan,
    BatchPlan,
    allocation_from,
    checked_int,
    option,
    pbs_config,
    resolve_address,
    slots_from,
)

DESCRIPTION = "a PBS Pro cluster: one worker per GPU (or per node, or --workers-per-node), any queue"

OPTIONS = {
    "account": option("account", "project charged for the jobs (qsub -A); none: the site's default", None),
    "queue": option("queue", "PBS queue (qsub -q); none: the site's default", None),
    "nodes": option("nodes", "nodes in all (default: enough for one slot per worker)", None),
    "nodes_per_block": option("nodes_per_block", "nodes per batch job (default: all in one job)", None),
    "walltime": option("walltime", "walltime of each job, H:MM:SS", "1:00:00"),
    "gpus_per_node": option("gpus_per_node", "GPUs per node; each worker gets one (0: CPU nodes)", 0),
    "workers_per_node": option("workers_per_node", "worker slots per node (default: one per GPU, else 1)", None),
    "cpus_per_node": option("cpus_per_node", "CPUs asked per node (select ncpus=)", 1),
    "select_options": option("select_options", "extra select resources (default: ngpus=GPUS when GPUs are asked)", None),
    "scheduler_options": option("scheduler_options", "extra #PBS lines for the job script", ""),
    "worker_init": option("worker_init", "shell lines that set up the job's environment (default: activate the "
                          "environment running adbo)", None),
    "interface": option("interface", "login-node network interface the compute nodes reach", None),
    "address": option("address", "explicit address for the compute nodes to connect to (overrides --interface)", None),
    "launcher_overrides": option("launcher_overrides", "arguments for mpiexec starting one manager per node "
                                 "(MPICH/PALS: --ppn 1; Open MPI: --map-by ppr:1:node)", "--ppn 1"),
    "cpu_affinity": option("cpu_affinity", "Parsl cpu_affinity of the workers (none, block, alternating, ...)", "none"),
    "retries": option("retries", "relaunches of a worker lost with its node", 1),
}

EXAMPLE = "--site pbs --queue workq --nodes 4 --gpus-per-node 4 --interface ib0 --walltime 2:00:00 --dry-run"


def plan(workers: int, *, nodes: int | None = None, nodes_per_block: int | None = None, walltime: "str | int | float" = "1:00:00",
         gpus_per_node: int = 0, workers_per_node: int | None = None, queue: str | None = None, **_: Any) -> BatchPlan:
    """Nodes, blocks and slots for ``workers``; no queue limits are known for a generic site."""
    return generic_plan("pbs", workers, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime,
                        gpus_per_node=gpus_per_node, workers_per_node=workers_per_node, queue=queue)


def make_config(
    workers: int,
    run_dir: str,
    *,
    account: str | None = None,
    queue: str | None = None,
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float" = "1:00:00",
    gpus_per_node: int = 0,
    workers_per_node: int | None = None,
    cpus_per_node: int = 1,
    select_options: str | None = None,
    scheduler_options: str = "",
    worker_init: str | None = None,
    interface: str | None = None,
    address: str | None = None,
    launcher_overrides: str = "--ppn 1",
    cpu_affinity: str = "none",
    retries: int = 1,
) -> Config:
    """A fresh PBS Pro config with one worker slot per worker."""
    layout = plan(workers, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime,
                  gpus_per_node=gpus_per_node, workers_per_node=workers_per_node, queue=queue)
    gpus = int(gpus_per_node)
    return pbs_config(
        "pbs", run_dir, layout, account=account, queue=queue, address=resolve_address("pbs", interface, address),
        scheduler_options=scheduler_options,
        select_options=select_options if select_options is not None else (f"ngpus={gpus}" if gpus else ""),
        worker_init=worker_init, cpus_per_node=checked_int("pbs", "cpus_per_node", cpus_per_node),
        launcher=_launcher(layout.nodes_per_block, launcher_overrides), accelerators=gpus,
        cpu_affinity=cpu_affinity, retries=retries,
    )


def _launcher(nodes_per_block: int, overrides: str) -> Launcher:
    """One manager per node: on the job's own node for one-node blocks, else through mpiexec."""
    if nodes_per_block == 1:
        return SingleNodeLauncher()
    return MpiExecLauncher(bind_cmd="--bind-to", overrides=overrides or "")


def slots_per_node(*, gpus_per_node: int = 0, workers_per_node: int | None = None, **_: Any) -> int:
    """Worker slots one node gives."""
    return slots_from(int(gpus_per_node or 0), workers_per_node)


def allocation_seconds(*, walltime: "str | int | float | None" = None, **_: Any) -> float | None:
    """Seconds one block (batch job) lasts: workers must stop starting evaluations before then."""
    return allocation_from(walltime, OPTIONS["walltime"].default)
