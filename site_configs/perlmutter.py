"""NERSC Perlmutter GPU nodes (Slurm): one BO worker per A100 GPU, 4 per node.

A SlurmProvider asks for ``--constraint=gpu``, ``--gpus-per-node=4``, whole nodes and the QOS;
``srun`` starts one Parsl manager per node that sees all 128 hardware threads and the four GPUs,
and hands worker i GPU i. At NERSC the QOS plays the part of the queue, so ``--queue`` sets it.

QOS limits for GPU nodes from NERSC's "QOSes and Charges" page, https://docs.nersc.gov/jobs/policy/
(read in 2026; NERSC revises it: ``sacctmgr show qos`` on a login node is authoritative). Only the
QOSes that take batch jobs of whole nodes are checked; any other name is passed to Slurm unchecked.
"""

from __future__ import annotations

from typing import Any

from parsl.config import Config

from ._hpc import (
    REQUIRED,
    BatchPlan,
    Limit,
    QueueRule,
    allocation_from,
    option,
    require,
    resolve_address,
    rules_text,
    site_plan,
    slurm_config,
)

DESCRIPTION = "NERSC Perlmutter GPU nodes (Slurm): one worker per A100 GPU, 4 per node"

GPUS_PER_NODE = 4
MACHINE_NODES = 1792
MINUTES = 60
HOURS = 3600

RULES: dict[str, QueueRule] = {
    "regular": QueueRule("regular", (Limit(1, MACHINE_NODES, 48 * HOURS),)),
    "debug": QueueRule("debug", (Limit(1, 8, 30 * MINUTES),), max_jobs=2, note="Slurm's default QOS at NERSC"),
    "premium": QueueRule("premium", (Limit(1, MACHINE_NODES, 48 * HOURS),), note="higher charge"),
    "preempt": QueueRule("preempt", (Limit(1, 128, 48 * HOURS),), note="may be preempted after two hours"),
}

# Perlmutter GPU nodes also attach GPU 0 to the last NUMA domain (cores 48-63, SMT siblings
# 112-127) and GPU 3 to the first; worker i (GPU i) is pinned to the cores nearest its GPU.
AFFINITY = "list:48-63,112-127:32-47,96-111:16-31,80-95:0-15,64-79"

OPTIONS = {
    "account": option("account", "NERSC project charged for the jobs (sbatch --account)", REQUIRED),
    "queue": option("queue", "Slurm QOS: regular, debug, premium, preempt, ...", "regular"),
    "nodes": option("nodes", "nodes in all (default: workers / 4, rounded up)", None),
    "nodes_per_block": option("nodes_per_block", "nodes per batch job (default: all in one job)", None),
    "walltime": option("walltime", "walltime of each job, H:MM:SS", "1:00:00"),
    "constraint": option("constraint", "Slurm constraint selecting the node type", "gpu"),
    "worker_init": option("worker_init", "shell lines that set up the job's environment (default: module load python, "
                          "then activate the environment running adbo)", None),
    "interface": option("interface", "login-node network interface the compute nodes reach", "hsn0"),
    "address": option("address", "explicit address for the compute nodes to connect to (overrides --interface)", None),
    "cpu_affinity": option("cpu_affinity", "Parsl cpu_affinity of the workers (default pins each worker to the cores "
                           "nearest its GPU)", AFFINITY),
    "scheduler_options": option("scheduler_options", "extra #SBATCH lines for the job script", ""),
    "retries": option("retries", "relaunches of a worker lost with its node", 1),
}

ENV_PREAMBLE = "module load python"

SRUN_OVERRIDES = f"--ntasks-per-node=1 --cpus-per-task=128 --gpus-per-node={GPUS_PER_NODE} --cpu-bind=none"

EXAMPLE = "--site perlmutter --account m1234 --nodes 16 --walltime 6:00:00 --dry-run"

NOTES = "QOS limits for GPU nodes (NERSC, https://docs.nersc.gov/jobs/policy/):\n" + rules_text(RULES)


def plan(workers: int, *, queue: str | None = "regular", nodes: int | None = None, nodes_per_block: int | None = None,
         walltime: "str | int | float" = "1:00:00", **_: Any) -> BatchPlan:
    """Nodes, blocks and slots for ``workers``, checked against the QOS limits."""
    return site_plan("perlmutter", RULES, GPUS_PER_NODE, MACHINE_NODES, workers, queue, nodes, nodes_per_block, walltime)


def make_config(
    workers: int,
    run_dir: str,
    *,
    account: str | None = None,
    queue: str = "regular",
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float" = "1:00:00",
    constraint: str = "gpu",
    worker_init: str | None = None,
    interface: str | None = "hsn0",
    address: str | None = None,
    cpu_affinity: str = AFFINITY,
    scheduler_options: str = "",
    retries: int = 1,
) -> Config:
    """A fresh Perlmutter config with one worker slot per GPU and enough GPUs for ``workers``."""
    require("perlmutter", "account", account, "the NERSC project to charge")
    layout = plan(workers, queue=queue, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime)
    return slurm_config(
        "perlmutter", run_dir, layout, address=resolve_address("perlmutter", interface, address), account=account,
        qos=queue, constraint=constraint or None, gpus_per_node=GPUS_PER_NODE, scheduler_options=scheduler_options,
        worker_init=worker_init, preamble=ENV_PREAMBLE, srun_overrides=SRUN_OVERRIDES, accelerators=GPUS_PER_NODE,
        cpu_affinity=cpu_affinity, retries=retries,
    )


def slots_per_node(**_: Any) -> int:
    """Worker slots one node gives (one per GPU)."""
    return GPUS_PER_NODE


def allocation_seconds(*, walltime: "str | int | float | None" = None, **_: Any) -> float | None:
    """Seconds one block (batch job) lasts: workers must stop starting evaluations before then."""
    return allocation_from(walltime, OPTIONS["walltime"].default)
