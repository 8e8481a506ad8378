"""An offline Globus Compute endpoint for tests: the outermost boundary, and nothing else, replaced.

``OfflineComputeExecutor`` is a ``globus_compute_sdk.Executor`` (Parsl's GlobusComputeExecutor
type-checks for one) that never runs the SDK's networked ``__init__``. Like the real service,
it ships each task as the SDK's own serialized payload and runs it in a separate, freshly
spawned process, which deserializes the function and arguments, runs them and serializes
the result back.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import uuid
from typing import Any, Callable

from globus_compute_sdk import Executor
from globus_compute_sdk.serialize import ComputeSerializer


def run_payload(payload: str) -> str:
    """What an endpoint worker does with one task: deserialize, run, serialize (pid, result)."""
    serializer = ComputeSerializer()
    fn, args, kwargs = serializer.unpack_and_deserialize(payload)
    return serializer.serialize((os.getpid(), fn(*args, **kwargs)))


class _NoResultWatcher:
    """Parsl's GlobusComputeExecutor.shutdown stops the SDK's result watcher; there is none here."""

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        return None


class OfflineComputeExecutor(Executor):
    """A Globus Compute executor whose endpoint is a local pool of spawned processes."""

    def __init__(self, max_workers: int):
        # Executor.__init__ is deliberately not called: it builds a Client, which contacts
        # Globus Auth and the Compute service. Only the state Parsl reads is set here.
        self.endpoint_id = uuid.uuid4()
        self._task_group_id = None
        self._resource_specification = None
        self._user_endpoint_config = None
        self.label = "offline"
        self.batch_size = 1
        self._serde = ComputeSerializer()
        self._pool = cf.ProcessPoolExecutor(max_workers, mp_context=multiprocessing.get_context("spawn"))
        self._lock = threading.Lock()
        self.payloads: list[str] = []
        self.pids: set[int] = set()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> cf.Future:
        payload = self._serde.pack_buffers(
            [self._serde.serialize(fn), self._serde.serialize(args), self._serde.serialize(kwargs)]
        )
        with self._lock:
            self.payloads.append(payload)
        outer: cf.Future = cf.Future()
        self._pool.submit(run_payload, payload).add_done_callback(lambda inner: self._finish(inner, outer))
        return outer

    def _finish(self, inner: cf.Future, outer: cf.Future) -> None:
        try:
            pid, value = self._serde.deserialize(inner.result())
        except BaseException as exc:  # the task's own failure, as the service would report it
            outer.set_exception(exc)
            return
        with self._lock:
            self.pids.add(pid)
        outer.set_result(value)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def _get_result_watcher(self) -> Any:
        return _NoResultWatcher()
