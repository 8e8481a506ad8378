"""The ``adbo`` command: inspect and steer runs from their run directory alone."""

from __future__ import annotations

import argparse
import json
import os
import time
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from .results import load_results, summarize
from .storage import STOP_FILE, RunDirectoryError


def _clean(value: Any) -> Any:
    """NaN and infinity are not JSON: print them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


SKIPPED_SHOWN = 5
"""How many skipped files ``adbo status`` names; ``--json`` lists them all."""


def cmd_status(args: argparse.Namespace) -> int:
    from .digests import describe_shared_reading

    s = summarize(args.run_dir)
    if args.json:
        print(json.dumps(_clean(s), indent=2, sort_keys=True))
        return 0
    budget = f" / {s['max_evals']}" if s.get("max_evals") else ""
    util = f"{100 * s['utilization']:.1f}%" if s.get("utilization") is not None else "-"
    print(f"run {s['run_id'][:8]} ({s['objective']}, {s['direction']})")
    print(f"  launch       {_launch_state(args.run_dir)}")
    stopped = f"  stopped early {s['stopped']}" if s.get("stopped") else ""
    print(f"  evaluations  {s['evaluations']}{budget}  ok {s['ok']}{stopped}  failed {s['failures']}  "
          f"in flight {s['in_flight']}  interrupted {s['interrupted']}")
    print(f"  workers      {s['workers']}   utilization {util}")
    shared = describe_shared_reading(args.run_dir)
    if shared:
        print(f"  reading      {shared}")
    if s["best_objective"] is None:
        print("  best         - (no evaluation has finished successfully yet)")
    else:
        print(f"  best         {s['best_objective']}  {s['best_params']}")
    if s["segments_skipped"]:
        # Name the files and why: a count alone leaves the user to hunt through the shards.
        print(f"  skipped      {s['segments_skipped']} unreadable, foreign or misplaced file(s), left untouched:")
        skipped = list(s["skipped_files"].items())
        for path, why in skipped[:SKIPPED_SHOWN]:
            print(f"    {path}: {why.splitlines()[0] if why else ''}")
        if len(skipped) > SKIPPED_SHOWN:
            print(f"    ... and {len(skipped) - SKIPPED_SHOWN} more (adbo status --json lists them all)")
    return 0


def _launch_state(run_dir: str) -> str:
    """Whether a launch holds the run now, from its lease (a heartbeat every few seconds)."""
    from .lease import HEARTBEAT_S, LEASE_FILE, read_lease

    lease = read_lease(os.path.join(run_dir, LEASE_FILE))
    if lease is None or lease.state == "released":
        return "none running (relaunch the same command to continue)"
    age = time.time() - lease.time
    if age > 3 * HEARTBEAT_S:
        return f"none running: the last one ({lease.host}, pid {lease.pid}) stopped beating {age:.0f} s ago"
    return f"{lease.state}: {lease.describe()}"


def cmd_best(args: argparse.Namespace) -> int:
    s = summarize(args.run_dir)
    if s["best_params"] is None:
        print("no successful evaluation yet", file=sys.stderr)
        return 1
    print(json.dumps(_clean({"objective": s["best_objective"], "params": s["best_params"],
                             "eval_id": s["best_eval_id"]}), indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.optuna_storage:
        try:
            from .optuna_export import export_to_optuna
            import optuna  # noqa: F401
        except ImportError:
            print("adbo: exporting to Optuna needs optuna: .venv/bin/pip install -e '.[optuna]' in the source tree "
                  "(or pip install optuna)", file=sys.stderr)
            return 2
        import optuna

        try:
            name, n = export_to_optuna(args.run_dir, args.optuna_storage, args.study_name)
        except optuna.exceptions.DuplicatedStudyError:
            print(f"adbo: {args.optuna_storage} already holds a study of that name; pass --study-name NEW",
                  file=sys.stderr)
            return 2
        print(f"wrote {n} trials to study {name!r} in {args.optuna_storage}")
        if not args.output:
            return 0
    if not args.output:
        print("adbo: say where to export: -o FILE.csv, -o FILE.parquet or --optuna-storage URL", file=sys.stderr)
        return 2
    out = Path(args.output)
    if not out.parent.is_dir():
        print(f"adbo: cannot write {out}: the directory {out.parent} does not exist; create it or pick another -o",
              file=sys.stderr)
        return 2
    frame = load_results(args.run_dir, include_in_flight=not args.final_only)
    if out.suffix == ".csv":
        frame.to_csv(out, index=False)
    elif out.suffix == ".parquet":
        try:
            frame.to_parquet(out, index=False)
        except ImportError as exc:
            print(f"adbo: writing parquet needs pyarrow ({exc}): install it with `.venv/bin/pip install -e "
                  "'.[parquet]'` in the source tree (or `pip install pyarrow`), or write a .csv file", file=sys.stderr)
            return 2
    else:
        print(f"adbo: cannot tell the format of {out}: use a .csv or .parquet file name", file=sys.stderr)
        return 2
    print(f"wrote {len(frame)} rows to {out}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    summarize(args.run_dir)  # refuse directories that are not runs
    (Path(args.run_dir) / STOP_FILE).touch()
    print(f"workers of {args.run_dir} will stop after their current evaluation")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from .report import write_report
    except ImportError as exc:  # matplotlib or scikit-learn missing from a minimal environment
        print(f"adbo: the report needs matplotlib and scikit-learn ({exc}); pip install matplotlib", file=sys.stderr)
        return 2
    path = write_report(args.run_dir, args.output)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="adbo", description="Inspect and steer adbo runs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="evaluations, failures, workers, best result, utilization")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("best", help="the best parameters and objective, as JSON")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_best)
    p = sub.add_parser("export", help="every evaluation as a table (.csv or .parquet) or into an Optuna storage")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default=None, help="output file; the suffix picks the format")
    p.add_argument("--optuna-storage", default=None, metavar="URL",
                   help="also write the run as a new Optuna study into this storage (e.g. sqlite:///adbo.db), "
                        "for optuna-dashboard and Optuna's plots")
    p.add_argument("--study-name", default=None, help="name of that study (default: adbo-RUNID8)")
    p.add_argument("--final-only", action="store_true", help="leave out evaluations still in flight")
    p.set_defaults(func=cmd_export)
    p = sub.add_parser("report", help="one self-contained HTML page of the search: best value over time and "
                                      "evaluations, busy workers, overheads, best configurations, importance, failures")
    p.add_argument("run_dir")
    p.add_argument("-o", "--output", default=None,
                   help="directory (or .html file) to write to (default: RUN_DIR/report.html)")
    p.set_defaults(func=cmd_report)
    p = sub.add_parser("stop", help="ask every worker to stop after its current evaluation")
    p.add_argument("run_dir")
    p.set_defaults(func=cmd_stop)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunDirectoryError as exc:
        print(f"adbo: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
