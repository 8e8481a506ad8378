#!/usr/bin/env python
"""Decentralized BO of a synthetic test function (Ackley, Branin, Hartmann6, Levy, Griewank,
Schwefel) on any site: the quickest way to see adbo work, and its benchmark workload.

Example:  python workflows/synthetic_hpo.py --problem ackley --dim 5 --site local --workers 4 \
              --max-evals 200 --run-dir runs/ackley5
"""

from __future__ import annotations

import argparse
import math
import sys

import adbo
from adbo.objectives.synthetic import PROBLEMS, SyntheticObjective
from adbo.workflow_cli import add_launch_arguments, print_site_help_if_asked, resolve_launch


def parse_eval_time(text: str) -> tuple[float, float]:
    try:
        mean, std = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MEAN,STD in seconds (for example 60,20), got {text!r}") from None
    if not (math.isfinite(mean) and math.isfinite(std)) or mean < 0 or std < 0:
        raise argparse.ArgumentTypeError(f"MEAN and STD must be finite numbers >= 0, got {text!r}")
    return mean, std


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problem", default="ackley", choices=sorted(PROBLEMS), help="test function (default: ackley)")
    p.add_argument("--dim", type=int, default=None,
                   help="dimension of ackley, levy, griewank, schwefel (default: 5; branin is 2-D, hartmann6 6-D)")
    p.add_argument("--eval-time", type=parse_eval_time, default=None, metavar="MEAN,STD",
                   help="simulated evaluation time ~ N(MEAN, STD) seconds, as the paper's 60,20 (default: none)")
    p.add_argument("--surrogate", default="gp_then_trees",
                   choices=["extra_trees", "random_forest", "gp", "gp_then_trees"],
                   help="surrogate model (default: gp_then_trees, a GP up to 200 results, then extra_trees)")
    p.add_argument("--n-initial", type=int, default=10,
                   help="space-filling evaluations before the surrogate is used (default: 10)")
    add_launch_arguments(p, run_dir_default="runs/synthetic", max_evals_default=200)
    return p


def main(argv: list[str] | None = None) -> int:
    if print_site_help_if_asked(argv):
        return 0
    args = build_parser().parse_args(argv)
    try:
        dim = args.dim if args.dim is not None or PROBLEMS[args.problem].fixed_dim else 5
        objective = SyntheticObjective(args.problem, dim, eval_time=args.eval_time, seed=args.seed)
        launch_kwargs = resolve_launch(args)
        if launch_kwargs is None:
            return 0  # --dry-run printed the batch script
        result = adbo.launch(
            objective,
            objective.space(),
            args.run_dir,
            direction="minimize",
            surrogate=args.surrogate,
            n_initial=args.n_initial,
            **launch_kwargs,
        )
    except (ValueError, adbo.RunDirectoryError) as exc:
        print(f"synthetic_hpo: {exc}", file=sys.stderr)
        return 2
    except adbo.ObjectiveLoadError as exc:
        print(f"synthetic_hpo: {exc}", file=sys.stderr)
        return 1
    print(adbo.format_summary(result))
    print(f"known optimum:        {objective.optimum}")
    return adbo.exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
