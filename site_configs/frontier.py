"""OLCF Frontier (Slurm): one BO worker per MI250X GPU die (GCD), 8 per node.

A Frontier node has four AMD MI250X of two Graphics Compute Dies each; Slurm, ROCm and
``ROCR_VISIBLE_DEVICES`` treat the eight GCDs as eight GPUs, numbered 0-7. The
HighThroughputExecutor has eight accelerators per node, and Parsl (every release since 2022.12,
checked in ``process_worker_pool.worker`` of Parsl 2026.10) gives worker i
``ROCR_VISIBLE_DEVICES=i``, so the ROCm runtime of that worker and of the objective process it
starts exposes only GCD i.

Parsl also sets ``CUDA_VISIBLE_DEVICES=i``, which HIP reads as a list of indices *into the devices
ROCr left visible*: with one GCD visible, index i > 0 names nothing and workers 1-7 would find no
GPU at all (OLCF's guide warns of this clash). HIP prefers ``HIP_VISIBLE_DEVICES`` to
``CUDA_VISIBLE_DEVICES`` when it is set (ROCclr's device selection), so the job exports
``HIP_VISIBLE_DEVICES=0``: "the first of the devices ROCr shows", which is worker i's own GCD.

``srun --ntasks-per-node=1 --cpus-per-task=56 --gpus-per-node=8 --cpu-bind=none`` starts one
Parsl manager per node that sees the 56 cores Slurm allocates (the first core of each L3 region is
reserved by Frontier's core specialization) and all eight GCDs; each worker is then pinned to the
seven usable cores of the L3 region attached to its GCD. At OLCF the queue is a partition
(``batch``, ``extended``) or, for ``debug``, a QOS on the batch partition; ``--queue`` takes either.

Limits from OLCF's Frontier User Guide, "Scheduling Policy" and "Frontier Compute Nodes",
https://docs.olcf.ornl.gov/systems/frontier_user_guide.html (olcf/olcf-user-docs,
systems/frontier_user_guide.rst at commit 2745903 of 2026-07-22, page last changed 2026-07-07;
read 2026-12-04). OLCF revises these; ``sacctmgr show qos`` and ``sinfo`` on a login node are
authoritative. Any other ``--queue`` is passed to Slurm as a partition, unchecked.
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
    format_walltime,
    option,
    require,
    resolve_address,
    rules_text,
    site_plan,
    slurm_config,
)

DESCRIPTION = "OLCF Frontier (Slurm): one worker per MI250X GPU die (GCD), 8 per node"

GCDS_PER_NODE = 8
MACHINE_NODES = 9_856
"""Compute nodes in the machine, from the guide's System Overview (77 cabinets of 128 nodes)."""
BATCH_MAX_NODES = 9_472
"""The largest job the batch partition's bins admit."""
CORES_PER_TASK = 56
MINUTES = 60
HOURS = 3600

GCDS: tuple[str, ...] = tuple(str(gcd) for gcd in range(GCDS_PER_NODE))
"""Worker i's ``ROCR_VISIBLE_DEVICES``."""

# The L3 cache region (eight cores, hardware threads +64) each GCD is attached to, from the
# guide's NUMA note: GCD 0 -> cores 48-55, GCD 1 -> 56-63, GCD 2 -> 16-23, GCD 3 -> 24-31,
# GCD 4 -> 0-7, GCD 5 -> 8-15, GCD 6 -> 32-39, GCD 7 -> 40-47.
L3_REGION_OF_GCD = (6, 7, 2, 3, 0, 1, 4, 5)


def _gcd_affinity() -> str:
    """Parsl ``cpu_affinity``: worker i gets the usable cores of GCD i's L3 region and their hyperthreads.

    Core specialization (``-S 8``, Frontier's default) reserves the first core of every region,
    so each worker has seven cores; pinning to the CPUs nearest the GCD keeps host-device copies
    off the other NUMA domains.
    """
    groups = []
    for region in L3_REGION_OF_GCD:
        lo, hi = 8 * region + 1, 8 * region + 7
        groups.append(f"{lo}-{hi},{lo + 64}-{hi + 64}")
    return "list:" + ":".join(groups)


AFFINITY = _gcd_affinity()

RULES: dict[str, QueueRule] = {
    "batch": QueueRule(
        "batch",
        (
            Limit(1, 91, 2 * HOURS, 0, "bin 5"),
            Limit(92, 183, 6 * HOURS, 0, "bin 4"),
            Limit(184, 1881, 12 * HOURS, 0, "bin 3"),
            Limit(1882, 5644, 12 * HOURS, 0, "bin 2"),
            Limit(5645, BATCH_MAX_NODES, 12 * HOURS, 0, "bin 1"),
        ),
        max_jobs=4,
        note="default partition; walltime by job-size bin; 4 eligible-to-run jobs per user, more are held",
    ),
    "extended": QueueRule("extended", (Limit(1, 64, 24 * HOURS),), max_jobs=1,
                          note="partition for small long jobs; 1 running and 1 eligible job per user"),
    "debug": QueueRule("debug", (Limit(1, BATCH_MAX_NODES, 2 * HOURS),), max_jobs=1,
                       note="QOS on the batch partition; one job in any state per user; no production work"),
}

PLACEMENT: dict[str, tuple[str, str | None]] = {
    "batch": ("batch", None),
    "extended": ("extended", None),
    "debug": ("batch", "debug"),
}
"""``--queue`` -> (Slurm partition, Slurm QOS)."""

OPTIONS = {
    "account": option("account", "OLCF project charged for the jobs (sbatch --account)", REQUIRED),
    "queue": option("queue", "batch, extended (partitions) or debug (QOS on batch); other names are "
                    "passed as a partition", "batch"),
    "nodes": option("nodes", "nodes in all (default: workers / 8, rounded up)", None),
    "nodes_per_block": option("nodes_per_block", "nodes per batch job (default: all in one job)", None),
    "walltime": option("walltime", "walltime of each job, H:MM:SS", "1:00:00"),
    "worker_init": option("worker_init", "shell lines that set up the job's environment (default: module load "
                          "miniforge3, then activate the environment running adbo); HIP_VISIBLE_DEVICES=0 is "
                          "always set after them", None),
    "interface": option("interface", "login-node network interface the compute nodes reach (OLCF: hsn0)", "hsn0"),
    "address": option("address", "explicit address for the compute nodes to connect to (overrides --interface)", None),
    "cpu_affinity": option("cpu_affinity", "Parsl cpu_affinity of the workers (default pins each worker to the 7 "
                           "cores of its GCD's L3 region)", AFFINITY),
    "scheduler_options": option("scheduler_options", "extra #SBATCH lines for the job script", ""),
    "retries": option("retries", "relaunches of a worker lost with its node", 1),
}

ENV_PREAMBLE = "module load miniforge3"

JOB_ENVIRONMENT = (
    # Parsl sets CUDA_VISIBLE_DEVICES=i beside ROCR_VISIBLE_DEVICES=i; HIP would read the former as
    # index i of the single GCD left visible. HIP_VISIBLE_DEVICES wins over it: index 0 = own GCD.
    "export HIP_VISIBLE_DEVICES=0  # HIP: the one GCD ROCR_VISIBLE_DEVICES leaves, whatever CUDA_VISIBLE_DEVICES says",
)

SRUN_OVERRIDES = (f"--ntasks-per-node=1 --cpus-per-task={CORES_PER_TASK} --gpus-per-node={GCDS_PER_NODE} "
                  "--cpu-bind=none")

EXAMPLE = "--site frontier --account ABC123 --nodes 184 --walltime 12:00:00 --dry-run"

NOTES = ("Queue limits (OLCF, https://docs.olcf.ornl.gov/systems/frontier_user_guide.html):\n" + rules_text(RULES)
         + "\nWorker i is pinned to GCD i (ROCR_VISIBLE_DEVICES=i, HIP_VISIBLE_DEVICES=0).")


def plan(workers: int, *, queue: str | None = "batch", nodes: int | None = None, nodes_per_block: int | None = None,
         walltime: "str | int | float" = "1:00:00", **_: Any) -> BatchPlan:
    """Nodes, blocks and slots for ``workers``, checked against the partition and QOS limits.

    A small job refused in ``batch`` for its walltime is often one ``extended`` takes (up to 64
    nodes, 24 hours); the refusal says so when it would.
    """
    try:
        return site_plan("frontier", RULES, GCDS_PER_NODE, MACHINE_NODES, workers, queue, nodes, nodes_per_block,
                         walltime)
    except ValueError as exc:
        if queue != "batch" or "of walltime" not in str(exc):
            raise
        try:
            extended = site_plan("frontier", RULES, GCDS_PER_NODE, MACHINE_NODES, workers, "extended", nodes,
                                 nodes_per_block, walltime)
        except ValueError:
            raise exc from None
        raise ValueError(f"{exc}; or use --queue extended, which takes {extended.nodes_per_block}-node jobs for up "
                         f"to {format_walltime(RULES['extended'].limits[0].max_walltime)}") from None


def make_config(
    workers: int,
    run_dir: str,
    *,
    account: str | None = None,
    queue: str = "batch",
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float" = "1:00:00",
    worker_init: str | None = None,
    interface: str | None = "hsn0",
    address: str | None = None,
    cpu_affinity: str = AFFINITY,
    scheduler_options: str = "",
    retries: int = 1,
) -> Config:
    """A fresh Frontier config with one worker slot per GCD and enough GCDs for ``workers``."""
    require("frontier", "account", account, "the OLCF project to charge")
    layout = plan(workers, queue=queue, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime)
    partition, qos = PLACEMENT.get(queue, (queue, None))
    return slurm_config(
        "frontier", run_dir, layout, address=resolve_address("frontier", interface, address), account=account,
        partition=partition or None, qos=qos, scheduler_options=scheduler_options, worker_init=worker_init,
        preamble=ENV_PREAMBLE, job_environment=JOB_ENVIRONMENT, srun_overrides=SRUN_OVERRIDES, accelerators=GCDS,
        cpu_affinity=cpu_affinity, retries=retries,
    )


def slots_per_node(**_: Any) -> int:
    """Worker slots one node gives (one per GCD)."""
    return GCDS_PER_NODE


def allocation_seconds(*, walltime: "str | int | float | None" = None, **_: Any) -> float | None:
    """Seconds one block (batch job) lasts: workers must stop starting evaluations before then."""
    return allocation_from(walltime, OPTIONS["walltime"].default)
