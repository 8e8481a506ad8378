"""Launching a search: create the run directory, start N long-lived workers through Parsl,
watch the run directory for progress, and summarize.

The launcher is not a manager: it never proposes anything and the workers never talk to it.
It can be killed and relaunched; the workers' results are already on disk.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import parsl
from parsl import python_app

from .budget import BUDGET_DIR
from .digests import shared_reading_wanted
from .evaluation import Objective
from .failures import FailureDigest
from .lease import Lease
from .stopping import check_partial_mode, make_stopper
from .trial import wants_trial
from .objective_ref import ObjectiveLoadError, ObjectiveSpec, package_objective
from .progress import Monitor, say
from .proposer import Proposer, ProposerSettings
from .reaper import MARK_VARIABLE, kill_descendants, start as start_reaper
from .results import summarize
from .runinfo import RUN_FILE, RunDirectoryError, RunInfo, _differences, current_max_workers, reserve_worker_ids
from .space import SearchSpace
from .storage import STOP_FILE, open_run, read_run_info, scan_run
from .surrogate import make_surrogate
from .worker import WorkerSettings, overlap_mode


@python_app
def _worker_app(run_dir: str, worker_id: int, objective: Any, settings: dict) -> dict:
    from adbo.worker import run_worker as entry

    return entry(run_dir, worker_id, objective, settings)


class NoSuccessfulEvaluation(ValueError):
    """Asked for the best result of a search in which no evaluation succeeded."""


@dataclass
class RunSummary:
    """What a finished (or stopped) search produced; ``summary`` holds ``adbo status``'s figures."""

    run_dir: str
    summary: dict[str, Any]
    worker_reports: list[dict[str, Any]] = field(default_factory=list)
    worker_errors: dict[int, str] = field(default_factory=dict)
    interrupted: bool = False
    """True when the search was stopped by Ctrl-C or SIGTERM (workflows exit with 130)."""
    failures: FailureDigest = field(default_factory=FailureDigest)

    @property
    def n_ok(self) -> int:
        return int(self.summary.get("ok") or 0)

    def _require_success(self) -> None:
        if self.summary.get("best_objective") is None:
            raise NoSuccessfulEvaluation(
                f"no evaluation of {self.run_dir} succeeded, so there is no best value. "
                + (f"First error: {self.failures.first_error_tail()}" if self.failures.first_error
                   else "No evaluation has finished yet."))

    @property
    def best_params(self) -> dict[str, Any]:
        """The best configuration; raises NoSuccessfulEvaluation (a ValueError) if none succeeded."""
        self._require_success()
        return self.summary["best_params"]

    @property
    def best_value(self) -> float:
        """The best objective; raises NoSuccessfulEvaluation (a ValueError) if none succeeded."""
        self._require_success()
        return self.summary["best_objective"]

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


EVALUATION_MODES = ("process", "in-process")


def _positive_int(name: str, value: Any, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}; {fix}")


def _check_arguments(workers: Any, max_evals: Any, direction: str, eval_timeout: Any, walltime: Any,
                     n_initial: Any, evaluation: str, seed: Any = 0, walltime_margin: Any = None) -> None:
    """Everything that can be checked before anything is created or started."""
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction must be 'maximize' or 'minimize', got {direction!r}")
    _positive_int("workers", workers, "pass --workers 1 or more")
    if max_evals is not None:
        _positive_int("max_evals", max_evals, "pass --max-evals 1 or more (or None for no limit)")
    _positive_int("n_initial", n_initial, "the surrogate needs at least one result: pass --n-initial 1 or more")
    for name, value in (("the evaluation timeout", eval_timeout), ("walltime", walltime)):
        if value is not None and (not isinstance(value, (int, float)) or not value > 0):
            raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a whole number of at least 0, got {seed!r}")
    if walltime is not None and walltime_margin is not None and walltime <= walltime_margin:
        raise ValueError(f"walltime ({walltime:g} s) leaves no time to evaluate: it must exceed the "
                         f"{walltime_margin:g} s kept in hand before it ends (walltime_margin)")
    if evaluation not in EVALUATION_MODES:
        raise ValueError(f"evaluation must be one of {', '.join(EVALUATION_MODES)}, got {evaluation!r}")


def _check_run_dir(run_dir: str) -> None:
    """A run directory that cannot be used fails here in one line, before anything is created."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"{run_dir} exists and is not a directory; pass a directory path as the run directory")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise RunDirectoryError(f"cannot create {run_dir}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirectoryError(
            f"cannot write to {probe} (read-only filesystem or no permission); choose a run directory you can write to")


def _check_objective_unchanged(run_dir: str, spec: ObjectiveSpec, allow_changed: bool) -> RunInfo | None:
    """The stored run, after refusing an edited objective (results of two codes must not mix)."""
    if not (Path(run_dir) / RUN_FILE).exists():
        return None
    existing = read_run_info(run_dir)
    stored = existing.settings.get("objective_fingerprint")
    if stored and spec.fingerprint and stored != spec.fingerprint and not allow_changed:
        raise RunDirectoryError(
            f"the code of the objective {spec.identity} changed since {run_dir} was started "
            f"(fingerprint {stored} then, {spec.fingerprint} now), so old and new results would mix. Use a new "
            "run directory, or continue anyway with allow_changed_objective=True (--allow-changed-objective). "
            "Nothing in the directory was changed.")
    return existing


class _Signals:
    """Ctrl-C and SIGTERM for the launcher: the first stops the search cleanly, the second aborts.

    Parsl's interchange and worker pool are started while SIGINT is ignored, so they inherit that:
    a terminal's Ctrl-C reaches the whole process group, and they must not die of it before the
    workers have stopped and published their rows.
    """

    def __init__(self, abort: Any) -> None:
        self.count = 0
        self.signum: int | None = None
        self._abort = abort
        self._saved: dict[int, Any] = {}

    def ignore_interrupts(self) -> None:
        """Until ``install``: Parsl's processes inherit "ignore SIGINT", so that a terminal's Ctrl-C
        reaches only the launcher, which stops the workers and then ends those processes itself.
        (They keep SIGTERM: Parsl's own shutdown terminates them with it.)"""
        if threading.current_thread() is threading.main_thread():
            self._saved.setdefault(signal.SIGINT, signal.signal(signal.SIGINT, signal.SIG_IGN))

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._saved.setdefault(sig, signal.signal(sig, self._handle))  # the user's, saved once

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        self.signum = signum
        if self.count > 1:
            self._abort()

    def restore(self) -> None:
        for sig, handler in self._saved.items():
            try:
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
            except (ValueError, TypeError):
                pass
        self._saved.clear()


def _abort_now(since: float, mark: str) -> None:
    """Second Ctrl-C: kill every process this launch started and exit at once (rows on disk stay)."""
    say("adbo: aborting now; evaluations in flight are lost (relaunch the same command to resume)")
    try:
        kill_descendants(os.getpid(), since, grace=1.0, mark=mark)
    except BaseException as exc:  # noqa: BLE001 - exiting anyway; say why something may be left
        say(f"adbo: could not end every process of this launch: {type(exc).__name__}: {exc}")
    finally:
        os._exit(130)


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
    surrogate: str = "gp_then_trees",
    kappa_mean: float = 1.96,
    decay_period: int = 48,
    decay_rate: float = 0.1,
    proposer_options: Mapping[str, Any] | None = None,
    overlap: bool | str = "auto",
    site_options: Mapping[str, Any] | None = None,
    group_access: bool = False,
    progress: bool = True,
    startup_timeout: float = 120.0,
    poll_interval: float = 1.0,
    evaluation: str | None = None,
    allow_changed_objective: bool = False,
    join: bool = False,
    stopper: str = "none",
    stopper_options: Mapping[str, Any] | None = None,
    partial_results: str = "rank",
    shared_reading: str = "auto",
) -> RunSummary:
    """Run a decentralized BO search and return its summary. The one call users need.

    ``objective`` is a callable taking a dict of parameters (or a ``"module:function"`` string)
    returning a float or a dict with ``"objective"`` and extra metadata. ``space`` is a
    ConfigSpace ``ConfigurationSpace`` or adbo's dict shorthand. ``site`` names a module of
    ``adbo.site_configs`` ("local", "local-threads", ...). Relaunching with the same
    ``run_dir``, space and objective resumes the search; ``max_evals`` counts what is stored.
    ``walltime`` (seconds from now) stops workers from starting evaluations that cannot finish;
    on batch sites the allocation's own walltime does the same from each worker's start, keeping
    ``walltime_margin`` seconds in hand. ``evaluation="process"`` runs each worker's objective in a
    child process (a timeout kills it, a crash is a failed row); ``"in-process"`` in the worker;
    the default is the site's (``in-process`` on ``local-threads``, ``process`` elsewhere).
    ``join=True`` adds these workers to the search another launch is running in ``run_dir`` (from
    a second allocation, say) under worker ids that launch does not use; without it, a second
    launch on a run directory in use is refused with a message naming the holder.
    ``stopper`` ends evaluations early from the learning curves objectives report through their
    trial handle (``"asha"``, ``"median"``, ``"extrapolate"``; see ``adbo.stopping`` for
    ``stopper_options``); ``partial_results`` says what the surrogate learns from a stopped one.
    ``shared_reading`` (``"auto"``, ``"on"``, ``"off"``): one worker gathers new results into
    digests the others read, so that a scan opens a file or two rather than one per peer's
    result (``adbo.digests``); ``auto`` turns it on from 128 workers. ``overlap`` (``"auto"``,
    ``"on"``, ``"off"``): compute the next proposal while the evaluation runs; ``auto`` does it
    for a worker whose BO step takes 2% of its evaluation time or more, yet less than all of it.
    """
    from .site_configs import load_site

    if evaluation is None:
        site_module = load_site(site)
        evaluation = getattr(site_module, "DEFAULT_EVALUATION", "process")
    _check_arguments(workers, max_evals, direction, eval_timeout, walltime, n_initial, evaluation, seed,
                     walltime_margin)
    search_space = space if isinstance(space, SearchSpace) else SearchSpace(space)
    make_stopper(stopper, **dict(stopper_options or {}))  # an unknown name or option fails here
    check_partial_mode(partial_results)
    shared_reading_wanted(shared_reading, workers)  # an unknown mode fails here
    overlap = overlap_mode(overlap)
    if stopper != "none" and callable(objective) and not wants_trial(objective):
        say(f"adbo: note: the stopper {stopper!r} has nothing to judge: the objective takes no trial argument "
            "to report its learning curve to (def objective(params, trial): ... trial.report(value, step))")
    spec = package_objective(objective)  # fails here, not in N workers, if it cannot travel
    make_surrogate(surrogate, seed=0)  # an unknown name fails here with the list of known ones
    run_dir = os.path.abspath(os.fspath(run_dir))
    _check_run_dir(run_dir)
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
        evaluation=evaluation,
        workers=workers,
        lease_poll_s=float(min(15.0, max(1.0, workers / 100.0))),
        stopper=stopper,
        stopper_options=dict(stopper_options or {}),
        partial_results=partial_results,
        shared_reading=shared_reading,
    )
    for key, value in dict(proposer_options or {}).items():
        if key not in {f.name for f in fields(ProposerSettings)}:
            raise ValueError(f"unknown proposer option {key!r}; known: {sorted(f.name for f in fields(ProposerSettings))}")
        setattr(settings, key, value)
    Proposer(search_space, settings=settings.proposer_settings())  # bad options fail before anything starts
    existing = _check_objective_unchanged(run_dir, spec, allow_changed_objective)
    if join:
        return _join(run_dir, existing, search_space, spec, direction, config, settings, site, workers, progress,
                     poll_interval, startup_timeout)
    if existing is not None and max_evals is not None:
        done = summarize(run_dir)
        if done["evaluations"] >= max_evals and not _differences(existing, search_space, spec.identity, direction):
            say(f"adbo: {run_dir} already holds {done['evaluations']} evaluations (budget {max_evals}); "
                "nothing to run. Raise --max-evals to continue the search.")
            return _finish(run_dir, [], {}, interrupted=False)

    Path(run_dir).mkdir(mode=0o750 if group_access else 0o700, parents=True, exist_ok=True)
    lease = Lease(run_dir)
    lease.acquire()
    try:
        return _hold_and_run(run_dir, lease, search_space, spec, direction, config, settings, site, workers,
                             group_access, progress, startup_timeout, poll_interval)
    except BaseException:
        lease.release()  # (idempotent) a launch that failed to start must not block the next one
        raise


def _hold_and_run(run_dir: str, lease: Lease, search_space: SearchSpace, spec: ObjectiveSpec, direction: str,
                  config: Any, settings: WorkerSettings, site: str, workers: int, group_access: bool,
                  progress: bool, startup_timeout: float, poll_interval: float) -> RunSummary:
    """The launch that holds the run directory: record it, set the budget, run the workers."""
    info = open_run(run_dir, search_space, spec.identity, direction,
                    settings={**settings.to_dict(), "workers": workers, "site": site,
                              "objective_fingerprint": spec.fingerprint}, group_access=group_access)
    base = summarize(run_dir)["evaluations"]
    settings.launch_file = str(lease.path)
    settings.launch_id = lease.state.launch_id
    if settings.max_evals is not None:
        settings.budget_dir = str(Path(run_dir) / BUDGET_DIR / lease.state.launch_id)
        settings.budget_base = base
        lease.state.budget_dir, lease.state.budget_base = settings.budget_dir, base
        lease.state.max_evals = settings.max_evals
    lease.state.ready = True
    lease.touch()  # joining launches wait for this: they share the ticket directory
    stop_file = Path(run_dir) / STOP_FILE
    if stop_file.exists():
        stop_file.unlink()  # a STOP left by the previous launch must not end this one at once
    _ensure_parsl_scripts_on_path()

    monitor = Monitor(run_dir, info.run_id, search_space.dim, direction == "maximize", settings.max_evals, workers,
                      progress, info.max_workers)
    say(f"adbo: starting {workers} worker{'s' if workers != 1 else ''} on site {site} "
        f"(run directory {run_dir}; {base} evaluations stored)")
    return _run_workers(run_dir, config, spec, settings, range(workers), monitor, lease, startup_timeout,
                        poll_interval)


def _run_workers(run_dir: str, config: Any, spec: ObjectiveSpec, settings: WorkerSettings, worker_ids: range,
                 monitor: Monitor, lease: Lease, startup_timeout: float, poll_interval: float) -> RunSummary:
    """Start the workers through Parsl, watch them, stop them on a signal, and leave nothing behind."""
    reports: list[dict[str, Any]] = []
    errors: dict[int, str] = {}
    load_error: BaseException | None = None
    t_launch = time.time()
    mark = settings.launch_id or uuid.uuid4().hex
    previous_mark = os.environ.get(MARK_VARIABLE)
    os.environ[MARK_VARIABLE] = mark  # every process this launch starts on this host carries it
    signals = _Signals(lambda: _abort_now(t_launch, mark))
    signals.install()  # a Ctrl-C from here on stops the search cleanly (but during Parsl's start)
    reaper = start_reaper(since=t_launch, mark=mark)
    try:
        signals.ignore_interrupts()  # Parsl's processes start now and inherit "ignore SIGINT"
        dfk = parsl.load(config)
        signals.install()
        try:
            futures = [_worker_app(run_dir, i, spec, settings.to_dict()) for i in worker_ids]
            load_error = _watch(futures, monitor, lease, signals, len(worker_ids), startup_timeout, poll_interval,
                                run_dir, quiet_s=max(3.0, 2.0 * settings.lease_poll_s))
            for i, fut in zip(worker_ids, futures):
                if not fut.done():
                    continue  # given up on after a stop (see STOP_GRACE_S)
                exc = fut.exception()
                if exc is None:
                    reports.append(fut.result())
                elif not isinstance(exc, ObjectiveLoadError):
                    errors[i] = f"{type(exc).__name__}: {exc}"
        finally:
            _cleanup_parsl(dfk)
    finally:
        try:
            parsl.clear()
            try:
                monitor.update()
            finally:
                monitor.close()
        finally:
            try:
                lease.release()
                if reaper is not None:
                    reaper.kill()
                    reaper.wait()
                kill_descendants(os.getpid(), t_launch, grace=2.0, mark=mark)  # nothing of this launch outlives it
            finally:
                if previous_mark is None:
                    os.environ.pop(MARK_VARIABLE, None)
                else:
                    os.environ[MARK_VARIABLE] = previous_mark
                signals.restore()
    if load_error is not None:
        raise load_error
    return _finish(run_dir, reports, errors, interrupted=signals.count > 0)


def _join(run_dir: str, existing: RunInfo | None, space: SearchSpace, spec: ObjectiveSpec, direction: str,
          config: Any, settings: WorkerSettings, site: str, workers: int, progress: bool, poll_interval: float,
          startup_timeout: float) -> RunSummary:
    """Add workers to the search another launch holds, under worker ids it does not use."""
    if existing is None:
        raise RunDirectoryError(f"nothing to join in {run_dir}: it holds no search yet; start it without --join")
    problems = _differences(existing, space, spec.identity, direction)
    if problems:
        raise RunDirectoryError(f"cannot join {run_dir}: " + "; ".join(problems) + "; join with the same search")
    lease = Lease(run_dir, join=True)
    lease.acquire()  # refuses when no launch is running there
    try:
        holder = lease.wait_for_holder_ready()
        if holder is None or not holder.ready:
            raise RunDirectoryError(f"the launch holding {run_dir} has not finished starting; join again in a minute")
        first = reserve_worker_ids(run_dir, workers)
        settings.launch_file = str(lease.path)
        settings.launch_id = lease.state.launch_id
        settings.max_evals = holder.max_evals  # one budget for the whole search: the holder's
        settings.budget_dir, settings.budget_base = holder.budget_dir, holder.budget_base
        config.run_dir = os.path.join(run_dir, "logs", f"parsl-join-{lease.state.launch_id[:8]}")
        _ensure_parsl_scripts_on_path()
        monitor = Monitor(run_dir, existing.run_id, space.dim, direction == "maximize", settings.max_evals,
                          workers, progress, current_max_workers(run_dir, existing))
    except BaseException:
        lease.release()
        raise
    say(f"adbo: joining {holder.describe()} with {workers} worker"
        f"{'s' if workers != 1 else ''} (ids {first}-{first + workers - 1}) on site {site}")
    return _run_workers(run_dir, config, spec, settings, range(first, first + workers), monitor, lease,
                        startup_timeout, poll_interval)


CLEANUP_TIMEOUT_S = 20.0
"""Parsl's shutdown waits forever on an interchange that died (a SIGTERM to the whole process
group kills it): past this, the launcher ends Parsl's processes itself; every result is on disk."""
DEAD_INTERCHANGE_CLEANUP_S = 2.0
STOP_GRACE_S = 30.0
"""After a stop, how long the launcher waits for its workers to report back before it ends them."""


def _interchange_died(dfk: Any) -> bool:
    """Whether an executor's interchange process has exited (a signal to the whole process group
    kills it): Parsl's shutdown would then wait for it in vain."""
    for executor in getattr(dfk, "executors", {}).values():
        proc = getattr(executor, "interchange_proc", None)
        if proc is not None and proc.poll() is not None:
            return True
    return False


def _cleanup_parsl(dfk: Any) -> None:
    thread = threading.Thread(target=dfk.cleanup, name="adbo-parsl-cleanup", daemon=True)
    thread.start()
    timeout = DEAD_INTERCHANGE_CLEANUP_S if _interchange_died(dfk) else CLEANUP_TIMEOUT_S
    thread.join(timeout)
    if thread.is_alive():
        say(f"adbo: Parsl did not shut down within {timeout:.0f} s; ending its processes")


def _watch(futures: list, monitor: Monitor, lease: Lease, signals: _Signals, workers: int,
           startup_timeout: float, poll_interval: float, run_dir: str, quiet_s: float = 5.0) -> BaseException | None:
    """Wait for the workers, showing progress; stop them all on a signal or an unloadable objective.

    After a stop, once no worker of this launch has an evaluation in flight for ``quiet_s`` (longer
    than a worker takes to notice the stop), every result is on disk: the launcher stops waiting
    for reports that may never come (a SIGTERM to the process group kills Parsl's interchange,
    which carries them) instead of waiting out ``STOP_GRACE_S``, since batch systems follow their
    SIGTERM with a SIGKILL some 30 s later.
    """
    first_start: float | None = None
    stopped_at: float | None = None
    quiet_since: float | None = None
    warned_startup = stopping = False
    load_error: BaseException | None = None
    while not all(f.done() for f in futures):
        concurrent.futures.wait(futures, timeout=poll_interval)  # returns as soon as all are done
        monitor.update()
        if load_error is None:
            for fut in futures:
                if fut.done() and isinstance(fut.exception(), ObjectiveLoadError):
                    load_error = fut.exception()
                    say(f"adbo: stopping the search: {load_error}")
                    break
        if stopped_at is not None:
            quiet_since = (quiet_since or time.monotonic()) if monitor.active == 0 else None
            if quiet_since is not None and time.monotonic() - quiet_since > quiet_s:
                break
        if stopped_at is not None and time.monotonic() - stopped_at > STOP_GRACE_S:
            say(f"adbo: workers did not report back within {STOP_GRACE_S:.0f} s of the stop; ending them "
                "(their rows are on disk)")
            break
        if (signals.count or load_error is not None) and not stopping:
            stopping = True
            stopped_at = time.monotonic()
            lease.stopping()
            if signals.count:
                name = "Ctrl-C" if signals.signum == signal.SIGINT else "SIGTERM"
                say(f"adbo: {name}: workers abandon their evaluations and stop "
                    "(press Ctrl-C again to abort at once; relaunch the same command to resume)")
        if monitor.started and first_start is None:
            first_start = time.time()
        # Batch jobs may queue for hours: the clock starts when the first worker does.
        if (not warned_startup and first_start is not None and len(monitor.started) < workers
                and time.time() - first_start > startup_timeout):
            warned_startup = True
            say(f"adbo: only {len(monitor.started)} of {workers} workers have started "
                f"{startup_timeout:.0f} s after the first; the site may have fewer worker slots than "
                f"workers (check max_workers_per_node / cores_per_worker, nodes and blocks) or "
                f"some blocks are still queued; see {run_dir}/logs/parsl")
    return load_error


def _finish(run_dir: str, reports: list, errors: dict, interrupted: bool) -> RunSummary:
    _, table, _ = scan_run(run_dir)
    result = RunSummary(run_dir, summarize(run_dir), reports, errors, interrupted, FailureDigest.of(table.rows))
    text = result.failures.report(any_ok=result.n_ok > 0)
    if text:
        say(f"adbo: {text}")
    stopped = result.summary.get("stopped") or 0
    if stopped and not result.n_ok:
        say(f"adbo: no evaluation ran to its end: {stopped} were stopped early and none finished, so there is no "
            "best value yet. Relaunch with a larger --max-evals, or a gentler stopper (--stopper-options "
            "min_peers=10 or reduction=2)")
    return result


def exit_code(result: RunSummary) -> int:
    """What a workflow script exits with: 130 when stopped by a signal, 1 when no evaluation
    succeeded or a worker ended with an error, 0 otherwise."""
    if result.interrupted:
        return 130
    return 1 if result.worker_errors or not result.n_ok else 0


def format_summary(result: RunSummary, best_params: bool = True) -> str:
    """The end-of-search summary; ``best_params=False`` leaves the configuration to the caller."""
    s = result.summary
    lines = [
        f"run directory:        {result.run_dir}",
        f"evaluations:          {s['evaluations']} ({s['failures']} failed, "
        + (f"{s['stopped']} stopped early, " if s.get("stopped") else "") + f"{s['interrupted']} interrupted) "
        f"by {s['workers']} workers" + (" - stopped by a signal" if result.interrupted else "")
        + (" - stopped by `adbo stop` (a STOP file)" if not result.interrupted and any(
            r.get("stop_reason") == "STOP file present" for r in result.worker_reports) else ""),
        f"best objective:       {s['best_objective'] if s['best_objective'] is not None else '- (no evaluation succeeded)'}"
        + (f" ({s['direction']})" if s['best_objective'] is not None else ""),
    ]
    if best_params and s.get("best_params") is not None:
        lines.append(f"best parameters:      {s['best_params']}")
    if result.failures.failed and result.n_ok:
        lines.append(f"most common error:    {result.failures.most_common} ({result.failures.most_common_count}x)")
    if s.get("utilization") is not None:
        lines.append(f"worker utilization:   {100 * s['utilization']:.1f}%")
    if s.get("evaluations_per_minute"):
        lines.append(f"evaluations / minute: {s['evaluations_per_minute']:.1f}")
    if s.get("median_bo_overhead_s") is not None:
        lines.append(f"median BO step:       {s['median_bo_overhead_s'] * 1000:.1f} ms")
    for worker, err in sorted(result.worker_errors.items()):
        lines.append(f"worker {worker} ended with an error: {err} (see {result.run_dir}/logs)")
    return "\n".join(lines)
