"""ALCF Aurora: one BO worker per GPU tile (12 per node), submitted to PBS Pro from a login node.

An Aurora node has six Intel Data Center GPU Max 1550, each of two tiles, so a node gives twelve
worker slots. The HighThroughputExecutor names each slot's tile as ``available_accelerators``
(``"0.0", "0.1", "1.0", ... "5.1"``, GPU.tile). Parsl (every release since 2022.12, so every
version adbo supports; checked in ``process_worker_pool.worker`` of Parsl 2026.10) exports the
name given to worker i as ``ZE_AFFINITY_MASK`` (with ``ZE_ENABLE_PCI_ID_DEVICE_ORDER=1``, as
ALCF's own ``gpu_tile_compact.sh`` does), and also as ``CUDA_VISIBLE_DEVICES`` and
``ROCR_VISIBLE_DEVICES``, which nothing on an Intel GPU reads. So each worker and the objective
process it starts see exactly one tile.

The ``GPU.tile`` form of the mask selects a tile only in Level Zero's COMPOSITE device hierarchy.
ALCF's ``frameworks`` module (PyTorch) switches to FLAT, where a tile is a device numbered 0-11 and
``0.1`` would select nothing, so the job exports ``ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE`` after the
environment is set up; ALCF's PyTorch page documents this pairing for masking single tiles.

Each worker is pinned to eight cores (and their hyperthreads) on the socket of its GPU: GPUs 0-2
hang off socket 0, GPUs 3-5 off socket 1, and cores 0 and 52 are reserved for the system.
``mpiexec --cpu-bind none --ppn 1`` starts one Parsl manager per node (ALCF, "Parsl on Aurora").

Queue limits are checked before anything is submitted (a refused job otherwise shows up only as
"qsub: Job rejected by all possible destinations"). Source: ALCF user guide, "Running Jobs on
Aurora", https://docs.alcf.anl.gov/aurora/running-jobs-aurora/ (argonne-lcf/user-guides,
docs/aurora/running-jobs-aurora.md at commit 7d04a3f of 2026-08-19, page last changed
2026-07-27; read 2026-12-04). Tile, core and launcher layout from the same page and from
"Parsl on Aurora" (docs/aurora/workflows/parsl.md) and "PyTorch on Aurora"
(docs/aurora/data-science/frameworks/pytorch.md), read the same day. ALCF revises these tables;
update RULES here.
"""

from __future__ import annotations

from typing import Any

from parsl.config import Config
from parsl.launchers import MpiExecLauncher

from ._hpc import (
    REQUIRED,
    BatchPlan,
    Limit,
    QueueRule,
    allocation_from,
    option,
    pbs_config,
    require,
    resolve_address,
    rules_text,
    site_plan,
)

DESCRIPTION = "ALCF Aurora (PBS Pro): one worker per GPU tile, 12 per node (6 GPU Max 1550 x 2 tiles)"

GPUS_PER_NODE = 6
TILES_PER_GPU = 2
TILES_PER_NODE = GPUS_PER_NODE * TILES_PER_GPU
MACHINE_NODES = 10_624
HARDWARE_THREADS_PER_NODE = 208
MINUTES = 60
HOURS = 3600

TILES: tuple[str, ...] = tuple(f"{gpu}.{tile}" for gpu in range(GPUS_PER_NODE) for tile in range(TILES_PER_GPU))
"""Worker i's ``ZE_AFFINITY_MASK``: GPU 0 tile 0, GPU 0 tile 1, GPU 1 tile 0, ... GPU 5 tile 1."""


def _tile_affinity() -> str:
    """Parsl ``cpu_affinity``: worker i gets 8 cores (and their hyperthreads) next to tile i's GPU.

    Socket 0 (cores 0-51, hyperthreads +104) serves GPUs 0-2, socket 1 (cores 52-103) GPUs 3-5.
    The first core of each socket (0 and 52) runs system services since March 2025, so each
    socket's six workers take cores 1-48 and 53-100 in blocks of eight.
    """
    cores_per_worker = 8
    groups = []
    for first_core in (1, 53):
        for k in range(TILES_PER_NODE // 2):
            lo = first_core + k * cores_per_worker
            hi = lo + cores_per_worker - 1
            groups.append(f"{lo}-{hi},{lo + 104}-{hi + 104}")
    return "list:" + ":".join(groups)


AFFINITY = _tile_affinity()

RULES: dict[str, QueueRule] = {
    "debug": QueueRule("debug", (Limit(1, 2, 1 * HOURS, 5 * MINUTES),), max_jobs=1,
                       note="one job running, accruing or queued per user; nodes may be shared"),
    "debug-scaling": QueueRule("debug-scaling", (Limit(2, 256, 1 * HOURS, 5 * MINUTES),), max_jobs=1,
                               note="one job running, accruing or queued per user"),
    "prod": QueueRule(
        "prod",
        (
            Limit(256, 1024, 12 * HOURS, 5 * MINUTES, "small"),
            Limit(1025, 1999, 18 * HOURS, 5 * MINUTES, "medium"),
            Limit(2000, MACHINE_NODES, 24 * HOURS, 5 * MINUTES, "large"),
        ),
        max_jobs=10,
        note="routing queue; 10 jobs running or accruing, 100 queued, per project",
    ),
    "capacity": QueueRule("capacity", (Limit(1, 16, 168 * HOURS, 5 * MINUTES),), max_jobs=2,
                          note="2 jobs running and 5 queued or running per user; 512 nodes across all jobs"),
    "visualization": QueueRule("visualization", (Limit(1, 32, 8 * HOURS, 5 * MINUTES),),
                               note="by request only; nodes may be shared", suggest=False),
}

OPTIONS = {
    "account": option("account", "ALCF project charged for the jobs (qsub -A)", REQUIRED),
    "queue": option("queue", "debug, debug-scaling, prod (256 nodes or more), capacity or visualization", "prod"),
    "nodes": option("nodes", "nodes in all (default: workers / 12, rounded up)", None),
    "nodes_per_block": option("nodes_per_block", "nodes per batch job (default: all in one job, split when the queue "
                              "caps job size)", None),
    "walltime": option("walltime", "walltime of each job, H:MM:SS", "1:00:00"),
    "filesystems": option("filesystems", "filesystems the job uses (#PBS -l filesystems=...; DAOS: daos_user_fs)",
                          "home:flare"),
    "worker_init": option("worker_init", "shell lines that set up the job's environment (default: module load "
                          "frameworks, then activate the environment running adbo); TMPDIR=/tmp and "
                          "ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE are always set after them", None),
    "interface": option("interface", "login-node network interface the compute nodes reach (ALCF: hsn0)", "hsn0"),
    "address": option("address", "explicit address for the compute nodes to connect to (overrides --interface)", None),
    "cpu_affinity": option("cpu_affinity", "Parsl cpu_affinity of the workers (default pins each worker to 8 cores "
                           "on its GPU's socket)", AFFINITY),
    "scheduler_options": option("scheduler_options", "extra #PBS lines for the job script", ""),
    "retries": option("retries", "relaunches of a worker lost with its node", 1),
}

ENV_PREAMBLE = "module load frameworks"

JOB_ENVIRONMENT = (
    "export TMPDIR=/tmp",  # ALCF: Parsl's sockets under a long default TMPDIR fail (AF_UNIX path too long)
    "export ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE  # so that ZE_AFFINITY_MASK=GPU.tile (set per worker) is one tile",
)

LAUNCHER_OVERRIDES = "--ppn 1"

EXAMPLE = "--site aurora --account MYPROJECT --nodes 256 --walltime 6:00:00 --dry-run"

NOTES = ("Queue limits (ALCF, https://docs.alcf.anl.gov/aurora/running-jobs-aurora/):\n" + rules_text(RULES)
         + "\nWorker i is pinned to GPU tile " + ", ".join(TILES) + " (ZE_AFFINITY_MASK), in that order.")


def plan(workers: int, *, queue: str | None = "prod", nodes: int | None = None, nodes_per_block: int | None = None,
         walltime: "str | int | float" = "1:00:00", **_: Any) -> BatchPlan:
    """Nodes, blocks and slots for ``workers``, checked against the queue's limits."""
    return site_plan("aurora", RULES, TILES_PER_NODE, MACHINE_NODES, workers, queue, nodes, nodes_per_block, walltime)


def make_config(
    workers: int,
    run_dir: str,
    *,
    account: str | None = None,
    queue: str = "prod",
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float" = "1:00:00",
    filesystems: str = "home:flare",
    worker_init: str | None = None,
    interface: str | None = "hsn0",
    address: str | None = None,
    cpu_affinity: str = AFFINITY,
    scheduler_options: str = "",
    retries: int = 1,
) -> Config:
    """A fresh Aurora config with one worker slot per GPU tile and enough tiles for ``workers``."""
    require("aurora", "account", account, "the ALCF project to charge")
    layout = plan(workers, queue=queue, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime)
    return pbs_config(
        "aurora", run_dir, layout, account=account, queue=queue,
        scheduler_options=_directives(filesystems, scheduler_options), select_options="",
        worker_init=worker_init, preamble=ENV_PREAMBLE, job_environment=JOB_ENVIRONMENT,
        cpus_per_node=HARDWARE_THREADS_PER_NODE,
        launcher=MpiExecLauncher(bind_cmd="--cpu-bind", overrides=LAUNCHER_OVERRIDES),
        address=resolve_address("aurora", interface, address), accelerators=TILES,
        cpu_affinity=cpu_affinity, retries=retries,
    )


def _directives(filesystems: str, extra: str) -> str:
    """``#PBS`` lines: the filesystems (ALCF refuses jobs without them), then extras."""
    if not filesystems or any(ch.isspace() for ch in filesystems) or "," in filesystems:
        raise ValueError(f"aurora: filesystems must be names joined by colons, like home:flare, got {filesystems!r}")
    names = filesystems.split(":")
    if "daos" in names:
        raise ValueError(
            f"aurora: there is no filesystem called 'daos' (filesystems {filesystems!r}); ask for "
            f"{':'.join('daos_user_fs' if n == 'daos' else n for n in names)!r} (daos_perf_fs for approved teams), or run "
            f"`qstat -Bf` on a login node and read resources_available.valid_filesystems"
        )
    lines = [f"#PBS -l filesystems={filesystems}"]
    lines.extend(line for line in (extra or "").strip().splitlines() if line.strip())
    return "\n".join(lines)


def slots_per_node(**_: Any) -> int:
    """Worker slots one node gives (one per GPU tile)."""
    return TILES_PER_NODE


def allocation_seconds(*, walltime: "str | int | float | None" = None, **_: Any) -> float | None:
    """Seconds one block (batch job) lasts: workers must stop starting evaluations before then."""
    return allocation_from(walltime, OPTIONS["walltime"].default)
