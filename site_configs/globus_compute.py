"""A remote Globus Compute endpoint: the same workers, submitted through the Globus service.

Parsl's ``GlobusComputeExecutor`` wraps a ``globus_compute_sdk.Executor`` bound to the endpoint;
the endpoint's own configuration (for Polaris: ``templates/globus_compute_polaris.yaml``) decides
where the workers run and how many run at once, so it must offer one slot per worker. Workers
read and write the run directory, so it must be on a filesystem the endpoint's workers share.

Building a real ``globus_compute_sdk.Executor`` contacts the Globus services and needs
credentials (``GLOBUS_COMPUTE_CLIENT_ID`` / ``GLOBUS_COMPUTE_CLIENT_SECRET`` for headless use).
``make_config`` therefore also accepts an already built ``executor``: anything that is a
``globus_compute_sdk.Executor`` (tests pass an offline subclass).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any, Mapping

from parsl.config import Config

from ._hpc import allocation_from, checked_int, format_walltime, option, parse_walltime

DESCRIPTION = "a Globus Compute endpoint (remote): workers run wherever the endpoint's configuration puts them"

OPTIONS = {
    "endpoint": option("endpoint", "UUID of the Globus Compute endpoint", None),
    "account": option("account", "templated endpoints: the allocation to charge (user_endpoint_config account)", None),
    "queue": option("queue", "templated endpoints: the queue (user_endpoint_config queue)", None),
    "nodes_per_block": option("nodes_per_block", "templated endpoints: nodes per batch job", None),
    "nodes": option("nodes", "templated endpoints: nodes in all (sets max_blocks with nodes_per_block)", None),
    "walltime": option("walltime", "templated endpoints: walltime of each job, H:MM:SS", None),
    "worker_init": option("worker_init", "templated endpoints: shell lines that set up the job's environment", None),
    "retries": option("retries", "resubmissions of a worker whose task failed", 1),
    "user_endpoint_config": option("user_endpoint_config", "dict of template variables for a templated endpoint",
                                   None, cli=False),
    "executor": option("executor", "an already built globus_compute_sdk.Executor (for tests and notebooks)",
                       None, cli=False),
}

TEMPLATE = os.path.join("templates", "globus_compute_polaris.yaml")

EXAMPLE = "--site globus-compute --endpoint 2d8a3f4e-0000-4000-8000-000000000000 --account MYPROJECT --nodes 2"

NOTES = (
    "Authentication: interactive logins cache a token on first use; for batch or CI use set\n"
    "GLOBUS_COMPUTE_CLIENT_ID and GLOBUS_COMPUTE_CLIENT_SECRET (a Globus Auth client identity).\n"
    f"Endpoint configuration for Polaris: {TEMPLATE} (one worker per GPU).\n"
    "The run directory must be on a filesystem that the endpoint's workers share."
)


def template_variables(
    *,
    account: str | None = None,
    queue: str | None = None,
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float | None" = None,
    worker_init: str | None = None,
    user_endpoint_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``user_endpoint_config`` for a templated endpoint: the options given, then explicit values.

    Only options that were set are sent: an endpoint that is not templated rejects variables.
    """
    values: dict[str, Any] = {}
    if account:
        values["account"] = account
    if queue:
        values["queue"] = queue
    if walltime is not None:
        values["walltime"] = format_walltime(parse_walltime(walltime))
    if worker_init:
        values["worker_init"] = worker_init
    if nodes_per_block is not None:
        values["nodes_per_block"] = checked_int("globus-compute", "nodes_per_block", nodes_per_block)
    if nodes is not None:
        per_block = values.get("nodes_per_block") or checked_int("globus-compute", "nodes", nodes)
        values.setdefault("nodes_per_block", per_block)
        values["max_blocks"] = -(-checked_int("globus-compute", "nodes", nodes) // per_block)
    values.update(dict(user_endpoint_config or {}))
    try:
        json.dumps(values)
    except TypeError as exc:
        raise ValueError(f"globus-compute: user_endpoint_config must be JSON-serializable ({exc})") from None
    return values


def make_config(
    workers: int,
    run_dir: str,
    *,
    endpoint: str | None = None,
    executor: Any = None,
    user_endpoint_config: Mapping[str, Any] | None = None,
    account: str | None = None,
    queue: str | None = None,
    nodes: int | None = None,
    nodes_per_block: int | None = None,
    walltime: "str | int | float | None" = None,
    worker_init: str | None = None,
    retries: int = 1,
) -> Config:
    """A fresh config that sends every worker to the endpoint (or through ``executor``)."""
    from parsl.executors import GlobusComputeExecutor

    sdk = _sdk()
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    variables = template_variables(account=account, queue=queue, nodes=nodes, nodes_per_block=nodes_per_block,
                                   walltime=walltime, worker_init=worker_init, user_endpoint_config=user_endpoint_config)
    if executor is None:
        executor = sdk.Executor(endpoint_id=_endpoint_id(endpoint), user_endpoint_config=variables or None)
    elif not isinstance(executor, sdk.Executor):
        raise TypeError(
            f"globus-compute: executor must be a globus_compute_sdk.Executor (a subclass works offline), "
            f"got {type(executor).__name__}"
        )
    elif variables:
        executor.user_endpoint_config = variables
    if retries < 0:
        raise ValueError(f"retries must be 0 or more, got {retries}")
    return Config(
        executors=[GlobusComputeExecutor(executor=executor, label="adbo_globus_compute")],
        run_dir=os.path.join(run_dir, "logs", "parsl"),
        retries=int(retries),
        usage_tracking=0,
        exit_mode="wait",
        strategy="none",
    )


def dry_run_text(workers: int, run_dir: str, **options: Any) -> str:
    """What ``--dry-run`` prints: no batch script here, the endpoint writes its own."""
    options.pop("executor", None)
    endpoint = options.pop("endpoint", None)
    options.pop("retries", None)
    variables = template_variables(**options)
    return "\n".join([
        f"# adbo dry run: site globus-compute, {workers} workers, run directory {os.path.abspath(run_dir)}",
        f"# {workers} tasks would be sent to endpoint {_endpoint_id(endpoint)}; nothing was sent.",
        "# The endpoint's own configuration writes and submits the batch job; for Polaris start from",
        f"# {TEMPLATE}. user_endpoint_config sent with each task:",
        json.dumps(variables, indent=2, sort_keys=True) if variables else "{}",
    ])


def allocation_seconds(*, walltime: "str | int | float | None" = None, **_: Any) -> float | None:
    """Seconds of one endpoint block, when given; otherwise unknown here (the endpoint decides)."""
    return allocation_from(walltime, None)


def _endpoint_id(endpoint: str | None) -> str:
    if not endpoint:
        raise ValueError("globus-compute needs --endpoint UUID (or ADBO_ENDPOINT): the Globus Compute endpoint to use")
    try:
        return str(uuid.UUID(str(endpoint)))
    except ValueError:
        raise ValueError(f"globus-compute: endpoint {endpoint!r} is not a UUID") from None


def _sdk() -> Any:
    try:
        import globus_compute_sdk
    except ImportError:
        raise ImportError(
            "the globus-compute site needs globus-compute-sdk: pip install 'adbo[globus]'"
        ) from None
    return globus_compute_sdk
