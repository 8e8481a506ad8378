"""Objectives that kill their process, hang, or outlive their launch, run as a user runs them."""

from __future__ import annotations

import signal

import psutil
import pytest

import adbo

from adbo.lease import Lease
from adbo.rows import FAILED, IN_FLIGHT, INTERRUPTED, OK, TIMEOUT

from user_scripts import UserRun, count_status, rows, wait_for, write


def test_a_crashing_objective_is_a_failed_row_and_the_worker_goes_on(tmp_path):
    write(tmp_path, "search.py", """
        import os
        import signal
        import adbo

        def objective(params):
            if params["a"] < 0.25:
                os._exit(1)  # what a segfault, a CUDA abort or an out-of-memory kill look like
            if params["a"] > 0.75:
                os.kill(os.getpid(), signal.SIGKILL)
            return (params["a"] - 0.5) ** 2

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=2, max_evals=20, seed=2,
                                   n_initial=8, direction="minimize")
            print(adbo.format_summary(result))
    """)
    run = UserRun(tmp_path, "search.py")
    assert run.wait(120) == 0, run.stderr[-3000:]
    stored = [r for r in rows(tmp_path / "run") if r.status != IN_FLIGHT]
    assert len(stored) == 20 and {r.worker for r in stored} == {0, 1}
    exits = [r for r in stored if r.status == FAILED and r.error == "objective process died: exit code 1"]
    kills = [r for r in stored if r.status == FAILED and r.error == "objective process died: killed by SIGKILL (signal 9)"]
    assert exits and kills, sorted({r.error for r in stored})
    assert all(r.params["a"] < 0.25 for r in exits) and all(r.params["a"] > 0.75 for r in kills)
    assert count_status(tmp_path / "run", OK) == 20 - len(exits) - len(kills)


def test_a_timeout_kills_the_evaluation_within_seconds(tmp_path):
    write(tmp_path, "search.py", """
        import os
        import time
        import adbo

        def objective(params):
            if params["a"] > 0.5:
                with open(f"hung-{os.getpid()}", "w"):
                    pass
                while True:  # ignores every request to stop, as a stuck data loader does
                    time.sleep(1)
            return params["a"]

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=2, max_evals=10, eval_timeout=1.5,
                                   seed=1, n_initial=6)
            print(adbo.format_summary(result))
    """)
    run = UserRun(tmp_path, "search.py")
    assert run.wait(120) == 0, run.stderr[-3000:]
    timeouts = [r for r in rows(tmp_path / "run") if r.status == TIMEOUT]
    assert timeouts and all("its process was killed" in r.error for r in timeouts)
    assert all(r.t_finished - r.t_started < 4.0 for r in timeouts)
    hung = [int(p.name.split("-")[1]) for p in tmp_path.glob("hung-*")]
    assert len(hung) == len(timeouts)
    assert not [pid for pid in hung if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert count_status(tmp_path / "run", OK, FAILED, TIMEOUT) == 10


@pytest.mark.parametrize("site", ["local", "local-processes"])
def test_a_killed_launcher_leaves_no_process_running(tmp_path, site):
    write(tmp_path, "search.py", """
        import sys
        import time
        import adbo

        def objective(params):
            time.sleep(120)
            return params["a"]

        if __name__ == "__main__":
            adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", site=sys.argv[1], workers=3, max_evals=30)
    """)
    run = UserRun(tmp_path, "search.py", site)
    try:
        wait_for(lambda: count_status(tmp_path / "run", IN_FLIGHT) >= 3, 120, "three evaluations in flight")
        assert len(run.leftovers()) > 1
        run.proc.kill()  # SIGKILL of the launcher alone: no handler runs
        run.wait(10)
        wait_for(lambda: not run.leftovers(), 60, "the launch's processes to stop by themselves")
    finally:
        run.kill_all()


def test_a_worker_whose_launch_stops_beating_stops_by_itself(tmp_path):
    """Without the launcher's host (a node failure, a walltime kill), only the heartbeat is left."""
    lease_dir = tmp_path / "run"
    lease_dir.mkdir()
    write(tmp_path, "worker.py", """
        import sys
        import time
        import adbo
        from adbo.lease import read_lease
        from adbo.space import SearchSpace
        from adbo.storage import open_run
        from adbo.worker import run_worker

        def objective(params):
            time.sleep(120)
            return params["a"]

        if __name__ == "__main__":
            open_run("run", SearchSpace({"a": (0.0, 1.0)}), "__main__:objective", "minimize", settings={"workers": 1})
            lease = read_lease("run/lease.json")
            t = time.monotonic()
            report = run_worker("run", 0, objective, {"max_evals": 10, "launch_file": "run/lease.json",
                                                      "launch_id": lease.launch_id, "lease_poll_s": 0.5,
                                                      "orphan_after_s": 3.0})
            print(round(time.monotonic() - t, 1), report["stop_reason"])
    """)
    lease = Lease(lease_dir, heartbeat_s=0.5)
    lease.acquire()
    run = UserRun(tmp_path, "worker.py")
    try:
        wait_for(lambda: count_status(lease_dir, IN_FLIGHT) >= 1, 60, "the evaluation to start")
        lease._stop.set()  # the launcher's heartbeat stops, as when its host is lost
        assert run.wait(30) == 0, run.stderr[-2000:]
        seconds, reason = run.stdout.split(" ", 1)
        assert "its launch stopped beating" in reason
        assert count_status(lease_dir, INTERRUPTED) == 1 and count_status(lease_dir, IN_FLIGHT) == 0
        wait_for(lambda: not run.leftovers(), 10, "the evaluation's process to exit")
    finally:
        run.kill_all()


def test_an_objective_that_forks_then_dies_is_reported_at_once(tmp_path):
    """A child the objective forked keeps the reply pipe open: the death is still seen at once."""
    write(tmp_path, "search.py", """
        import multiprocessing
        import os
        import time
        import adbo

        def objective(params):
            multiprocessing.Process(target=time.sleep, args=(60,)).start()
            os._exit(3)

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=1, max_evals=2)
    """)
    run = UserRun(tmp_path, "search.py")
    try:
        assert run.wait(60) == 0, run.stderr[-2000:]
        stored = [r for r in rows(tmp_path / "run") if r.status == FAILED]
        assert [r.error for r in stored] == ["objective process died: exit code 3"] * 2
        assert all(r.t_finished - r.t_started < 5.0 for r in stored)
    finally:
        run.kill_all()


def test_processes_the_objective_started_die_with_a_killed_worker(tmp_path):
    write(tmp_path, "worker.py", """
        import subprocess
        import time
        from adbo.evaluator import ChildEvaluator
        from adbo.objective_ref import package_objective

        def objective(params):
            proc = subprocess.Popen(["sleep", "300"])
            with open("sleeper.pid", "w") as f:
                f.write(str(proc.pid))
            time.sleep(300)

        if __name__ == "__main__":
            ChildEvaluator(package_objective(objective)).evaluate({}, None)
    """)
    run = UserRun(tmp_path, "worker.py")
    try:
        pid = int(wait_for(lambda: (tmp_path / "sleeper.pid").exists() and (tmp_path / "sleeper.pid").read_text(),
                           60, "the objective's own process"))
        run.proc.kill()  # the worker dies (node failure, OOM killer): its objective's processes follow
        run.wait(10)
        wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
                 10, "the objective's own process to die")
    finally:
        run.kill_all()


def test_a_relaunch_with_fewer_workers_after_a_kill_reaches_the_budget(tmp_path):
    write(tmp_path, "search.py", """
        import sys
        import time
        import adbo

        def objective(params):
            time.sleep(0.5)
            return params["a"]

        if __name__ == "__main__":
            adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=int(sys.argv[1]), max_evals=int(sys.argv[2]))
    """)
    first = UserRun(tmp_path, "search.py", "6", "40")
    try:
        wait_for(lambda: count_status(tmp_path / "run", OK) >= 12 and count_status(tmp_path / "run", IN_FLIGHT) >= 6,
                 60, "a dozen results with six in flight")
        first.proc.kill()  # six evaluations stay in flight forever: no worker 2-5 will run again
        first.wait(10)
        wait_for(lambda: not first.leftovers(), 30, "the killed launch's processes to go")
    finally:
        first.kill_all()
    done = count_status(tmp_path / "run", OK, FAILED, TIMEOUT)
    second = UserRun(tmp_path, "search.py", "2", str(done + 8))
    assert second.wait(120) == 0, second.stderr[-2000:]
    assert count_status(tmp_path / "run", OK, FAILED, TIMEOUT) == done + 8


def test_sigterm_to_the_whole_job_records_interrupted_not_failed(tmp_path):
    write(tmp_path, "search.py", """
        import time
        import adbo

        def objective(params):
            time.sleep(60)
            return params["a"]

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=3, max_evals=20)
            raise SystemExit(adbo.exit_code(result))
    """)
    run = UserRun(tmp_path, "search.py")
    try:
        wait_for(lambda: count_status(tmp_path / "run", IN_FLIGHT) >= 3, 60, "three evaluations in flight")
        for proc in run.leftovers():  # a batch system signals every process of the job
            try:
                proc.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        assert run.wait(60) == 130, run.stderr[-2000:]
        assert count_status(tmp_path / "run", INTERRUPTED) == 3 and count_status(tmp_path / "run", FAILED) == 0
    finally:
        run.kill_all()


def test_what_the_objective_prints_is_kept_in_its_log_even_when_it_is_killed(tmp_path):
    from user_scripts import UserRun, write

    write(tmp_path, "search.py", """
        import time
        import adbo

        def objective(params):
            print(f"training with a={params['a']:.4f}")   # no flush: a kill must not lose it
            if params["a"] > 0.5:
                time.sleep(60)                             # killed by the timeout
            return params["a"]

        if __name__ == "__main__":
            adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", site="local", workers=2, max_evals=6,
                          eval_timeout=2, progress=False)
    """)
    run = UserRun(tmp_path, "search.py")
    try:
        assert run.wait(120) == 0, run.stderr[-2000:]
    finally:
        run.kill_all()
    frame = adbo.load_results(tmp_path / "run")
    logs = "".join(p.read_text() for p in sorted((tmp_path / "run" / "logs").glob("objective-*.log")))
    for _, row in frame.iterrows():
        assert f"training with a={row.params_a:.4f}" in logs, row.status
    assert (frame.status == "timeout").any() == (frame.params_a > 0.5).any()
    assert "training with" not in run.stdout  # it went to the log, not through the progress output
