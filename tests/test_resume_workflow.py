"""A real workflow run whose whole process tree is SIGKILLed, then relaunched with the same command."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psutil

import adbo
from adbo.storage import scan_run

ROOT = Path(__file__).resolve().parent.parent


def command(run_dir: str) -> list[str]:
    return [sys.executable, "workflows/synthetic_hpo.py", "--problem", "ackley", "--dim", "3", "--site", "local",
            "--workers", "3", "--max-evals", "36", "--eval-time", "0.4,0.1", "--run-dir", run_dir, "--no-progress"]


def finished_rows(run_dir: str) -> int:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return scan_run(run_dir)[1].n_final
    except adbo.RunDirectoryError:
        return 0


def test_killed_run_resumes_to_its_budget_without_repeats(tmp_path):
    run_dir = str(tmp_path / "run")
    proc = subprocess.Popen(command(run_dir), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.time() + 180
    while finished_rows(run_dir) < 9:
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the first launch made no progress"
        time.sleep(0.3)
    # Lose everything at once, as when a node dies: launcher, interchange, worker pool, workers.
    # Parsl's LocalProvider starts the worker pool detached from the launcher, so find it by the
    # run directory on its command line.
    family = {proc.pid} | {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
    for p in psutil.process_iter(["pid", "cmdline"]):
        if run_dir in " ".join(p.info["cmdline"] or []):
            family.add(p.info["pid"])
            family.update(c.pid for c in p.children(recursive=True))
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    proc.stderr.close()
    killed = adbo.load_results(run_dir)
    assert (killed.status == "in_flight").sum() >= 1, "the kill should have cut evaluations off"
    assert killed.status.isin(["ok"]).sum() < 36

    again = subprocess.run(command(run_dir), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    df = adbo.load_results(run_dir)
    assert df.status.isin(["ok", "failed", "timeout"]).sum() >= 36
    assert not df.duplicated(["worker", "seq"]).any()
    assert (df.status == "in_flight").sum() == 0
    interrupted = df[df.status == "interrupted"]
    assert len(interrupted) == (killed.status == "in_flight").sum()
    for _, rows in df.groupby("worker"):
        assert sorted(rows.seq) == list(range(len(rows)))
