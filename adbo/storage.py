"""The run directory: ``run.json`` plus immutable HDF5 result segments, one writer each.

Everything workers share goes through files, because the only thing every node of a
supercomputer shares is the parallel filesystem. The rules (see DESIGN.md) are enforced here:

* a segment is written as ``NAME.h5.tmp``, fsynced, and published with ``os.replace``: a reader
  sees a whole segment or none of it, never a partial row;
* segments are never modified; a writer compacts its own segments by publishing one that holds
  all its rows and only then deleting the ones it supersedes, so a reader is correct at any time;
* one ``os.scandir`` per scan, no per-peer ``stat``; only unseen segments are opened;
* HDF5 file locking is off (``locking=False``): flock is unsupported or expensive on Lustre and
  NFS, and it buys nothing here because no file is ever opened for writing after it is published.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from .space import SearchSpace

FORMAT_VERSION = 1
RUN_FILE = "run.json"
SHARD_DIR = "shards"
LOG_DIR = "logs"
STOP_FILE = "STOP"

IN_FLIGHT, OK, FAILED, TIMEOUT, INTERRUPTED = 0, 1, 2, 3, 4
STATUS_NAMES = {IN_FLIGHT: "in_flight", OK: "ok", FAILED: "failed", TIMEOUT: "timeout", INTERRUPTED: "interrupted"}
FINAL_STATUSES = (OK, FAILED, TIMEOUT, INTERRUPTED)

_STR = h5py.string_dtype()


class RunDirectoryError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


# ----------------------------------------------------------------------------- run.json
@dataclass
class RunInfo:
    """The identity of a run, fixed at creation: what is searched and how it is scored."""

    run_id: str
    space_json: str
    objective: str
    direction: str
    created: float
    settings: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def space(self) -> SearchSpace:
        return SearchSpace.from_json(self.space_json)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "run_id": self.run_id,
            "created": self.created,
            "objective": self.objective,
            "direction": self.direction,
            "space": json.loads(self.space_json),
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunInfo":
        return cls(
            run_id=d["run_id"],
            space_json=json.dumps(d["space"], sort_keys=True),
            objective=d["objective"],
            direction=d["direction"],
            created=float(d["created"]),
            settings=dict(d.get("settings", {})),
            format_version=int(d.get("format_version", FORMAT_VERSION)),
        )


def read_run_info(run_dir: str | os.PathLike) -> RunInfo:
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirectoryError(
            f"{run_dir} is not an adbo run directory (no {RUN_FILE}); start a search there first"
        ) from None
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path} is not valid JSON ({exc}); it was not written by adbo") from None
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise RunDirectoryError(
            f"{path} has format version {data['format_version']}, newer than this adbo "
            f"({FORMAT_VERSION}); upgrade adbo to read it"
        )
    return RunInfo.from_dict(data)


def open_run(
    run_dir: str | os.PathLike,
    space: SearchSpace,
    objective: str,
    direction: str,
    settings: Mapping[str, Any] | None = None,
    group_access: bool = False,
) -> RunInfo:
    """Create the run directory, or reopen it if it holds the same search.

    A relaunch must search the same space with the same objective and direction, otherwise old
    and new results would be mixed silently; settings (budget, workers) may change freely.
    """
    run_dir = Path(run_dir)
    mode = 0o750 if group_access else 0o700
    run_dir.mkdir(mode=mode, parents=True, exist_ok=True)
    (run_dir / SHARD_DIR).mkdir(mode=mode, exist_ok=True)
    (run_dir / LOG_DIR).mkdir(mode=mode, exist_ok=True)
    info = RunInfo(
        run_id=uuid.uuid4().hex,
        space_json=space.to_json(),
        objective=objective,
        direction=direction,
        created=time.time(),
        settings=dict(settings or {}),
    )
    path = run_dir / RUN_FILE
    if not path.exists():
        tmp = run_dir / f".{RUN_FILE}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(info.to_dict(), indent=2, sort_keys=True))
        try:
            os.link(tmp, path)  # fails if another launcher won the race: then we validate theirs
            return info
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    existing = read_run_info(run_dir)
    problems = []
    if existing.space_json != info.space_json:
        old, new = existing.space, space
        added = sorted(set(new.names) - set(old.names))
        removed = sorted(set(old.names) - set(new.names))
        changed = sorted(
            n for n in set(old.names) & set(new.names)
            if old.codecs[old.names.index(n)] != new.codecs[new.names.index(n)]
        )
        detail = ", ".join(
            part for part in (
                f"added {added}" if added else "",
                f"removed {removed}" if removed else "",
                f"changed {changed}" if changed else "",
            ) if part
        ) or "conditions differ"
        problems.append(f"the search space differs ({detail})")
    if existing.objective != objective:
        problems.append(f"the objective differs (stored {existing.objective!r}, now {objective!r})")
    if existing.direction != direction:
        problems.append(f"the direction differs (stored {existing.direction!r}, now {direction!r})")
    if problems:
        raise RunDirectoryError(
            f"refusing to reuse {run_dir}: " + "; ".join(problems)
            + ". Use a new --run-dir for a different search, or relaunch with the original settings"
            " to resume this one. Nothing in the directory was changed."
        )
    return existing


# ----------------------------------------------------------------------------- rows
@dataclass
class EvalRow:
    """One evaluation as stored: in flight first, then its final state under the same (worker, seq)."""

    worker: int
    seq: int
    status: int
    x: np.ndarray
    params: dict[str, Any]
    objective: float = float("nan")
    metadata: dict[str, Any] = field(default_factory=dict)
    t_submitted: float = float("nan")
    t_started: float = float("nan")
    t_finished: float = float("nan")
    bo_overhead_s: float = float("nan")
    n_observations: int = 0
    hostname: str = ""
    error: str = ""
    eval_id: str = ""


_FLOAT_FIELDS = ("objective", "t_submitted", "t_started", "t_finished", "bo_overhead_s")
_INT_FIELDS = ("worker", "seq", "n_observations")
_STR_FIELDS = ("eval_id", "hostname", "error")
_REQUIRED = ("x", "status", "params", "metadata") + _FLOAT_FIELDS + _INT_FIELDS + _STR_FIELDS


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def segment_name(worker: int, gen: int) -> str:
    return f"w{worker:06d}-g{gen:09d}.h5"


def parse_segment_name(name: str) -> tuple[int, int] | None:
    if not (name.startswith("w") and name.endswith(".h5")):
        return None
    try:
        w, g = name[1:-3].split("-g")
        return int(w), int(g)
    except ValueError:
        return None


class SegmentWriter:
    """Publishes one worker's rows as immutable segments and compacts them now and then."""

    def __init__(self, run_dir: str | os.PathLike, worker: int, run_id: str, dim: int, compact_every: int = 64):
        self.shard_dir = Path(run_dir) / SHARD_DIR
        self.worker = int(worker)
        self.run_id = run_id
        self.dim = dim
        self.compact_every = compact_every
        self.hostname = socket.gethostname()
        own = []
        for entry in os.scandir(self.shard_dir):
            if entry.name.startswith(f"w{self.worker:06d}-") and entry.name.endswith(".tmp"):
                os.unlink(entry.path)  # left by a crash of this worker: never published, never read
                continue
            parsed = parse_segment_name(entry.name)
            if parsed and parsed[0] == self.worker:
                own.append(parsed[1])
        self.gen = max(own, default=0)
        self._live_segments = sorted(own)
        self._rows: dict[int, EvalRow] = {}

    def adopt(self, rows: Iterable[EvalRow]) -> None:
        """Remember rows this worker wrote before a restart, so compaction keeps them."""
        for r in rows:
            if r.worker == self.worker:
                self._rows[r.seq] = r

    def append(self, rows: list[EvalRow]) -> str:
        """Publish ``rows`` atomically; returns the segment name. Compacts when due."""
        for r in rows:
            r.hostname = r.hostname or self.hostname
            self._rows[r.seq] = r
        name = self._publish(rows)
        self._live_segments.append(self.gen)
        if len(self._live_segments) > self.compact_every:
            self.compact()
        return name

    def compact(self) -> None:
        """Fold all own segments into one; delete the superseded ones only after publishing."""
        superseded = list(self._live_segments)
        rows = [self._rows[s] for s in sorted(self._rows)]
        self._publish(rows)
        self._live_segments = [self.gen]
        for g in superseded:
            try:
                os.unlink(self.shard_dir / segment_name(self.worker, g))
            except FileNotFoundError:
                pass

    def _publish(self, rows: list[EvalRow]) -> str:
        self.gen += 1
        name = segment_name(self.worker, self.gen)
        final = self.shard_dir / name
        tmp = self.shard_dir / (name + ".tmp")
        write_segment(tmp, rows, self.run_id, self.worker, self.dim)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        return name


def write_segment(path: Path, rows: list[EvalRow], run_id: str, worker: int, dim: int) -> None:
    n = len(rows)
    with h5py.File(path, "w", locking=False) as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["run_id"] = run_id
        f.attrs["worker"] = worker
        f.create_dataset("x", data=np.array([r.x for r in rows], dtype=np.float64).reshape(n, dim))
        f.create_dataset("status", data=np.array([r.status for r in rows], dtype=np.int8))
        for name in _FLOAT_FIELDS:
            f.create_dataset(name, data=np.array([getattr(r, name) for r in rows], dtype=np.float64))
        for name in _INT_FIELDS:
            f.create_dataset(name, data=np.array([getattr(r, name) for r in rows], dtype=np.int64))
        for name in _STR_FIELDS:
            f.create_dataset(name, data=[getattr(r, name) for r in rows], dtype=_STR)
        f.create_dataset("params", data=[json.dumps(r.params, default=_json_default) for r in rows], dtype=_STR)
        f.create_dataset(
            "metadata", data=[json.dumps(r.metadata, default=_json_default) for r in rows], dtype=_STR
        )


def read_segment(path: str | os.PathLike, run_id: str | None, dim: int) -> list[EvalRow]:
    """Read one segment; raises ``ValueError`` naming what is wrong with a foreign or bad file."""
    with h5py.File(path, "r", locking=False) as f:
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise ValueError(f"format version {version} is newer than this adbo ({FORMAT_VERSION})")
        if version < 1:
            raise ValueError("no adbo format version")
        if run_id is not None and f.attrs.get("run_id") != run_id:
            raise ValueError(f"belongs to run {f.attrs.get('run_id')!r}, not this run {run_id!r}")
        missing = [k for k in _REQUIRED if k not in f]
        if missing:
            raise ValueError(f"missing datasets {missing}")
        x = f["x"][()]
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"x has shape {x.shape}, expected (rows, {dim})")
        cols = {k: f[k][()] for k in _REQUIRED if k != "x"}
    n = x.shape[0]
    if any(len(v) != n for v in cols.values()):
        raise ValueError("datasets have different lengths")
    rows = []
    for i in range(n):
        rows.append(
            EvalRow(
                worker=int(cols["worker"][i]),
                seq=int(cols["seq"][i]),
                status=int(cols["status"][i]),
                x=x[i],
                params=json.loads(_s(cols["params"][i])),
                objective=float(cols["objective"][i]),
                metadata=json.loads(_s(cols["metadata"][i])),
                t_submitted=float(cols["t_submitted"][i]),
                t_started=float(cols["t_started"][i]),
                t_finished=float(cols["t_finished"][i]),
                bo_overhead_s=float(cols["bo_overhead_s"][i]),
                n_observations=int(cols["n_observations"][i]),
                hostname=_s(cols["hostname"][i]),
                error=_s(cols["error"][i]),
                eval_id=_s(cols["eval_id"][i]),
            )
        )
    return rows


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------- table
class ResultTable:
    """All rows known to one process, de-duplicated by (worker, seq), kept as growing numpy arrays.

    A final row replaces the in-flight row of the same (worker, seq); a stale in-flight row never
    replaces a final one, whatever order segments are read in.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self.index: dict[tuple[int, int], int] = {}
        self.rows: list[EvalRow] = []
        self._cap = 0
        self.X = np.empty((0, dim))
        self.y = np.empty(0)
        self.status = np.empty(0, dtype=np.int8)
        self.worker = np.empty(0, dtype=np.int64)
        self.n_final = 0

    def __len__(self) -> int:
        return len(self.rows)

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 256)
        n = len(self.rows)
        X = np.empty((cap, self.dim)); X[:n] = self.X[:n]
        y = np.empty(cap); y[:n] = self.y[:n]
        st = np.empty(cap, dtype=np.int8); st[:n] = self.status[:n]
        w = np.empty(cap, dtype=np.int64); w[:n] = self.worker[:n]
        self.X, self.y, self.status, self.worker, self._cap = X, y, st, w, cap

    def upsert(self, rows: Iterable[EvalRow]) -> list[EvalRow]:
        """Merge rows; returns those that changed the table (new, or in-flight -> final)."""
        changed = []
        for r in rows:
            key = (r.worker, r.seq)
            i = self.index.get(key)
            if i is None:
                i = len(self.rows)
                self._grow(i + 1)
                self.rows.append(r)
                self.index[key] = i
            elif self.rows[i].status == IN_FLIGHT and r.status != IN_FLIGHT:
                self.rows[i] = r
            else:
                continue
            self.X[i] = r.x
            self.y[i] = r.objective
            self.status[i] = r.status
            self.worker[i] = r.worker
            if r.status != IN_FLIGHT:
                self.n_final += 1
            changed.append(r)
        return changed

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self.rows)
        return self.X[:n], self.y[:n], self.status[:n]

    @property
    def n_in_flight(self) -> int:
        return len(self.rows) - self.n_final

    def max_seq(self, worker: int) -> int:
        return max((s for (w, s) in self.index if w == worker), default=-1)


# ----------------------------------------------------------------------------- reading
class SegmentReader:
    """Incremental scanner of a run's segments: one listing per scan, each segment opened once."""

    def __init__(self, run_dir: str | os.PathLike, run_id: str | None, dim: int):
        self.shard_dir = Path(run_dir) / SHARD_DIR
        self.run_id = run_id
        self.dim = dim
        self.seen: set[str] = set()
        self.skipped: dict[str, str] = {}
        self.opens = 0
        self.listings = 0

    def scan(self) -> list[EvalRow]:
        """Rows from segments published since the last scan (unordered; merge with a ResultTable)."""
        self.listings += 1
        try:
            entries = [e.name for e in os.scandir(self.shard_dir)]
        except FileNotFoundError:
            return []
        rows: list[EvalRow] = []
        for name in sorted(entries):
            if name in self.seen or not name.endswith(".h5"):
                continue
            self.seen.add(name)
            if parse_segment_name(name) is None:
                self._skip(name, "not an adbo segment name")
                continue
            self.opens += 1
            try:
                rows.extend(read_segment(self.shard_dir / name, self.run_id, self.dim))
            except FileNotFoundError:
                continue  # compacted away between listing and open: its rows are in the newer one
            except Exception as exc:  # noqa: BLE001 - any unreadable file must not stop a worker
                self._skip(name, f"{type(exc).__name__}: {exc}")
        return rows

    def _skip(self, name: str, why: str) -> None:
        self.skipped[name] = why
        warnings.warn(f"adbo: ignoring {self.shard_dir / name}: {why}", RuntimeWarning, stacklevel=3)


def scan_run(run_dir: str | os.PathLike) -> tuple[RunInfo, ResultTable, SegmentReader]:
    info = read_run_info(run_dir)
    space = info.space
    reader = SegmentReader(run_dir, info.run_id, space.dim)
    table = ResultTable(space.dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = reader.scan()
    # Final rows first, so an in-flight row read from an older segment cannot shadow them.
    rows.sort(key=lambda r: r.status == IN_FLIGHT)
    table.upsert(rows)
    return info, table, reader
