"""Site options on the command line: flags, environment variables, per-site help and dry runs.

A workflow calls ``add_site_arguments(parser)`` once; ``site_options_from_args(site, args)`` then
gives the keyword arguments for that site's ``make_config`` (a flag wins over its ``ADBO_*``
environment variable, which wins over the site's default). ``describe_site(name)`` documents what
a site needs, and ``dry_run(...)`` renders the batch script Parsl's own provider would submit,
without submitting it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from parsl.providers.cluster_provider import ClusterProvider

from .site_configs import load_site
from .site_configs._hpc import REQUIRED, InterfaceNotFound, Option, parse_walltime


__all__ = [
    "FLAGS",
    "add_site_arguments",
    "allocation_seconds",
    "default_workers",
    "describe_site",
    "dry_run",
    "parse_walltime",
    "site_accepts",
    "site_help_requested",
    "site_options_from_args",
]


@dataclass(frozen=True)
class Flag:
    """A command-line site option: its converter and generic help (sites document their meaning)."""

    name: str
    convert: Callable[[str], Any]
    metavar: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return f"ADBO_{self.name.upper()}"


FLAGS: tuple[Flag, ...] = (
    Flag("account", str, "ACCOUNT", "project or allocation charged for the batch jobs"),
    Flag("queue", str, "QUEUE", "PBS queue, Slurm partition (generic slurm), QOS (perlmutter), or "
         "batch / extended / debug (frontier)"),
    Flag("qos", str, "QOS", "Slurm QOS (generic slurm site)"),
    Flag("constraint", str, "CONSTRAINT", "Slurm node constraint (perlmutter: gpu)"),
    Flag("nodes", int, "N", "nodes in all (default: enough for one worker slot per worker)"),
    Flag("nodes_per_block", int, "N", "nodes per batch job; larger requests become several jobs"),
    Flag("walltime", parse_walltime, "H:MM:SS", "walltime of each batch job: H:MM:SS, seconds, or 3h / 90m"),
    Flag("worker_init", str, "COMMANDS", "shell commands that set up each job's environment"),
    Flag("interface", str, "IFACE", "network interface of this host that compute nodes reach (polaris: bond0; "
         "aurora, frontier, perlmutter: hsn0)"),
    Flag("address", str, "IP", "address compute nodes connect to (instead of --interface)"),
    Flag("filesystems", str, "FS", "filesystems the job needs: polaris (default home:eagle), aurora (home:flare)"),
    Flag("gpus_per_node", int, "N", "GPUs per node, one per worker (generic pbs/slurm)"),
    Flag("workers_per_node", int, "N", "worker slots per node (generic pbs/slurm; default one per GPU)"),
    Flag("cpus_per_node", int, "N", "CPUs per node to request (generic pbs: select ncpus=)"),
    Flag("select_options", str, "RES", "extra PBS select resources (generic pbs)"),
    Flag("scheduler_options", str, "LINES", "extra #PBS / #SBATCH lines for the job script"),
    Flag("launcher_overrides", str, "ARGS", "extra mpiexec / srun arguments (generic pbs/slurm)"),
    Flag("cpu_affinity", str, "POLICY", "Parsl cpu_affinity for the workers"),
    Flag("retries", int, "N", "relaunches of a worker whose node or task was lost"),
    Flag("endpoint", str, "UUID", "Globus Compute endpoint (globus-compute)"),
)
FLAGS_BY_NAME = {flag.name: flag for flag in FLAGS}


def _argparse_type(flag: Flag) -> Callable[[str], Any]:
    """The converter, reporting its own message through argparse instead of 'invalid value'."""

    def convert(text: str) -> Any:
        try:
            return flag.convert(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag.flag}: {exc}") from None

    convert.__name__ = flag.name
    return convert


def add_site_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add every site flag (each also read from ``ADBO_<NAME>``), ``--site-option`` and ``--dry-run``.

    A flag the parser already defines (a workflow's own ``--walltime`` in seconds, say) is kept
    as it is; ``site_options_from_args`` reads its value all the same.
    """
    group = parser.add_argument_group(
        "site options",
        "used by the batch and remote sites; `--site NAME --help` lists what NAME needs. "
        "Each flag can also be set by the environment variable in brackets.",
    )
    added = [flag.name for flag in FLAGS
             if _add(group, flag.flag, dest=flag.name, type=_argparse_type(flag), metavar=flag.metavar,
                     default=None, help=f"{flag.help} [{flag.env}]")]
    _add(group, "--site-option", dest="site_option", action="append", default=None, metavar="KEY=VALUE",
         help="any other option of the site's make_config (repeatable; VALUE may be JSON)")
    _add(group, "--dry-run", dest="dry_run", action="store_true",
         help="print the batch script Parsl would submit for this site, submit nothing, and exit")
    parser.set_defaults(_adbo_site_flags=tuple(added))
    return group


def _add(group: argparse._ArgumentGroup, *names: str, **kwargs: Any) -> bool:
    try:
        group.add_argument(*names, **kwargs)
    except argparse.ArgumentError:
        return False  # the workflow defines this flag itself
    return True


def site_accepts(site: str) -> dict[str, Option]:
    """The options ``site`` takes: its documented OPTIONS, or its make_config's keyword arguments."""
    module = load_site(site)
    documented = getattr(module, "OPTIONS", None)
    if documented is not None:
        return dict(documented)
    found: dict[str, Option] = {}
    for name, param in inspect.signature(module.make_config).parameters.items():
        if name in ("workers", "run_dir") or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = REQUIRED if param.default is param.empty else param.default
        found[name] = Option("", default, f"ADBO_{name.upper()}" if name in FLAGS_BY_NAME else None)
    return found


def site_options_from_args(site: str, args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``site``'s make_config from parsed flags, then ``ADBO_*`` variables.

    Options the site does not take are left out; a flag given explicitly for such an option is
    reported with a warning rather than silently ignored.
    """
    environ = os.environ if environ is None else environ
    accepted = site_accepts(site)
    ours = set(getattr(args, "_adbo_site_flags", FLAGS_BY_NAME))
    options: dict[str, Any] = {}
    for flag in FLAGS:
        takes = flag.name in accepted and accepted[flag.name].cli
        value = getattr(args, flag.name, None)
        if value is not None:
            if takes:
                options[flag.name] = value
            elif flag.name in ours and flag.name != "walltime":  # local sites: --walltime counts from now
                print(f"adbo: site {site!r} does not use {flag.flag}; it was ignored "
                      f"(see `--site {site} --help`)", file=sys.stderr)
            continue
        text = environ.get(flag.env, "").strip()
        if takes and text:
            options[flag.name] = _convert_env(flag, text)
    for item in getattr(args, "site_option", None) or []:
        key, value = _parse_site_option(item)
        if key not in accepted or key == "executor":
            raise ValueError(f"site {site!r} has no option {key!r}; it takes: {', '.join(sorted(accepted)) or 'none'}")
        options[key] = value
    return options


def _convert_env(flag: Flag, text: str) -> Any:
    try:
        return flag.convert(text.strip())
    except ValueError as exc:
        raise ValueError(f"environment variable {flag.env}={text!r}: {exc}") from None


def _parse_site_option(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise ValueError(f"--site-option expects KEY=VALUE, got {item!r}")
    if key in FLAGS_BY_NAME:
        return key, FLAGS_BY_NAME[key].convert(text)
    try:
        return key, json.loads(text)
    except ValueError:
        return key, text


def default_workers(site: str, options: Mapping[str, Any]) -> int | None:
    """Workers that fill the nodes asked for (``--nodes 480`` on Polaris: 1920), if the site knows."""
    module = load_site(site)
    nodes = options.get("nodes")
    slots = getattr(module, "slots_per_node", None)
    if nodes is None or slots is None:
        return None
    return int(nodes) * int(slots(**options))


def allocation_seconds(site: str, options: Mapping[str, Any]) -> float | None:
    """Seconds one batch job of ``site`` lasts with these options (None: unknown or unlimited)."""
    module = load_site(site)
    fn = getattr(module, "allocation_seconds", None)
    return None if fn is None else fn(**options)


# --------------------------------------------------------------------------------------------
# Help
# --------------------------------------------------------------------------------------------


def describe_site(name: str) -> str:
    """What a site is and every option it takes: flag, environment variable, default, meaning."""
    module = load_site(name)
    site = name.replace("_", "-")
    lines = [f"site {site}: {getattr(module, 'DESCRIPTION', '')}".rstrip(), ""]
    options = site_accepts(site)
    if options:
        lines.append("options (flag, environment variable, default):")
        for key, opt in options.items():
            lines.append(_option_line(key, opt))
    else:
        lines.append("no options")
    notes = getattr(module, "NOTES", "")
    if notes:
        lines += ["", notes]
    example = getattr(module, "EXAMPLE", "")
    if example:
        lines += ["", f"example: python workflows/synthetic_hpo.py {example}"]
    return "\n".join(lines)


def _option_line(key: str, opt: Option) -> str:
    if not opt.cli:
        where = f"(Python only: site_options={{{key!r}: ...}})"
    elif key in FLAGS_BY_NAME:
        where = f"{FLAGS_BY_NAME[key].flag} / {FLAGS_BY_NAME[key].env}"
    else:
        where = f"--site-option {key}=..."
    help_text = opt.help or "(see the site's make_config)"
    if opt.default is REQUIRED:
        help_text += "; required"
    elif opt.default not in (None, ""):
        help_text += f"; default {opt.default!r}"
    return f"  {where}\n      {help_text}"


def site_help_requested(argv: Sequence[str]) -> str | None:
    """``describe_site`` text when argv asks for help about a named site (``--site X --help``)."""
    argv = list(argv)
    if not any(arg in ("-h", "--help") for arg in argv):
        return None
    for i, arg in enumerate(argv):
        if arg == "--site" and i + 1 < len(argv):
            return describe_site(argv[i + 1])
        if arg.startswith("--site="):
            return describe_site(arg.split("=", 1)[1])
    return None


# --------------------------------------------------------------------------------------------
# Dry run
# --------------------------------------------------------------------------------------------

DRY_RUN_JOB_ID = "Submitted batch job 0"
"""What the dry run's stand-in for qsub/sbatch answers: Slurm's format; PBS takes any line as an id."""


def dry_run(site: str, workers: int, run_dir: str, **options: Any) -> str:
    """The batch script this site's Parsl provider would submit for block 0, submitting nothing.

    The config is built exactly as a launch builds it; the executor composes its worker-pool
    command and the provider writes its real script through its own template. Only the
    scheduler command (qsub, sbatch) is not run: it is recorded and shown instead.
    """
    module = load_site(site)
    hook = getattr(module, "dry_run_text", None)
    if hook is not None:
        return hook(workers, run_dir, **options)
    notes: list[str] = []
    try:
        config = module.make_config(workers=workers, run_dir=run_dir, **options)
    except InterfaceNotFound as exc:
        config = module.make_config(workers=workers, run_dir=run_dir, **{**options, "address": "192.0.2.1"})
        notes.append(f"{exc}; 192.0.2.1 stands in for that address below")
    executor = config.executors[0]
    provider = getattr(executor, "provider", None)
    if not isinstance(provider, ClusterProvider):  # others (LocalProvider) would start processes
        return (f"# site {site.replace('_', '-')} runs on this machine; there is no batch script.\n"
                f"# {getattr(module, 'DESCRIPTION', '')}")
    plan = getattr(module, "plan", None)
    if plan is not None:
        notes.insert(0, plan(workers, **options).summary())
    return _render(site, workers, run_dir, config.run_dir, executor, provider, notes)


def _render(site: str, workers: int, run_dir: str, parsl_root: str, executor: Any, provider: Any, notes: list[str]) -> str:
    parsl_run_dir = _next_parsl_run_dir(parsl_root)
    final_dir = os.path.join(parsl_run_dir, "submit_scripts")
    commands: list[str] = []

    def record(cmd: str, timeout: int | None = None) -> tuple[int, str, str]:
        commands.append(cmd)
        return 0, DRY_RUN_JOB_ID + "\n", ""

    with tempfile.TemporaryDirectory(prefix="adbo-dry-run-") as tmp:
        _prepare_like_parsl(executor, provider, parsl_run_dir, tmp)
        provider.execute_wait = record  # the scheduler boundary: record the command, run nothing
        provider.submit(executor._get_launch_command("0"), 1, f"parsl.{executor.label}.block-0")
        (script_name,) = [n for n in os.listdir(tmp) if n.startswith("parsl.")]
        with open(os.path.join(tmp, script_name)) as f:
            script = f.read().replace(tmp, final_dir)
        submit = [c.replace(tmp, final_dir) for c in commands]
    header = [f"# adbo dry run: site {site.replace('_', '-')}, {workers} workers, run directory {os.path.abspath(run_dir)}"]
    header += [f"# {note}" for note in notes]
    header += [f"# submit command: {cmd}" for cmd in submit]
    header.append("# nothing was submitted; WORKER_PORT is chosen by Parsl's interchange when the run starts")
    return "\n".join(header) + "\n" + script


def _prepare_like_parsl(executor: Any, provider: Any, parsl_run_dir: str, script_dir: str) -> None:
    """Set what Parsl's DataFlowKernel and executor.start() set before the first block is launched."""
    executor.run_dir = parsl_run_dir
    provider.script_dir = script_dir
    if not hasattr(executor, "logconf_path"):
        executor.logconf_path = None
    if getattr(executor, "encrypted", False) and getattr(executor, "cert_dir", None) is None:
        executor.cert_dir = os.path.join(executor.logdir, "certificates")
    if getattr(executor, "worker_port", None) is None:
        executor.worker_port = "WORKER_PORT"
    executor.initialize_scaling()


def _next_parsl_run_dir(root: str) -> str:
    """The numbered directory Parsl will create under ``root`` (as parsl.dataflow.rundirs does)."""
    try:
        numbers = [int(n) for n in os.listdir(root) if re.fullmatch(r"\d+", n)]
    except OSError:
        numbers = []
    return os.path.join(os.path.abspath(root), f"{max(numbers) + 1 if numbers else 0:03d}")

