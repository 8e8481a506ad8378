"""Objectives that kill their process, hang, or outlive their launch, run as a user runs them."""

from __future__ import annotations

import os
import signal
import sys
import time

import psutil
import pytest

from adbo.lease import Lease
from adbo.rows import FAILED, IN_FLIGHT, INTERRUPTED, OK, TIMEOUT

from user_scripts import PYTHON, UserRun, count_status, rows, wait_for, write


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
