"""The run directory as shared state: writing one worker's shard, scanning everyone's.

The rules (see DESIGN.md) that keep it correct on Lustre with thousands of writers:

* a segment is written as ``NAME.h5.tmp``, fsynced, then published with ``os.replace``: a reader
  sees a whole segment or none of it, never a partial row; a writer killed at any instant leaves
  at most a temporary file, which readers ignore and its owner deletes when it restarts;
* segments are never modified; a writer compacts its own segments by publishing one that holds
  all its rows and only then deleting the ones it supersedes, so readers are right at any time;
* a scan lists ``shards/`` and each bucket subdirectory once, stats nothing, opens only segments
  it has not seen, and of a compacted segment reads only the rows it has not read before.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import fsops
from .rows import (
    BUDGET_STATUSES,
    FAILED,
    FINAL_STATUSES,
    IN_FLIGHT,
    INTERRUPTED,
    OK,
    STATUS_NAMES,
    STOPPED,
    TIMEOUT,
    VALUED_STATUSES,
    EvalRow,
    curve_length,
)
from .runinfo import (
    FORMAT_VERSION,
    LOG_DIR,
    RUN_FILE,
    SHARD_DIR,
    STOP_FILE,
    RunDirectoryError,
    RunDirectoryWarning,
    RunInfo,
    dir_mode as mode_for_access,
    current_max_workers,
    file_mode,
    make_dir,
    open_run,
    read_run_info,
)
from .segments import (
    HDF5_LOCKING,
    MAX_GEN,
    RowBatch,
    SegmentName,
    SegmentRejected,
    bucket_name,
    is_bucket_name,
    read_segment,
    write_segment,
)

__all__ = [
    "BUDGET_STATUSES", "FAILED", "FINAL_STATUSES", "FORMAT_VERSION", "HDF5_LOCKING", "IN_FLIGHT",
    "INTERRUPTED", "LOG_DIR", "OK", "RUN_FILE", "SHARD_DIR", "STATUS_NAMES", "STOP_FILE", "STOPPED", "TIMEOUT",
    "VALUED_STATUSES",
    "EvalRow", "ResultTable", "RunDirectoryError", "RunDirectoryWarning", "RunInfo", "SegmentReader",
    "SegmentRejected", "SegmentWriter", "WriterSuperseded",
    "open_run", "read_run_info", "scan_run",
]


def _fsync_file(path: Path) -> None:
    fsops.count("open")
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


OWNER_DIR = "owners"


class WriterSuperseded(RuntimeError):
    """Another process has taken over this worker id; this one must stop writing."""


class SegmentWriter:
    """Publishes one worker's rows as immutable segments and compacts them periodically.

    On creation it deletes its own leftover temporary files and re-reads its own segments, so a
    restarted writer continues its generations and its compactions keep every row it ever
    published. It also claims the worker id in ``owners/``: if a relaunch starts the same worker
    id while an orphan of the previous launch still runs, the orphan notices at its next append
    and stops instead of writing over the new one's segments.

    Only a segment it has read back as its own (this run's id, its writer id, rows all of its
    worker) counts: that is all a compaction ever deletes, and all its generations continue from.
    Anything else named like its segments (another run's, unreadable bytes, a directory, an
    absurd generation) is left alone, and its generation is never reused, so it is not
    overwritten either. ``dir_mode`` is the mode of the directories it creates; by default the
    one the run was opened with (``group_access`` in ``run.json``).
    """

    def __init__(self, run_dir: str | os.PathLike, worker: int, run_id: str, dim: int, compact_every: int = 16,
                 dir_mode: int | None = None):
        self.worker = int(worker)
        self.run_id = run_id
        self.dim = dim
        self.compact_every = max(1, compact_every)
        self.hostname = socket.gethostname()
        self.dir_mode = _run_dir_mode(Path(run_dir)) if dir_mode is None else dir_mode
        self.dir = Path(run_dir) / SHARD_DIR / bucket_name(self.worker)
        make_dir(self.dir, self.dir_mode)
        self.incarnation = uuid.uuid4().hex
        owners = Path(run_dir) / OWNER_DIR
        make_dir(owners, self.dir_mode)
        for stale in owners.glob(f".w{self.worker:06d}.*.tmp"):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)  # a claim cut short by a kill; never read by anyone
        self._owner_file = owners / f"w{self.worker:06d}"
        self._claim(owners / f".w{self.worker:06d}.{self.incarnation}.tmp")
        prefix = f"w{self.worker:06d}-"
        candidates: list[SegmentName] = []
        self._taken: set[int] = set()  # generations of names here that are not ours to write over
        strangers: list[str] = []
        fsops.count("listing")
        with os.scandir(self.dir) as entries:
            listing = [(e.name, e.is_file(follow_symlinks=False)) for e in entries if e.name.startswith(prefix)]
        for name, regular in listing:
            if name.endswith(".tmp"):
                if regular and SegmentName.parse(name[: -len(".tmp")]) is not None:
                    try:
                        os.unlink(self.dir / name)  # never published, so never read by anyone
                    except FileNotFoundError:
                        pass
                continue
            parsed = SegmentName.parse(name)
            if parsed is None:
                continue
            if regular:
                candidates.append(parsed)
            else:
                self._taken.add(parsed.gen)
                strangers.append(f"{name} (not a regular file)")
        candidates.sort(key=lambda s: (s.gen, not s.compacted))
        own: list[SegmentName] = []
        self._rows: dict[int, EvalRow] = {}
        for seg in candidates:
            try:
                batch = read_segment(self.dir / seg.filename, run_id, dim, self.worker)
            except Exception as exc:  # noqa: BLE001 - never fatal: not ours, so left alone
                self._taken.add(seg.gen)
                reason = str(exc).splitlines()[0] if str(exc) else ""
                strangers.append(f"{seg.filename} ({type(exc).__name__}: {reason})")
                continue
            own.append(seg)
            self._remember(batch.rows() if batch is not None else [])
        self.gen = max((s.gen for s in own), default=0)
        self._live = [s.filename for s in own]
        if strangers:
            shown = "; ".join(strangers[:3]) + (f"; and {len(strangers) - 3} more" if len(strangers) > 3 else "")
            warnings.warn(
                f"adbo: worker {self.worker} leaves alone {len(strangers)} file(s) in {self.dir} named like its "
                f"segments that it cannot read back as its own: {shown}. They are never deleted or overwritten; "
                "remove them by hand if they are not needed",
                RuntimeWarning, stacklevel=2,
            )

    def _claim(self, tmp: Path) -> None:
        """Name this incarnation in the owner file (owner-only: nobody else may take a worker over)."""
        fsops.count("create")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{self.incarnation} {self.hostname} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        fsops.count("rename")
        try:
            os.replace(tmp, self._owner_file)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise RunDirectoryError(
                f"cannot claim worker {self.worker} in {self._owner_file} ({exc.strerror or exc}); "
                "if something else is there, remove or rename it"
            ) from None

    def _remember(self, rows: Iterable[EvalRow]) -> None:
        for r in rows:
            old = self._rows.get(r.seq)
            if old is None or old.status == IN_FLIGHT:
                self._rows[r.seq] = r

    @property
    def rows(self) -> list[EvalRow]:
        """Every row this writer has published, one per sequence number (final over in flight)."""
        return [self._rows[s] for s in sorted(self._rows)]

    def next_seq(self) -> int:
        return max(self._rows, default=-1) + 1

    def _check_owner(self) -> None:
        fsops.count("open")
        try:
            owner = self._owner_file.read_text().split()[0]
        except (FileNotFoundError, IndexError):
            owner = ""
        if owner != self.incarnation:
            raise WriterSuperseded(
                f"worker {self.worker} was restarted elsewhere ({self._owner_file} now names {owner or 'nobody'}); "
                "this copy stops without writing"
            )

    def _next_gen(self) -> int:
        """The next generation to publish: past every name here that is not ours to overwrite.

        A name readers would not accept is never produced: past ``MAX_GEN`` the writer stops
        with an error rather than publish rows no one would ever read.
        """
        gen = self.gen + 1
        while gen in self._taken:
            gen += 1
        if gen > MAX_GEN:
            raise RunDirectoryError(
                f"worker {self.worker} cannot publish generation {gen} in {self.dir}: segment names go up to "
                f"{MAX_GEN}, and its segments, or files named like them, already reach that far (planted "
                "or forged files). Rows published now could never be read: remove those files, or use a new "
                "run directory"
            )
        self.gen = gen
        return gen

    def append(self, rows: list[EvalRow]) -> str:
        """Publish ``rows`` atomically and durably; when this returns, they are on disk."""
        self._check_owner()
        gen = self._next_gen()
        stamped = [r.evolve(gen=gen, hostname=r.hostname or self.hostname) for r in rows]
        name = SegmentName(self.worker, gen, False).filename
        self._publish(name, stamped)
        self._remember(stamped)
        self._live.append(name)
        if len(self._live) > self.compact_every:
            self.compact()
        return name

    def compact(self) -> None:
        """Fold all own segments into one; delete the superseded only once it is published.

        Only segments this writer published or read back as its own are deleted: the compacted
        segment holds all their rows. A failure to delete loses nothing (readers de-duplicate).
        """
        superseded = list(self._live)
        gen = self._next_gen()
        name = SegmentName(self.worker, gen, True).filename
        self._publish(name, sorted(self._rows.values(), key=lambda r: (r.gen, r.seq)))
        self._live = [name]
        for old, exc in unlink_superseded(self.dir, superseded):  # replaced by something else since: not ours
            warnings.warn(f"adbo: worker {self.worker} leaves {self.dir / old} in place ({exc.strerror or exc})",
                          RuntimeWarning, stacklevel=2)

    def _publish(self, name: str, rows: list[EvalRow]) -> None:
        tmp = self.dir / (name + ".tmp")
        fsops.count("create")
        write_segment(tmp, rows, self.run_id, self.worker, self.dim)
        if self.dir_mode & 0o070:
            os.chmod(tmp, file_mode(self.dir_mode))  # the umask may have kept the group out
        _fsync_file(tmp)
        fsops.count("rename")
        os.replace(tmp, self.dir / name)


def unlink_superseded(directory: Path, names: Iterable[str]) -> list[tuple[str, OSError]]:
    """Delete files a compaction superseded; those already gone are fine, the others are returned
    with their error (the caller says so: nothing is lost, readers de-duplicate)."""
    failed = []
    for name in names:
        fsops.count("unlink")
        try:
            os.unlink(directory / name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            failed.append((name, exc))
    return failed


def _run_dir_mode(run_dir: Path) -> int:
    """The directory mode the run was opened with: ``group_access`` in ``run.json``.

    Runs from before that setting was recorded follow the mode of their ``shards/`` directory;
    when neither can be read, private, the safe side.
    """
    try:
        group = read_run_info(run_dir).settings.get("group_access")
    except RunDirectoryError:
        group = None
    if group is None:
        try:
            group = bool(os.stat(run_dir / SHARD_DIR).st_mode & 0o050 == 0o050)
        except OSError:
            group = False
    return mode_for_access(bool(group))


class _Progress:
    """Which generations of one writer a reader has read: a contiguous prefix plus stragglers."""

    __slots__ = ("upto", "extra")

    def __init__(self) -> None:
        self.upto = 0
        self.extra: set[int] = set()

    def seen(self, gen: int) -> bool:
        return gen <= self.upto or gen in self.extra

    def mark(self, gen: int) -> None:
        if gen > self.upto:
            self.extra.add(gen)
        while self.upto + 1 in self.extra:
            self.upto += 1
            self.extra.discard(self.upto)

    def mark_upto(self, gen: int) -> None:
        if gen > self.upto:
            self.upto = gen
            self.extra = {g for g in self.extra if g > gen}
            self.mark(gen)

    def unseen(self, gens: np.ndarray) -> np.ndarray:
        mask = gens > self.upto
        if self.extra and mask.any():
            mask &= ~np.isin(gens, list(self.extra))
        return mask


class SegmentReader:
    """Incremental scanner of a run's shards; counts its opens and listings for benchmarks."""

    def __init__(self, run_dir: str | os.PathLike, run_id: str | None, dim: int, max_workers: int | None = None,
                 quiet: bool = False):
        self.shard_dir = Path(run_dir) / SHARD_DIR
        self.quiet = quiet
        """Record skipped files without warning (a second reader in a process that already warns)."""
        self.run_id = run_id
        self.dim = dim
        self.max_workers = max_workers
        self._max_workers_read = -1e9
        self.progress: dict[int, _Progress] = {}
        self.skipped: dict[str, str] = {}
        self._done: set[str] = set()
        self.opens = 0
        self.listings = 0
        self.rows_read = 0

    def scan(self) -> list[EvalRow]:
        """Rows published since the last scan (merge them into a ``ResultTable``)."""
        return [row for batch in self.scan_batches() for row in batch.rows()]

    def scan_batches(self, with_text: bool = True, with_curves: bool | None = None,
                     between_buckets: Callable[[], None] | None = None) -> list[RowBatch]:
        """Like ``scan``, as columns; ``with_text=False`` (workers) skips parameters and messages,
        and with it the learning curves unless ``with_curves`` (workers with a stopper).
        ``between_buckets`` is called after each bucket (a long scan keeping a lease alive)."""
        if with_curves is None:
            with_curves = with_text
        batches: list[RowBatch] = []
        listed: set[str] = set()
        for bucket in self._list(None):
            for name in sorted(self._list(bucket)):
                key = f"{bucket}/{name}"
                listed.add(key)
                if key in self._done or key in self.skipped:
                    continue
                batch = self._read(bucket, name, key, with_text, with_curves)
                if batch is not None:
                    batches.append(batch)
                    self.rows_read += len(batch)
            if between_buckets is not None:
                between_buckets()
        # Forget names that are gone (compacted away), so memory stays bounded on long runs.
        self._done &= listed
        return batches

    def _list(self, bucket: str | None) -> list[str]:
        """The buckets (``bucket=None``) or the candidate segment names of one bucket.

        One listing each; whether an entry is a directory comes with it (no stat). What cannot
        be a bucket or a segment (a file named like a bucket, a directory named like a segment)
        is skipped with its reason, once, and looked at again on later scans.
        """
        directory = self.shard_dir if bucket is None else self.shard_dir / bucket
        self.listings += 1
        fsops.count("listing")
        try:
            with os.scandir(directory) as it:
                entries = [(e.name, e.is_dir()) for e in it]
        except FileNotFoundError:
            return []
        except NotADirectoryError:
            self._skip_once(bucket or ".", "a file where adbo expects a directory; remove or rename it")
            return []
        except OSError as exc:
            self._skip_once(bucket or ".", f"cannot be listed ({exc.strerror or exc})")
            return []
        wanted = []
        for name, is_dir in entries:
            if name.endswith(".tmp"):
                continue  # a segment being written right now
            if bucket is None and not is_bucket_name(name):
                kind = "directory" if is_dir else "file"
                self._skip_once(name, f"a stray {kind}, not an adbo shard bucket; adbo leaves it alone")
            elif bucket is None and not is_dir:
                self._skip_once(name, "a file named like a shard bucket, which must be a directory; "
                                      "remove or rename it")
            elif bucket is not None and is_dir:
                self._skip_once(f"{bucket}/{name}", "a directory, not a segment file; remove or rename it")
            else:
                if bucket is None:
                    self.skipped.pop(name, None)  # a bucket now, whatever it was at an earlier scan
                wanted.append(name)  # names inside a bucket are checked when read
        return sorted(wanted) if bucket is None else wanted

    def _more_workers(self, worker: int) -> bool | None:
        """Whether a launch that joined the run since uses ``worker``; None when the worker ids
        were re-read less than 5 s ago (the segment waits for the next scan, it is not skipped)."""
        now = time.monotonic()
        if now - self._max_workers_read < 5.0:
            return None
        self._max_workers_read = now
        try:
            latest = current_max_workers(self.shard_dir.parent)
        except RunDirectoryError:
            return False
        if latest is not None and latest > (self.max_workers or 0):
            self.max_workers = latest
        return worker < (self.max_workers or 0)

    def _read(self, bucket: str, name: str, key: str, with_text: bool = True,
              with_curves: bool = True) -> RowBatch | None:
        seg = SegmentName.parse(name)
        if seg is None or bucket != bucket_name(seg.worker):
            self._skip(key, "not an adbo segment name for this directory")
            return None
        if self.max_workers is not None and seg.worker >= self.max_workers:
            known = self._more_workers(seg.worker)
            if known is None:
                return None  # looked at run.json and joins/ too recently: try again at the next scan
            if not known:
                self._skip(key, f"written by unknown worker {seg.worker} (this run has {self.max_workers})")
                return None
        prog = self.progress.setdefault(seg.worker, _Progress())
        if prog.seen(seg.gen) or (seg.compacted and prog.upto >= seg.gen - 1):
            prog.mark_upto(seg.gen) if seg.compacted else prog.mark(seg.gen)
            self._done.add(key)
            return None
        self.opens += 1
        fsops.count("open")
        try:
            batch = read_segment(self.shard_dir / bucket / name, self.run_id, self.dim, seg.worker, prog.unseen,
                                 with_text, with_curves)
        except Exception as exc:  # noqa: BLE001 - no file, however broken, may stop a worker
            if not (self.shard_dir / bucket / name).exists():
                # Compacted away between listing and opening (h5py reports this as several kinds
                # of OSError): the newer compacted segment holds its rows.
                return None
            self._skip(key, f"{type(exc).__name__}: {exc}")
            return None
        if seg.compacted:
            prog.mark_upto(seg.gen)
        else:
            prog.mark(seg.gen)
        self._done.add(key)
        return batch

    def _skip(self, key: str, why: str) -> None:
        self.skipped[key] = why
        if not self.quiet:
            warnings.warn(f"adbo: ignoring {self.shard_dir / key}: {why}", RuntimeWarning, stacklevel=4)

    def _skip_once(self, key: str, why: str) -> None:
        if key not in self.skipped:
            self._skip(key, why)


class ResultTable:
    """All rows known to one process, one per (worker, seq), as growing numpy arrays.

    A final row replaces the in-flight row of the same (worker, seq); an in-flight row never
    replaces a final one, whatever order segments arrive in. Workers keep only the arrays
    (``keep_rows=False``), which is what fitting needs: 40,000 rows of 22 parameters stay a
    few MB; reporting keeps the full rows.
    """

    def __init__(self, dim: int, keep_rows: bool = True):
        self.dim = dim
        self.keep_rows = keep_rows
        self.index: dict[tuple[int, int], int] = {}
        self.rows: list[EvalRow] = []
        self._n = 0
        self._cap = 0
        self.X = np.empty((0, dim))
        self.y = np.empty(0)
        self.status = np.empty(0, dtype=np.int8)
        self.worker = np.empty(0, dtype=np.int64)
        self.seq = np.empty(0, dtype=np.int64)
        self.duration = np.empty(0)
        """Seconds from start to finish of each final row (NaN in flight): what the cost model learns."""
        self.n_final = 0

    def __len__(self) -> int:
        return self._n

    def _grow(self, need: int) -> None:
        if need <= self._cap:
            return
        cap = max(need, 2 * self._cap, 256)
        n = self._n

        def grown(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
            b = np.empty(shape, dtype=a.dtype)
            b[:n] = a[:n]
            return b

        self.X = grown(self.X, (cap, self.dim))
        self.y = grown(self.y, (cap,))
        self.status = grown(self.status, (cap,))
        self.worker = grown(self.worker, (cap,))
        self.seq = grown(self.seq, (cap,))
        self.duration = grown(self.duration, (cap,))
        self._cap = cap

    def _place(self, worker: int, seq: int, status: int, x: np.ndarray, objective: float,
               duration: float = float("nan")) -> int | None:
        """Store one row's numbers; its index if it changed the table, None if it was stale."""
        i = self.index.get((worker, seq))
        if i is None:
            i = self._n
            self._grow(i + 1)
            self._n += 1
            self.index[(worker, seq)] = i
        elif not (self.status[i] == IN_FLIGHT and status != IN_FLIGHT):
            return None
        self.X[i] = x
        self.y[i] = objective
        self.status[i] = status
        self.worker[i] = worker
        self.seq[i] = seq
        self.duration[i] = duration if status != IN_FLIGHT else float("nan")
        if status != IN_FLIGHT:
            self.n_final += 1
        return i

    def upsert(self, rows: Iterable[EvalRow]) -> list[EvalRow]:
        """Merge rows; returns those that changed the table (new, or in flight -> final)."""
        changed = []
        for r in rows:
            i = self._place(r.worker, r.seq, r.status, r.x, r.objective, r.t_finished - r.t_started)
            if i is None:
                i = self.index[(r.worker, r.seq)]
                if not (self.keep_rows and r.status == IN_FLIGHT and self.status[i] == IN_FLIGHT
                        and curve_length(r) > curve_length(self.rows[i])):
                    continue
                # A running evaluation republished with a longer learning curve.
            if self.keep_rows:
                if i == len(self.rows):
                    self.rows.append(r)
                else:
                    self.rows[i] = r
            changed.append(r)
        return changed

    def upsert_batch(self, batch: RowBatch) -> int:
        """Merge a batch of columns (no parameter dicts decoded); returns how many rows changed.

        Tables that keep full rows decode the batch and go through ``upsert``.
        """
        if self.keep_rows:
            return len(self.upsert(batch.rows()))
        num = batch.numeric
        columns = zip(num["worker"].tolist(), num["seq"].tolist(), num["status"].tolist(), batch.x,
                      num["objective"].tolist(), (num["t_finished"] - num["t_started"]).tolist())
        return sum(self._place(w, q, st, x, obj, d) is not None for w, q, st, x, obj, d in columns)

    def view(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self._n
        return self.X[:n], self.y[:n], self.status[:n]

    @property
    def n_in_flight(self) -> int:
        return self._n - self.n_final

    def count(self, statuses: tuple[int, ...]) -> int:
        return int(np.isin(self.status[: self._n], statuses).sum())

    def max_seq(self, worker: int) -> int:
        mine = self.worker[: self._n] == worker
        return int(self.seq[: self._n][mine].max()) if mine.any() else -1

    def durations(self) -> np.ndarray:
        """Seconds each row took, aligned with ``view()``; NaN for rows in flight."""
        return self.duration[: self._n]

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.X, self.y, self.status, self.worker, self.seq, self.duration))


def scan_run(run_dir: str | os.PathLike, quiet: bool = True) -> tuple[RunInfo, ResultTable, SegmentReader]:
    """Read a whole run once (for reports); skipped files are counted in ``reader.skipped``."""
    info = read_run_info(run_dir)
    space = info.space
    reader = SegmentReader(run_dir, info.run_id, space.dim, info.max_workers)
    table = ResultTable(space.dim)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore", RuntimeWarning)
        rows = reader.scan()
    table.upsert(rows)
    return info, table, reader
