"""Leave no process behind: ``python -m adbo.reaper LAUNCHER_PID``.

Parsl's interchange and worker pool, and the workers under them, do not notice when the launcher
that started them is killed (SIGKILL, a lost login session): they went on evaluating for minutes.
The launcher therefore starts this small watcher in a session of its own. It notes the launcher's
descendants every ``INTERVAL_S`` seconds and, once the launcher is gone, kills those that are still
there (matched by pid and start time, so a recycled pid is never hit). Parsl's local provider
starts the worker pool through a shell that detaches it (its parent becomes init), so the launcher
also marks its environment with ``ADBO_LAUNCH_MARK`` before it starts anything, and the reaper
kills this host's processes that carry the mark. Workers on other hosts stop by themselves when
the launch's heartbeat stops (``adbo.lease``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

INTERVAL_S = 1.0
MARK_VARIABLE = "ADBO_LAUNCH_MARK"
CLOCK_SLACK_S = 2.0
"""psutil derives start times from boot time and clock ticks: they can read up to a second early."""


def start(launcher_pid: int | None = None, since: float | None = None, mark: str = "") -> subprocess.Popen | None:
    """Start the reaper for this process (returns None where psutil is missing).

    Only processes created after ``since`` (default: now) are the launch's: whatever the user's
    script started before calling ``optimize`` is left alone.
    """
    try:
        import psutil  # noqa: F401
    except ImportError:
        return None
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    return subprocess.Popen(
        [sys.executable, "-m", "adbo.reaper", str(launcher_pid or os.getpid()), repr(since or time.time()), mark],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        start_new_session=True,
    )


def kill_descendants(pid: int, since: float, known: dict[int, float] | None = None, grace: float = 3.0,
                     mark: str = "", keep: int | None = None) -> int:
    """Terminate, then kill, the descendants of ``pid`` created after ``since``, the ``known``
    ones, and those carrying ``mark`` in their environment; returns how many."""
    import psutil

    victims: dict[int, psutil.Process] = {}
    if mark:
        me = os.getpid()
        for proc in psutil.process_iter():
            try:
                if (proc.pid not in (me, pid) and proc.create_time() >= since - CLOCK_SLACK_S
                        and proc.environ().get(MARK_VARIABLE) == mark):
                    victims[proc.pid] = proc
            except psutil.Error:
                pass
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                if child.create_time() >= since - CLOCK_SLACK_S and child.pid != os.getpid():
                    victims[child.pid] = child
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    for other, created in (known or {}).items():
        if other in victims or other == os.getpid():
            continue
        try:
            proc = psutil.Process(other)
            if abs(proc.create_time() - created) < 0.01:
                victims[other] = proc
        except psutil.Error:
            pass
    victims.pop(keep, None)
    procs = list(victims.values())
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return len(procs)


def watch(launcher_pid: int, since: float, mark: str) -> None:
    import psutil

    try:
        launcher = psutil.Process(launcher_pid)
        born = launcher.create_time()
    except psutil.Error:
        return
    known: dict[int, float] = {}
    while True:
        try:
            alive = launcher.is_running() and launcher.create_time() == born and launcher.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive:
            break
        try:
            for child in launcher.children(recursive=True):
                try:
                    created = child.create_time()
                    if created >= since - CLOCK_SLACK_S:
                        known[child.pid] = created
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(INTERVAL_S)
    kill_descendants(launcher_pid, since, known, mark=mark)


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else "")
