"""What one worker publishes: one segment per evaluation, and nothing left unpublished on exit."""

from __future__ import annotations

from pathlib import Path

from adbo.evaluation import objective_identity
from adbo.rows import IN_FLIGHT, OK
from adbo.segments import SegmentName
from adbo.space import SearchSpace
from adbo.storage import SHARD_DIR, open_run, scan_run
from adbo.worker import STOP_FILE, run_worker


class StopsTheRun:
    """Picklable objective that creates the run's STOP file during its ``n``-th evaluation."""

    def __init__(self, run_dir: str, n: int):
        self.run_dir, self.n, self.calls = run_dir, n, 0

    def __call__(self, params):
        self.calls += 1
        if self.calls == self.n:
            (Path(self.run_dir) / STOP_FILE).touch()
        return (params["a"] - 0.3) ** 2 + params["b"] ** 2

    def adbo_identity(self) -> str:
        return "tests:StopsTheRun"


def start_run(run_dir: str, objective, workers: int = 1) -> None:
    open_run(run_dir, SearchSpace({"a": (0.0, 1.0), "b": (0.0, 1.0)}), objective_identity(objective), "minimize",
             settings={"workers": workers})


def rows_by_seq(run_dir: str):
    _, table, _ = scan_run(run_dir)
    return sorted(table.rows, key=lambda r: r.seq)


def one_worker_run(tmp_path, evaluations: int, n_initial: int, seed: int):
    """A run directory in which worker 0 has finished ``evaluations`` evaluations."""
    run_dir = str(tmp_path / "run")
    objective = StopsTheRun(run_dir, n=10**9)
    start_run(run_dir, objective)
    report = run_worker(run_dir, 0, objective, {"max_evals": evaluations, "n_initial": n_initial, "seed": seed})
    assert report["evaluations"] == evaluations
    return run_dir, objective


def test_each_final_row_shares_a_segment_with_the_next_in_flight_row(tmp_path):
    run_dir, _ = one_worker_run(tmp_path, evaluations=6, n_initial=3, seed=2)
    rows = rows_by_seq(run_dir)
    assert [r.status for r in rows] == [OK] * 6
    # The final row of evaluation k was published in the segment that announced evaluation k+1 ...
    gens = [r.gen for r in rows]
    assert gens == list(range(2, 8)), gens
    # ... so six evaluations took seven segments (the first in-flight row alone), not twelve.
    names = [SegmentName.parse(p.name) for p in (Path(run_dir) / SHARD_DIR).glob("b*/*.h5")]
    assert max(n.gen for n in names) == 7


def test_the_last_result_is_published_when_the_worker_stops(tmp_path):
    run_dir = str(tmp_path / "run")
    objective = StopsTheRun(run_dir, n=3)
    start_run(run_dir, objective)
    report = run_worker(run_dir, 0, objective, {"max_evals": 50, "n_initial": 2, "seed": 1})
    assert report["evaluations"] == 3 and report["stop_reason"] == "STOP file present"
    rows = rows_by_seq(run_dir)
    assert len(rows) == 3 and all(r.status == OK for r in rows), [(r.seq, r.status) for r in rows]
    assert not any(r.status == IN_FLIGHT for r in rows)


def test_a_worker_samples_at_most_three_times_while_its_surrogate_imports(tmp_path):
    """Until the background import is done a worker with evaluations of seconds samples the space,
    then it fits regardless; one with quick evaluations waits for the import at once."""
    from adbo.worker import Worker, WorkerSettings

    run_dir, objective = one_worker_run(tmp_path, evaluations=4, n_initial=2, seed=3)
    # Second workers that never started their warm-up: their library counts as still importing.
    def waiting_worker(worker_id: int, durations: list[float]) -> Worker:
        worker = Worker(run_dir, worker_id, objective, WorkerSettings(max_evals=None, n_initial=2, seed=4))
        worker.scan()
        worker.proposer.design_used = len(worker.proposer.design)
        worker.durations = durations
        return worker

    slow = waiting_worker(1, [2.0, 3.0])  # evaluations of seconds: sample instead of waiting, 3 times
    fits = [slow.propose().n_observations for _ in range(5)]
    assert fits == [0, 0, 0, 4, 4], fits
    quick = waiting_worker(2, [0.01])  # quick evaluations: waiting costs less than a blind sample
    assert quick.propose().n_observations == 4


class PublishesAPeerRow:
    """Objective that publishes a result as peer worker 1, then notes whether the running worker's
    table already holds it before the evaluation ends (it should: the background scan read it)."""

    def __init__(self, run_dir: str):
        self.run_dir, self.worker, self.calls, self.peer_rows_seen = run_dir, None, 0, []

    def __call__(self, params):
        import time

        import numpy as np

        from adbo.rows import EvalRow
        from adbo.storage import SegmentWriter, read_run_info

        info = read_run_info(self.run_dir)
        x = info.space.sample(1, np.random.default_rng(self.calls))[0]
        SegmentWriter(self.run_dir, 1, info.run_id, info.space.dim).append(
            [EvalRow(worker=1, seq=self.calls, status=OK, x=x, params=info.space.decode(x[None])[0], objective=0.5)])
        self.calls += 1
        time.sleep(1.6)  # the first evaluations scan at once, then every second
        table = self.worker.table
        self.peer_rows_seen.append(int((table.worker[: len(table)] == 1).sum()))
        return (params["a"] - 0.3) ** 2

    def adbo_identity(self) -> str:
        return "tests:PublishesAPeerRow"


def test_peers_results_are_read_during_the_evaluation(tmp_path):
    from adbo.worker import Worker, WorkerSettings

    run_dir = str(tmp_path / "run")
    objective = PublishesAPeerRow(run_dir)
    start_run(run_dir, objective, workers=2)
    worker = objective.worker = Worker(run_dir, 0, objective, WorkerSettings(max_evals=None, max_worker_evals=2, seed=1, evaluation="in-process"))
    worker.run()
    # Each peer row published at the start of an evaluation was in the table before it ended.
    assert objective.peer_rows_seen == [1, 2], objective.peer_rows_seen
