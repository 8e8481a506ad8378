"""Running adbo the way a user does: a script in a fresh directory, started as its own process
group (a terminal's job), with signals sent to that group. Every process the script starts
inherits ``ADBO_TEST_MARK``, so a test can find any process left behind, wherever it was reparented.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from pathlib import Path

import psutil

import adbo
from adbo.storage import scan_run

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


class UserRun:
    """One ``python SCRIPT ARGS`` started in ``cwd`` as a new session (its own process group)."""

    def __init__(self, cwd: Path, *args: str, env: dict | None = None):
        self.mark = uuid.uuid4().hex
        full_env = {**os.environ, "ADBO_TEST_MARK": self.mark, **(env or {})}
        full_env.pop("PYTHONPATH", None)  # a user's shell has no test paths
        self.out_path = cwd / f"out-{self.mark[:6]}.txt"
        self.err_path = cwd / f"err-{self.mark[:6]}.txt"
        self._out = open(self.out_path, "w")
        self._err = open(self.err_path, "w")
        self.proc = subprocess.Popen([PYTHON, *args], cwd=cwd, env=full_env, stdout=self._out, stderr=self._err,
                                     start_new_session=True)
        self.t0 = time.monotonic()

    def signal_group(self, sig: int) -> None:
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()
            self._err.close()

    @property
    def stdout(self) -> str:
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        return self.err_path.read_text()

    def leftovers(self) -> list[psutil.Process]:
        """Processes still alive that this run started (by the inherited mark)."""
        return marked_processes(self.mark)

    def kill_all(self) -> None:
        for proc in self.leftovers():
            try:
                proc.kill()
            except psutil.Error:
                pass
        try:
            self.signal_group(signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def marked_processes(mark: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("ADBO_TEST_MARK") == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(poll)


def rows(run_dir: Path):
    """Every stored row of a run (empty before run.json exists)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return scan_run(run_dir)[1].rows
    except adbo.RunDirectoryError:
        return []


def count_status(run_dir: Path, *statuses: int) -> int:
    return sum(1 for r in rows(run_dir) if r.status in statuses)
