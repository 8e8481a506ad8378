"""Launching a search: create the run directory, start N long-lived workers through Parsl,
watch the run directory for progress, and summarize.

The launcher is not a manager: it never proposes anything and the workers never talk to it.
It can be killed and relaunched; the workers' results are already on disk.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import parsl
from parsl import python_app
from tqdm.auto import tqdm

from .evaluation import Objective, objective_identity, resolve_objective
from .results import BUDGET_STATUSES, summarize
from .space import SearchSpace
from .storage import FAILED, OK, STOP_FILE, TIMEOUT, ResultTable, SegmentReader, open_run
from .proposer import Proposer, ProposerSettings
from .surrogate import make_surrogate
from .worker import WorkerSettings


@python_app
def _worker_app(run_dir: str, worker_id: int, objective: Any, settings: dict) -> dict:
    from adbo.worker import run_worker as entry

    return entry(run_dir, worker_id, objective, settings)


@dataclass
class RunSummary:
    """What a finished (or stopped) search produced; ``summary`` holds ``adbo status``'s figures."""

    run_dir: str
    summary: dict[str, Any]
    worker_reports: list[dict[str, Any]] = field(default_factory=list)
    worker_errors: dict[int, str] = field(default_factory=dict)

    @property
    def best_params(self) -> dict[str, Any] | None:
        return self.summary.get("best_params")

    @property
    def best_value(self) -> float | None:
        return self.summary.get("best_objective")

    def results(self):
        """All evaluations as a pandas DataFrame (see ``adbo.load_results``)."""
        from .results import load_results

        return load_results(self.run_dir)


def _ensure_parsl_scripts_on_path() -> None:
    """Parsl starts its interchange and worker pool as console scripts found on PATH.

    ``venv/bin/python workflow.py`` without an activated environment leaves them off PATH and
    Parsl fails with "No such file or directory: 'interchange.py'"; the scripts live beside the
    interpreter, so put that directory first.
    """
    bindir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + path


class _Monitor:
    """Progress from the run directory alone, scanning at most once per ``interval`` seconds."""

    def __init__(self, run_dir: str, run_id: str, dim: int, maximize: bool, budget: int | None, workers: int, show: bool):
        self.reader = SegmentReader(run_dir, run_id, dim)
        self.table = ResultTable(dim, keep_rows=False)
        self.maximize = maximize
        self.workers = workers
        self.bar = tqdm(total=budget, desc="evaluations", unit="eval", disable=not show, dynamic_ncols=True)
        self.started: set[int] = set()

    def update(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            for batch in self.reader.scan_batches(with_text=False):
                self.table.upsert_batch(batch)
        _, y, st = self.table.view()
        done = int(np.isin(st, BUDGET_STATUSES).sum())
        ok = st == OK
        best = None
        if ok.any():
            best = float(np.max(y[ok]) if self.maximize else np.min(y[ok]))
        failures = int(np.isin(st, (FAILED, TIMEOUT)).sum())
        w = self.table.worker[: len(self.table)]
        self.started.update(int(v) for v in np.unique(w))
        active = len({int(v) for v in w[st == 0]})
        if self.bar.total is not None and done > self.bar.total:
            self.bar.total = done  # workers already in flight when the budget filled still finish
        self.bar.n = done
        self.bar.set_postfix(best=f"{best:.6g}" if best is not None else "-", failures=failures,
                             active=f"{active}/{self.workers}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def launch(
    objective: "Objective | str",
    space: "SearchSpace | Mapping[str, Any]",
    run_dir: str | os.PathLike,
    *,
    site: str = "local",
    workers: int = 4,
    max_evals: int | None = 100,
    direction: str = "maximize",
    eval_timeout: float | None = None,
    walltime: float | None = None,
    walltime_margin: float = 60.0,
    seed: int = 0,
    n_initial: int = 10,
    surrogate: str = "extra_trees",
    kappa_mean: float = 1.96,
    decay_period: int = 48,
    decay_rate: float = 0.1,
    proposer_options: Mapping[str, Any] | None = None,
    overlap: bool = False,
    site_options: Mapping[str, Any] | None = None,
    group_access: bool = False,
    progress: bool = True,
    startup_timeout: float = 120.0,
    poll_interval: float = 1.0,
) -> RunSummary:
    """Run a decentralized BO search and return its summary. The one call users need.

    ``objective`` is a callable taking a dict of parameters (or a ``"module:function"`` string)
    returning a float or a dict with ``"objective"`` and extra metadata. ``space`` is a
    ConfigSpace ``ConfigurationSpace`` or adbo's dict shorthand. ``site`` names a module of
    ``adbo.site_configs`` ("local", "local-threads", ...). Relaunching with the same
    ``run_dir``, space and objective resumes the search; ``max_evals`` counts what is stored.
    ``walltime`` (seconds from now) stops workers from starting evaluations that cannot finish;
    on batch sites the allocation's own walltime does the same from each worker's start, keeping
    ``walltime_margin`` seconds in hand.
    """
    from .site_configs import load_site

    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if max_evals is not None and max_evals < 1:
        raise ValueError(f"max_evals must be at least 1, got {max_evals}")
    if eval_timeout is not None and eval_timeout <= 0:
        raise ValueError(f"the evaluation timeout must be positive, got {eval_timeout}")
    resolve_objective(objective)  # fail here, not in N workers, if it cannot be imported
    search_space = space if isinstance(space, SearchSpace) else SearchSpace(space)
    make_surrogate(surrogate, seed=0)  # an unknown name fails here with the list of known ones
    run_dir = os.path.abspath(os.fspath(run_dir))
    site_module = load_site(site)  # an unknown site or bad options fail before anything is created
    options = dict(site_options or {})
    config = site_module.make_config(workers=workers, run_dir=run_dir, **options)
    allocation_of = getattr(site_module, "allocation_seconds", None)
    allocation = allocation_of(**options) if callable(allocation_of) else None
    settings = WorkerSettings(
        max_evals=max_evals,
        deadline=(time.time() + walltime) if walltime else None,
        allocation_s=allocation,
        walltime_margin_s=walltime_margin,
        eval_timeout=eval_timeout,
        n_initial=n_initial,
        surrogate=surrogate,
        kappa_mean=kappa_mean,
        decay_period=decay_period,
        decay_rate=decay_rate,
        seed=seed,
        overlap=overlap,
    )
    for key, value in dict(proposer_options or {}).items():
        if key not in {f.name for f in fields(ProposerSettings)}:
            raise ValueError(f"unknown proposer option {key!r}; known: {sorted(f.name for f in fields(ProposerSettings))}")
        setattr(settings, key, value)
    Proposer(search_space, settings=settings.proposer_settings())  # bad options fail before anything starts
    info = open_run(run_dir, search_space, objective_identity(objective), direction,
                    settings={**settings.to_dict(), "workers": workers, "site": site}, group_access=group_access)
    stop_file = Path(run_dir) / STOP_FILE
    if stop_file.exists():
        stop_file.unlink()  # a STOP left by the previous launch must not end this one at once
    _ensure_parsl_scripts_on_path()

    monitor = _Monitor(run_dir, info.run_id, search_space.dim, direction == "maximize", max_evals, workers, progress)
    reports: list[dict[str, Any]] = []
    errors: dict[int, str] = {}
    first_start: float | None = None
    warned_startup = False
    try:
        with parsl.load(config):
            futures = [_worker_app(run_dir, i, objective, settings.to_dict()) for i in range(workers)]
            try:
                while not all(f.done() for f in futures):
                    time.sleep(poll_interval)
                    monitor.update()
                    if monitor.started and first_start is None:
                        first_start = time.time()
                    # Batch jobs may queue for hours: the clock starts when the first worker does.
                    if (not warned_startup and first_start is not None and len(monitor.started) < workers
                            and time.time() - first_start > startup_timeout):
                        warned_startup = True
                        tqdm.write(
                            f"adbo: only {len(monitor.started)} of {workers} workers have started "
                            f"{startup_timeout:.0f} s after the first; the site may have fewer worker slots than "
                            f"workers (check max_workers_per_node / cores_per_worker, nodes and blocks) or "
                            f"some blocks are still queued; see {run_dir}/logs/parsl"
                        )
            except KeyboardInterrupt:
                stop_file.touch()
                tqdm.write("adbo: interrupted; workers stop after their current evaluation "
                           "(press Ctrl-C again to abort; relaunch the same command to resume)")
                while not all(f.done() for f in futures):
                    time.sleep(poll_interval)
                    monitor.update()
            for i, fut in enumerate(futures):
                exc = fut.exception()
                if exc is None:
                    reports.append(fut.result())
                else:
                    errors[i] = f"{type(exc).__name__}: {exc}"
    finally:
        monitor.update()
        monitor.close()
        parsl.clear()
    summary = summarize(run_dir)
    return RunSummary(run_dir, summary, reports, errors)


def format_summary(result: RunSummary) -> str:
    s = result.summary
    lines = [
        f"run directory:        {result.run_dir}",
        f"evaluations:          {s['evaluations']} ({s['failures']} failed, {s['interrupted']} interrupted) "
        f"by {s['workers']} workers",
        f"best objective:       {s['best_objective']} ({s['direction']})",
        f"best parameters:      {s['best_params']}",
    ]
    if s.get("utilization") is not None:
        lines.append(f"worker utilization:   {100 * s['utilization']:.1f}%")
    if s.get("evaluations_per_minute"):
        lines.append(f"evaluations / minute: {s['evaluations_per_minute']:.1f}")
    if s.get("median_bo_overhead_s") is not None:
        lines.append(f"median BO step:       {s['median_bo_overhead_s'] * 1000:.1f} ms")
    for worker, err in sorted(result.worker_errors.items()):
        lines.append(f"worker {worker} ended with an error: {err} (see {result.run_dir}/logs)")
    return "\n".join(lines)

