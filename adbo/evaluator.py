"""Running evaluations for a worker: in a child process (the default) or in the worker itself.

``ChildEvaluator`` keeps one child process (``adbo.child``) alive across evaluations and replaces
it after a crash, a timeout or an abandoned evaluation. Everything that can go wrong in the user's
code ends as an ``Outcome``; only an objective that cannot be loaded at all raises, because then
no evaluation can ever succeed and the search must stop with that message.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from .evaluation import Outcome, evaluate
from .trial import Decide
from .objective_ref import ObjectiveLoadError, ObjectiveSpec, load_objective
from .rows import FAILED, INTERRUPTED, TIMEOUT

POLL_S = 0.25
"""How often a waiting worker checks whether it was asked to abandon its evaluation."""
RELOAD_ATTEMPTS = 3
"""Loads tried after a crash or timeout before the objective counts as unloadable (a first load
that fails stops the search at once: no evaluation could ever succeed)."""

_ADBO_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD_BOOTSTRAP = (
    "import sys\n"
    "try:\n    import adbo.child\n"
    "except ImportError:  # adbo found only through the worker's own path: add its directory last\n"
    "    sys.path.append(sys.argv[1])\n    import adbo.child\n"
    "adbo.child.main(sys.argv[2:])\n"
)
"""``python -c`` program of the child: adbo's directory is not exported to the objective's
environment (that would make the repository's folders importable to everything it starts)."""


def _death_text(returncode: int | None) -> str:
    if returncode is None:
        return "objective process died"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"objective process died: killed by {name} (signal {-returncode})"
    return f"objective process died: exit code {returncode}"


def _stopped() -> Outcome:
    return Outcome(INTERRUPTED, error="the search was stopped during this evaluation; a relaunch continues the search")


class InlineEvaluator:
    """Evaluations in the worker's own process (``evaluation="in-process"``).

    For objectives that cannot run in a child process. A timeout is recorded but cannot stop the
    objective, and a crash of the objective takes the worker with it.
    """

    def __init__(self, spec: "ObjectiveSpec | Callable[..., Any] | str") -> None:
        self.objective = load_objective(spec)

    def start(self) -> None:
        pass

    def ready(self, abandon: Callable[[], bool] | None = None) -> None:
        pass

    def evaluate(self, params: dict[str, Any], timeout: float | None,
                 abandon: Callable[[], bool] | None = None, decide: Decide | None = None,
                 eval_id: str = "") -> Outcome:
        return evaluate(self.objective, params, timeout, decide, eval_id)

    def close(self) -> None:
        pass


class ChildEvaluator:
    """One long-lived child process that runs the objective; see the module docstring."""

    def __init__(self, spec: ObjectiveSpec, log: Any = None, output: str | os.PathLike | None = None) -> None:
        self.spec = spec
        self.log = log
        self.output = output
        """File that receives the objective's stdout and stderr (appended, unbuffered, so lines
        printed just before a crash or a timeout kill are kept); None: the worker's own."""
        self.proc: subprocess.Popen | None = None
        self.requests: Connection | None = None
        self.replies: Connection | None = None
        self._loaded = False
        self._ever_loaded = False
        self.starts = 0

    # -- the child's life ----------------------------------------------------------------
    def start(self) -> None:
        """Start the child and send it the objective (does not wait for it to load)."""
        if self.proc is not None:
            return
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        out = None
        if self.output is not None:
            try:
                out = open(self.output, "ab", buffering=0)
            except OSError:
                out = None  # the objective's output then goes where the worker's goes
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD_BOOTSTRAP, _ADBO_PARENT, str(req_r), str(rep_w), str(os.getpid())],
                pass_fds=(req_r, rep_w), stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT if out is not None else None,
                env={**os.environ, "PYTHONUNBUFFERED": "1"} if out is not None else None,
                start_new_session=True,  # its own group: killed as a whole, spared the terminal's Ctrl-C
            )
        finally:
            os.close(req_r)
            os.close(rep_w)
            if out is not None:
                out.close()
        self.requests = Connection(req_w, readable=False)
        self.replies = Connection(rep_r, writable=False)
        self.requests.send(("load", self.spec))
        self._loaded = False
        self.starts += 1

    def ready(self, abandon: Callable[[], bool] | None = None) -> None:
        """Wait until the objective is loaded; raise ObjectiveLoadError if it cannot be.

        Returns early (loading goes on) if ``abandon`` says to; a child that dies while loading
        (an import that crashes the interpreter) is a load error too.
        """
        attempts = RELOAD_ATTEMPTS if self._ever_loaded else 1
        for attempt in range(attempts):
            self.start()
            try:
                early = self._wait_loaded(abandon)
            except ObjectiveLoadError:
                if attempt + 1 == attempts:
                    raise
                early = Outcome(FAILED)
            if early is None or early.status == INTERRUPTED:
                return
            if attempt + 1 == attempts:
                raise ObjectiveLoadError(
                    f"cannot load the objective {self.spec.identity}: {early.error} while loading it")
            time.sleep(min(30.0, 2.0 * 3 ** attempt))  # a reload after a crash may meet a passing fault

    def _wait_loaded(self, abandon: Callable[[], bool] | None) -> Outcome | None:
        """Wait for the child's load report; an Outcome if it died or was abandoned meanwhile."""
        if self._loaded:
            return None
        reply = self._receive(None, abandon)
        if isinstance(reply, Outcome):
            return reply
        kind, text = reply
        if kind == "load_error":
            self.kill()
            raise ObjectiveLoadError(text)
        self._loaded = self._ever_loaded = True
        return None

    def kill(self) -> None:
        """Kill the child's whole process group now and reap it."""
        proc, self.proc = self.proc, None
        for conn in (self.requests, self.replies):
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
        self.requests = self.replies = None
        self._loaded = False
        if proc is None:
            return
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def close(self) -> None:
        """Ask the child to exit; kill it if it does not within a few seconds."""
        if self.proc is None:
            return
        try:
            self.requests.send(("exit",))
            self.proc.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self.kill()

    # -- one evaluation ----------------------------------------------------------------
    def _receive(self, deadline: float | None, abandon: Callable[[], bool] | None) -> "tuple[str, Any] | Outcome":
        """The child's next reply, or the Outcome of a timeout, a death or an abandonment."""
        while True:
            wait = POLL_S if deadline is None else max(0.0, min(POLL_S, deadline - time.monotonic()))
            try:
                ready = self.replies.poll(wait)
            except (OSError, ValueError):
                ready = True
            if not ready and self.proc is not None and self.proc.poll() is not None:
                # Dead, though a process it forked may still hold the pipe open: a last look, then go.
                ready = self._replies_waiting()
                if not ready:
                    return self._died(abandon)
            if ready:
                try:
                    return self.replies.recv()
                except (EOFError, OSError):
                    return self._died(abandon)
            if abandon is not None and abandon():
                self.kill()
                return _stopped()
            if deadline is not None and time.monotonic() >= deadline:
                self.kill()
                return Outcome(TIMEOUT)

    def _replies_waiting(self) -> bool:
        try:
            return bool(self.replies.poll(0))
        except (OSError, ValueError):
            return False

    def _died(self, abandon: Callable[[], bool] | None) -> Outcome:
        """The Outcome of a child that died: interrupted if the search is stopping (a batch system's
        SIGTERM reaches the child too), otherwise a failed evaluation naming how it died."""
        returncode = None
        if self.proc is not None:
            try:
                returncode = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                returncode = None
        self.kill()
        if abandon is not None and abandon():
            return _stopped()
        return Outcome(FAILED, error=_death_text(returncode))

    def evaluate(self, params: dict[str, Any], timeout: float | None,
                 abandon: Callable[[], bool] | None = None, decide: Decide | None = None,
                 eval_id: str = "") -> Outcome:
        """Run one evaluation; raises ObjectiveLoadError only if the objective cannot be loaded.

        ``decide(step, value)`` answers the objective's ``trial.report`` calls (the worker's
        stopper); while it runs, the evaluation's clock keeps going.
        """
        self.start()
        early = self._wait_loaded(abandon)  # loading (imports, CUDA start-up) is not timed
        if early is not None:
            return early
        deadline = None if timeout is None else time.monotonic() + timeout
        request = ("eval", dict(params), eval_id)
        try:
            self.requests.send(request)
        except (OSError, ValueError):
            # The idle child died (killed from outside): this evaluation never ran; use a new one.
            self.kill()
            self.ready(abandon)
            if abandon is not None and abandon():
                return Outcome(INTERRUPTED, error="the search was stopped before this evaluation started")
            try:
                self.requests.send(request)
            except (OSError, ValueError):
                return self._died(abandon)
        while True:
            reply = self._receive(deadline, abandon)
            if isinstance(reply, Outcome):
                if reply.status == TIMEOUT:
                    reply.error = f"evaluation exceeded the timeout of {timeout:g} s; its process was killed"
                return reply
            if reply[0] != "report":
                return Outcome.from_message(reply)
            reason = decide(reply[1], reply[2]) if decide is not None else None
            try:
                self.requests.send(("decision", reason))
            except (OSError, ValueError):
                pass  # the child died meanwhile: the next receive says how
