#!/usr/bin/env python
"""Decentralized BO of the CANDLE Pilot1 Combo benchmark (PyTorch) over its 22 hyperparameters:
the project's main job. Each worker trains Combo models and reports their validation R2.

Every evaluation reports its validation R2 after each epoch; by default (--stopper asha) a
training whose curve ranks in the worst two thirds of the run's curves at epochs 1, 3, 9, 27 stops
there, so most of the allocation goes to the configurations worth training to the end.

Offline demo (a few minutes on 2 cores, generated data in the real file formats):
    python workflows/candle_hpo.py --site local --workers 4 --max-evals 16 --epochs 5 --timeout 45 --max-rows 2000 --data synthetic

The real benchmark (the public CANDLE files, 50 epochs, 30-minute timeout, as in the ADBO paper):
    python workflows/candle_hpo.py --site local --workers 4 --max-evals 200 --data download

On machines without internet (Polaris compute nodes), stage the files first (docs/candle.md) and
pass --data DIRECTORY, or run with --prepare-only on a login node to download and preprocess.
Batch sites take the shared site flags (`--site polaris --help` lists them; --dry-run shows the job).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import adbo
from adbo.objectives.candle_combo import ComboObjective, check_device_here, combo_space
from adbo.objectives.candle_data import (
    DATA_URL,
    SYNTHETIC_PRESETS,
    DataError,
    default_cache_dir,
    load_dataset,
    resolve_data,
)
from adbo.workflow_cli import add_launch_arguments, print_site_help_if_asked, resolve_launch

LOCAL_SITES = {"local", "local-threads", "local_threads", "local-processes", "local_processes"}


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text!r}")
    return value


def _set_default(parser: argparse.ArgumentParser, dest: str, default, help_text: str) -> None:
    """Change a shared flag's default (and its help) for this workflow."""
    for action in parser._actions:
        if action.dest == dest:
            action.default = default
            action.help = help_text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=positive_int, default=50, help="maximum training epochs per evaluation (default: 50)")
    p.add_argument("--data", default="synthetic", metavar="download|synthetic|PATH",
                   help="'download' the public CANDLE files into --data-cache, 'synthetic' generate files in the "
                        "same formats, or a directory holding the five staged files (default: synthetic)")
    g = p.add_argument_group("data")
    g.add_argument("--data-cache", default=None,
                   help=f"downloads, generated data and parsed arrays (default: $ADBO_CANDLE_CACHE or {default_cache_dir()})")
    g.add_argument("--synthetic-size", default="demo", choices=sorted(SYNTHETIC_PRESETS),
                   help="size of --data synthetic: tiny, small, demo (about 5,700 rows) or full (the real sizes) (default: demo)")
    g.add_argument("--synthetic-seed", type=int, default=0, help="seed of the generated data (default: 0)")
    g.add_argument("--max-rows", type=positive_int, default=None,
                   help="use a seeded random subset of this many (cell, drug, drug) rows (default: all)")
    g.add_argument("--split-seed", type=int, default=2017, help="seed of the 60/20/20 row split (default: 2017, the original's)")
    g.add_argument("--data-url", default=DATA_URL, help=f"where --data download fetches from (default: {DATA_URL})")
    g.add_argument("--no-data-manifest", action="store_true",
                   help="check downloads only against the size the server declares, not the built-in manifest")
    g.add_argument("--prepare-only", action="store_true",
                   help="download or generate the data, parse it into the cache, print its summary and exit")
    t = p.add_argument_group("training")
    t.add_argument("--device", default="auto",
                   help="auto (the worker's GPU from CUDA_VISIBLE_DEVICES, else CPU), cpu, cuda or cuda:N (default: auto)")
    t.add_argument("--amp", default="off", choices=["off", "auto", "bf16", "fp16"],
                   help="mixed precision (default: off)")
    t.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads per worker (default on local sites: cores // workers, at least 1; "
                        "$ADBO_TORCH_THREADS overrides)")
    t.add_argument("--permanent-dropout", action="store_true",
                   help="keep dropout on at inference, as the original Keras code does")
    s = p.add_argument_group("surrogate")
    s.add_argument("--surrogate", default="gp_then_trees",
                   choices=["extra_trees", "random_forest", "gp", "gp_then_trees"],
                   help="surrogate model (default: gp_then_trees, a GP up to 200 results, then extra_trees)")
    s.add_argument("--n-initial", type=positive_int, default=10,
                   help="space-filling evaluations before the surrogate is used (default: 10)")
    add_launch_arguments(p, run_dir_default="runs/candle", max_evals_default=100, stopper_default="asha")
    _set_default(p, "timeout", 1800.0, "per-evaluation timeout in seconds; training stops itself min(60 s, 10%%) "
                                       "earlier and reports what it has (default: 1800)")
    return p


def time_budget(timeout: float | None) -> float | None:
    """Training stops itself this long after it starts, leaving time to score the model."""
    if timeout is None:
        return None
    return max(timeout * 0.5, timeout - min(60.0, 0.1 * timeout))


def default_threads(site: str, workers: int) -> int | None:
    if site not in LOCAL_SITES:
        return None  # an HPC site's workers own their node's cores or GPU
    return max(1, (os.cpu_count() or 1) // workers)


def _progress_printer():
    last = {"t": 0.0}

    def show(name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - last["t"] < 2.0 and (total is None or done < total):
            return
        last["t"] = now
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"candle_hpo: downloading {name}: {done / 1e6:,.1f} MB{pct}", file=sys.stderr, flush=True)

    return show


def best_metadata(result) -> dict:
    """The stored metadata (validation and test R2, epochs, ...) of the best evaluation."""
    eval_id = result.summary.get("best_eval_id")
    if not eval_id:
        return {}
    df = result.results()
    rows = df[df.eval_id == eval_id]
    if rows.empty:
        return {}
    row = rows.iloc[-1]
    meta = {}
    for col in df.columns:
        if col.startswith("metadata_"):
            value = row[col]
            meta[col[len("metadata_"):]] = value.item() if hasattr(value, "item") else value
    return meta


def _fmt(value, spec: str) -> str:
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "?"


def main(argv: list[str] | None = None) -> int:
    if print_site_help_if_asked(argv):
        return 0
    args = build_parser().parse_args(argv)
    try:
        launch_kwargs = resolve_launch(args)
        if launch_kwargs is not None and launch_kwargs["site"] in LOCAL_SITES:
            check_device_here(args.device)
    except ValueError as exc:
        print(f"candle_hpo: {exc}", file=sys.stderr)
        return 2
    if launch_kwargs is None:
        return 0  # --dry-run printed the batch script
    cache = args.data_cache or str(default_cache_dir())
    try:
        data_dir, label = resolve_data(
            args.data, cache, synthetic_size=args.synthetic_size, seed=args.synthetic_seed, base_url=args.data_url,
            check_manifest=not args.no_data_manifest,
            progress=_progress_printer() if args.data == "download" else None,
        )
        t0 = time.perf_counter()
        dataset = load_dataset(data_dir, cache)  # parse once here; workers reuse the cached arrays
    except DataError as exc:
        print(f"candle_hpo: {exc}", file=sys.stderr)
        return 2
    summary = dataset.summary()
    print(f"candle_hpo: data {label} ({data_dir}): {summary['rows']:,} rows, {summary['cells']} cells, "
          f"{summary['drugs']} drugs, {summary['genes']} genes, {summary['descriptors']} descriptors "
          f"(ready in {time.perf_counter() - t0:.1f} s)", flush=True)
    if args.prepare_only:
        print(json.dumps({"data_dir": str(data_dir), "label": label, **summary}, indent=1))
        return 0
    threads = args.threads or default_threads(launch_kwargs["site"], launch_kwargs["workers"])
    if launch_kwargs["stopper"] != "none":  # a full training: nothing is stopped at its last epoch
        launch_kwargs["stopper_options"].setdefault("max_step", float(args.epochs))
    try:
        objective = ComboObjective(
            data_dir, data_label=label, cache_dir=cache, epochs=args.epochs,
            time_budget=time_budget(launch_kwargs["eval_timeout"]), max_rows=args.max_rows,
            split_seed=args.split_seed, device=args.device, amp=args.amp, threads=threads, seed=args.seed,
            permanent_dropout=args.permanent_dropout,
        )
        objective.split()  # fail here if the rows cannot be split
        result = adbo.launch(objective, combo_space(), args.run_dir, direction="maximize", surrogate=args.surrogate,
                             n_initial=args.n_initial, **launch_kwargs)
    except (ValueError, DataError, adbo.RunDirectoryError) as exc:
        print(f"candle_hpo: {exc}", file=sys.stderr)
        return 2
    except adbo.ObjectiveLoadError as exc:
        print(f"candle_hpo: {exc}", file=sys.stderr)
        return 1
    print(adbo.format_summary(result, best_params=False))
    if result.n_ok:
        meta = best_metadata(result)
        print(f"best validation R2:   {_fmt(meta.get('val_r2', result.best_value), '.4f')} "
              f"(test R2 {_fmt(meta.get('test_r2'), '.4f')}, {_fmt(meta.get('epochs'), '.0f')} epochs, "
              f"{_fmt(meta.get('n_params'), ',.0f')} parameters, {_fmt(meta.get('train_seconds'), '.1f')} s of training)")
        print("best configuration:")
        print(json.dumps(result.best_params, indent=1, sort_keys=True, default=str))
    return adbo.exit_code(result)


if __name__ == "__main__":
    sys.exit(main())
