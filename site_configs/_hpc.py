"""Shared pieces of the batch-scheduler sites (Polaris, Aurora, Perlmutter, Frontier, generic PBS and Slurm).

Kept in one private module so that every site parses walltimes, applies queue rules, splits a
request into blocks, resolves the executor's address and writes ``worker_init`` the same way.
Nothing here talks to a scheduler or to the network: the providers do that when Parsl starts.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shlex
import sys
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Sequence

from parsl.addresses import address_by_interface
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import SrunLauncher
from parsl.launchers.base import Launcher
from parsl.providers import PBSProProvider, SlurmProvider
from parsl.providers.base import ExecutionProvider

REQUIRED = object()
"""Default of an option that has none: the site refuses to build a config without it."""


class Option(NamedTuple):
    """One site option: what it means, its default, the environment variable that can set it."""

    help: str
    default: Any = None
    env: str | None = None
    cli: bool = True
    """False for options only a program can pass (an executor object, a dict)."""


def option(name: str, help: str, default: Any = None, cli: bool = True) -> Option:
    """An Option whose environment variable follows the one naming rule, ADBO_<NAME>."""
    return Option(help, default, f"ADBO_{name.upper()}" if cli else None, cli)


class InterfaceNotFound(ValueError):
    """The network interface named for the executor does not exist on this host."""


# --------------------------------------------------------------------------------------------
# Walltimes
# --------------------------------------------------------------------------------------------

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_walltime(value: "str | int | float") -> int:
    """Seconds from ``H:MM:SS``, ``D-HH:MM:SS``, a number of seconds, or ``90m``/``3h``/``1d``.

    Two-part times (``1:30``) are refused: PBS and Slurm read them as minutes:seconds while
    people usually mean hours:minutes, and a job cut off 88 minutes early is an expensive surprise.
    """
    if isinstance(value, bool):
        raise ValueError(f"walltime must be a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        seconds = _parse_walltime_text(str(value).strip().lower())
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"walltime must be positive, got {value!r}")
    return int(math.ceil(seconds))


def _parse_walltime_text(text: str) -> float:
    number = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([smhd]?)", text)
    if number:
        return float(number.group(1)) * _UNITS[number.group(2)]
    clock = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{1,2}):(\d{1,2})", text)
    if clock:
        days, hours, minutes, secs = (int(g) if g else 0 for g in clock.groups())
        if minutes >= 60 or secs >= 60:
            raise ValueError(f"walltime {text!r}: minutes and seconds must be below 60")
        return days * 86400 + hours * 3600 + minutes * 60 + secs
    if re.fullmatch(r"\d+:\d{1,2}", text):
        raise ValueError(
            f"walltime {text!r} is ambiguous (schedulers read it as minutes:seconds); "
            f"write hours as H:MM:SS, for example {text}:00"
        )
    raise ValueError(f"walltime {text!r} not understood; use H:MM:SS (3:00:00), seconds (10800) or 3h / 90m")


def format_walltime(seconds: int) -> str:
    """``HH:MM:SS`` as PBS and Parsl's Slurm provider expect (hours may exceed 24)."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


# --------------------------------------------------------------------------------------------
# Queue rules and block planning
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """Node and walltime bounds of one job in a queue (or in one size class of a routing queue)."""

    min_nodes: int
    max_nodes: int
    max_walltime: int
    min_walltime: int = 0
    routed_to: str = ""


@dataclass(frozen=True)
class QueueRule:
    """A queue's limits by job size, and how many jobs one user or project may run in it at once."""

    queue: str
    limits: tuple[Limit, ...]
    max_jobs: int | None = None
    note: str = ""
    suggest: bool = True
    """Offer this queue as an alternative in error messages (not for queues open by request only)."""

    @property
    def min_nodes(self) -> int:
        return min(limit.min_nodes for limit in self.limits)

    @property
    def max_nodes(self) -> int:
        return max(limit.max_nodes for limit in self.limits)

    def limit_for(self, nodes: int) -> Limit | None:
        return next((lim for lim in self.limits if lim.min_nodes <= nodes <= lim.max_nodes), None)


@dataclass(frozen=True)
class BatchPlan:
    """How a request maps onto batch jobs: Parsl blocks of equal size, one job each."""

    nodes: int
    nodes_per_block: int
    blocks: int
    slots_per_node: int
    walltime: int
    queue: str | None

    @property
    def slots(self) -> int:
        return self.nodes_per_block * self.blocks * self.slots_per_node

    def summary(self) -> str:
        jobs = "1 batch job (Parsl block)" if self.blocks == 1 else f"{self.blocks} batch jobs (Parsl blocks)"
        return (
            f"{jobs} of {self.nodes_per_block} node(s) each, {self.slots_per_node} worker slot(s) per node "
            f"= {self.slots} slots; walltime {format_walltime(self.walltime)} per job"
            + (f"; queue {self.queue}" if self.queue else "")
        )


def nodes_for(workers: int, slots_per_node: int, nodes: int | None, site: str) -> int:
    """The node count: as asked, or just enough for one slot per worker."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    needed = math.ceil(workers / slots_per_node)
    if nodes is None:
        return needed
    nodes = int(nodes)
    if nodes < 1:
        raise ValueError(f"{site}: nodes must be at least 1, got {nodes}")
    if nodes < needed:
        raise ValueError(
            f"{site}: {workers} workers need {needed} nodes at {slots_per_node} worker(s) per node, "
            f"but --nodes is {nodes}; ask for --nodes {needed} or run --workers {nodes * slots_per_node}"
        )
    return nodes


def site_plan(site: str, rules: "Mapping[str, QueueRule]", per_node: int, machine_nodes: int, workers: int,
              queue: str | None, nodes: "int | None", nodes_per_block: "int | None",
              walltime: "str | int | float") -> "BatchPlan":
    """The body every batch site's ``plan`` shares: checked numbers, nodes enough for the workers at
    ``per_node`` slots each, and blocks within the queue's limits (``plan_blocks``)."""
    if nodes is not None:
        nodes = checked_int(site, "nodes", nodes)
    if nodes_per_block is not None:
        nodes_per_block = checked_int(site, "nodes_per_block", nodes_per_block)
    slots = min(per_node, max(workers, 1))
    total = nodes_for(workers, slots, nodes, site)
    return plan_blocks(site, rules, queue, total, nodes_per_block, parse_walltime(walltime), slots, machine_nodes)


def plan_blocks(
    site: str,
    rules: Mapping[str, QueueRule],
    queue: str | None,
    nodes: int,
    nodes_per_block: int | None,
    walltime: int,
    slots_per_node: int,
    machine_nodes: int | None = None,
) -> BatchPlan:
    """Split ``nodes`` into equal blocks that the queue accepts, or explain why it cannot.

    Without ``nodes_per_block`` a request larger than the queue's biggest job is split into the
    fewest equal blocks that fit; decentralized workers do not mind blocks starting at different
    times. Every block is checked against the node and walltime limits of its size class.
    """
    if machine_nodes is not None and nodes > machine_nodes:
        raise ValueError(f"{site} has {machine_nodes} nodes; {nodes} were asked for")
    rule = rules.get(queue) if queue is not None else None
    if nodes_per_block is not None:
        npb = int(nodes_per_block)
        if npb < 1:
            raise ValueError(f"{site}: nodes per block must be at least 1, got {npb}")
        npb = min(npb, nodes)
    elif rule is not None and nodes > rule.max_nodes:
        npb = math.ceil(nodes / math.ceil(nodes / rule.max_nodes))
    else:
        npb = nodes
    blocks = math.ceil(nodes / npb)
    if rule is not None:
        _check_rule(site, rules, rule, npb, blocks, walltime, nodes)
    return BatchPlan(npb * blocks, npb, blocks, slots_per_node, walltime, queue)


def _check_rule(site: str, rules: Mapping[str, QueueRule], rule: QueueRule, npb: int, blocks: int, walltime: int,
                nodes: int) -> None:
    if blocks > 1 and rule.max_jobs is not None and blocks > rule.max_jobs:
        jobs = "one job" if rule.max_jobs == 1 else f"{rule.max_jobs} jobs"
        raise ValueError(
            f"{site} queue {rule.queue!r} takes jobs of {rule.min_nodes} to {rule.max_nodes} nodes and runs at most "
            f"{jobs} at a time per user or project; {nodes} nodes would take {blocks} jobs of {npb} nodes. "
            f"Ask for fewer nodes or larger jobs (--nodes-per-block){_other_queues(rules, rule, nodes)}"
        )
    limit = rule.limit_for(npb)
    if limit is None:
        raise ValueError(
            f"{site} queue {rule.queue!r} takes jobs of {rule.min_nodes} to {rule.max_nodes} nodes; "
            f"a job of {npb} node(s) is outside that range{_other_queues(rules, rule, npb)}"
        )
    where = f"{site} queue {rule.queue!r}" + (
        f" routes jobs of {limit.min_nodes}-{limit.max_nodes} nodes to {limit.routed_to!r}, which" if limit.routed_to else ""
    )
    if walltime > limit.max_walltime:
        longer = [lim for lim in rule.limits if lim.max_walltime >= walltime]
        hint = (f", or at least {min(lim.min_nodes for lim in longer)} nodes per job"
                f" (allowed up to {format_walltime(max(lim.max_walltime for lim in longer))})") if longer else ""
        raise ValueError(
            f"{where} allows at most {format_walltime(limit.max_walltime)} of walltime; "
            f"{format_walltime(walltime)} was asked. Ask for --walltime {format_walltime(limit.max_walltime)} "
            f"or less{hint}"
        )
    if walltime < limit.min_walltime:
        raise ValueError(
            f"{where} needs at least {format_walltime(limit.min_walltime)} of walltime; "
            f"{format_walltime(walltime)} was asked. Ask for --walltime {format_walltime(limit.min_walltime)} or more"
        )


def _other_queues(rules: Mapping[str, QueueRule], rule: QueueRule, nodes: int) -> str:
    fits = [r for r in rules.values() if r is not rule and r.suggest and r.min_nodes <= nodes <= r.max_nodes]
    if not fits:
        return ""
    choices = ", ".join(f"--queue {r.queue} ({r.min_nodes}-{r.max_nodes} nodes)" for r in fits)
    return f"; {nodes} node(s) fit {choices}"


def rules_text(rules: Mapping[str, QueueRule]) -> str:
    """The queue rules as lines of text, for ``--site NAME --help`` and the docs."""
    lines = []
    for rule in rules.values():
        parts = []
        for lim in rule.limits:
            routed = f" -> {lim.routed_to}" if lim.routed_to else ""
            shortest = f"{format_walltime(lim.min_walltime)} to " if lim.min_walltime else "up to "
            parts.append(f"{lim.min_nodes}-{lim.max_nodes} nodes, {shortest}{format_walltime(lim.max_walltime)}{routed}")
        jobs = f"; at most {rule.max_jobs} job(s) at once" if rule.max_jobs else ""
        note = f" ({rule.note})" if rule.note else ""
        lines.append(f"  {rule.queue:<14} {'; '.join(parts)}{jobs}{note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Address, environment, executor and config
# --------------------------------------------------------------------------------------------


def resolve_address(site: str, interface: str | None, address: str | None) -> str:
    """The address compute nodes use to reach this host, from an explicit address or an interface.

    Never left to Parsl: without ``address=`` its HighThroughputExecutor tries every address
    finder it has, one of which asks a public web service (outbound traffic, and slow offline).
    """
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(f"{site}: address {address!r} is not an IPv4 or IPv6 address") from None
        return address
    if not interface:
        raise ValueError(
            f"{site} needs the network interface that compute nodes reach this host on (--interface, "
            f"ADBO_INTERFACE, e.g. ib0 or hsn0) or an explicit --address; run `ip -brief address` "
            f"on the login node to list them"
        )
    try:
        return address_by_interface(interface)
    except OSError as exc:
        raise InterfaceNotFound(
            f"{site}: network interface {interface!r} is not on this host ({exc.strerror or exc}); "
            f"run from the site's login node, or pass --interface NAME or --address IP"
        ) from None


def environment_activation() -> str:
    """A shell line that activates the Python environment running this process, on any node.

    Workers must import adbo and the user's objective, and Parsl's worker pool is a console
    script of the same environment, so the batch job activates the environment that launched it.
    """
    prefix = sys.prefix
    if prefix != sys.base_prefix:
        return f"source {shlex.quote(os.path.join(prefix, 'bin', 'activate'))}"
    if os.path.isdir(os.path.join(prefix, "conda-meta")):
        return f"conda activate {shlex.quote(prefix)}"
    return f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH"


def compose_worker_init(user_init: str | None, preamble: str, walltime: int, extra: tuple[str, ...] = ()) -> str:
    """The job's setup lines: the user's (or this environment's activation), then adbo's own.

    ``ADBO_ALLOCATION_END`` is the Unix time this block's walltime runs out, computed when the
    job starts, so workers of blocks that start at different times each know their own end.
    """
    lines = [user_init.strip()] if user_init and user_init.strip() else [line for line in (preamble, environment_activation()) if line]
    lines.extend(extra)
    lines.append(f"export ADBO_ALLOCATION_END=$(( $(date +%s) + {int(walltime)} ))")
    return "\n".join(lines)


def batch_executor(
    label: str,
    address: str,
    provider: ExecutionProvider,
    slots_per_node: int,
    gpus_per_node: "int | Sequence[str]",
    cpu_affinity: str,
) -> HighThroughputExecutor:
    """A HighThroughputExecutor with exactly ``slots_per_node`` workers per node.

    With GPUs, Parsl pins worker i to GPU i (CUDA_VISIBLE_DEVICES). ``gpus_per_node`` may instead
    name each worker's device (Aurora's tiles are "0.0", "0.1", ...): worker i gets the i-th name.
    ``prefetch_capacity=0``: a BO worker holds its slot for the whole run, so a prefetched second
    worker would wait forever.
    """
    if isinstance(gpus_per_node, int):
        accelerators: "int | list[str]" = min(gpus_per_node, slots_per_node) if gpus_per_node > 0 else []
    else:
        accelerators = list(gpus_per_node)[:slots_per_node]
    return HighThroughputExecutor(
        label=label,
        address=address,
        provider=provider,
        max_workers_per_node=slots_per_node,
        available_accelerators=accelerators,
        cpu_affinity=cpu_affinity,
        prefetch_capacity=0,
        heartbeat_period=30,
        heartbeat_threshold=180,
    )


def batch_config(executor: HighThroughputExecutor, run_dir: str, retries: int) -> Config:
    """The Config around a batch executor; ``retries`` relaunch a worker lost with its node.

    The "simple" strategy gives back blocks whose workers have all stopped (before walltime),
    so an allocation is not charged while it idles.
    """
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    return Config(
        executors=[executor],
        run_dir=os.path.join(run_dir, "logs", "parsl"),
        retries=int(retries),
        usage_tracking=0,
        exit_mode="wait",
        strategy="simple",
    )


def _all_blocks_at_once(layout: BatchPlan) -> dict[str, Any]:
    """Provider settings that submit every block of the plan at the start and never scale: the
    workers are long-lived, and a block added later would start its workers after the others."""
    return {"nodes_per_block": layout.nodes_per_block, "init_blocks": layout.blocks, "min_blocks": 0,
            "max_blocks": layout.blocks, "walltime": format_walltime(layout.walltime)}


def pbs_config(site: str, run_dir: str, layout: BatchPlan, *, address: str, account: str | None, queue: str | None,
               scheduler_options: str, select_options: str, cpus_per_node: int, launcher: Launcher,
               worker_init: str | None, preamble: str = "", job_environment: tuple[str, ...] = (),
               accelerators: "int | Sequence[str]", cpu_affinity: str, retries: int) -> Config:
    """The Config of a PBS Pro site: every block of ``layout`` submitted at once, none added later.

    The caller checks its own options, resolves ``address`` and builds the launcher itself, so each
    site keeps the order in which it refuses bad options (and so the error a user sees first).
    """
    provider = PBSProProvider(
        account=account,
        queue=queue,
        scheduler_options=(scheduler_options or "").strip(),
        select_options=select_options,
        worker_init=compose_worker_init(worker_init, preamble, layout.walltime, job_environment),
        cpus_per_node=cpus_per_node,
        launcher=launcher,
        **_all_blocks_at_once(layout),
    )
    executor = batch_executor(f"adbo_{site}", address, provider, layout.slots_per_node, accelerators, cpu_affinity)
    return batch_config(executor, run_dir, retries)


def slurm_config(site: str, run_dir: str, layout: BatchPlan, *, address: str, account: str | None,
                 partition: str | None = None, qos: str | None = None, constraint: str | None = None,
                 gpus_per_node: int | None = None, scheduler_options: str, srun_overrides: str,
                 worker_init: str | None, preamble: str = "", job_environment: tuple[str, ...] = (),
                 accelerators: "int | Sequence[str]", cpu_affinity: str, retries: int) -> Config:
    """The Config of a Slurm site: whole nodes, every block submitted at once, none added later.

    As in ``pbs_config``, the caller resolves ``address`` (before Parsl's SlurmProvider probes
    ``sacct`` on construction), so each site keeps the order in which it refuses bad options.
    """
    provider = SlurmProvider(
        partition=partition,
        account=account,
        qos=qos,
        constraint=constraint,
        gpus_per_node=gpus_per_node,
        scheduler_options=(scheduler_options or "").strip(),
        worker_init=compose_worker_init(worker_init, preamble, layout.walltime, job_environment),
        exclusive=True,
        cmd_timeout=60,
        launcher=SrunLauncher(overrides=srun_overrides),
        **_all_blocks_at_once(layout),
    )
    executor = batch_executor(f"adbo_{site}", address, provider, layout.slots_per_node, accelerators, cpu_affinity)
    return batch_config(executor, run_dir, retries)


def allocation_from(walltime: "str | int | float | None", default: "str | int | None") -> float | None:
    """Seconds of one block's walltime, for ``allocation_seconds`` of every site."""
    value = walltime if walltime is not None else default
    return None if value is None else float(parse_walltime(value))


def checked_int(site: str, name: str, value: Any, minimum: int = 1) -> int:
    """An integer option, refused with its name if it is not one or is below ``minimum``."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{site}: {name} must be an integer, got {value!r}") from None
    if number != value and not isinstance(value, str):
        raise ValueError(f"{site}: {name} must be an integer, got {value!r}")
    if number < minimum:
        raise ValueError(f"{site}: {name} must be at least {minimum}, got {number}")
    return number


def require(site: str, name: str, value: Any, what: str) -> Any:
    """Refuse a missing required option, naming its flag and environment variable."""
    if value in (None, ""):
        flag = "--" + name.replace("_", "-")
        raise ValueError(f"{site} needs {flag} (or ADBO_{name.upper()}): {what}")
    return value


def slots_from(gpus_per_node: int, workers_per_node: int | None) -> int:
    """Worker slots per node: one per GPU by default, else one per node."""
    if workers_per_node is not None:
        return int(workers_per_node)
    return gpus_per_node if gpus_per_node > 0 else 1



def generic_plan(site: str, workers: int, *, nodes: int | None = None, nodes_per_block: int | None = None,
                 walltime: "str | int | float" = "1:00:00", gpus_per_node: int = 0,
                 workers_per_node: int | None = None, queue: str | None = None) -> "BatchPlan":
    """Nodes, blocks and slots for ``workers`` on a cluster whose queue limits adbo does not know."""
    gpus = checked_int(site, "gpus_per_node", gpus_per_node, minimum=0)
    slots = slots_from(gpus, None if workers_per_node is None else checked_int(site, "workers_per_node", workers_per_node))
    if gpus and slots > gpus:
        raise ValueError(f"{site}: {slots} workers per node cannot each have one of {gpus} GPUs; "
                         f"lower --workers-per-node or raise --gpus-per-node")
    total = nodes_for(workers, slots, None if nodes is None else checked_int(site, "nodes", nodes), site)
    npb = None if nodes_per_block is None else checked_int(site, "nodes_per_block", nodes_per_block)
    return plan_blocks(site, {}, queue, total, npb, parse_walltime(walltime), slots)
