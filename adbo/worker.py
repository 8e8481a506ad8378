"""One decentralized BO worker: scan peers, fit, propose, evaluate, publish, repeat.

A worker is a long-lived task (one Parsl app per worker) that owns nothing but its id and its own
shard. Everything it knows about its peers comes from scanning the run directory, so any number
of workers can start, die and restart independently, and a restarted worker with the same id
continues its own sequence.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import signal
import socket
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from . import fsops
from .digests import AUTO_WORKERS, Aggregator, AggregatorThread, SharedReader, period_for, shared_reading_wanted
from .proposer import Proposal, Proposer, ProposerSettings
from .surrogate import make_surrogate
from .budget import BudgetTickets
from .runinfo import file_mode
from .evaluation import Objective
from .evaluator import ChildEvaluator, InlineEvaluator
from .lease import ORPHAN_AFTER_S, LaunchWatch
from .objective_ref import ObjectiveLoadError, ObjectiveSpec, package_objective
from .space import SearchSpace
from .stopping import CurveBook, NoStopper, check_partial_mode, make_stopper, surrogate_targets
from .storage import (
    BUDGET_STATUSES,
    IN_FLIGHT,
    INTERRUPTED,
    LOG_DIR,
    OK,
    STATUS_NAMES,
    STOP_FILE,
    STOPPED,
    TIMEOUT,
    EvalRow,
    ResultTable,
    SegmentReader,
    SegmentWriter,
    WriterSuperseded,
    read_run_info,
)


@dataclass
class WorkerSettings(ProposerSettings):
    """Everything a worker needs besides its id and objective; stored in run.json as-is.

    The proposal policy's fields (surrogate, acquisition, exploration schedule, candidates) are
    inherited from ``ProposerSettings``; these are the loop's own.
    """

    max_evals: int | None = 100
    """Stop starting evaluations once this many (ok, failed or timed out) exist across all shards."""
    deadline: float | None = None
    """Unix time after which no evaluation is started; one that would not finish is not begun."""
    allocation_s: float | None = None
    """Walltime of the batch job running this worker; counted from the worker's start."""
    walltime_margin_s: float = 60.0
    """Seconds kept in hand before a deadline (to publish rows and exit cleanly)."""
    eval_timeout: float | None = None
    """Seconds before an evaluation is recorded as a timeout."""
    seed: int = 0
    overlap: bool | str = "auto"
    """Scan and compute the next proposal in a background thread while the objective runs, so the
    BO step leaves the critical path. The thread starts late in the evaluation (at this worker's
    10th percentile of evaluation times, less the step's own duration) so that the proposal misses
    few results. ``"on"`` (or True) always, ``"off"`` (or False) never; ``"auto"`` only while this
    worker's BO step takes ``AUTO_OVERLAP_SHARE`` of its typical evaluation time or more, but less
    than the whole of it: a stale
    proposal costs search quality, a step on the critical path costs evaluations, and only short
    evaluations make the second the larger loss (``overlap_mode``)."""
    max_worker_evals: int | None = None
    """Optional cap on this worker's own evaluations (mostly for tests and debugging)."""
    evaluation: str = "process"
    """``process``: the objective runs in a child process of the worker (a timeout kills it, a crash
    is a failed row); ``in-process``: in the worker itself, for objectives that cannot run in a child."""
    workers: int = 1
    """Workers of this launch (spreads the first budget claims over distinct tickets)."""
    launch_file: str | None = None
    """This launch's heartbeat file: the worker stops when it says so or stops beating."""
    launch_id: str | None = None
    lease_poll_s: float = 2.0
    """Seconds between the worker's reads of its launch's heartbeat file."""
    orphan_after_s: float = ORPHAN_AFTER_S
    """A worker whose launch's heartbeat has not advanced for this long abandons its evaluation and stops."""
    budget_dir: str | None = None
    """This launch's ticket directory (``adbo.budget``); None: the budget is checked on scans only."""
    budget_base: int = 0
    """Evaluations stored by earlier launches: this launch's tickets start there."""
    stopper: str = "none"
    """Early stopping of evaluations that report learning curves (``adbo.stopping``): ``none``,
    ``asha``, ``median`` or ``extrapolate``."""
    stopper_options: dict[str, Any] = field(default_factory=dict)
    """Options of the stopper, e.g. ``{"min_step": 1, "reduction": 3}`` for ``asha``."""
    partial_results: str = "rank"
    """What the surrogate learns from a stopped evaluation (``adbo.stopping.surrogate_targets``):
    ``rank`` (its rank at the step it reached, as a quantile of finished values), ``last`` (its
    last value as is) or ``worst`` (like a failure)."""

    shared_reading: str = "auto"
    """``on``: one worker at a time gathers new rows into digests that the others read (``adbo.digests``),
    so a scan opens a file or two instead of one per peer's new segment; ``off``: every worker reads
    every segment; ``auto``: on for launches of 128 workers or more."""
    shared_reading_heartbeat_s: float = 10.0
    """The aggregator renews its role this often; a silent one is replaced after three times this."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def proposer_settings(self) -> ProposerSettings:
        return ProposerSettings(**{f.name: getattr(self, f.name) for f in fields(ProposerSettings)})


OVERLAP_MODES = ("auto", "on", "off")


def overlap_mode(value: "bool | str") -> str:
    """``overlap`` as one of ``OVERLAP_MODES`` (booleans are accepted for ``on`` and ``off``)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and value.lower() in OVERLAP_MODES:
        return value.lower()
    raise ValueError(f"overlap must be 'auto', 'on' or 'off' (or True / False), not {value!r}")


class _Ahead:
    """The next step's scan and proposal, computed in the background while the objective runs."""

    def __init__(self) -> None:
        self.result: Any = None
        self.scan_s = 0.0
        self.work_s = 0.0
        self.scanned_at = time.time()
        self.thread: threading.Thread | None = None
        self.evaluation_over = threading.Event()

    def start(self, work: Any, name: str) -> None:
        self.thread = threading.Thread(target=work, name=name, daemon=True)
        self.thread.start()

    def join(self) -> None:
        self.evaluation_over.set()
        if self.thread is not None:
            self.thread.join()
            self.thread = None


@dataclass
class WorkerReport:
    worker: int
    evaluations: int = 0
    failures: int = 0
    stop_reason: str = ""
    best_objective: float | None = None
    fits: list[int] = field(default_factory=list)
    evaluations_before_restart: int = 0
    stopped: int = 0
    fs_ops: dict[str, int] = field(default_factory=dict)
    """Metadata operations this worker's process issued (``adbo.fsops``; shared by threads of one process)."""
    digests_published: int = 0
    proposed_ahead: int = 0
    """Evaluations whose configuration was proposed during the previous evaluation (``overlap``)."""


def _worker_logger(run_dir: Path, worker: int) -> logging.Logger:
    logger = logging.getLogger(f"adbo.worker.{run_dir}.{worker}")
    if not logger.handlers:
        path = run_dir / LOG_DIR / f"worker-{worker:06d}.log"
        handler = logging.FileHandler(path)
        try:  # the log is as readable as the run directory's other files, whatever the umask
            os.chmod(path, file_mode(os.stat(run_dir / LOG_DIR).st_mode & 0o777))
        except OSError:
            pass
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def objective_log(run_dir: Path, worker: int) -> Path:
    """Where the objective's printed output goes when it runs in a child process (created here
    with the run directory's file mode, as the worker's own log)."""
    path = run_dir / LOG_DIR / f"objective-{worker:06d}.log"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        os.chmod(path, file_mode(os.stat(run_dir / LOG_DIR).st_mode & 0o777))
    except OSError:
        pass
    return path


def _set_thread_priority(native_id: int, nice: int) -> None:
    """Set one thread's nice value where the OS keeps one per thread (Linux); else do nothing.

    Raising a priority back may need privileges (CAP_SYS_NICE or RLIMIT_NICE); without them the
    thread keeps the lower one, which only matters where workers share cores.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, native_id, nice)
    except (AttributeError, OSError):
        pass


class Worker:
    """The state of one worker's loop; ``run()`` executes it until a stop condition holds."""

    def __init__(self, run_dir: str | os.PathLike, worker_id: int, objective: "Objective | str", settings: WorkerSettings):
        self.run_dir = Path(run_dir)
        self.worker_id = int(worker_id)
        self.spec = objective if isinstance(objective, ObjectiveSpec) else package_objective(objective)
        self.settings = settings
        in_process_target = objective if callable(objective) and not isinstance(objective, ObjectiveSpec) else self.spec
        self.evaluator = (InlineEvaluator(in_process_target) if settings.evaluation == "in-process"
                          else ChildEvaluator(self.spec, output=objective_log(self.run_dir, self.worker_id)))
        self.watch = LaunchWatch(settings.launch_file, settings.launch_id, settings.lease_poll_s, settings.orphan_after_s)
        self._stop_now: str | None = None
        self._sigterm = False
        self._claims = 0
        info = read_run_info(self.run_dir)
        self.info = info
        self.space: SearchSpace = info.space
        self.maximize = info.direction == "maximize"
        self.proposer = Proposer(self.space, self.maximize, settings.seed, self.worker_id, settings.proposer_settings())
        self.stopper = make_stopper(settings.stopper, **settings.stopper_options)
        check_partial_mode(settings.partial_results)
        self.uses_curves = not isinstance(self.stopper, NoStopper)
        self.book = CurveBook(self.maximize)
        self._scan_lock = threading.RLock()
        self._last_scan = 0.0
        self._running: EvalRow | None = None
        self._curve: list[tuple[float, float]] = []
        self.shared_reading = shared_reading_wanted(settings.shared_reading, settings.workers)
        self.aggregator: Aggregator | None = None
        if self.shared_reading:
            heartbeat = settings.shared_reading_heartbeat_s
            run_workers = max(settings.workers, info.max_workers or 0)
            self.reader: SegmentReader | SharedReader = SharedReader(
                self.run_dir, info.run_id, self.space.dim, info.max_workers, stale_after_s=3.0 * heartbeat,
                fallback=run_workers < AUTO_WORKERS)
            self.aggregator = Aggregator(self.run_dir, self.worker_id, info.run_id, self.space.dim, info.max_workers,
                                         period_s=lambda: period_for(self._typical_duration()), heartbeat_s=heartbeat)
        else:
            self.reader = SegmentReader(self.run_dir, info.run_id, self.space.dim, info.max_workers)
        self.writer = SegmentWriter(self.run_dir, self.worker_id, info.run_id, self.space.dim)
        self.tickets = (BudgetTickets(settings.budget_dir, settings.budget_base, settings.max_evals, self.worker_id)
                        if settings.budget_dir and settings.max_evals is not None else None)
        self.table = ResultTable(self.space.dim, keep_rows=False)
        self.seen_keys: set[bytes] = set()
        self.log = _worker_logger(self.run_dir, self.worker_id)
        self.proposer.log = self.log
        self.hostname = socket.gethostname()
        self.report = WorkerReport(self.worker_id)
        self.durations: list[float] = []
        self.deadline = self._deadline(time.time())
        self._ahead: _Ahead | None = None
        self._last_ahead_work_s = 0.0
        self._overlap = overlap_mode(settings.overlap)
        self._step_work_s: collections.deque[float] = collections.deque(maxlen=10)
        """Seconds each of the last ten surrogate steps (final scan, fit, proposal) took, wherever it ran."""
        self._cost_aware = True
        """Whether the last proposal was given evaluation times (``COST_AWARE_MAX_STEP_SHARE``)."""
        self._overlapping = False
        self._surrogate_ready = threading.Event()
        self._proposals_before_ready = 0
        self._warm_up_thread_id: int | None = None

    def _deadline(self, started: float) -> float | None:
        """The earliest of the launch's deadline and this worker's allocation end, less the margin.

        Batch sites export ``ADBO_ALLOCATION_END`` (Unix time) from the job script itself, which
        is exact; without it the allocation is counted from this worker's start, a little late.
        """
        s = self.settings
        ends = [d for d in (s.deadline, started + s.allocation_s if s.allocation_s else None) if d]
        exported = os.environ.get("ADBO_ALLOCATION_END", "").strip()
        if exported:
            try:
                ends.append(float(exported))
            except ValueError:
                self.log.warning("ignoring ADBO_ALLOCATION_END=%r: not a Unix time", exported)
        return min(ends) - s.walltime_margin_s if ends else None

    # -- shared state ------------------------------------------------------------------
    def scan(self) -> None:
        with self._scan_lock:  # the loop, the scan-ahead thread and a report may scan at once
            for batch in self.reader.scan_batches(with_text=False, with_curves=self.uses_curves):
                if self.table.upsert_batch(batch):
                    self.seen_keys.update(self.space.keys(batch.x))
                if batch.curves:
                    workers, seqs = batch.numeric["worker"], batch.numeric["seq"]
                    for i, points in batch.curves.items():
                        self.book.update((int(workers[i]), int(seqs[i])), points[:, 0], points[:, 1])
            self._last_scan = time.time()

    # -- early stopping ----------------------------------------------------------------
    REPORT_SCAN_S = 1.0
    """A report that is not a decision point rescans the shards only if the last scan is this old."""

    def _on_report(self, pending: EvalRow, step: float, value: float) -> str | None:
        """The running evaluation reported ``value`` at ``step``: record it, and say whether to stop.

        At the stopper's decision points the worker first reads its peers' newest curves, and
        if the evaluation goes on, republishes it in flight with its curve so far, so that the
        evaluations that reach this point later compare with it.
        """
        if self._running is not pending:
            return None  # a timed-out in-process objective still running in its thread: not ours now
        previous = self._curve[-1][0] if self._curve else -math.inf
        self._curve.append((float(step), float(value)))
        if not self.uses_curves:
            return None
        points = np.asarray(self._curve, dtype=float)
        key = (pending.worker, pending.seq)
        publish = self.stopper.publish_step(previous, step)
        if publish or time.time() - self._last_scan >= self.REPORT_SCAN_S:
            self.scan()
        with self._scan_lock:
            self.book.update(key, points[:, 0], points[:, 1])
            reason = self.stopper.should_stop(self.book, key)
        if reason is not None and self.stopper.protects(pending.metadata.get("predicted_rank")):
            self.log.info("seq=%d kept at step %g although %s: the surrogate predicted it among the best %d "
                          "(protect_best)", pending.seq, step, reason, self.stopper.protect_best)
            reason = None
        if reason is None and publish:
            try:
                self._publish([pending.evolve(curve=points)])
            except OSError as exc:  # peers miss one point; the final row carries the whole curve
                self.log.warning("could not publish the running curve: %s", exc)
        if reason is not None:
            self.log.info("seq=%d stopping at step %g: %s", pending.seq, step, reason)
        return reason

    def _surrogate_view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The table as the proposer sees it: stopped evaluations valued as ``partial_results`` says."""
        X, y, st = self.table.view()
        stopped = st == STOPPED
        if stopped.any():
            n = len(st)
            keys = _Keys(self.table.worker[:n], self.table.seq[:n])
            with self._scan_lock:
                y = surrogate_targets(y, stopped, keys, self.book, st == OK, self.settings.partial_results)
        return X, y, st

    def budget_used(self) -> int:
        return self.table.count(BUDGET_STATUSES)

    def _resume(self) -> int:
        """Continue a previous life of this worker: mark its cut-off evaluations interrupted."""
        own = self.writer.rows
        stale = [r for r in own if r.status == IN_FLIGHT]
        if stale:
            now = time.time()
            fixed = [
                r.evolve(status=INTERRUPTED, t_finished=now,
                         error="the worker stopped before this evaluation finished; it was restarted")
                for r in stale
            ]
            self.writer.append(fixed)
            self.table.upsert(fixed)
            self.log.warning("marked %d evaluation(s) from a previous run of this worker as interrupted", len(fixed))
            if self.tickets is not None:
                for r in stale:
                    if "ticket" in r.metadata:
                        self.tickets.release(int(r.metadata["ticket"]), r.seq)
        self.durations = [r.t_finished - r.t_started for r in own if r.status == OK]
        self.report.evaluations_before_restart = sum(r.status in BUDGET_STATUSES for r in own)
        return self.writer.next_seq()

    def abandon_reason(self) -> str | None:
        """Why the current evaluation must be abandoned now (launch stopped or gone, SIGTERM)."""
        if self._stop_now is None:
            watched = self.watch.check()
            if self._sigterm:  # set by the signal handler, which may run at any bytecode
                watched = "SIGTERM received (the batch system is ending the job)"
            self._stop_now = watched
        return self._stop_now

    def _should_abandon(self) -> bool:
        return self.abandon_reason() is not None

    def _claim_ticket(self, seq: int) -> int | None:
        """A budget ticket for evaluation ``seq`` (see ``adbo.budget``); None when the budget is spent."""
        estimate = self.table.count(BUDGET_STATUSES + (IN_FLIGHT,))
        if self._claims == 0:
            estimate = max(estimate, self.settings.budget_base) + self.worker_id % max(1, self.settings.workers)
        self._claims += 1
        return self.tickets.claim(estimate, seq)

    def stop_reason(self) -> str | None:
        s = self.settings
        if self.abandon_reason():
            return self._stop_now
        fsops.count("stat")
        if (self.run_dir / STOP_FILE).exists():
            return "STOP file present"
        # With tickets the claim decides; without, peers' evaluations in flight count as spent.
        in_flight = 0 if self.tickets is not None else self._peers_in_flight()
        if s.max_evals is not None and self.budget_used() + in_flight >= s.max_evals:
            return f"evaluation budget reached ({s.max_evals})"
        if s.max_worker_evals is not None and self.report.evaluations >= s.max_worker_evals:
            return f"per-worker budget reached ({s.max_worker_evals})"
        if self.deadline is not None:
            expected = statistics.median(self.durations) if self.durations else 0.0
            if time.time() + expected >= self.deadline:
                return "walltime deadline reached (the next evaluation would not finish in time)"
        return None

    def _peers_in_flight(self) -> int:
        st = self.table.view()[2]
        w = self.table.worker[: len(self.table)]
        return int(((st == IN_FLIGHT) & (w != self.worker_id)).sum())

    def _typical_duration(self) -> float:
        """Median of this worker's recent successful evaluations (0 before the first)."""
        return statistics.median(self.durations[-50:]) if self.durations else 0.0

    # -- proposing ----------------------------------------------------------------------
    PUBLISH_AT_ONCE_AFTER_S = 10.0
    """Final rows of evaluations longer than this are published at once rather than with the next
    in-flight row: one more small segment, against the risk of losing an expensive result."""

    SAMPLES_WHILE_IMPORTING = 3
    """Space-filling proposals a worker makes, at most, instead of waiting for the surrogate's
    library to finish importing in the background; after that it waits. On a node with a core
    per worker the import is done within the first evaluation and this never happens; where
    dozens of workers share two cores it keeps them evaluating instead of idling."""
    SAMPLE_WHILE_IMPORTING_FROM_S = 1.0
    """...but only once this worker's evaluations take this long (median): for quicker ones the
    wait is shorter than the evaluation a blind sample would spend."""

    def _surrogate_usable(self) -> bool:
        if self._surrogate_ready.is_set():
            return True
        if (self._typical_duration() >= self.SAMPLE_WHILE_IMPORTING_FROM_S
                and self._proposals_before_ready < self.SAMPLES_WHILE_IMPORTING):
            return False
        if self._warm_up_thread_id is not None:
            # The step now waits for the import: it must not run at the lowest priority any more.
            _set_thread_priority(self._warm_up_thread_id, os.getpriority(os.PRIO_PROCESS, 0))
            self._warm_up_thread_id = None
        return True

    def _propose_now(self) -> Any:
        X, y, st = self._surrogate_view()
        medians = self._step_and_evaluation()
        step = medians[0] if medians else 0.0
        cost_aware = medians is None or step < self.COST_AWARE_MAX_STEP_SHARE * medians[1]
        if cost_aware != self._cost_aware and self.proposer.settings.cost_aware:
            self.log.info("evaluation times %s: BO step %.3f s, evaluation %.3f s (median)",
                          "used again" if cost_aware else "not used while the step is this large a share",
                          step, medians[1] if medians else 0.0)
        self._cost_aware = cost_aware
        # A scan may have grown the table since the view: durations are cut to its length.
        durations = self.table.durations()[: len(st)] if cost_aware else None
        p = self.proposer.propose(X, y, st, self.seen_keys, self._surrogate_usable(), durations, step)
        if p.instead_of_fit:
            self._proposals_before_ready += 1
        return p

    def propose(self, ahead: "_Ahead | None" = None) -> Proposal:
        """The next proposal; one computed ahead is used unless a peer has taken it since."""
        if ahead is not None:
            p = ahead.result
            if p is not None and p.x is not None and self.space.keys(p.x[None])[0] not in self.seen_keys:
                return p
        return self._propose_now()

    AUTO_OVERLAP_SHARE = 0.02
    """``overlap="auto"`` proposes during the evaluation once the median of the last ten BO steps
    reaches this share of the median evaluation, and stays shorter than it (five evaluations known
    at least; near-instant evaluations leave nothing to hide the step in). Measured in
    docs/tabular_quality.md (8 workers on 2 cores, evaluations of about 0.7 s, 5 seeds): median
    utilization 0.948 without overlap, 0.961 with a 5% share (the step hovers near it, so it
    engaged in three runs of five), 0.975 with 2%; at equal evaluations the stale proposals cost
    nothing measurable on 12 tabular problems."""

    GP_STEP_SHARE = 0.1
    """With ``surrogate="gp_then_trees"`` a worker hands over to the trees for good once the median
    of its last ten BO steps exceeds this share of its median evaluation (five evaluations known at
    least): the GP's edge is worth a step of a few percent of a training of minutes, not half of
    an evaluation of a second. With 8 workers sharing 2 cores and evaluations of about 0.7 s, the
    GP alone cut utilization to 0.55 (docs/tabular_quality.md)."""

    COST_AWARE_MAX_STEP_SHARE = 0.05
    """The worker gives the proposer evaluation times (``ProposerSettings.cost_aware``) only while
    the median of its last ten BO steps stays below this share of its median evaluation. Where
    each evaluation also costs a step, a dispatch and a publish that are not small beside it,
    picking shorter evaluations mostly buys more of that overhead: with 8 workers on 2 cores and
    evaluations of about 0.7 s, cost-aware proposals cut utilization from 0.970 to 0.94 and did
    not find better configurations (docs/tabular_quality.md)."""

    def _step_and_evaluation(self) -> tuple[float, float] | None:
        """Medians of the last ten BO steps and of recent evaluations; None until five of each."""
        if len(self.durations) < 5 or len(self._step_work_s) < 5:
            return None
        return statistics.median(self._step_work_s), self._typical_duration()

    def _check_surrogate_cost(self) -> None:
        medians = self._step_and_evaluation()
        if self.proposer.cheap_surrogate or medians is None:
            return
        step, evaluation = medians
        if step > self.GP_STEP_SHARE * evaluation and self.proposer.use_cheaper_surrogate():
            self.log.info("surrogate: extra trees from here on, the GP step takes %.3f s against "
                          "evaluations of %.3f s (median)", step, evaluation)

    def _overlap_next(self) -> bool:
        """Whether the next step is computed during the evaluation about to start."""
        if self._overlap != "auto":
            return self._overlap == "on"
        medians = self._step_and_evaluation()
        if medians is None:
            return False
        step, evaluation = medians
        # A step as long as the evaluation cannot leave the critical path (the worker waits for it
        # either way), so overlapping it would only make the proposal stale.
        wanted = self.AUTO_OVERLAP_SHARE * evaluation <= step < evaluation
        if wanted != self._overlapping:
            self.log.info("overlap %s: BO step %.3f s, evaluation %.3f s (median)", "on" if wanted else "off",
                          step, evaluation)
            self._overlapping = wanted
        return wanted

    def _ahead_delay(self) -> float:
        """How long the background step waits before scanning, so its data is as fresh as it can be.

        It aims to finish just before the evaluation does: it starts at this worker's 10th
        percentile of evaluation times, less twice the last background step's duration and a
        small margin. If an evaluation ends sooner, the step starts at once (and is then on the
        critical path, as without overlap).
        """
        if len(self.durations) < 3:
            return 0.0
        recent = self.durations[-50:]
        early = float(np.percentile(recent, 10))
        return max(0.0, early - 2.0 * self._last_ahead_work_s - 0.2)

    def _start_ahead(self) -> None:
        """``overlap``: scan the shards and propose in a background thread during the evaluation.

        Both leave the critical path; the main thread touches the table again only after joining
        the thread. The price is staleness: the proposal misses results that arrive after its
        scan, including this worker's own running evaluation (``proposal_age_s`` on the row);
        starting the scan late in the evaluation (``_ahead_delay``) keeps that small.
        """
        job = _Ahead()
        delay = self._ahead_delay()

        def work() -> None:
            try:
                job.evaluation_over.wait(delay)
                t0 = time.time()
                self.scan()
                job.scanned_at = time.time()
                job.scan_s = job.scanned_at - t0
                job.result = self._propose_now()
                job.work_s = time.time() - t0
            except Exception:  # noqa: BLE001 - the loop scans and proposes itself instead
                self.log.exception("scanning and proposing ahead failed")

        job.start(work, "adbo-propose-ahead")
        self._ahead = job

    def _rescan_interval(self, last_scan_s: float) -> float:
        """Seconds between background scans: at least 1 s and 5% of a typical evaluation (so a
        run of hour-long evaluations does not list the shards every second), and at least ten
        times the last scan (so scanning never takes more than a tenth of a core)."""
        return max(1.0, 0.05 * self._typical_duration(), 10.0 * last_scan_s)

    def _start_scan_ahead(self) -> None:
        """Read peers' new segments during the evaluation, so the step only reads the last few.

        The proposal still comes after the evaluation and after a final scan, so it uses exactly
        the data it would without this; only the reading leaves the critical path (at 64 workers
        on 2 cores it was the larger half of the step). Scans start late in the evaluation
        (``_ahead_delay``) and repeat every ``_rescan_interval`` until it ends.
        """
        job = _Ahead()
        delay = self._ahead_delay()

        def work() -> None:
            try:
                wait = delay
                while not job.evaluation_over.wait(wait):
                    t0 = time.time()
                    self.scan()
                    self._last_ahead_work_s = job.scan_s = time.time() - t0
                    wait = self._rescan_interval(job.scan_s)
            except Exception:  # noqa: BLE001 - the step scans itself anyway
                self.log.exception("scanning ahead failed")

        job.start(work, "adbo-scan-ahead")
        self._ahead = job

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> WorkerReport:
        """The loop. Each evaluation's final row is published with the next one's in-flight row.

        One segment per evaluation instead of two halves what every peer reads per step (the cost
        that grows with the number of workers); the final row waits only for the next proposal,
        and is published on every way out of the loop, exceptions included.
        """
        self._unpublished: list[EvalRow] = []
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        role = None
        if self.aggregator is not None:
            self.aggregator.log = self.log
            role = AggregatorThread(self.aggregator, self.log)
            role.start()
        try:
            return self._loop()
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            # The finished result first: whatever comes next may be cut short by a SIGKILL.
            if self._unpublished:
                try:
                    self.writer.append(self._unpublished)
                except WriterSuperseded:
                    pass  # a newer copy of this worker owns the shards now; the original error says so
                self._unpublished = []
            if role is not None:
                role.stop()  # after the last rows: its final round gathers them
                self.report.digests_published = self.aggregator.digests_published
            self.report.fs_ops = fsops.snapshot()
            self.evaluator.close()
            if self._ahead is not None:
                self._ahead.join()

    def _publish(self, rows: list[EvalRow]) -> None:
        self.writer.append(self._unpublished + rows)
        self._unpublished = []

    def _warm_up(self) -> None:
        """Import and exercise the surrogate's library in the background during the first evaluation.

        scikit-learn takes about a second of CPU to import; paid at the first fit, it lands on the
        critical path of every worker at once (on a 64-worker, 2-core run the first BO step took
        18 s instead of 0.2 s). Here it overlaps the space-filling evaluations instead, at the
        lowest CPU priority: where workers share cores, peers that are still starting come first
        (at full priority the warm-ups stretched the spread of 64 workers' first starts on
        2 cores from about 10 s to 35 s). Until it is done the worker samples the space
        (``SAMPLES_WHILE_IMPORTING``); when it must wait, the thread gets its priority back.
        """
        if not isinstance(self.settings.surrogate, str):
            self._surrogate_ready.set()
            return  # a user's own instance: fitting it here could race with the real fit

        def work() -> None:
            self._warm_up_thread_id = threading.get_native_id()
            _set_thread_priority(self._warm_up_thread_id, 19)
            try:
                rng = np.random.default_rng(0)
                model = make_surrogate(self.settings.surrogate, seed=0)
                model.fit(rng.random((8, self.space.dim)), rng.random(8))
                model.predict(rng.random((4, self.space.dim)), return_std=True)
            except Exception:  # noqa: BLE001 - only a warm-up: the real fit reports real problems
                pass
            finally:
                self._surrogate_ready.set()
                self._warm_up_thread_id = None

        threading.Thread(target=work, name="adbo-warm-up", daemon=True).start()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._sigterm = True

    def _loop(self) -> WorkerReport:
        self.evaluator.start()  # the objective loads in its process while this worker scans
        self._warm_up()
        self.scan()
        seq = self._resume()
        self.log.info("worker %d starting at sequence %d, kappa0=%.3f, %d rows known",
                      self.worker_id, seq, self.proposer.schedule.kappa0, len(self.table))
        t_eval_end: float | None = None
        while True:
            # The overhead before an evaluation runs from the end of the previous one, so it
            # includes any wait for the background step (overlap) and the bookkeeping in between.
            t_step = t_eval_end if t_eval_end is not None else time.time()
            ahead, self._ahead = self._ahead, None
            if ahead is not None and ahead.result is not None:
                scan_s = ahead.scan_s  # scanned during the evaluation, off the critical path
                self._last_ahead_work_s = ahead.work_s
                if ahead.result.n_observations:
                    self._step_work_s.append(ahead.work_s)
            else:
                ahead = None
                t_scan = time.time()
                self.scan()
                scan_s = time.time() - t_scan
            reason = self.stop_reason()
            if reason:
                break
            t_propose = time.time()
            proposal = self.propose(ahead)
            x, n_obs, kappa = proposal.x, proposal.n_observations, proposal.kappa
            if ahead is None and n_obs:  # surrogate steps only: a design point costs nothing to read
                self._step_work_s.append(scan_s + time.time() - t_propose)
            if x is None:
                reason = "every configuration of the space has been evaluated"
                break
            params = self.space.decode(x[None])[0]
            ticket = None
            if self.tickets is not None:
                ticket = self._claim_ticket(seq)
                if ticket is None:
                    reason = f"evaluation budget reached ({self.settings.max_evals})"
                    break
            try:
                self.evaluator.ready(self._should_abandon)
            except BaseException:
                if ticket is not None:
                    self.tickets.release(ticket, seq)
                raise
            if self.abandon_reason():
                if ticket is not None:
                    self.tickets.release(ticket, seq)
                reason = self._stop_now
                break
            t_submit = time.time()
            pending = EvalRow(
                worker=self.worker_id, seq=seq, status=IN_FLIGHT, x=x, params=params,
                t_submitted=t_submit, t_started=t_submit, bo_overhead_s=t_submit - t_step,
                n_observations=n_obs, hostname=self.hostname,
                eval_id=f"{self.info.run_id[:8]}-w{self.worker_id}-s{seq}",
                metadata={"scan_s": round(scan_s, 6), **({"kappa": kappa} if math.isfinite(kappa) else {}),
                          **({"predicted_rank": proposal.predicted_rank}
                             if proposal.predicted_rank is not None else {}),
                          **({"ticket": ticket} if ticket is not None else {}),
                          **({"launch": self.settings.launch_id[:8]} if self.settings.launch_id else {})},
            )
            if ahead is not None:
                self.report.proposed_ahead += 1
                pending.metadata["proposal_age_s"] = round(t_submit - ahead.scanned_at, 6)
            self._publish([pending])
            self.table.upsert([pending])
            self.seen_keys.add(self.space.keys(x[None])[0])
            self._check_surrogate_cost()
            if self._overlap_next():
                self._start_ahead()
            else:
                self._start_scan_ahead()
            t_start = time.time()
            timeout = self.settings.eval_timeout
            cut_by_deadline = False
            if self.deadline is not None:
                left = max(1.0, self.deadline - t_start)
                cut_by_deadline = timeout is None or left < timeout
                timeout = min(timeout, left) if timeout is not None else left
            self._running, self._curve = pending, []
            try:
                outcome = self.evaluator.evaluate(params, timeout, self._should_abandon,
                                                  functools.partial(self._on_report, pending), pending.eval_id)
            finally:
                self._running = None
            t_end = t_eval_end = time.time()
            if self._ahead is not None:
                self._ahead.join()  # the table is the background thread's until it is done
            if outcome.status == TIMEOUT and cut_by_deadline:
                outcome.status = INTERRUPTED
                outcome.error = "stopped at the walltime deadline; a relaunch continues the search"
            if outcome.status == INTERRUPTED and ticket is not None:
                self.tickets.release(ticket, seq)  # not counted: another worker or launch may use it
            reported = outcome.curve if outcome.curve else self._curve  # a killed evaluation keeps its reports
            final = pending.evolve(
                status=outcome.status, objective=outcome.value, metadata={**pending.metadata, **outcome.metadata},
                t_started=t_start, t_finished=t_end, error=outcome.error,
                curve=np.asarray(reported, dtype=float).reshape(-1, 2) if reported else None,
            )
            if final.curve is not None:
                with self._scan_lock:
                    self.book.update((final.worker, final.seq), final.curve[:, 0], final.curve[:, 1])
            if t_end - t_start > self.PUBLISH_AT_ONCE_AFTER_S or outcome.status == INTERRUPTED:
                self._publish([final])  # a result that cost this much is not held back for a step
            else:
                self._unpublished.append(final)  # published with the next in-flight row, or on the way out
            self.table.upsert([final])
            seq += 1
            self.report.evaluations += 1
            self.report.fits.append(n_obs)
            if outcome.status == STOPPED:
                self.report.stopped += 1
            if outcome.status == OK:
                self.durations.append(t_end - t_start)
                if self.report.best_objective is None or (
                    outcome.value > self.report.best_objective if self.maximize else outcome.value < self.report.best_objective
                ):
                    self.report.best_objective = outcome.value
            elif outcome.status != STOPPED:
                self.report.failures += 1
            self.log.info("seq=%d status=%s objective=%s fit_on=%d overhead=%.3fs eval=%.2fs %s",
                          final.seq, STATUS_NAMES[outcome.status], outcome.value, n_obs, final.bo_overhead_s,
                          t_end - t_start, outcome.error.splitlines()[-1] if outcome.error else "")
        self.report.stop_reason = reason or ""
        self.log.info("worker %d stopping: %s", self.worker_id, reason)
        return self.report


class _Keys:
    """(worker, seq) of row i, read from the table's columns only when asked."""

    def __init__(self, workers: np.ndarray, seqs: np.ndarray) -> None:
        self.workers, self.seqs = workers, seqs

    def __getitem__(self, i: int) -> tuple[int, int]:
        return int(self.workers[i]), int(self.seqs[i])


def run_worker(run_dir: str, worker_id: int, objective: "Objective | str", settings: WorkerSettings | dict) -> dict[str, Any]:
    """Entry point of one worker; Parsl ships this function to wherever the worker runs."""
    if isinstance(settings, dict):
        settings = WorkerSettings(**settings)
    worker = Worker(run_dir, worker_id, objective, settings)
    try:
        report = worker.run()
    except ObjectiveLoadError as exc:
        worker.log.error("%s", exc)
        raise
    except WriterSuperseded as exc:
        worker.log.warning("%s", exc)
        worker.report.stop_reason = str(exc)
        report = worker.report
    finally:
        for handler in list(worker.log.handlers):  # workers in threads share the launcher's file limit
            worker.log.removeHandler(handler)
            handler.close()
    return asdict(report)
