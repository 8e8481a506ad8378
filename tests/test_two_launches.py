"""Two launches on one run directory: the second is refused unless it joins on purpose."""

from __future__ import annotations

import json

from adbo.lease import LEASE_FILE
from adbo.rows import FAILED, INTERRUPTED, OK, TIMEOUT

from user_scripts import UserRun, count_status, rows, wait_for, write

SCRIPT = """
    import sys
    import time
    import adbo

    def objective(params):
        time.sleep(float(sys.argv[2]))
        return (params["a"] - 0.3) ** 2

    if __name__ == "__main__":
        result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=2, max_evals=int(sys.argv[1]),
                               direction="minimize", join=len(sys.argv) > 3)
        print(adbo.format_summary(result))
        sys.exit(adbo.exit_code(result))
"""


def test_a_second_launch_is_refused_with_the_holder_named_and_harms_nothing(tmp_path):
    write(tmp_path, "search.py", SCRIPT)
    # 20 evaluations of 1 s on 2 workers: the first launch still holds the run while the second
    # one starts, however slowly a loaded machine imports it.
    first = UserRun(tmp_path, "search.py", "20", "1.0")
    try:
        wait_for(lambda: count_status(tmp_path / "run", OK) >= 1, 60, "the first launch's first result")
        second = UserRun(tmp_path, "search.py", "20", "1.0")
        assert second.wait(60) != 0
        holder = json.loads((tmp_path / "run" / LEASE_FILE).read_text())
        assert f"is in use by launch {holder['launch_id'][:8]} on host {holder['host']} (pid {first.proc.pid}" in second.stderr
        assert "--join" in second.stderr
        assert first.wait(120) == 0, first.stderr[-2000:]
        assert count_status(tmp_path / "run", OK) == 20 and count_status(tmp_path / "run", INTERRUPTED) == 0
    finally:
        first.kill_all()


def test_a_second_allocation_joins_with_its_own_worker_ids_and_the_budget_holds(tmp_path):
    write(tmp_path, "search.py", SCRIPT)
    first = UserRun(tmp_path, "search.py", "24", "1.0")
    try:
        wait_for(lambda: count_status(tmp_path / "run", OK) >= 2, 60, "the first launch's results")
        joiner = UserRun(tmp_path, "search.py", "24", "1.0", "join")
        assert joiner.wait(120) == 0, joiner.stderr[-2000:]
        assert first.wait(120) == 0, first.stderr[-2000:]
        assert "adbo: joining launch" in joiner.stderr and "(ids 2-3)" in joiner.stderr
        stored = rows(tmp_path / "run")
        assert {r.worker for r in stored if r.status == OK} == {0, 1, 2, 3}
        assert count_status(tmp_path / "run", OK, FAILED, TIMEOUT) == 24  # one budget for both launches
        # The objective reads the script's own arguments (sleep 1.0 s): the workers see the launcher's argv.
        assert all(0.9 < r.t_finished - r.t_started < 3.0 for r in stored if r.status == OK)
        # Each launch's workers read the other's results.
        assert max(r.n_observations for r in stored if r.worker < 2) > sum(1 for r in stored if r.worker < 2)
    finally:
        first.kill_all()


def test_joining_a_run_nobody_is_running_is_refused(tmp_path):
    write(tmp_path, "search.py", SCRIPT)
    first = UserRun(tmp_path, "search.py", "2", "0.0")
    assert first.wait(60) == 0, first.stderr[-2000:]
    joiner = UserRun(tmp_path, "search.py", "4", "0.0", "join")
    assert joiner.wait(60) != 0
    assert "no launch is running there; start the search without --join" in joiner.stderr
