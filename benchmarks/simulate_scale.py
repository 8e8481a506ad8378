#!/usr/bin/env python
"""Discrete-event projection of worker utilization to thousands of workers, from measured costs.

Each simulated worker runs adbo's loop: scan (list the shard buckets, open and read every segment
published since its last scan), BO step (fit and propose, a cost that depends on the number of
results), publish one segment (the final row of the last evaluation with the next in-flight
row), then evaluate for a time drawn from N(MEAN, STD). As the real worker does, each worker also
reads peers' new segments during its evaluation (from the 10th percentile of the evaluation time,
then every max(1 s, 5% of the mean) until it ends), so the scan before the step reads only what
arrived since. With ``--overlap`` the scan and
step run during the evaluation and only publishing stays on the critical path. A centralized baseline
has one manager that serves workers one at a time with its own step cost.

Where the costs come from:

* CPU costs are measured on this machine by the real code at start-up (``--no-calibrate`` uses
  the figures in ``DEFAULT_COSTS``): ``Proposer.propose`` at several numbers of results,
  ``read_segment`` of a one-evaluation segment (the workers' path), writing and publishing one
  segment, and listing a bucket of 1,000 names.
* Filesystem latencies are parameters, added to every open, listing and publish on top of the
  CPU cost: zero for validation on a local disk, and Lustre-like defaults for the projection
  (``--fs lustre``: 1 ms per open, 2 ms per listing, 5 ms per publish). Lustre metadata
  operations go through the metadata server; these are deliberately pessimistic round numbers
  for a loaded MDS (an uncontended open is well under a millisecond), not measurements.
* ``--cores C`` shares C cores among all workers' CPU work (processor sharing), which is how the
  real benchmark runs 64 processes on this 2-core machine; ``--cores 0`` gives each worker its own
  core, as on Polaris (4 workers and 32 cores per node).
* Workers start spread over ``--start-spread`` seconds (default 0.1 s per worker, what the real
  benchmark measured from the first to the last worker's first evaluation at 64 workers).

Reports utilization (paper's definition, window from the first evaluation start), evaluations
per worker, step overhead, and filesystem operations per second. Prints JSON; ``--json OUT``.
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from _report import emit, machine

from adbo.digests import HEARTBEAT_S, Aggregator, period_for  # noqa: E402
from adbo.fsops import KINDS as OP_KINDS  # noqa: E402
from adbo.worker import Worker  # noqa: E402

PUBLISH_AT_ONCE_AFTER_S = Worker.PUBLISH_AT_ONCE_AFTER_S

DEFAULT_COSTS = {  # seconds; measured on the 2-core VM by calibrate(), used with --no-calibrate
    "step_s": {"0": 0.002, "100": 0.034, "300": 0.045, "1000": 0.088, "5000": 0.088},
    "read_s": 0.0010,
    "publish_s": 0.0048,
    "list_per_entry_s": 8.6e-7,
    "warmup_s": 0.71,
}
OTHER_CPU_PER_EVAL_S = 0.06
"""CPU per evaluation that the model does not itemize (Parsl's worker bookkeeping, logging, the
evaluation thread, merging rows): utilization.py measured 0.22 s of CPU per evaluation for the whole
process tree at 64 workers once start-up was over, of which scan, step and publish explain 0.16 s."""
N_INITIAL = 10
SEGMENTS_KEPT_PER_WRITER = 17  # compaction every 16 segments: what a bucket listing holds per writer


# -- calibration ------------------------------------------------------------------------------------
def calibrate() -> dict[str, Any]:
    """Time the real code paths on this machine (about 10-20 s)."""
    from adbo.objectives.synthetic import SyntheticObjective
    from adbo.proposer import Proposer
    from adbo.rows import OK, EvalRow
    from adbo.segments import read_segment, write_segment
    from adbo.space import SearchSpace

    objective = SyntheticObjective("ackley", 10)
    space = SearchSpace(objective.space())
    rng = np.random.default_rng(0)
    step: dict[str, float] = {}
    for n in (100, 300, 1000, 5000):
        X = space.sample(n, rng)
        y = np.array([objective.value(p) for p in space.decode(X)])
        status = np.full(n, OK, dtype=np.int8)
        proposer = Proposer(space, maximize=False, seed=1)
        proposer.design_used = len(proposer.design)
        exclude = set(space.keys(X))
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            proposer.propose(X, y, status, exclude)
            times.append(time.perf_counter() - t0)
        step[str(n)] = float(np.median(times))
    step["0"] = 0.002
    with tempfile.TemporaryDirectory() as tmp:
        rows = [EvalRow(worker=1, seq=s, status=OK, x=rng.random(10), params={"x0": 0.0}, objective=1.0, gen=s + 1)
                for s in range(2)]
        t0 = time.perf_counter()
        for k in range(100):
            path = Path(tmp) / f"s{k}.h5.tmp"
            write_segment(path, rows, "RUN", 1, 10)
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(path, Path(tmp) / f"s{k}.h5")
        publish = (time.perf_counter() - t0) / 100
        passes = []
        for _ in range(5):  # the quietest of five passes: other jobs on the machine only add noise
            t0 = time.perf_counter()
            for k in range(100):
                read_segment(Path(tmp) / f"s{k}.h5", "RUN", 10, 1, None, False)
            passes.append((time.perf_counter() - t0) / 100)
        read = min(passes)
        for k in range(1000):
            (Path(tmp) / f"n{k}").touch()
        t0 = time.perf_counter()
        for _ in range(20):
            [e.name for e in os.scandir(tmp)]
        per_entry = (time.perf_counter() - t0) / 20 / 1100
    import subprocess
    import sys

    # The worker's background warm-up: importing the surrogate's library and a first tiny fit.
    code = ("import time, numpy as np, adbo.worker; from adbo.surrogate import make_surrogate; "
            "t=time.process_time(); m=make_surrogate('extra_trees', 0); m.fit(np.random.rand(8, 10), "
            "np.random.rand(8)); print(time.process_time()-t)")
    warmups = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(3)]
    return {"step_s": dict(sorted(step.items(), key=lambda kv: int(kv[0]))), "read_s": read,
            "publish_s": publish, "list_per_entry_s": per_entry, "warmup_s": float(np.median(warmups))}


def step_cost(costs: dict[str, Any]) -> Callable[[int], float]:
    """Step time as a function of results known: interpolated in log(n), flat beyond the table
    (the surrogate is fitted on at most 1,000 points)."""
    table = sorted((int(k), float(v)) for k, v in costs["step_s"].items())
    ns = np.log1p([n for n, _ in table])
    vs = np.array([v for _, v in table])

    def cost(n: int) -> float:
        if n < N_INITIAL:
            return table[0][1]
        return float(np.interp(math.log1p(n), ns, vs))

    return cost


# -- the processor-sharing CPU ------------------------------------------------------------------------
class Cpu:
    """``cores`` shared by all running jobs (processor sharing); 0 means a core per job.

    Jobs in ``low`` (the lowest-priority warm-up threads) only get what the others leave idle.
    """

    def __init__(self, cores: float):
        self.cores = cores
        self.jobs: dict[int, float] = {}  # job id -> remaining CPU seconds
        self.low: set[int] = set()
        self.now = 0.0

    def rates(self) -> tuple[float, float]:
        """CPU rate of a normal job and of a low-priority one."""
        low = len(self.low)
        normal = len(self.jobs) - low
        if self.cores <= 0:
            return 1.0, 1.0
        r_normal = 1.0 if normal <= self.cores else self.cores / normal
        spare = max(0.0, self.cores - normal * r_normal)
        return r_normal, (min(1.0, spare / low) if low else 0.0)

    def advance(self, t: float) -> None:
        if self.jobs and t > self.now:
            r_normal, r_low = self.rates()
            for j in self.jobs:
                self.jobs[j] -= (t - self.now) * (r_low if j in self.low else r_normal)
        self.now = t

    def next_finish(self) -> tuple[float, int] | None:
        best: tuple[float, int] | None = None
        r_normal, r_low = self.rates()  # the same for every job until the next change
        for j, left in self.jobs.items():
            rate = r_low if j in self.low else r_normal
            if rate > 0:
                t = self.now + max(0.0, left) / rate
                if best is None or t < best[0]:
                    best = (t, j)
        return best


def simulate(workers: int, eval_time: tuple[float, float], duration: float, costs: dict[str, Any],
             cores: float = 0.0, overlap: bool = False, open_ms: float = 0.0, list_ms: float = 0.0,
             publish_ms: float = 0.0, start_spread: float | None = None, seed: int = 0,
             other_cpu_s: float = 0.0, warmup_cpu_s: float | None = None, scan_ahead: bool = True,
             shared: bool = False, tickets: bool = False, lease_poll_s: float | None = None,
             heartbeat_s: float = HEARTBEAT_S) -> dict[str, Any]:
    """One run of ``workers`` workers; ``shared``: reading through digests (``adbo.digests``).

    Besides utilization it counts the metadata operations the workers' storage code issues, kind
    by kind, as ``adbo.fsops`` counts them in real runs (``ops_model`` lists the rules).
    """
    rng = np.random.default_rng(seed)
    ops = dict.fromkeys(OP_KINDS, 0.0)
    # Start-up: each worker lists its bucket for its own old segments and claims its worker id.
    ops["listing"] += workers
    ops["create"] += workers
    ops["rename"] += workers
    live_segments = np.zeros(workers, dtype=int)
    period = period_for(eval_time[0])
    digest_rounds: list[int] = []  # rounds (multiples of the period) that published a digest, in order
    raw_finals: list[float] = []  # when each final row reached the shards
    unseen_oldest: list[float] = []
    unseen_newest: list[float] = []
    lease_poll = min(15.0, max(1.0, workers / 100.0)) if lease_poll_s is None else lease_poll_s
    saw_digests = np.zeros(workers, dtype=bool)

    def append_ops(w: int) -> None:
        """A worker publishes a segment: temporary file, fsync, owner check, rename; every 17th
        append folds the worker's segments into one and deletes the 17 it supersedes."""
        ops["create"] += 1
        ops["open"] += 2
        ops["rename"] += 1
        live_segments[w] += 1
        if live_segments[w] > SEGMENTS_KEPT_PER_WRITER - 1:
            ops["create"] += 1
            ops["open"] += 1
            ops["rename"] += 1
            ops["unlink"] += live_segments[w]
            live_segments[w] = 1

    def digest_time(t_raw: float) -> float:
        """When a row published at ``t_raw`` reaches the digests: the aggregator's next round."""
        return math.ceil(t_raw / period) * period + publish_ms / 1e3

    def raw_published(t: float, final: bool) -> None:
        publishes.append(t)
        if final:
            raw_finals.append(t)
        if shared:
            ops["open"] += 1  # the aggregator reads each new segment once
            r = math.ceil(t / period)
            if not digest_rounds or digest_rounds[-1] != r:
                digest_rounds.append(r)

    def visible_between(t0: float, t1: float) -> int:
        """Files a reader opens for what became visible in (t0, t1]: segments, or digests."""
        if not shared:
            return bisect.bisect_right(publishes, t1) - bisect.bisect_right(publishes, t0)
        lag = publish_ms / 1e3
        return (bisect.bisect_right(digest_rounds, math.floor((t1 - lag) / period))
                - bisect.bisect_right(digest_rounds, math.floor((t0 - lag) / period)))

    def note_unseen(t: float) -> None:
        """Ages of the oldest and newest final row a proposal made now cannot see."""
        if not shared:
            return
        last_round = math.floor((t - publish_ms / 1e3) / period) * period
        first = bisect.bisect_right(raw_finals, last_round)
        upto = bisect.bisect_right(raw_finals, t)
        unseen_oldest.append(t - raw_finals[first] if first < upto else 0.0)
        unseen_newest.append(t - raw_finals[upto - 1] if first < upto else 0.0)
    # adbo.worker reads peers' segments during each evaluation (without overlap) from the
    # worker's 10th-percentile evaluation time on; the step then reads only what arrived since.
    prefetch_delay = max(0.0, eval_time[0] - 1.2816 * eval_time[1] - 0.2)
    rescan_interval = max(1.0, 0.05 * eval_time[0])  # then again at this interval until it ends
    warmup = costs.get("warmup_s", 0.0) if warmup_cpu_s is None else warmup_cpu_s
    warmed = np.zeros(workers, dtype=bool)
    warmup_job: dict[int, int] = {}
    samples_while_importing = np.zeros(workers, dtype=int)
    waiting_for_import = np.zeros(workers, dtype=bool)
    step_s = step_cost(costs)
    read_s, publish_s, per_entry = costs["read_s"], costs["publish_s"], costs["list_per_entry_s"]
    buckets = math.ceil(workers / 64)
    spread = 0.1 * workers if start_spread is None else start_spread
    horizon = duration + spread + 3 * (eval_time[0] + 3 * eval_time[1])
    cpu = Cpu(cores)
    events: list[tuple[float, int, str, int]] = []  # (time, tiebreak, kind, worker)
    counter = 0
    publishes: list[float] = []  # times segments became visible, in order
    finals_visible: list[float] = []  # times final rows became visible, in order
    last_scan = np.zeros(workers)
    pending_final = np.zeros(workers, dtype=bool)
    phase: dict[int, str] = {}
    cpu_job_of: dict[int, int] = {}
    step_started = np.zeros(workers)
    eval_start = np.full(workers, np.nan)
    ahead_done = np.ones(workers, dtype=bool)
    eval_done = np.zeros(workers, dtype=bool)
    starts: list[float] = []
    ends: list[float] = []
    overheads: list[float] = []
    opens = listings = writes = 0
    next_job = 0

    def at(t: float, kind: str, w: int) -> None:
        nonlocal counter
        counter += 1
        heapq.heappush(events, (t, counter, kind, w))

    def run_cpu(t: float, work: float, w: int, then: str, latency: float = 0.0) -> None:
        """CPU work, then a wait (filesystem latency), then event ``then`` for worker w."""
        nonlocal next_job
        if cpu.cores <= 0:  # a core of its own: no sharing to simulate
            at(t + work + latency, then, w)
            return
        next_job += 1
        cpu.jobs[next_job] = work
        cpu_job_of[next_job] = w
        phase[next_job] = f"{then}|{latency}"

    def scan_work(t: float, w: int, with_step: bool = True) -> tuple[float, float]:
        nonlocal opens, listings
        new = visible_between(last_scan[w], t)
        listed = 1 if shared else 1 + buckets  # the digest directory, or shards/ and every bucket
        entries = 0 if shared else min(workers, 64) * SEGMENTS_KEPT_PER_WRITER
        listings += listed
        opens += new
        ops["listing"] += listed
        ops["open"] += new
        if shared and new and not saw_digests[w]:
            saw_digests[w] = True
            ops["open"] += 1  # is a holder alive? asked once, at the first sight of digests
        if with_step:
            ops["stat"] += 1  # the STOP file
            if tickets:
                ops["create"] += 1  # the budget ticket
            note_unseen(t)
        last_scan[w] = t
        work = new * read_s + buckets * entries * per_entry + (step_s(len(finals_visible)) if with_step else 0.0)
        return work, new * open_ms / 1e3 + listed * list_ms / 1e3

    def begin_step(t: float, w: int, resumed: bool = False) -> None:
        """``resumed``: the step began earlier and waited for the import; its start time stays."""
        if not resumed:
            step_started[w] = t
        job = warmup_job.get(w)
        if job is not None and job in cpu.jobs and not math.isnan(eval_start[w]):
            if samples_while_importing[w] < Worker.SAMPLES_WHILE_IMPORTING:  # sample, no fit
                samples_while_importing[w] += 1
                work, latency = scan_work(t, w, with_step=False)
                run_cpu(t, work + publish_s + other_cpu_s, w, "published", latency + publish_ms / 1e3)
                return
            cpu.low.discard(job)  # the worker waits for the import, which gets its priority back
            waiting_for_import[w] = True
            return
        if overlap and not math.isnan(eval_start[w]):
            run_cpu(t, publish_s + other_cpu_s, w, "published", publish_ms / 1e3)  # scan+step were done ahead
        else:
            work, latency = scan_work(t, w)
            run_cpu(t, work + publish_s + other_cpu_s, w, "published", latency + publish_ms / 1e3)

    def published(t: float, w: int) -> None:
        nonlocal writes
        writes += 1
        append_ops(w)
        raw_published(t, bool(pending_final[w]))
        if pending_final[w]:
            finals_visible.append(t)
            pending_final[w] = False
        overheads.append(t - step_started[w])
        eval_start[w] = t
        starts.append(t)
        ends.append(math.nan)
        at(t + max(0.0, float(rng.normal(*eval_time))), "evaluated", w)
        if not warmed[w] and warmup > 0:
            warmed[w] = True  # the background import of the surrogate's library (adbo.worker._warm_up)
            run_cpu(t, warmup, w, "warmed")
            if cpu.cores > 0:
                cpu.low.add(next_job)
                warmup_job[w] = next_job
        if overlap:
            ahead_done[w] = False
            eval_done[w] = False
            work, latency = scan_work(t, w)
            run_cpu(t, work, w, "ahead", latency)
        elif scan_ahead and cpu.cores > 0:  # with a core per worker, evaluated() accounts for it
            at(t + prefetch_delay, f"prefetch@{len(starts) - 1}", w)  # one chain of scans per evaluation

    def scanned_ahead(t: float, w: int, index: int) -> None:
        """The background scans of one evaluation, counted at its end: with a core per worker
        they cost the critical path nothing, and events for each would make 10,000 workers slow."""
        nonlocal opens, listings
        first = starts[index] + prefetch_delay
        if t <= first:
            return
        last = first + math.floor((t - first) / rescan_interval) * rescan_interval
        new = visible_between(last_scan[w], last)
        scans = math.floor((t - first) / rescan_interval) + 1
        listed = scans * (1 if shared else 1 + buckets)
        opens += new
        listings += listed
        ops["open"] += new
        ops["listing"] += listed
        last_scan[w] = last

    def evaluated(t: float, w: int, index: int) -> None:
        nonlocal writes
        ends[index] = t
        if scan_ahead and not overlap and cpu.cores <= 0:
            scanned_ahead(t, w, index)
        if t - starts[index] > PUBLISH_AT_ONCE_AFTER_S:
            # adbo.worker publishes the result of a long evaluation at once, not with the next step
            writes += 1
            append_ops(w)
            raw_published(t, True)
            finals_visible.append(t)
        else:
            pending_final[w] = True
        if t >= horizon:
            return
        if overlap and not ahead_done[w]:
            eval_done[w] = True  # the step waits for the background scan and proposal
            return
        begin_step(t, w)

    eval_index: dict[int, int] = {}
    for w in range(workers):
        at(float(rng.uniform(0.0, spread)) if workers > 1 else 0.0, "start", w)
    while True:
        nxt = cpu.next_finish()
        if not events and nxt is None:
            break
        if nxt is not None and (not events or nxt[0] <= events[0][0]):
            t, job = nxt
            cpu.advance(t)
            del cpu.jobs[job]
            w = cpu_job_of.pop(job)
            then, latency = phase.pop(job).split("|")
            at(t + float(latency), then, w)
            continue
        t, _, kind, w = heapq.heappop(events)
        cpu.advance(t)
        if t > horizon and kind != "evaluated":
            continue
        if kind == "start":
            eval_start[w] = math.nan
            begin_step(t, w)
        elif kind == "published":
            eval_index[w] = len(starts)
            published(t, w)
        elif kind == "evaluated":
            evaluated(t, w, eval_index[w])
        elif kind == "noop":
            pass
        elif kind == "warmed":
            warmup_job.pop(w, None)
            if waiting_for_import[w]:
                waiting_for_import[w] = False
                begin_step(t, w, resumed=True)
        elif kind.startswith("prefetch@"):
            index = int(kind.split("@")[1])
            if index == eval_index[w] and math.isnan(ends[index]):
                work, latency = scan_work(t, w, with_step=False)  # skipped if the evaluation is over
                run_cpu(t, work, w, "noop", latency)
                at(t + rescan_interval, kind, w)
        elif kind == "ahead":
            ahead_done[w] = True
            if eval_done[w]:
                eval_done[w] = False
                begin_step(t, w)
    s, e = np.array(starts), np.array(ends)
    t0 = float(s.min())
    t1 = t0 + duration
    busy = np.clip(np.minimum(np.where(np.isfinite(e), e, t1), t1) - np.maximum(s, t0), 0.0, None)
    window_starts = (s >= t0) & (s < t1)
    span = float(np.nanmax(np.where(np.isfinite(e), e, s))) - t0
    # Each worker reads its launch's heartbeat file once per poll while it runs.
    ops["open"] += workers * span / lease_poll
    if shared:
        rounds = span / period
        ops["listing"] += rounds * (1 + buckets)  # the aggregator lists shards/ and every bucket
        digests = len(digest_rounds)
        quiet = max(0.0, span / heartbeat_s - digests)  # heartbeats with nothing new: an empty digest
        written = digests + min(quiet, span / heartbeat_s)
        compactions = digests / Aggregator.COMPACT_EVERY
        ops["create"] += written + compactions
        ops["open"] += 2 * (written + compactions)  # fsync, and the lease read before the rename
        ops["rename"] += written + compactions
        ops["unlink"] += compactions * (Aggregator.COMPACT_EVERY + 1)
        beats = span / heartbeat_s
        ops["open"] += beats  # the holder renews its lease: reads it, writes it anew
        ops["create"] += beats
        ops["rename"] += beats
        checks = sum(1.0 / (heartbeat_s * (1 + min(w, 15))) for w in range(1, workers))
        ops["open"] += checks * span  # the others look at the lease now and then
    total_ops = sum(ops.values())
    return {
        "workers": workers, "eval_time": list(eval_time), "duration_s": duration, "cores": cores,
        "overlap": overlap, "scan_ahead": scan_ahead and not overlap, "utilization": float(busy.sum() / (workers * duration)),
        "evaluations_per_worker": float(((e <= t1) & np.isfinite(e)).sum() / workers),
        "median_overhead_s": float(np.median(overheads)), "mean_overhead_s": float(np.mean(overheads)),
        "fs_ops_per_s": {"opens": ops["open"] / span, "listings": ops["listing"] / span, "publishes": writes / span,
                         "creates": ops["create"] / span, "renames": ops["rename"] / span,
                         "unlinks": ops["unlink"] / span, "stats": ops["stat"] / span, "total": total_ops / span},
        "scan_opens_per_s": opens / span,
        "metadata_ops": {"counted": {k: float(v) for k, v in ops.items()}, "span_s": span,
                         "per_s": {k: v / span for k, v in ops.items()}, "total_per_s": total_ops / span,
                         "per_evaluation": {k: v / max(1, len(starts)) for k, v in ops.items()}},
        "shared_reading": shared, "digest_period_s": period if shared else None,
        "unseen_age_s": ({"oldest_median": float(np.median(unseen_oldest)), "oldest_p95": float(np.percentile(unseen_oldest, 95)),
                          "newest_median": float(np.median(unseen_newest))} if unseen_oldest else None),
        "results_at_end": len(finals_visible), "steps_in_window": int(window_starts.sum()),
    }


def simulate_centralized(workers: int, eval_time: tuple[float, float], duration: float,
                         manager_step: Callable[[int], float], seed: int = 0) -> dict[str, Any]:
    """One manager proposes for everyone, one request at a time (first come, first served)."""
    rng = np.random.default_rng(seed)
    free_at = 0.0
    results = 0
    finishing: list[tuple[float, int]] = [(0.0, w) for w in range(workers)]
    heapq.heapify(finishing)
    starts, ends = [], []
    horizon = duration + 3 * (eval_time[0] + 3 * eval_time[1])
    while finishing:
        t, w = heapq.heappop(finishing)
        if t > horizon:
            continue
        begin = max(t, free_at) + manager_step(results)
        free_at = begin
        end = begin + max(0.0, float(rng.normal(*eval_time)))
        starts.append(begin)
        ends.append(end)
        results += 1
        heapq.heappush(finishing, (end, w))
    s, e = np.array(starts), np.array(ends)
    t0 = float(s.min())
    t1 = t0 + duration
    busy = np.clip(np.minimum(e, t1) - np.maximum(s, t0), 0.0, None)
    return {"workers": workers, "utilization": float(busy.sum() / (workers * duration)),
            "evaluations_per_worker": float((e <= t1).sum() / workers)}


FS_PRESETS = {"local": (0.0, 0.0, 0.0), "lustre": (1.0, 2.0, 5.0), "lustre-idle": (0.3, 0.5, 2.0)}
"""Milliseconds per open, listing and publish. ``lustre``: round numbers for a loaded metadata server
(fixed); ``lustre-idle``: an unloaded one, meant for ``--mds-capacity``, which adds the queueing."""
MDS_SATURATION = 0.95


def simulate_with_mds(capacity: float, base_ms: tuple[float, float, float], **kwargs: Any) -> dict[str, Any]:
    """``simulate`` with a metadata server of ``capacity`` operations per second shared by all workers.

    The server is a single queue: at load rho (the run's operations per second over the capacity)
    every metadata operation takes its unloaded time divided by (1 - rho), as in an M/M/1 queue.
    The load depends on the latencies it causes, so the two are iterated to a fixed point. A load
    of 95% or more is reported as saturated (latency grows without bound there).
    """
    factor, load = 1.0, 0.0
    for _ in range(6):
        result = simulate(open_ms=base_ms[0] * factor, list_ms=base_ms[1] * factor, publish_ms=base_ms[2] * factor,
                          **kwargs)
        load = result["metadata_ops"]["total_per_s"] / capacity
        new = 1.0 / (1.0 - min(load, MDS_SATURATION))
        if abs(new - factor) < 0.01 * factor:
            break
        factor = new
    result["mds"] = {"capacity_ops_per_s": capacity, "load": load, "latency_factor": factor,
                     "saturated": load >= MDS_SATURATION}
    return result
DEEPHYPER_CBO_STEP_S = {"0": 1.0, "100": 2.64, "1000": 2.0, "20000": 3.2, "40000": 2.83}
"""DeepHyper 0.13 CBO seconds per step on this VM (benchmarks/step_overhead.py, same run as adbo's)."""


def validate(paths: list[str], costs: dict[str, Any], other_cpu_s: float, seeds: int = 5) -> list[dict[str, Any]]:
    """Simulate each adbo measurement of ``benchmarks/utilization.py`` as it ran on this machine:
    same workers, evaluation times, window and start spread, all CPU work shared by its cores."""
    rows = []
    for path in paths:
        real = json.loads(Path(path).read_text())
        for r in real["results"]:
            if r["method"] not in ("adbo", "adbo_overlap", "adbo_shared"):
                continue
            runs = [simulate(r["workers"], tuple(real["eval_time"]), r["duration_s"], costs, cores=os.cpu_count() or 1,
                             overlap=r["method"] == "adbo_overlap",
                             start_spread=r["startup_s"]["first_to_last_worker_start"], seed=seed,
                             other_cpu_s=other_cpu_s, shared=r["method"] == "adbo_shared") for seed in range(seeds)]
            sims = [run["utilization"] for run in runs]
            row = {"method": r["method"], "workers": r["workers"], "duration_s": r["duration_s"],
                   "real": r["utilization"], "simulated": float(np.mean(sims)),
                   "difference_pp": 100 * (float(np.mean(sims)) - r["utilization"]), "source": path}
            if "fs_ops" in r:
                # Operations per evaluation, kind by kind: the counts adbo.fsops made in the real run
                # against the simulator's rules (a ratio of rates would also compare run lengths).
                real_ops = r["fs_ops"]["per_evaluation"]
                sim_ops = {k: float(np.mean([run["metadata_ops"]["per_evaluation"][k] for run in runs])) for k in real_ops}
                total_real, total_sim = sum(real_ops.values()), sum(sim_ops.values())
                row["metadata_ops_per_evaluation"] = {
                    "real": real_ops, "simulated": sim_ops, "total_real": total_real, "total_simulated": total_sim,
                    "total_difference": total_sim / total_real - 1.0,
                    "by_kind_difference": {k: (sim_ops[k] / real_ops[k] - 1.0) if real_ops[k] else None for k in real_ops}}
            rows.append(row)
            ops_note = (f", metadata ops/evaluation real {row['metadata_ops_per_evaluation']['total_real']:.1f}, "
                        f"simulated {row['metadata_ops_per_evaluation']['total_simulated']:.1f} "
                        f"({100 * row['metadata_ops_per_evaluation']['total_difference']:+.1f}%)"
                        if "metadata_ops_per_evaluation" in row else "")
            print(f"validate {row['method']:>12} N={row['workers']:>3}: real {row['real']:.1%}, "
                  f"simulated {row['simulated']:.1%} ({row['difference_pp']:+.1f} pp){ops_note}", flush=True)
    return rows


def plot(results: list[dict[str, Any]], real_paths: list[str], path: str, title: str,
         extra: list[tuple[str, list[dict[str, Any]]]] = (), validation: list[dict[str, Any]] = ()) -> None:
    """Utilization against workers, like the paper's figure: projections as lines, real runs as marks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    n = [r["workers"] for r in results]
    ax.plot(n, [100 * r["utilization"] for r in results], "o-", label="adbo, projected")
    for label, rows in extra:
        ax.plot([r["workers"] for r in rows], [100 * r["utilization"] for r in rows], "o--", label=label)
    ax.plot(n, [100 * r["centralized_deephyper_utilization"] for r in results], "s-", color="gray",
            label="centralized DeepHyper CBO, projected")
    markers = {"adbo": ("*", "C0"), "adbo_overlap": ("P", "C1"), "deephyper_decentralized": ("^", "C3"),
               "centralized_deephyper": ("x", "black")}
    seen: set[str] = set()
    for real_path in real_paths:
        real = json.loads(Path(real_path).read_text())
        for r in real["results"]:
            marker, color = markers.get(r["method"], ("o", "C5"))
            label = f"{r['method']}, measured (2-core VM)"
            ax.scatter([r["workers"]], [100 * r["utilization"]], marker=marker, s=90, color=color,
                       label=None if label in seen else label, zorder=5)
            seen.add(label)
    if validation:
        ax.scatter([v["workers"] for v in validation], [100 * v["simulated"] for v in validation], marker="o", s=140,
                   facecolors="none", edgecolors="C0", label="adbo, simulated as measured (2 shared cores)", zorder=6)
    ax.set_xscale("log")
    ax.set_xlabel("workers")
    ax.set_ylabel("worker utilization (%)")
    ax.set_ylim(0, 101)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 0.1))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", default="8,32,64", help="comma-separated worker counts (default 8,32,64)")
    parser.add_argument("--eval-time", default="10,3", help="evaluation time MEAN,STD seconds (default 10,3)")
    parser.add_argument("--duration", type=float, default=300.0, help="utilization window, seconds (default 300)")
    parser.add_argument("--cores", type=float, default=0.0,
                        help="cores shared by all workers (2 reproduces this VM); 0: one per worker (default)")
    parser.add_argument("--overlap", action="store_true", help="scan and propose during the evaluation")
    parser.add_argument("--fs", choices=sorted(FS_PRESETS), default="local",
                        help="filesystem latencies: local (0) or lustre (1 ms open, 2 ms listing, 5 ms publish)")
    parser.add_argument("--start-spread", type=float, default=None,
                        help="seconds over which workers start (default 0.1 s per worker)")
    parser.add_argument("--no-calibrate", action="store_true", help="use DEFAULT_COSTS instead of timing this machine")
    parser.add_argument("--other-cpu-per-eval", type=float, default=OTHER_CPU_PER_EVAL_S,
                        help="CPU seconds per evaluation outside scan, step and publish (process and Parsl "
                             f"bookkeeping); default {OTHER_CPU_PER_EVAL_S}, measured (see OTHER_CPU_PER_EVAL_S)")
    parser.add_argument("--validate", nargs="+", metavar="REAL.json",
                        help="compare with utilization.py results (run on this machine) instead of projecting")
    parser.add_argument("--plot", metavar="PNG", help="draw utilization against workers to this file")
    parser.add_argument("--real", nargs="*", default=[], metavar="REAL.json",
                        help="utilization.py results to mark on the plot")
    parser.add_argument("--shared-reading", choices=["off", "on", "both"], default="off",
                        help="workers read every peer's segments (off), read digests one aggregator writes "
                             "(on, adbo.digests), or project both side by side (default off)")
    parser.add_argument("--mds-capacity", type=float, default=0.0, metavar="OPS",
                        help="model the metadata server as one queue of this many operations per second "
                             "(latency = unloaded latency / (1 - load)); 0: fixed latencies (default)")
    parser.add_argument("--tickets", action="store_true",
                        help="workers claim a budget ticket per evaluation (launches with --max-evals)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    mean, std = (float(v) for v in args.eval_time.split(","))
    costs = DEFAULT_COSTS if args.no_calibrate else calibrate()
    if args.validate:
        rows = validate(args.validate, costs, args.other_cpu_per_eval)
        emit({"machine": machine(), "costs": costs, "other_cpu_per_eval_s": args.other_cpu_per_eval,
              "validation": rows}, args.json)
        return
    open_ms, list_ms, publish_ms = FS_PRESETS[args.fs]
    dh_step = step_cost({"step_s": DEEPHYPER_CBO_STEP_S})
    results = []
    shared_results = []
    modes = {"off": [False], "on": [True], "both": [False, True]}[args.shared_reading]

    def project(n: int, shared: bool) -> dict[str, Any]:
        kwargs = dict(workers=n, eval_time=(mean, std), duration=args.duration, costs=costs, cores=args.cores,
                      overlap=args.overlap, start_spread=args.start_spread, seed=args.seed,
                      other_cpu_s=args.other_cpu_per_eval, shared=shared, tickets=args.tickets)
        if args.mds_capacity > 0:
            return simulate_with_mds(args.mds_capacity, (open_ms, list_ms, publish_ms), **kwargs)
        return simulate(open_ms=open_ms, list_ms=list_ms, publish_ms=publish_ms, **kwargs)

    for n in (int(v) for v in args.workers.split(",")):
        central = simulate_centralized(n, (mean, std), args.duration, dh_step, args.seed)
        for shared in modes:
            t0 = time.time()
            adbo_run = project(n, shared)
            adbo_run["centralized_deephyper_utilization"] = central["utilization"]
            adbo_run["simulated_in_s"] = time.time() - t0
            (shared_results if shared else results).append(adbo_run)
            ops = adbo_run["metadata_ops"]
            mds = adbo_run.get("mds")
            unseen = adbo_run["unseen_age_s"]
            print(f"N={n:>6} {'shared' if shared else 'direct'}: adbo {adbo_run['utilization']:.1%} (median overhead "
                  f"{adbo_run['median_overhead_s']:.3f} s), metadata {ops['total_per_s']:,.0f} ops/s (opens "
                  f"{ops['per_s']['open']:,.0f}, listings {ops['per_s']['listing']:,.0f})"
                  + (f", MDS load {mds['load']:.0%}{' SATURATED' if mds['saturated'] else ''}" if mds else "")
                  + (f", unseen results {unseen['oldest_median']:.1f} s old (median)" if unseen else "")
                  + f"; centralized {central['utilization']:.1%}", flush=True)
    out = {"machine": machine(),
           "costs": costs, "fs": args.fs, "fs_latency_ms": {"open": open_ms, "listing": list_ms, "publish": publish_ms},
           "mds_capacity_ops_per_s": args.mds_capacity or None,
           "results": results or shared_results, "shared_reading_results": shared_results if results else []}
    if args.plot:
        extra = []
        if not args.overlap:
            with_overlap = [simulate(r["workers"], (mean, std), args.duration, costs, args.cores, True, open_ms,
                                     list_ms, publish_ms, args.start_spread, args.seed, args.other_cpu_per_eval)
                            for r in results]
            out["overlap_results"] = with_overlap
            extra.append(("adbo with overlap, projected", with_overlap))
        cores = f"{args.cores:g} shared cores" if args.cores > 0 else "a core per worker"
        validation = validate(args.real, costs, args.other_cpu_per_eval) if args.real else []
        out["validation"] = validation
        windows = sorted({json.loads(Path(p).read_text())["duration_s"] for p in args.real})
        measured = f"{windows[0]:g}-{windows[-1]:g} s windows" if len(windows) > 1 else f"{windows[0]:g} s window" if windows else ""
        plot(results, args.real, args.plot,
             f"projection: evaluations N({mean:g} s, {std:g} s), {args.duration:g} s window, {cores}, {args.fs} "
             f"filesystem\nmeasured: this 2-core VM, evaluations N(10 s, 3 s), {measured}", extra, validation)
    emit(out, args.json)


if __name__ == "__main__":
    main()
