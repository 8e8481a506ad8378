"""Who is running a search: the launch lease, its heartbeat, and what workers read from it.

One launch holds a run directory at a time (``RUN_DIR/lease.json``: launch id, host, pid,
heartbeat). A second launch is refused with a message naming the holder, unless it joins on
purpose (``join=True``): a joining launch writes its own heartbeat file under ``RUN_DIR/joins/``
and uses worker ids the holder does not.

Workers watch their own launch's heartbeat file. When it says "stopping" (Ctrl-C, SIGTERM) they
abandon their evaluation; when its counter stops advancing (the launcher was killed, its node
failed, the allocation ended) they stop by themselves within ``orphan_after`` seconds. Staleness
is judged on the counter with the reader's own monotonic clock, so clocks of different hosts
never have to agree.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from . import fsops
from .runinfo import JOIN_DIR, RunDirectoryError

LEASE_FILE = "lease.json"
HEARTBEAT_S = 5.0
"""Seconds between the launcher's heartbeats."""
ORPHAN_AFTER_S = 45.0
"""A worker whose launch's heartbeat has not advanced for this long stops (plus one poll period)."""


@dataclass
class LeaseState:
    launch_id: str
    host: str
    pid: int
    started: float
    beat: int = 0
    time: float = 0.0
    state: str = "running"
    """``running``, ``stopping`` (workers abandon their evaluations) or ``released``."""
    role: str = "holder"
    budget_dir: str | None = None
    """The holder's ticket directory, which joining launches share (``adbo.budget``)."""
    budget_base: int = 0
    max_evals: int | None = None
    ready: bool = False
    """True once the holder's budget fields are set: a launch joins only then."""

    def describe(self) -> str:
        age = max(0.0, time.time() - self.time)
        return (f"launch {self.launch_id[:8]} on host {self.host} (pid {self.pid}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.started))}, last heartbeat {age:.0f} s ago)")


def read_lease(path: str | os.PathLike) -> LeaseState | None:
    """The lease in ``path``, or None if there is none or it is not one of ours."""
    fsops.count("open")
    try:
        data = json.loads(Path(path).read_text())
        return LeaseState(**{k: data[k] for k in LeaseState.__dataclass_fields__ if k in data})
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write(path: Path, state: LeaseState, exclusive: bool) -> bool:
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f)
        if exclusive:
            try:
                os.link(tmp, path)  # atomic: fails if another launch got there first
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
        return True
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _process_alive_since(pid: int, started: float) -> bool:
    """``pid`` runs and is the process that took the lease (not a later one given the same pid)."""
    if not _pid_alive(pid):
        return False
    try:
        import psutil

        return psutil.Process(pid).create_time() <= started + 1.0
    except ImportError:
        return True
    except Exception:  # noqa: BLE001 - psutil.Error: gone meanwhile
        return False


class Lease:
    """A launch's hold on (or guest pass to) a run directory, with its heartbeat thread."""

    def __init__(self, run_dir: str | os.PathLike, join: bool = False, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.run_dir = Path(run_dir)
        self.join = join
        self.heartbeat_s = heartbeat_s
        self.state = LeaseState(uuid.uuid4().hex, socket.gethostname(), os.getpid(), time.time(),
                                time=time.time(), role="guest" if join else "holder")
        if join:
            (self.run_dir / JOIN_DIR).mkdir(mode=0o700, exist_ok=True)
            self.path = self.run_dir / JOIN_DIR / f"{self.state.launch_id}.json"
        else:
            self.path = self.run_dir / LEASE_FILE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.lost = False

    # -- taking it -----------------------------------------------------------------------
    def acquire(self, wait_for_stale: float | None = None) -> None:
        """Take the lease; raise RunDirectoryError naming the holder if a live launch has it."""
        if self.join:
            holder = self.holder()
            if holder is None or not self._alive(holder, wait_for_stale):
                raise RunDirectoryError(
                    f"nothing to join in {self.run_dir}: no launch is running there; "
                    "start the search without --join")
            _write(self.path, self.state, exclusive=True)
            self._start_heartbeat()
            return
        if not _write(self.path, self.state, exclusive=True):
            holder = self.holder()
            if holder is not None and holder.state != "released" and self._alive(holder, wait_for_stale):
                raise RunDirectoryError(
                    f"{self.run_dir} is in use by {holder.describe()}. Wait for it to finish, stop it with "
                    f"`adbo stop {self.run_dir}`, or add workers to it from this allocation with --join "
                    "(join=True)")
            _write(self.path, self.state, exclusive=False)  # released or stale: ours now
        self._start_heartbeat()

    def holder(self) -> LeaseState | None:
        return read_lease(self.run_dir / LEASE_FILE)

    def _alive(self, other: LeaseState, wait_for_stale: float | None) -> bool:
        """Whether another launch is still running: its process on this host (the same pid, started
        no later than the lease), its heartbeat elsewhere (given as long as a worker gives it)."""
        if other.state == "released":
            return False
        if other.host == socket.gethostname():
            return _process_alive_since(other.pid, other.started)
        window = max(3 * HEARTBEAT_S, ORPHAN_AFTER_S) if wait_for_stale is None else wait_for_stale
        print(f"adbo: {self.run_dir} is held by {other.describe()}; watching its heartbeat for up to "
              f"{window:.0f} s to tell whether it still runs", file=sys.stderr, flush=True)
        give_up = time.monotonic() + window
        while time.monotonic() < give_up:
            time.sleep(1.0)
            now = read_lease(self.run_dir / LEASE_FILE)
            if now is None or now.launch_id != other.launch_id or now.beat != other.beat:
                return now is not None and now.state != "released"
        return False

    def wait_for_holder_ready(self, timeout: float = 120.0) -> LeaseState | None:
        """The holder's state once it has published its budget (a joiner must share its tickets)."""
        give_up = time.monotonic() + timeout
        while True:
            holder = self.holder()
            if holder is None or holder.ready or holder.state != "running" or time.monotonic() > give_up:
                return holder
            time.sleep(0.5)

    # -- keeping it ------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.heartbeat_s):
                self.touch()

        self._thread = threading.Thread(target=beat, name="adbo-lease-heartbeat", daemon=True)
        self._thread.start()

    def touch(self, state: str | None = None) -> None:
        """One heartbeat (and optionally a new state); notices a launch that took the lease over."""
        with self._lock:
            if not self.join:
                current = read_lease(self.path)
                if current is not None and current.launch_id != self.state.launch_id:
                    self.lost = True
                    return
            self.state.beat += 1
            self.state.time = time.time()
            if state is not None:
                self.state.state = state
            try:
                _write(self.path, self.state, exclusive=False)
            except OSError:
                pass  # a full disk must not kill the launcher; workers will see a stale beat

    def stopping(self) -> None:
        """Tell this launch's workers to abandon their evaluations and stop."""
        self.touch("stopping")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self.join:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                return
            current = read_lease(self.path)
            if current is not None and current.launch_id == self.state.launch_id:
                self.state.state = "released"
                self.state.time = time.time()
                try:
                    _write(self.path, self.state, exclusive=False)
                except OSError:
                    pass


class LaunchWatch:
    """A worker's view of its launch: should it abandon its evaluation and stop, and why?"""

    def __init__(self, path: str | os.PathLike | None, launch_id: str | None, poll_s: float = 2.0,
                 orphan_after: float = ORPHAN_AFTER_S) -> None:
        self.path = Path(path) if path else None
        self.launch_id = launch_id
        self.poll_s = poll_s
        self.orphan_after = orphan_after
        self._last_beat: int | None = None
        self._last_change = time.monotonic()
        self._next_check = 0.0
        self.reason: str | None = None

    def check(self) -> str | None:
        """A reason to stop, or None; reads the file at most once per ``poll_s``."""
        if self.reason is not None or self.path is None:
            return self.reason
        now = time.monotonic()
        if now < self._next_check:
            return None
        self._next_check = now + self.poll_s
        lease = read_lease(self.path)
        if lease is None:
            if now - self._last_change > self.orphan_after:
                self.reason = "its launch is gone (no heartbeat file); stopping"
            return self.reason
        if self.launch_id is not None and lease.launch_id != self.launch_id:
            self.reason = f"another launch ({lease.launch_id[:8]} on {lease.host}) took over the run directory"
        elif lease.state == "stopping":
            self.reason = "the launch was stopped (Ctrl-C or SIGTERM)"
        elif lease.state == "released":
            self.reason = "the launch has ended"
        elif lease.beat != self._last_beat:
            self._last_beat = lease.beat
            self._last_change = now
        elif now - self._last_change > self.orphan_after:
            self.reason = (f"its launch stopped beating {self.orphan_after:.0f} s ago "
                           "(launcher killed or its node lost); stopping")
        return self.reason
