"""The evaluation child process (``adbo.evaluator`` starts it with ``main([REQUEST_FD, REPLY_FD, PARENT_PID])``).

A worker runs its objective here rather than in itself, so that a timeout can kill the
evaluation (and free its GPU) and a crash of the user's code (segfault, CUDA abort, ``os._exit``,
out-of-memory kill) becomes a failed row instead of a lost worker. The process stays alive
between evaluations, so imports and CUDA start-up are paid once.

It never outlives its worker: it watches its parent and, when the parent is gone, kills its own
process group (what the objective started included) and exits. It sits in a process group of its
own that the worker kills as a whole (DataLoader workers included), and it ignores SIGINT, SIGTERM
and SIGHUP: the worker decides when an evaluation ends, and records a stop as ``interrupted``
rather than as a crash of the objective.
This module imports only the standard library until the objective is loaded.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any, Mapping

PARENT_CHECK_S = 0.5


def _kill_group_and_exit(*_: Any) -> None:
    try:
        os.killpg(os.getpgrp(), signal.SIGKILL)  # the objective's own processes, then this one
    finally:
        os._exit(1)


def _die_with_parent(parent: int) -> None:
    """Kill the process group and exit once the worker that started us is gone."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGUSR2, _kill_group_and_exit)
    try:  # Linux: the kernel signals us the moment the parent thread dies
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGUSR2)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - the watcher thread below covers other systems
        pass
    if os.getppid() != parent:
        _kill_group_and_exit()

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_S)
            if os.getppid() != parent:
                _kill_group_and_exit()

    threading.Thread(target=watch, name="adbo-parent-watch", daemon=True).start()


def _plain(result: Any) -> Any:
    """A value the worker can unpickle without the user's modules: numbers, strings, dicts of them."""
    if isinstance(result, Mapping):
        return {str(k): _plain(v) for k, v in result.items()}
    if isinstance(result, (int, float, str, bool)) or result is None:
        return result
    item = getattr(result, "item", None)  # numpy and torch scalars
    if callable(item):
        try:
            return item()
        except Exception:  # noqa: BLE001
            pass
    try:
        return float(result)
    except (TypeError, ValueError):
        return repr(result)


def _error_text(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text[-4000:]


def serve(requests: Connection, replies: Connection) -> None:
    from adbo.objective_ref import ObjectiveLoadError, load_objective

    objective = None
    while True:
        try:
            message = requests.recv()
        except (EOFError, OSError):
            return  # the worker closed the pipe or died
        kind = message[0]
        if kind == "load":
            spec = message[1]
            if spec.workdir and os.path.isdir(spec.workdir):
                os.chdir(spec.workdir)
            if getattr(spec, "argv", None):
                sys.argv = list(spec.argv)  # the script's own arguments, as in the launcher
            try:
                objective = load_objective(spec)
                replies.send(("loaded", None))
            except ObjectiveLoadError as exc:
                replies.send(("load_error", str(exc)))
            except BaseException as exc:  # noqa: BLE001
                replies.send(("load_error", _error_text(exc)))
        elif kind == "eval":
            from adbo.evaluation import Outcome, call
            from adbo.rows import FAILED

            def decide(step: float, value: float) -> "str | None":
                """Ask the worker, which holds every peer's curve, whether to stop here."""
                replies.send(("report", step, value))
                answer = requests.recv()
                return answer[1] if answer[0] == "decision" else None

            # SystemExit and KeyboardInterrupt too: only the worker ends an evaluation.
            outcome = call(objective, message[1], decide, message[2] if len(message) > 2 else "",
                           catch=BaseException)
            outcome.metadata = _plain(outcome.metadata)
            try:
                replies.send(outcome.to_message())
            except (pickle.PicklingError, TypeError) as exc:
                replies.send(Outcome(FAILED, error=f"the objective's result cannot be sent back: {exc}").to_message())
        elif kind == "exit":
            return


def main(argv: list[str]) -> None:
    """``argv``: the request and reply pipe descriptors and the worker's pid."""
    parent = int(argv[2]) if len(argv) > 2 else os.getppid()
    _die_with_parent(parent)
    requests = Connection(int(argv[0]), writable=False)
    replies = Connection(int(argv[1]), readable=False)
    serve(requests, replies)
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    main(sys.argv[1:])  # python -m adbo.child REQUEST_FD REPLY_FD PARENT_PID
