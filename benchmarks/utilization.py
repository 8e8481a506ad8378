#!/usr/bin/env python
"""Worker utilization with N real worker processes on this machine: adbo against two baselines.

Utilization, as the ADBO paper defines it: the sum over evaluations of (finished - started), with
evaluations still running cut at the end of the window, divided by (window x workers). The
window starts when the first evaluation starts and lasts ``--duration`` seconds, so workers
that start late count against it. The objective is 10-D Ackley that sleeps N(MEAN, STD) seconds.

* ``adbo``: ``adbo.launch`` on the ``local`` site (Parsl HighThroughputExecutor on 127.0.0.1,
  one process per worker) with default settings (``overlap="auto"``: the next proposal is computed
  during the evaluation only where the BO step takes 2% of an evaluation or more); stopped by the
  run's STOP file at the window end.
* ``adbo_overlap``: the same with ``overlap="on"`` (the scan and the next proposal always run while
  the objective runs); also reports how old the data behind each proposal was and how many results
  finished in that time (``proposal_age_s``, ``stale_results``).
* ``deephyper_decentralized``: N processes, each running its own DeepHyper CBO (defaults) and
  sharing results through one shared list (a ``multiprocessing`` manager, the role of DeepHyper's
  ``SharedMemoryStorage``): before each evaluation a worker tells its CBO the results that
  finished since its last step, then asks it for one configuration.
* ``centralized``: one DeepHyper CBO in a manager process proposing for all N workers (threads
  that sleep): a worker waits while the manager serves the workers that finished before it.

Also reported per method: the distribution of the per-step BO overhead (and, for adbo, of the
scan of peers' shards), evaluations completed, and the peak resident memory of the whole
process tree. Prints JSON; ``--json OUT`` writes it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import emit, machine  # noqa: E402

DIM = 10


def ackley10() -> Any:
    from adbo.objectives.synthetic import SyntheticObjective

    return SyntheticObjective("ackley", DIM)


# -- measuring -------------------------------------------------------------------------------------
class MemoryWatch:
    """Peak summed RSS of this process, its descendants and Parsl's worker pools, every half second.

    Parsl's LocalProvider starts the worker pool detached from this process (its own session),
    so pools are found by their command line, with their own descendants (the workers).
    """

    POOL_MARKERS = ("process_worker_pool", "interchange.py")

    def __init__(self) -> None:
        import psutil

        self.root = psutil.Process()
        self.peak = 0
        self.cpu_s: dict[int, float] = {}  # pid -> CPU seconds, last seen (processes may exit)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.5):
            procs = {self.root.pid: self.root}
            roots = [self.root]
            for proc in psutil.process_iter(["cmdline"]):
                cmd = " ".join(proc.info.get("cmdline") or [])
                if any(marker in cmd for marker in self.POOL_MARKERS):
                    roots.append(proc)
            for root in roots:
                try:
                    for proc in [root, *root.children(recursive=True)]:
                        procs[proc.pid] = proc
                except psutil.Error:
                    pass
            total = 0
            for proc in procs.values():
                try:
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu_s[proc.pid] = times.user + times.system
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**20

    def total_cpu_s(self) -> float:
        """CPU seconds used by every process watched (from their start, sampled every 0.5 s)."""
        return float(sum(self.cpu_s.values()))


def utilization(starts: np.ndarray, ends: np.ndarray, t0: float, duration: float, workers: int) -> float:
    """Busy time within [t0, t0 + duration] over (workers x duration); unfinished work is cut."""
    t1 = t0 + duration
    ends = np.where(np.isfinite(ends), ends, t1)
    busy = np.clip(np.minimum(ends, t1) - np.maximum(starts, t0), 0.0, None)
    return float(busy.sum() / (workers * duration))


def distribution(values: list[float] | np.ndarray) -> dict[str, float]:
    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if not len(v):
        return {}
    p = np.percentile(v, [50, 90, 99])
    return {"median": float(p[0]), "p90": float(p[1]), "p99": float(p[2]), "max": float(v.max()),
            "mean": float(v.mean()), "n": int(len(v))}


def summarize(name: str, workers: int, duration: float, starts: list[float], ends: list[float],
              overheads: list[float], extra: dict[str, Any], worker_of: list[int] | None = None) -> dict[str, Any]:
    s, e = np.asarray(starts, dtype=float), np.asarray(ends, dtype=float)
    t0 = float(s.min())
    done = np.isfinite(e) & (e <= t0 + duration)
    steady = {}
    if worker_of is not None:
        # From the moment the last worker began its first evaluation: what a long run converges to.
        w = np.asarray(worker_of)
        last_first = max(float(s[w == k].min()) for k in np.unique(w))
        if last_first < t0 + duration:
            steady = {"steady_state_utilization": utilization(s, e, last_first, t0 + duration - last_first, workers),
                      "first_to_last_worker_start_s": last_first - t0}
    out = {"method": name, "workers": workers, "duration_s": duration,
           "utilization": utilization(s, e, t0, duration, workers), **steady,
           "evaluations_completed": int(done.sum()),
           "bo_overhead_s": distribution(overheads), **extra}
    print(f"{name:>24} N={workers}: utilization {out['utilization']:.1%}, "
          f"{out['evaluations_completed']} evaluations, median overhead "
          f"{out['bo_overhead_s'].get('median', float('nan')):.3f} s", flush=True)
    return out


# -- adbo ----------------------------------------------------------------------------------------
def run_adbo(workers: int, eval_time: tuple[float, float], duration: float, work_dir: Path,
             overlap: bool = False, shared_reading: str = "off") -> dict[str, Any]:
    import adbo
    from adbo import fsops
    from adbo.objectives.synthetic import SyntheticObjective
    from adbo.storage import STOP_FILE, scan_run

    name = "adbo" + ("_overlap" if overlap else "") + ("_shared" if shared_reading == "on" else "")
    run_dir = work_dir / f"{name}-{workers}"
    if run_dir.exists():
        raise SystemExit(f"{run_dir} exists: give --keep a fresh folder")
    objective = SyntheticObjective("ackley", DIM, eval_time=eval_time)
    watch = MemoryWatch()
    launched = time.time()
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(summary=adbo.launch(
        objective, objective.space(), run_dir, site="local-processes", workers=workers, max_evals=None,
        direction="minimize", overlap="on" if overlap else "auto", progress=False, startup_timeout=600,
        shared_reading=shared_reading)), daemon=True)
    thread.start()
    first_start = None
    while first_start is None:  # the window opens with the first evaluation anywhere
        time.sleep(0.5)
        if (run_dir / "shards").exists():
            _, table, _ = scan_run(run_dir)
            starts = [r.t_started for r in table.rows]
            first_start = min(starts) if starts else None
    time.sleep(max(0.0, first_start + duration - time.time()))
    (run_dir / STOP_FILE).touch()
    thread.join()
    peak = watch.stop()
    _, table, reader = scan_run(run_dir)
    rows = table.rows
    per_worker_first = {}
    for r in rows:
        per_worker_first[r.worker] = min(per_worker_first.get(r.worker, np.inf), r.t_started)
    extra = {}
    if any("proposal_age_s" in r.metadata for r in rows):
        # How many results (anyone's) finished between a proposal's scan and its submission.
        finished = np.sort([r.t_finished for r in rows if r.status != 0 and np.isfinite(r.t_finished)])
        stale = []
        for r in rows:
            age = r.metadata.get("proposal_age_s")
            if age is not None:
                stale.append(int(np.searchsorted(finished, r.t_submitted, side="right")
                                 - np.searchsorted(finished, r.t_submitted - age, side="right")))
        extra["proposal_age_s"] = distribution([r.metadata.get("proposal_age_s", np.nan) for r in rows])
        extra["stale_results"] = distribution(stale)
    # Metadata operations the workers' storage code issued (adbo.fsops), one process per worker here.
    reports = result["summary"].worker_reports
    fs_ops = {kind: int(sum(r.get("fs_ops", {}).get(kind, 0) for r in reports)) for kind in fsops.KINDS}
    finished = [r.t_finished for r in rows if np.isfinite(r.t_finished)]
    span = (max(finished) if finished else first_start) - min(r.t_started for r in rows)
    extra["fs_ops"] = {"counted": fs_ops, "evaluations": len(rows), "span_s": span,
                       "per_evaluation": {k: v / max(1, len(rows)) for k, v in fs_ops.items()},
                       "per_s": {k: v / max(span, 1e-9) for k, v in fs_ops.items()},
                       "digests_published": int(sum(r.get("digests_published", 0) for r in reports))}
    return summarize(name, workers, duration, [r.t_started for r in rows],
                     [r.t_finished if r.status != 0 else np.nan for r in rows],
                     [r.bo_overhead_s for r in rows],
                     {"scan_s": distribution([r.metadata.get("scan_s", np.nan) for r in rows]),
                      "results_at_end": len(rows), "peak_rss_mib": peak,
                      "cpu_s_per_evaluation": watch.total_cpu_s() / max(1, len(rows)),
                      "startup_s": {"launch_to_first_start": first_start - launched,
                                    "first_to_last_worker_start": max(per_worker_first.values()) - first_start},
                      "segments_read_by_final_scan": reader.opens, **extra},
                     worker_of=[r.worker for r in rows])


# -- DeepHyper decentralized ---------------------------------------------------------------------
def _dh_worker(w: int, shared: Any, stop: Any, eval_time: tuple[float, float], out: Any) -> None:
    from _anchors import DeepHyperCBO

    from adbo.space import SearchSpace

    objective = ackley10()
    cbo = DeepHyperCBO(SearchSpace(objective.space()).configspace, seed=w)
    rng = np.random.default_rng([w, 17])
    seen = 0
    while not stop.is_set():
        t_step = time.time()
        new = shared[seen:]
        if new:
            cbo.tell_many([c for c, _ in new], [v for _, v in new])
            seen += len(new)
        config = cbo.ask()
        t_start = time.time()
        time.sleep(max(0.0, rng.normal(*eval_time)))
        value = objective.value(config)
        t_end = time.time()
        shared.append((config, value))
        out.put((w, t_start, t_end, t_start - t_step))
    cbo.close()


def run_deephyper_decentralized(workers: int, eval_time: tuple[float, float], duration: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    watch = MemoryWatch()
    with ctx.Manager() as manager:
        shared, stop, out = manager.list(), manager.Event(), manager.Queue()
        procs = [ctx.Process(target=_dh_worker, args=(w, shared, stop, eval_time, out), daemon=True)
                 for w in range(workers)]
        for p in procs:
            p.start()
        records = _collect_until_window_end(out, duration)
        stop.set()
        for p in procs:
            p.join(timeout=120)
        while True:
            try:
                records.append(out.get_nowait())
            except queue.Empty:
                break
        for p in procs:
            if p.is_alive():
                p.terminate()
    peak = watch.stop()
    starts = [r[1] for r in records]
    ends = [r[2] for r in records]
    return summarize("deephyper_decentralized", workers, duration, starts, ends, [r[3] for r in records],
                     {"peak_rss_mib": peak}, worker_of=[r[0] for r in records])


def _collect_until_window_end(out: Any, duration: float) -> list[tuple]:
    """Gather (worker, start, end, overhead) records; the window opens at the first start."""
    records: list[tuple] = []
    window_end = None
    while window_end is None or time.time() < window_end:
        try:
            rec = out.get(timeout=0.5)
        except queue.Empty:
            continue
        records.append(rec)
        first = min(r[1] for r in records)
        window_end = first + duration
    return records


# -- centralized -----------------------------------------------------------------------------------
def run_centralized(workers: int, eval_time: tuple[float, float], duration: float) -> dict[str, Any]:
    """One DeepHyper CBO proposes for everyone; workers are threads that sleep for the evaluation."""
    from _anchors import DeepHyperCBO

    from adbo.space import SearchSpace

    objective = ackley10()
    cbo = DeepHyperCBO(SearchSpace(objective.space()).configspace, seed=0)
    rng = np.random.default_rng(17)
    finished: queue.Queue = queue.Queue()
    records: list[tuple] = []
    watch = MemoryWatch()

    running: dict[int, tuple[float, float]] = {}  # worker -> (start, wait before it)

    def evaluate(w: int, config: dict, seconds: float) -> None:
        time.sleep(seconds)
        finished.put((w, config, objective.value(config), time.time()))

    def dispatch(w: int, since: float) -> None:
        config = cbo.ask()
        now = time.time()
        running[w] = (now, now - since)
        threading.Thread(target=evaluate, args=(w, config, max(0.0, rng.normal(*eval_time))), daemon=True).start()

    t_launch = time.time()
    for w in range(workers):
        dispatch(w, t_launch)
    window_end = min(start for start, _ in running.values()) + duration
    while True:
        w, config, value, t_end = finished.get()
        t_start, waited = running.pop(w)
        records.append((w, t_start, t_end, waited))
        if t_end >= window_end:
            break
        cbo.tell(config, value)
        dispatch(w, t_end)
    # Evaluations still running at the window end count up to it (utilization() cuts them).
    records.extend((w, start, float("nan"), waited) for w, (start, waited) in running.items())
    peak = watch.stop()
    cbo.close()
    return summarize("centralized_deephyper", workers, duration, [r[1] for r in records], [r[2] for r in records],
                     [r[3] for r in records], {"peak_rss_mib": peak}, worker_of=[r[0] for r in records])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=8, help="worker processes (default 8)")
    parser.add_argument("--eval-time", default="10,3", help="evaluation time MEAN,STD seconds (default 10,3)")
    parser.add_argument("--duration", type=float, default=600.0,
                        help="measurement window in seconds (default 600: at 64 workers on 2 cores start-up "
                             "takes minutes, and a short window measures mostly start-up)")
    parser.add_argument("--methods", default="adbo,deephyper_decentralized,centralized",
                        help="comma-separated: adbo, adbo_overlap (proposal computed during the evaluation), "
                             "adbo_shared (shared reading through digests), deephyper_decentralized, centralized")
    parser.add_argument("--keep", help="put adbo's run directories in this folder and keep them")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    mean, std = (float(v) for v in args.eval_time.split(","))
    methods = [m for m in args.methods.split(",") if m]
    known = {"adbo", "adbo_overlap", "adbo_shared", "deephyper_decentralized", "centralized"}
    if set(methods) - known:
        raise SystemExit(f"unknown method(s) {sorted(set(methods) - known)}; choose from {sorted(known)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="adbo-util-") as scratch:
        tmp = args.keep or scratch
        for method in methods:
            if method in ("adbo", "adbo_overlap", "adbo_shared"):
                results.append(run_adbo(args.workers, (mean, std), args.duration, Path(tmp), method == "adbo_overlap",
                                        "on" if method == "adbo_shared" else "off"))
            elif method == "deephyper_decentralized":
                results.append(run_deephyper_decentralized(args.workers, (mean, std), args.duration))
            else:
                results.append(run_centralized(args.workers, (mean, std), args.duration))
    out = {"machine": machine(),
           "workers": args.workers, "eval_time": [mean, std], "duration_s": args.duration, "results": results}
    emit(out, args.json)


if __name__ == "__main__":
    main()
