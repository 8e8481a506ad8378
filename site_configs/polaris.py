"""ALCF Polaris: one BO worker per A100 GPU, submitted to PBS Pro from a login node.

Follows Parsl's own ``parsl/configs/polaris.py``: a HighThroughputExecutor with four accelerators
per node, a PBSProProvider asking for ``ngpus=4`` and the filesystems the job reads, and
``mpiexec --cpu-bind none --depth=64 --ppn 1`` so that one Parsl manager runs on each node and
divides its 64 hardware threads among the four workers. ALCF's published example passes
``checkpoint_mode``/``app_cache`` to ``Config``; current Parsl rejects them, so they are left out.

Queue limits are checked before anything is submitted (a refused job otherwise shows up only as
"qsub: Job rejected by all possible destinations"). Source: ALCF user guide, "Running Jobs on
Polaris", https://docs.alcf.anl.gov/polaris/running-jobs/ (argonne-lcf/user-guides,
docs/polaris/running-jobs/index.md, read in 2026). ALCF revises these tables; update RULES here.
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

DESCRIPTION = "ALCF Polaris (PBS Pro): one worker per A100 GPU, 4 per node, submitted from a login node"

GPUS_PER_NODE = 4
MACHINE_NODES = 560
MINUTES = 60
HOURS = 3600

RULES: dict[str, QueueRule] = {
    "debug": QueueRule("debug", (Limit(1, 2, 1 * HOURS, 5 * MINUTES),), max_jobs=1, note="for testing"),
    "debug-scaling": QueueRule("debug-scaling", (Limit(1, 10, 1 * HOURS, 5 * MINUTES),), max_jobs=1,
                               note="one job running or queued per user"),
    "prod": QueueRule(
        "prod",
        (
            Limit(10, 24, 3 * HOURS, 5 * MINUTES, "small"),
            Limit(25, 99, 6 * HOURS, 5 * MINUTES, "medium"),
            Limit(100, 496, 24 * HOURS, 5 * MINUTES, "large"),
        ),
        max_jobs=10,
        note="routing queue; 10 jobs running per project",
    ),
    "preemptable": QueueRule("preemptable", (Limit(1, 10, 72 * HOURS, 5 * MINUTES),), max_jobs=20,
                             note="jobs may be killed at any time for demand jobs"),
    "demand": QueueRule("demand", (Limit(1, 56, 1 * HOURS, 5 * MINUTES),), note="by request only", suggest=False),
    "capacity": QueueRule("capacity", (Limit(1, 4, 168 * HOURS, 5 * MINUTES),), max_jobs=1,
                          note="one job running per user"),
}

# Polaris wires its GPUs to the NUMA domains in reverse: GPU 0 is closest to cores 24-31 and
# GPU 3 to cores 0-7 (ALCF's affinity notes; their set_affinity_gpu_polaris.sh gives local rank r
# GPU 3 - r). Worker i gets GPU i from Parsl, so it is pinned to the cores (and their SMT
# siblings 32-63) nearest that GPU.
AFFINITY = "list:24-31,56-63:16-23,48-55:8-15,40-47:0-7,32-39"

OPTIONS = {
    "account": option("account", "ALCF project charged for the jobs (qsub -A)", REQUIRED),
    "queue": option("queue", "debug, debug-scaling, prod, preemptable, demand or capacity", "prod"),
    "nodes": option("nodes", "nodes in all (default: workers / 4, rounded up)", None),
    "nodes_per_block": option("nodes_per_block", "nodes per batch job (default: all in one job, split when the queue "
                              "caps job size)", None),
    "walltime": option("walltime", "walltime of each job, H:MM:SS", "1:00:00"),
    "filesystems": option("filesystems", "filesystems the job uses (#PBS -l filesystems=...)", "home:eagle"),
    "worker_init": option("worker_init", "shell lines that set up the job's environment (default: module load conda, "
                          "then activate the environment running adbo); TMPDIR=/tmp is always set", None),
    "interface": option("interface", "login-node network interface the compute nodes reach (Parsl: bond0)", "bond0"),
    "address": option("address", "explicit address for the compute nodes to connect to (overrides --interface)", None),
    "cpu_affinity": option("cpu_affinity", "Parsl cpu_affinity of the workers (default pins each worker to the cores "
                           "nearest its GPU)", AFFINITY),
    "scheduler_options": option("scheduler_options", "extra #PBS lines for the job script", ""),
    "retries": option("retries", "relaunches of a worker lost with its node", 1),
}

ENV_PREAMBLE = "module use /soft/modulefiles; module load conda"

EXAMPLE = "--site polaris --account MYPROJECT --nodes 480 --walltime 3:00:00 --dry-run"

NOTES = "Queue limits (ALCF, https://docs.alcf.anl.gov/polaris/running-jobs/):\n" + rules_text(RULES)


def plan(workers: int, *, queue: str | None = "prod", nodes: int | None = None, nodes_per_block: int | None = None,
         walltime: "str | int | float" = "1:00:00", **_: Any) -> BatchPlan:
    """Nodes, blocks and slots for ``workers``, checked against the queue's limits."""
    return site_plan("polaris", RULES, GPUS_PER_NODE, MACHINE_NODES, workers, queue, nodes, nodes_per_block, walltime)


def make_config(
    workers: int,
    run_dir: str,
    *,
    account: str | None = None,
    queue: str = "prod",
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float" = "1:00:00",
    filesystems: str = "home:eagle",
    worker_init: str | None = None,
    interface: str | None = "bond0",
    address: str | None = None,
    cpu_affinity: str = AFFINITY,
    scheduler_options: str = "",
    retries: int = 1,
) -> Config:
    """A fresh Polaris config with one worker slot per GPU and enough GPUs for ``workers``."""
    require("polaris", "account", account, "the ALCF project to charge")
    layout = plan(workers, queue=queue, nodes=nodes, nodes_per_block=nodes_per_block, walltime=walltime)
    return pbs_config(
        "polaris", run_dir, layout, account=account, queue=queue,
        scheduler_options=_directives(filesystems, scheduler_options), select_options=f"ngpus={GPUS_PER_NODE}",
        worker_init=worker_init, preamble=ENV_PREAMBLE, job_environment=("export TMPDIR=/tmp",), cpus_per_node=64,
        launcher=MpiExecLauncher(bind_cmd="--cpu-bind", overrides="--depth=64 --ppn 1"),
        address=resolve_address("polaris", interface, address), accelerators=GPUS_PER_NODE,
        cpu_affinity=cpu_affinity, retries=retries,
    )


def _directives(filesystems: str, extra: str) -> str:
    """``#PBS`` lines: the filesystems (jobs without them are refused on Polaris), then extras."""
    if not filesystems or any(ch.isspace() for ch in filesystems):
        raise ValueError(f"polaris: filesystems must look like home:eagle, got {filesystems!r}")
    lines = [f"#PBS -l filesystems={filesystems}"]
    lines.extend(line for line in (extra or "").strip().splitlines() if line.strip())
    return "\n".join(lines)


def slots_per_node(**_: Any) -> int:
    """Worker slots one node gives (one per GPU)."""
    return GPUS_PER_NODE


def allocation_seconds(*, walltime: "str | int | float | None" = None, **_: Any) -> float | None:
    """Seconds one block (batch job) lasts: workers must stop starting evaluations before then."""
    return allocation_from(walltime, OPTIONS["walltime"].default)

