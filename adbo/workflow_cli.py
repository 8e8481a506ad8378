"""Command-line pieces every workflow script shares: where to run, how many workers, the budget.

Workflows stay thin: they add their objective's own flags, then call ``launch_from_args``. Site
flags (``--account``, ``--nodes``, ``--walltime`` ...) come from ``adbo.site_options``; each is
also read from an ``ADBO_*`` environment variable, and ``--site NAME --help`` documents them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from .site_configs import available_sites
from .stopping import PARTIAL_MODES, STOPPERS, make_stopper
from .site_options import (
    add_site_arguments,
    allocation_seconds,
    default_workers,
    dry_run,
    site_help_requested,
    site_options_from_args,
)


def add_launch_arguments(parser: argparse.ArgumentParser, run_dir_default: str, max_evals_default: int,
                         stopper_default: str = "none") -> None:
    group = parser.add_argument_group("search")
    group.add_argument("--site", default="local",
                       help=f"where workers run: {', '.join(available_sites())} (default: local); "
                            "`--site NAME --help` lists what NAME needs")
    group.add_argument("--workers", type=int, default=None,
                       help="concurrent BO workers (default: one per GPU of the nodes asked for on batch "
                            "sites, 4 locally)")
    group.add_argument("--max-evals", type=int, default=max_evals_default,
                       help=f"total evaluations across all workers and launches (default: {max_evals_default})")
    group.add_argument("--timeout", type=float, default=None,
                       help="per-evaluation timeout in seconds; a timeout is a failed row (default: none)")
    group.add_argument("--run-dir", default=run_dir_default,
                       help=f"run directory; relaunch with the same one to resume (default: {run_dir_default})")
    group.add_argument("--seed", type=int, default=0, help="seed of the workers' random streams (default: 0)")
    group.add_argument("--overlap", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                       help="scan and propose in a background thread while each evaluation runs: 'on', 'off', or "
                            "'auto', on for a worker whose BO step takes 2%% of its evaluation time or more, yet less "
                            "than all of it (default: auto; a bare --overlap means on)")
    group.add_argument("--no-progress", action="store_true",
                       help="no live bar: a start line and a one-line update every 30 s (the default when "
                            "output goes to a file)")
    group.add_argument("--evaluation", choices=["process", "in-process"], default=None,
                       help="where the objective runs: 'process', a child process per worker (a timeout kills "
                            "it, a crash is a failed row), or 'in-process', in the worker itself (default: "
                            "in-process on local-threads, process elsewhere)")
    group.add_argument("--allow-changed-objective", action="store_true",
                       help="resume a run although the objective's code changed since it started "
                            "(old and new results are then mixed; default: refuse)")
    group.add_argument("--join", action="store_true",
                       help="add these workers to the search another launch is running in --run-dir (for example "
                            "from a second allocation), under worker ids it does not use (default: refuse a run "
                            "directory in use)")
    group.add_argument("--stopper", choices=list(STOPPERS), default=stopper_default,
                       help="stop evaluations early from the learning curves objectives report with "
                            "trial.report(value, step): 'asha' (asynchronous successive halving), 'median' "
                            f"(median rule), 'extrapolate' (power-law fit), or 'none' (default: {stopper_default})")
    group.add_argument("--stopper-options", default="", metavar="KEY=VALUE,...",
                       help="options of the stopper: asha takes min_step (first rung, default 1), reduction "
                            "(keep the best 1/reduction at each rung, default 3), min_peers (curves needed at a "
                            "rung before it stops anything, default 3), max_step (the last step of a full "
                            "evaluation: nothing is stopped there; default: unknown), window (judge against only the "
                            "newest N curves at a rung; default 0: all), finishers (once N evaluations have "
                            "finished, also stop a curve that is worse at a rung than the best N finished ones "
                            "all were there; default 0: off), ranks (0: then judge by that bar alone; default 1); "
                            "every stopper takes protect_best (never stop an evaluation the surrogate predicted "
                            "to beat all but fewer than N of the results it was fitted on; asha: default 3, the others: "
                            "default 0, off); "
                            "median takes min_step, "
                            "min_peers (5), publish_every (3), max_step; extrapolate takes max_step (default: the "
                            "furthest step seen), min_step, reduction, min_points (3), min_peers (3)")
    group.add_argument("--partial-results", choices=list(PARTIAL_MODES), default="rank",
                       help="what the surrogate learns from a stopped evaluation: 'rank' (its rank where it "
                            "stopped, as a quantile of finished values), 'last' (its last value) or 'worst' "
                            "(like a failure) (default: rank)")
    parser.add_argument("--shared-reading", choices=["auto", "on", "off"], default="auto",
                        help="'on': one worker at a time gathers new results into digests in RUN_DIR/digests that "
                             "the others read, so each scan opens a file or two instead of one per peer's new "
                             "result (for hundreds of workers on one metadata server); 'off': every worker reads "
                             "every peer's results; 'auto': on from 128 workers (default: auto)")
    add_site_arguments(parser)


def parse_stopper_options(text: str) -> dict[str, float]:
    """``"min_step=1,reduction=3"`` -> ``{"min_step": 1.0, "reduction": 3.0}``, with a clear error."""
    options: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            options[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--stopper-options: {item!r} is not KEY=NUMBER (e.g. min_step=1,reduction=3)") from None
    return options


def print_site_help_if_asked(argv: Sequence[str] | None) -> bool:
    text = site_help_requested(list(sys.argv[1:] if argv is None else argv))
    if text:
        print(text)
        return True
    return False


def resolve_launch(args: argparse.Namespace) -> dict[str, Any] | None:
    """Keyword arguments for ``adbo.launch`` from the parsed flags, or None after a dry run.

    On batch sites ``--walltime`` is the allocation's length (workers stop before it ends, counted
    from the job's start); on local sites it counts from now.
    """
    options = site_options_from_args(args.site, args)
    workers = args.workers if args.workers is not None else (default_workers(args.site, options) or 4)
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if args.max_evals is not None and args.max_evals < 1:
        raise ValueError(f"--max-evals must be at least 1, got {args.max_evals}")
    if args.timeout is not None and not args.timeout > 0:
        raise ValueError(f"--timeout must be a positive number of seconds, got {args.timeout}")
    if args.seed < 0:
        raise ValueError(f"--seed must be at least 0, got {args.seed}")
    if getattr(args, "n_initial", 1) is not None and getattr(args, "n_initial", 1) < 1:
        raise ValueError(f"--n-initial must be at least 1 (the surrogate needs a result to fit), got {args.n_initial}")
    stopper_options = parse_stopper_options(getattr(args, "stopper_options", "") or "")
    make_stopper(getattr(args, "stopper", "none"), **stopper_options)  # unknown options fail before anything runs
    if getattr(args, "dry_run", False):
        print(dry_run(args.site, workers, args.run_dir, **options))
        return None
    walltime = getattr(args, "walltime", None)
    if allocation_seconds(args.site, options) is not None:
        walltime = None  # the site turns it into each worker's allocation deadline
    return {
        "site": args.site,
        "workers": workers,
        "site_options": options,
        "max_evals": args.max_evals,
        "eval_timeout": args.timeout,
        "walltime": walltime,
        "seed": args.seed,
        "overlap": args.overlap,
        "progress": not args.no_progress,
        "evaluation": args.evaluation,
        "allow_changed_objective": args.allow_changed_objective,
        "join": args.join,
        "stopper": args.stopper,
        "stopper_options": stopper_options,
        "partial_results": args.partial_results,
        "shared_reading": args.shared_reading,
    }
