"""Any Slurm cluster: partition, QOS, constraint and GPUs per node given as options.

The generic counterpart of ``perlmutter``: nothing about the machine is assumed, so the network
interface (or address) that compute nodes reach the login node on must be given. ``srun`` starts
one Parsl manager per node; with GPUs, worker i gets GPU i.
"""

from __future__ import annotations

from typing import Any

from parsl.config import Config

from ._hpc import (
    generic_plan,
    BatchPlan,
    allocation_from,
    option,
    resolve_address,
    slots_from,
    slurm_config,
)

DESCRIPTION = "a Slurm cluster: one worker per GPU (or per node, or --workers-per-node), any partition and QOS"

OPTIONS = {
    "account": option("account", "account charged for the jobs (sbatch --account); none: your default", None),
    "queue": option("queue", "Slurm partition (sbatch --partition); none: the cluster's default", None),
    "qos": option("qos", "Slurm QOS (sbatch --qos)", None),
    "constraint": option("constraint", "Slurm constraint (sbatch --constraint)", None),
    "nodes": option("nodes", "nodes in all (default: enough for one slot per worker)", None),
    "nodes_per_block": option("nodes_per_block", "nodes per batch job (default: all in one job)", None),
    "walltime": option("walltime", "walltime of each job, H:MM:SS", "1:00:00"),
    "gpus_per_node": option("gpus_per_node", "GPUs per node; each worker gets one (0: CPU nodes)", 0),
    "workers_per_node": option("workers_per_node", "worker slots per node (default: one per GPU, else 1)", None),
    "scheduler_options": option("scheduler_options", "extra #SBATCH lines for the job script", ""),
    "worker_init": option("worker_init", "shell lines that set up the job's environment (default: activate the "
                          "environment running adbo)", None),
    "interface": option("interface", "login-node network interface the compute nodes reach", None),
    "address": option("address", "explicit address for the compute nodes to connect to (overrides --interface)", None),
    "launcher_overrides": option("launcher_overrides", "extra srun arguments", "--ntasks-per-node=1 --cpu-bind=none"),
    "cpu_affinity": option("cpu_affinity", "Parsl cpu_affinity of the workers (none, block, alternating, ...)", "none"),
    "retries": option("retries", "relaunches of a worker lost with its node", 1),
}

EXAMPLE = "--site slurm --queue gpu --gpus-per-node 4 --nodes 8 --interface ib0 --walltime 4:00:00 --dry-run"


def plan(workers: int, *, nodes: int | None = None, nodes_per_block: int | None = None, walltime: "str | int | float" = "1:00:00",
         gpus_per_node: int = 0, workers_per_node: int | None = None, queue: str | None = None, **_: Any) -> BatchPlan:
    """Nodes, blocks and slots for ``workers``; no queue limits are known for a generic site."""
    return generic_plan("slurm", workers, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime,
                        gpus_per_node=gpus_per_node, workers_per_node=workers_per_node, queue=queue)


def make_config(
    workers: int,
    run_dir: str,
    *,
    account: str | None = None,
    queue: str | None = None,
    qos: str | None = None,
    constraint: str | None = None,
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float" = "1:00:00",
    gpus_per_node: int = 0,
    workers_per_node: int | None = None,
    scheduler_options: str = "",
    worker_init: str | None = None,
    interface: str | None = None,
    address: str | None = None,
    launcher_overrides: str = "--ntasks-per-node=1 --cpu-bind=none",
    cpu_affinity: str = "none",
    retries: int = 1,
) -> Config:
    """A fresh Slurm config with one worker slot per worker."""
    layout = plan(workers, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime,
                  gpus_per_node=gpus_per_node, workers_per_node=workers_per_node, queue=queue)
    gpus = int(gpus_per_node)
    address = resolve_address("slurm", interface, address)
    overrides = (launcher_overrides or "").strip()
    if gpus and "--gpus" not in overrides:
        overrides = f"{overrides} --gpus-per-node={gpus}".strip()  # steps see the job's GPUs
    return slurm_config(
        "slurm", run_dir, layout, address=address, account=account or None, partition=queue or None,
        qos=qos or None, constraint=constraint or None, gpus_per_node=gpus or None,
        scheduler_options=scheduler_options, worker_init=worker_init, srun_overrides=overrides,
        accelerators=gpus, cpu_affinity=cpu_affinity, retries=retries,
    )


def slots_per_node(*, gpus_per_node: int = 0, workers_per_node: int | None = None, **_: Any) -> int:
    """Worker slots one node gives."""
    return slots_from(int(gpus_per_node or 0), workers_per_node)


def allocation_seconds(*, walltime: "str | int | float | None" = None, **_: Any) -> float | None:
    """Seconds one block (batch job) lasts: workers must stop starting evaluations before then."""
    return allocation_from(walltime, OPTIONS["walltime"].default)
