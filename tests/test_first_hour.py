"""A new user's first hour, done as the user does it: scripts in a fresh directory, real Parsl
sites, signals to the whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import adbo
from adbo.rows import FAILED, IN_FLIGHT, INTERRUPTED, OK, TIMEOUT

from user_scripts import ROOT, UserRun, count_status, rows, wait_for, write

SEARCH = """
    import sys
    import time
    import math
    import adbo
    {import_line}

    def helper(value):
        return (value - 0.3) ** 2

    def objective(params):
        time.sleep({sleep})
        return math.fsum(helper(v) for v in params.values())

    if __name__ == "__main__":
        result = adbo.optimize({target}, {{"a": (0.0, 1.0), "b": (0.0, 1.0)}}, sys.argv[1], site=sys.argv[2],
                               workers=int(sys.argv[3]), max_evals=int(sys.argv[4]), direction="minimize",
                               {extra})
        print(adbo.format_summary(result))
        sys.exit(adbo.exit_code(result))
"""

SIBLING = """
    import math
    import time

    def train(params):
        time.sleep(0.05)
        return math.fsum((v - 0.3) ** 2 for v in params.values())
"""


def search_script(tmp_path, target="objective", import_line="", sleep=0.05, extra="", name="search.py"):
    return write(tmp_path, name, SEARCH.format(target=target, import_line=import_line, sleep=sleep, extra=extra))


@pytest.mark.parametrize("form", ["main", "sibling", "string"])
def test_own_objective_in_all_three_forms_on_local_processes(tmp_path, form):
    write(tmp_path, "mymodel.py", SIBLING)
    target, import_line = {"main": ("objective", ""), "sibling": ("train", "from mymodel import train"),
                           "string": ('"mymodel:train"', "")}[form]
    search_script(tmp_path, target, import_line)
    run = UserRun(tmp_path, "search.py", "run", "local", "3", "12")
    assert run.wait(120) == 0, run.stderr[-3000:]
    final = [r for r in rows(tmp_path / "run") if r.status != IN_FLIGHT]
    assert len(final) == 12 and all(r.status == OK for r in final), [r.error for r in final if r.error][:1]


def test_main_objective_with_a_sibling_helper_on_parsl_worker_processes(tmp_path):
    write(tmp_path, "mymodel.py", SIBLING)
    search_script(tmp_path, "objective", "from mymodel import train as sibling_train",
                  sleep=0.05, extra="")
    # The objective in __main__ uses a module-level import, a helper of the script, and (below) a
    # function of a sibling module: on Parsl's HighThroughputExecutor processes.
    text = (tmp_path / "search.py").read_text().replace(
        "return math.fsum(helper(v) for v in params.values())",
        "return math.fsum(helper(v) for v in params.values()) + 0 * sibling_train(params)")
    (tmp_path / "search.py").write_text(text)
    run = UserRun(tmp_path, "search.py", "run", "local-processes", "2", "6")
    assert run.wait(240) == 0, run.stderr[-3000:]
    final = [r for r in rows(tmp_path / "run") if r.status != IN_FLIGHT]
    assert len(final) == 6 and all(r.status == OK for r in final), [r.error for r in final if r.error][:1]
    assert not run.leftovers()


def test_an_objective_workers_cannot_load_stops_the_search_at_once(tmp_path):
    write(tmp_path, "vanishing.py", SIBLING)
    script = SEARCH.format(target="train", import_line="from vanishing import train", sleep=0, extra="")
    # The launcher imported the module, then it disappears: no worker can import it.
    script = script.replace('if __name__ == "__main__":',
                            'if __name__ == "__main__":\n        import os; os.remove("vanishing.py")', 1)
    write(tmp_path, "search.py", script)
    (tmp_path / "__pycache__").mkdir(exist_ok=True)
    run = UserRun(tmp_path, "-B", "search.py", "run", "local", "2", "10")
    assert run.wait(60) == 1, run.stderr[-3000:]
    assert time.monotonic() - run.t0 < 45
    assert "cannot load the objective vanishing:train" in run.stderr
    assert "No module named 'vanishing'" in run.stderr
    assert count_status(tmp_path / "run", OK, FAILED, TIMEOUT) == 0


def test_when_every_evaluation_fails_the_first_error_is_shown(tmp_path):
    write(tmp_path, "search.py", """
        import sys
        import adbo

        def objective(params):
            raise ValueError(f"cannot build a model with a={params['a']:.2f}")

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=2, max_evals=6)
            try:
                result.best_value
            except ValueError as exc:
                print("best_value raised:", type(exc).__name__)
            sys.exit(adbo.exit_code(result))
    """)
    run = UserRun(tmp_path, "search.py")
    assert run.wait(60) == 1
    assert "no evaluation succeeded (6 failed)" in run.stderr
    assert "ValueError: cannot build a model with a=" in run.stderr
    assert "best_value raised: NoSuccessfulEvaluation" in run.stdout


def test_some_failures_are_counted_with_the_most_common_error(tmp_path):
    write(tmp_path, "search.py", """
        import adbo

        def objective(params):
            if params["a"] < 0.5:
                raise RuntimeError("diverged")
            return params["a"]

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", workers=2, max_evals=12, seed=3)
            print(adbo.format_summary(result))
    """)
    run = UserRun(tmp_path, "search.py")
    assert run.wait(60) == 0, run.stderr[-2000:]
    failed = count_status(tmp_path / "run", FAILED)
    assert 0 < failed < 12
    assert f"{failed} of 12 evaluations failed; most common error ({failed}x): RuntimeError: diverged" in run.stderr


LONG = """
    import sys
    import time
    import adbo

    def objective(params):
        time.sleep(60)
        return params["a"]

    if __name__ == "__main__":
        result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", site=sys.argv[1], workers=3, max_evals=50,
                               **({"evaluation": sys.argv[2]} if len(sys.argv) > 2 else {}))
        print(adbo.format_summary(result))
        sys.exit(adbo.exit_code(result))
"""


@pytest.mark.parametrize("site", ["local", "local-processes"])
def test_one_ctrl_c_stops_cleanly_with_130_and_leaves_no_process(tmp_path, site):
    write(tmp_path, "search.py", LONG)
    run = UserRun(tmp_path, "search.py", site)
    try:
        wait_for(lambda: count_status(tmp_path / "run", IN_FLIGHT) >= 3, 120, "three evaluations in flight")
        t = time.monotonic()
        run.signal_group(signal.SIGINT)  # what a terminal's Ctrl-C does
        assert run.wait(60) == 130, run.stderr[-3000:]
        assert time.monotonic() - t < 30
        assert "Ctrl-C" in run.stderr and "evaluations:" in run.stdout  # the summary was printed
        assert count_status(tmp_path / "run", INTERRUPTED) == 3 and count_status(tmp_path / "run", IN_FLIGHT) == 0
        wait_for(lambda: not run.leftovers(), 10, "every process of the run to exit")
    finally:
        run.kill_all()


def test_sigterm_to_the_launcher_stops_like_ctrl_c(tmp_path):
    write(tmp_path, "search.py", LONG)
    run = UserRun(tmp_path, "search.py", "local")
    try:
        wait_for(lambda: count_status(tmp_path / "run", IN_FLIGHT) >= 3, 60, "three evaluations in flight")
        run.proc.send_signal(signal.SIGTERM)  # a batch system warns the job's main process
        assert run.wait(60) == 130, run.stderr[-3000:]
        assert "SIGTERM" in run.stderr
        assert count_status(tmp_path / "run", INTERRUPTED) == 3
        wait_for(lambda: not run.leftovers(), 10, "every process of the run to exit")
    finally:
        run.kill_all()


def test_sigterm_to_the_whole_job_ends_it_well_before_a_batch_systems_sigkill(tmp_path):
    # Slurm and PBS send SIGTERM to every process of the job, then SIGKILL about 30 s later (Slurm's
    # KillWait default); the group signal also kills Parsl's interchange, which carries the workers'
    # reports back, so the launcher must not wait for those.
    write(tmp_path, "search.py", LONG)
    run = UserRun(tmp_path, "search.py", "local-processes")
    try:
        wait_for(lambda: count_status(tmp_path / "run", IN_FLIGHT) >= 3, 120, "three evaluations in flight")
        t = time.monotonic()
        run.signal_group(signal.SIGTERM)
        assert run.wait(60) == 130, run.stderr[-3000:]
        assert time.monotonic() - t < 20, run.stderr[-3000:]
        assert count_status(tmp_path / "run", INTERRUPTED) == 3 and count_status(tmp_path / "run", IN_FLIGHT) == 0
        wait_for(lambda: not run.leftovers(), 10, "every process of the run to exit")
    finally:
        run.kill_all()


def test_a_second_ctrl_c_exits_within_ten_seconds(tmp_path):
    write(tmp_path, "search.py", LONG)
    # In-process evaluations cannot be abandoned: the first Ctrl-C waits for them, the second aborts.
    run = UserRun(tmp_path, "search.py", "local-threads", "in-process")
    try:
        wait_for(lambda: count_status(tmp_path / "run", IN_FLIGHT) >= 3, 60, "three evaluations in flight")
        run.signal_group(signal.SIGINT)
        time.sleep(2.0)
        assert run.proc.poll() is None, "in-process evaluations of 60 s cannot have finished"
        t = time.monotonic()
        run.signal_group(signal.SIGINT)
        assert run.wait(30) == 130
        assert time.monotonic() - t < 10
        assert "aborting now" in run.stderr
        wait_for(lambda: not run.leftovers(), 10, "every process of the run to exit")
    finally:
        run.kill_all()


@pytest.mark.parametrize("workers,budget", [(1, 7), (3, 16), (8, 6), (8, 40)])
def test_the_budget_is_exact_for_any_worker_count_and_across_relaunches(tmp_path, workers, budget):
    search_script(tmp_path, sleep=0.02)
    first = UserRun(tmp_path, "search.py", "run", "local", str(workers), str(budget))
    assert first.wait(120) == 0, first.stderr[-2000:]
    assert count_status(tmp_path / "run", OK, FAILED, TIMEOUT) == budget
    second = UserRun(tmp_path, "search.py", "run", "local", str(workers), str(budget + 5))
    assert second.wait(120) == 0, second.stderr[-2000:]
    assert count_status(tmp_path / "run", OK, FAILED, TIMEOUT) == budget + 5
    assert count_status(tmp_path / "run", IN_FLIGHT) == 0


def test_relaunching_a_finished_run_reports_at_once_without_parsl(tmp_path):
    search_script(tmp_path, sleep=0.01)
    first = UserRun(tmp_path, "search.py", "run", "local", "2", "6")
    assert first.wait(120) == 0, first.stderr[-2000:]
    parsl_runs = sorted((tmp_path / "run" / "logs" / "parsl").iterdir())
    again = UserRun(tmp_path, "search.py", "run", "local", "2", "6")
    assert again.wait(60) == 0, again.stderr[-2000:]
    assert "already holds 6 evaluations (budget 6); nothing to run" in again.stderr
    assert "best objective:" in again.stdout
    assert sorted((tmp_path / "run" / "logs" / "parsl").iterdir()) == parsl_runs, "Parsl was not started"


@pytest.mark.parametrize("args,message", [
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--n-initial", "0"], "--n-initial must be at least 1"),
    (["--max-evals", "0"], "--max-evals must be at least 1, got 0"),
    (["--timeout", "-5"], "--timeout must be a positive number of seconds"),
])
def test_bad_flags_are_one_line_and_create_nothing(tmp_path, args, message):
    run = UserRun(ROOT, "workflows/synthetic_hpo.py", "--run-dir", str(tmp_path / "run"), "--site", "local", *args)
    assert run.wait(60) == 2
    assert run.stderr.strip().splitlines() == [f"synthetic_hpo: {message}" + run.stderr.strip().split(message, 1)[1]]
    assert not (tmp_path / "run").exists()
    run.out_path.unlink(), run.err_path.unlink()


def test_cuda_without_cuda_is_refused_before_anything_starts(tmp_path):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = UserRun(ROOT, "workflows/candle_hpo.py", "--run-dir", str(tmp_path / "run"), "--device", "cuda",
                  "--data", "synthetic", "--synthetic-size", "tiny", "--data-cache", str(tmp_path / "cache"))
    assert run.wait(120) == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "sees no CUDA device" in lines[0] and "--device auto or cpu" in lines[0]
    assert not (tmp_path / "run").exists()
    run.out_path.unlink(), run.err_path.unlink()


def test_bad_bounds_and_unusable_run_directory_are_one_line(tmp_path):
    write(tmp_path, "search.py", """
        import sys
        import adbo

        if __name__ == "__main__":
            space = {"lr": (0.1, 0.001, "log")} if sys.argv[1] == "bounds" else {"lr": (0.001, 0.1, "log")}
            try:
                adbo.optimize(abs, space, sys.argv[2], workers=1, max_evals=2)
            except (ValueError, adbo.RunDirectoryError) as exc:
                print(exc)
    """)
    run = UserRun(tmp_path, "search.py", "bounds", "run")
    assert run.wait(60) == 0
    assert run.stdout.strip() == ("parameter 'lr': the low bound 0.1 must be below the high bound 0.001; "
                                  "swap them, or use a plain value 0.1 for a constant")
    (tmp_path / "afile").write_text("not a directory")
    run = UserRun(tmp_path, "search.py", "dir", "afile")
    assert run.wait(60) == 0
    assert "afile exists and is not a directory" in run.stdout and len(run.stdout.strip().splitlines()) == 1
    run = UserRun(tmp_path, "search.py", "dir", "afile/run")
    assert run.wait(60) == 0
    assert "is a file, not a directory" in run.stdout
    assert not (tmp_path / "run").exists()


def test_an_edited_objective_is_refused_unless_allowed(tmp_path):
    search_script(tmp_path, sleep=0.0, extra="allow_changed_objective=len(sys.argv) > 5")
    first = UserRun(tmp_path, "search.py", "run", "local", "2", "4")
    assert first.wait(120) == 0, first.stderr[-2000:]
    # The objective calls a helper of the script: editing the helper changes the objective.
    text = (tmp_path / "search.py").read_text().replace("(value - 0.3) ** 2", "(value - 0.7) ** 2")
    (tmp_path / "search.py").write_text(text)
    edited = UserRun(tmp_path, "search.py", "run", "local", "2", "8")
    assert edited.wait(60) != 0
    assert "the code of the objective __main__:objective changed" in edited.stderr
    assert "allow_changed_objective=True" in edited.stderr
    assert count_status(tmp_path / "run", OK) == 4
    allowed = UserRun(tmp_path, "search.py", "run", "local", "2", "8", "allow")
    assert allowed.wait(120) == 0, allowed.stderr[-2000:]
    assert count_status(tmp_path / "run", OK) == 8


def test_output_into_a_file_is_lines_not_a_bar(tmp_path):
    run = UserRun(ROOT, "workflows/synthetic_hpo.py", "--run-dir", str(tmp_path / "run"), "--site", "local",
                  "--workers", "2", "--max-evals", "10", "--problem", "branin")
    assert run.wait(120) == 0, run.stderr[-2000:]
    err = run.stderr
    assert "\r" not in err
    assert "adbo: starting 2 workers on site local" in err
    assert "evaluations 10/10" in err
    assert run.stdout.count("best parameters:") == 1
    run.out_path.unlink(), run.err_path.unlink()


def test_utilization_and_throughput_leave_out_the_time_between_launches(tmp_path):
    search_script(tmp_path, sleep=0.3)
    first = UserRun(tmp_path, "search.py", "run", "local", "2", "8")
    assert first.wait(120) == 0, first.stderr[-2000:]
    time.sleep(6.0)  # the user looks at the results before relaunching
    second = UserRun(tmp_path, "search.py", "run", "local", "2", "16")
    assert second.wait(120) == 0, second.stderr[-2000:]
    summary = adbo.summarize(tmp_path / "run")
    stored = [r for r in rows(tmp_path / "run") if r.status == OK]
    span = max(r.t_finished for r in stored) - min(r.t_started for r in stored)
    assert len({r.metadata["launch"] for r in stored}) == 2
    assert summary["wall_time_s"] < span - 5.0
    assert summary["utilization"] > 0.6, summary["utilization"]


def test_adbo_stop_is_named_in_the_summary_and_bad_export_paths_are_one_line(tmp_path):
    write(tmp_path, "search.py", """
        import time
        import adbo

        def objective(params):
            time.sleep(0.3)
            return params["a"]

        if __name__ == "__main__":
            result = adbo.optimize(objective, {"a": (0.0, 1.0)}, "run", site="local", workers=2, max_evals=500)
            print(adbo.format_summary(result))
    """)
    run = UserRun(tmp_path, "search.py")
    try:
        wait_for(lambda: count_status(tmp_path / "run", OK) >= 2, 60, "two evaluations")
        cli = os.path.join(os.path.dirname(sys.executable), "adbo")
        stop = subprocess.run([cli, "stop", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert stop.returncode == 0, stop.stderr
        assert run.wait(60) == 0, run.stderr[-2000:]
    finally:
        run.kill_all()
    assert "stopped by `adbo stop`" in run.stdout
    export = subprocess.run([cli, "export", "run", "-o", str(tmp_path / "missing" / "x.csv")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert export.returncode == 2 and len(export.stderr.strip().splitlines()) == 1
    assert "does not exist" in export.stderr and "Traceback" not in export.stderr
    bad = UserRun(tmp_path, str(ROOT / "workflows" / "synthetic_hpo.py"), "--run-dir", str(tmp_path / "r2"),
                  "--eval-time", "nan,0")
    assert bad.wait(60) == 2 and "finite numbers" in bad.stderr
    assert not (tmp_path / "r2").exists()
