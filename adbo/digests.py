"""Shared reading: one worker gathers the run's new rows into digests that every other worker reads.

Without it every worker opens every segment each peer publishes, so the metadata operations of a
run grow with the square of its workers (1.6 million opens a second at 10,000 workers). With it,
one worker at a time holds the *aggregator* role: every period it lists the shard buckets, reads
the segments published since, and publishes the rows that changed as one digest file in
``RUN_DIR/digests/``. Every worker then lists that one directory per scan and opens only the
digests it has not read: a scan costs a listing and an open or two, whatever the number of workers.

Digests are derived data; the shards stay the record. That is what makes the role crash-safe:

* a digest is written as a temporary file, fsynced and renamed, like a segment: a reader never
  sees half of one, and an aggregator killed mid-write leaves only a ``.tmp`` that nobody reads;
* the role is a lease (``digests/aggregator``) renewed every heartbeat, also in the middle of a
  long round; when a worker has seen it unchanged for ``takeover_after_s`` (by its own clock), it
  claims it, rebuilds the digest state from the digests on disk and from every shard, and starts
  a new *epoch* of generations past every one on disk. Rows its predecessor read but never
  published come back from the shards; a predecessor that only stalled checks the lease before
  each publish and steps down, and whatever it may still publish lies in its own epoch, which
  readers track apart, so it can never hide a row of its successor's;
* a worker whose digests stop advancing (no new generation for ``takeover_after_s``; the holder
  publishes an empty digest each heartbeat when nothing changed) reads the shards itself, as
  without shared reading, until digests advance again: results are late, never lost.

Digest names are ``d-gGEN-INCARNATION[-c|-e].h5`` with GEN = (epoch << 32) + n. ``-c`` marks a
compacted digest holding every row of the run as of that generation (an epoch starts with one),
``-e`` an empty one that only says the holder is alive (readers never open those). Each row
carries the generation of the digest that last changed it, so a reader that fell behind reads
only what it missed, and one that is up to date skips a compacted digest without opening it (the
digests it supersedes are deleted one compaction later, so that it has seen them all).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from . import fsops
from .rows import IN_FLIGHT
from .runinfo import FORMAT_VERSION, file_mode, make_dir
from .segments import CURVE, HDF5_LOCKING, MAX_GEN, RowBatch, numeric_dtype, read_segment
from .storage import SegmentReader, _Progress, _fsync_file, _run_dir_mode, unlink_superseded

DIGEST_DIR = "digests"
LEASE_NAME = "aggregator"
_NAME = re.compile(r"^d-g(\d{9}|[1-9]\d{9,17})-([0-9a-f]{8})(-c|-e)?\.h5$", re.ASCII)

PERIOD_S = 2.0
"""Shortest time between two digests; longer for long evaluations (``period_for``)."""
HEARTBEAT_S = 10.0
"""The holder renews its lease, and publishes an empty digest when nothing changed, this often."""
AUTO_WORKERS = 128
"""``shared_reading="auto"`` turns it on for launches of at least this many workers. Below that a
worker's scan opens few enough segments that the extra period of delay buys nothing."""


def period_for(typical_eval_s: float) -> float:
    """Seconds between digests: 1% of a typical evaluation, at least ``PERIOD_S``.

    Workers rescan every 5% of an evaluation, so each scan finds about five new digests.
    """
    return max(PERIOD_S, 0.01 * typical_eval_s)


def shared_reading_wanted(mode: str, workers: int) -> bool:
    """Whether a launch of ``workers`` reads through digests with ``shared_reading=mode``."""
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"shared_reading={mode!r}: use 'auto' (on from {AUTO_WORKERS} workers), 'on' or 'off'")
    return mode == "on" or (mode == "auto" and workers >= AUTO_WORKERS)


_LEFTOVER = re.compile(r"^(?:d-g\d{9,18}-([0-9a-f]{8})(?:-c|-e)?\.h5|\.aggregator\.([0-9a-f]{8}))\.tmp$", re.ASCII)


def _leftover_incarnation(name: str) -> str | None:
    """The incarnation whose temporary digest or lease file ``name`` is, or None for anything else."""
    m = _LEFTOVER.match(name)
    return (m.group(1) or m.group(2)) if m else None


@dataclass(frozen=True)
class DigestName:
    gen: int
    incarnation: str
    kind: str = ""
    """``""`` rows changed since the previous digest, ``"c"`` every row, ``"e"`` none (a heartbeat)."""

    @property
    def filename(self) -> str:
        if not 0 <= self.gen <= MAX_GEN:
            raise ValueError(f"no digest name for generation {self.gen}")
        return f"d-g{self.gen:09d}-{self.incarnation}{'-' + self.kind if self.kind else ''}.h5"

    @staticmethod
    def parse(name: str) -> "DigestName | None":
        m = _NAME.match(name)
        return DigestName(int(m.group(1)), m.group(2), (m.group(3) or "")[1:]) if m else None


def write_digest(path: Path, numeric: np.ndarray, curves: dict[int, np.ndarray], run_id: str) -> None:
    """Write rows (numbers and curves only: workers fit on nothing else) to ``path``."""
    with h5py.File(path, "w", locking=HDF5_LOCKING) as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["run_id"] = run_id
        f.attrs["worker"] = -1
        f.attrs["kind"] = "digest"
        f.create_dataset("rows", data=numeric)
        if curves:
            total = sum(len(c) for c in curves.values())
            points = np.zeros(total, dtype=CURVE)
            at = 0
            for i, c in sorted(curves.items()):
                points["row"][at: at + len(c)] = i
                points["step"][at: at + len(c)] = c[:, 0]
                points["value"][at: at + len(c)] = c[:, 1]
                at += len(c)
            f.create_dataset("curve", data=points)


class DigestRows:
    """Every row of the run, one per (worker, seq), as the aggregator keeps them.

    The same precedence as the workers' tables: a final row replaces an in-flight one, never the
    reverse; an in-flight row replaces an in-flight one only with a longer learning curve.
    """

    def __init__(self, dim: int):
        self.dtype = numeric_dtype(dim)
        self.data = np.empty(256, dtype=self.dtype)
        self.n = 0
        self.index: dict[tuple[int, int], int] = {}
        self.curves: dict[int, np.ndarray] = {}
        self.changed: set[int] = set()

    def merge(self, batch: RowBatch, mark_changed: bool = True) -> None:
        curves = batch.curves or {}
        workers, seqs, statuses = (batch.numeric[k].tolist() for k in ("worker", "seq", "status"))
        for j, key in enumerate(zip(workers, seqs)):
            i = self.index.get(key)
            curve = curves.get(j)
            if i is None:
                i = self.n
                if i == len(self.data):
                    self.data = np.concatenate([self.data, np.empty(len(self.data), dtype=self.dtype)])
                self.n += 1
                self.index[key] = i
            elif self.data["status"][i] != IN_FLIGHT:
                continue
            elif statuses[j] == IN_FLIGHT and len(curve if curve is not None else ()) <= len(self.curves.get(i, ())):
                continue
            self.data[i] = batch.numeric[j]
            if curve is not None:
                self.curves[i] = curve
            else:
                self.curves.pop(i, None)
            if mark_changed:
                self.changed.add(i)

    def take_changed(self, gen: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """The changed rows, stamped with the generation of the digest that carries them."""
        idx = np.array(sorted(self.changed), dtype=np.int64)
        self.changed.clear()
        self.data["gen"][idx] = gen
        return self.data[idx].copy(), {k: self.curves[i] for k, i in enumerate(idx.tolist()) if i in self.curves}

    def everything(self) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        return self.data[: self.n].copy(), dict(self.curves)


@dataclass
class Lease:
    incarnation: str
    worker: int
    host: str
    pid: int
    time: float


class _SteppedDown(Exception):
    """The lease names another holder now: this round publishes nothing."""


EPOCH_BITS = 32
"""A holder's generations are ``(epoch << 32) + n``, its epoch past every one on disk: a stalled
holder that has not yet noticed its successor can never publish a generation the successor
publishes, so a reader that read one of them never skips rows of the other."""


EPOCH_MASK = (1 << EPOCH_BITS) - 1


def epoch_of(gen: int) -> int:
    return gen >> EPOCH_BITS


class Aggregator:
    """The aggregator role as one worker sees it: claim it when free or abandoned, run it while held.

    ``step()`` does what is due (renew the lease every heartbeat, a round every period) and says
    how long to wait. Workers read the lease at different intervals (worker 0 every heartbeat,
    worker 1 every two, up to sixteen), so that a dead holder is replaced within seconds without
    thousands of workers reading the lease every heartbeat. A lease is abandoned when it has not
    changed for ``takeover_after_s`` by the observer's own clock, so clocks that differ between
    hosts do not matter.
    """

    COMPACT_EVERY = 32

    def __init__(self, run_dir: str | os.PathLike, worker: int, run_id: str, dim: int, max_workers: int | None,
                 period_s: Callable[[], float] = lambda: PERIOD_S, heartbeat_s: float = HEARTBEAT_S,
                 log: logging.Logger | None = None):
        self.run_dir = Path(run_dir)
        self.worker = int(worker)
        self.run_id = run_id
        self.dim = dim
        self.max_workers = max_workers
        self.period_s = period_s
        self.heartbeat_s = float(heartbeat_s)
        self.takeover_after_s = 3.0 * self.heartbeat_s
        self.check_every_s = self.heartbeat_s * (1 + min(self.worker, 15))
        self.first_check_s = self.heartbeat_s * min(self.worker, 15)
        """Worker 0 claims the role at once; the others look later, by when it is normally held."""
        self.log = log or logging.getLogger("adbo.digests")
        self.dir_mode = _run_dir_mode(self.run_dir)
        self.dir = self.run_dir / DIGEST_DIR
        make_dir(self.dir, self.dir_mode)
        self.lease_path = self.dir / LEASE_NAME
        self.incarnation = uuid.uuid4().hex[:8]
        self.holding = False
        self.digests_published = 0
        self._rows: DigestRows | None = None
        self._raw: SegmentReader | None = None
        self._gen = 0
        self._own: list[str] = []
        self._older: list[str] = []
        self._inherited: list[str] = []
        self._since_compaction = 0
        self._renewed = 0.0
        self._published = 0.0
        self._next_round = 0.0
        self._observed: tuple[str, float] | None = None
        self._observed_at = 0.0

    # -- the lease ---------------------------------------------------------------------
    def read_lease(self) -> Lease | None:
        fsops.count("open")
        try:
            data = json.loads(self.lease_path.read_text())
            return Lease(str(data["incarnation"]), int(data["worker"]), str(data["host"]), int(data["pid"]),
                         float(data["time"]))
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def _write_lease(self) -> None:
        tmp = self.dir / f".{LEASE_NAME}.{self.incarnation}.tmp"
        fsops.count("create")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file_mode(self.dir_mode))
        try:
            os.write(fd, json.dumps({"incarnation": self.incarnation, "worker": self.worker,
                                     "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}).encode())
        finally:
            os.close(fd)
        fsops.count("rename")
        os.replace(tmp, self.lease_path)
        self._renewed = time.monotonic()

    def _abandoned(self, lease: Lease | None) -> bool:
        """No lease, or one that has not changed for ``takeover_after_s`` of this process's time."""
        if lease is None:
            return True
        key = (lease.incarnation, lease.time)
        if key != self._observed:
            self._observed, self._observed_at = key, time.monotonic()
            return False
        return time.monotonic() - self._observed_at > self.takeover_after_s

    def _still_mine(self) -> None:
        """Raise ``_SteppedDown`` unless the lease still names this holder."""
        lease = self.read_lease()
        if lease is None or lease.incarnation != self.incarnation:
            self.log.info("aggregator role now held by %s; worker %d steps down",
                          f"worker {lease.worker} on {lease.host}" if lease else "nobody", self.worker)
            raise _SteppedDown

    def _keep_alive(self) -> None:
        """Renew the lease when a heartbeat is due, also in the middle of a long round."""
        if time.monotonic() - self._renewed >= self.heartbeat_s:
            self._still_mine()
            self._write_lease()

    def step(self) -> float:
        """Do what is due; returns the seconds to wait before the next call."""
        if not self.holding:
            lease = self.read_lease()
            if lease is not None and lease.incarnation == self.incarnation:
                lease = None  # our own, from before we stepped down: free to take again
            if not self._abandoned(lease):
                return self.check_every_s
            self._write_lease()
            confirmed = self.read_lease()  # two claimants at once: the last rename wins, the other backs off
            if confirmed is None or confirmed.incarnation != self.incarnation:
                return self.check_every_s
            self._take_over(lease)
        try:
            self._keep_alive()
            if time.monotonic() >= self._next_round:
                self._aggregate()
                self._next_round = time.monotonic() + self.period_s()
        except _SteppedDown:
            self._step_down()
            return self.check_every_s
        now = time.monotonic()
        return max(0.01, min(self._next_round, self._renewed + self.heartbeat_s) - now)

    def release(self) -> None:
        """Give the role up on the way out, so the next worker need not wait for the lease to age."""
        if not self.holding:
            return
        lease = self.read_lease()
        if lease is not None and lease.incarnation == self.incarnation:
            fsops.count("unlink")
            try:
                os.unlink(self.lease_path)
            except OSError:
                pass
        self._step_down()

    def _step_down(self) -> None:
        self.holding = False
        self._rows = self._raw = None

    # -- the work ----------------------------------------------------------------------
    def _take_over(self, previous: Lease | None) -> None:
        """Rebuild the run's rows from the digests on disk, then (in the first round) from every shard."""
        self.holding = True
        self._rows = DigestRows(self.dim)
        self._own, self._older, self._inherited = [], [], []
        self._since_compaction = 0
        fsops.count("listing")
        entries = os.listdir(self.dir)
        for entry in entries:
            # What a holder killed mid-write left: never published, so never read by anyone.
            leftover = _leftover_incarnation(entry)
            if leftover is not None and leftover != self.incarnation:
                fsops.count("unlink")
                try:
                    os.unlink(self.dir / entry)
                except OSError:
                    pass
        names = sorted((n for n in (DigestName.parse(e) for e in entries) if n is not None),
                       key=lambda n: (n.gen, n.kind != "c"))
        newest = 0  # from readable digests only: a forged name cannot push generations out of range
        for name in names:
            try:
                fsops.count("open")
                batch = read_segment(self.dir / name.filename, self.run_id, self.dim, with_text=False, with_curves=True)
            except FileNotFoundError:
                continue
            except Exception as exc:  # noqa: BLE001 - not readable as this run's digest: not ours to delete
                self.log.warning("ignoring %s: %s: %s", self.dir / name.filename, type(exc).__name__, exc)
                continue
            if batch is not None:
                self._rows.merge(batch, mark_changed=False)
            newest = max(newest, name.gen)
            self._inherited.append(name.filename)
        # A fresh epoch (a random step past the newest, in case another claimant took the same
        # moment): nothing this holder publishes can share a generation with anything else.
        self._gen = (epoch_of(newest) + 1 + random.randrange(64)) << EPOCH_BITS
        self._raw = SegmentReader(self.run_dir, self.run_id, self.dim, self.max_workers, quiet=True)
        self._next_round = 0.0
        was = f"after worker {previous.worker} on {previous.host} went silent" if previous else "first holder"
        self.log.info("worker %d holds the aggregator role (%s); %d rows in %d digests, epoch %d",
                      self.worker, was, self._rows.n, len(self._inherited), epoch_of(self._gen))

    def _aggregate(self) -> None:
        assert self._rows is not None and self._raw is not None
        for batch in self._raw.scan_batches(with_text=False, with_curves=True, between_buckets=self._keep_alive):
            self._rows.merge(batch)
        if not self._own:
            # The first digest of an epoch holds every row: readers new to the epoch start from it.
            self._gen += 1
            self._rows.take_changed(self._gen)
            self._publish(DigestName(self._gen, self.incarnation, "c"), *self._rows.everything())
        elif self._rows.changed:
            self._gen += 1
            numeric, curves = self._rows.take_changed(self._gen)
            self._publish(DigestName(self._gen, self.incarnation), numeric, curves)
        elif time.time() - self._published >= self.heartbeat_s:
            self._gen += 1
            self._publish(DigestName(self._gen, self.incarnation, "e"), np.empty(0, dtype=self._rows.dtype), {})
        if self._since_compaction >= self.COMPACT_EVERY:
            self.compact()

    def compact(self) -> None:
        """Publish every row as one digest; delete what the previous compaction superseded.

        Deleting one compaction late keeps the digests an up-to-date reader needs to skip the new
        compacted one (it has read every generation before it) instead of decoding it whole.
        """
        assert self._rows is not None
        superseded = self._older + self._inherited
        self._gen += 1
        numeric, curves = self._rows.everything()
        self._publish(DigestName(self._gen, self.incarnation, "c"), numeric, curves)
        self._older, self._own = self._own[:-1], self._own[-1:]
        self._inherited = []
        self._since_compaction = 0
        for name, exc in unlink_superseded(self.dir, superseded):
            self.log.warning("could not delete superseded digest %s: %s", name, exc)

    def _publish(self, name: DigestName, numeric: np.ndarray, curves: dict[int, np.ndarray]) -> None:
        tmp = self.dir / (name.filename + ".tmp")
        fsops.count("create")
        try:
            write_digest(tmp, numeric, curves, self.run_id)
            if self.dir_mode & 0o070:
                os.chmod(tmp, file_mode(self.dir_mode))
            _fsync_file(tmp)
            self._still_mine()  # a holder that stalled past its lease publishes nothing more
            fsops.count("rename")
            os.replace(tmp, self.dir / name.filename)
        except _SteppedDown:
            tmp.unlink(missing_ok=True)
            raise
        except OSError:
            if not tmp.exists():
                # A successor took over while this holder stalled and cleared its temporary file.
                raise _SteppedDown from None
            raise
        self._own.append(name.filename)
        self._published = time.time()
        self._since_compaction += 1
        self.digests_published += 1


class AggregatorThread:
    """Runs a worker's ``Aggregator`` in the background for as long as the worker runs."""

    def __init__(self, aggregator: Aggregator, log: logging.Logger):
        self.aggregator = aggregator
        self.log = log
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="adbo-aggregator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _work(self) -> None:
        delay = self.aggregator.first_check_s
        while not self._stop.wait(delay):
            try:
                delay = self.aggregator.step()
            except Exception:  # noqa: BLE001 - the role passes on; this worker's search goes on
                self.log.exception("aggregator round failed; giving the role up")
                self.aggregator.release()
                delay = self.aggregator.check_every_s

    def stop(self) -> None:
        """Call after the worker's own last rows are published: a last round gathers them."""
        self._stop.set()
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            return  # still inside a long round: leave it; the lease ages and the role passes on
        try:
            if self.aggregator.holding:
                self.aggregator._next_round = 0.0
                self.aggregator.step()  # a last round: the rows of the evaluations just finished
            self.aggregator.release()
        except Exception:  # noqa: BLE001 - on the way out: the lease ages and the role passes on anyway
            self.log.exception("could not release the aggregator role")


class SharedReader:
    """A worker's reader with shared reading on: digests while they advance, the shards otherwise.

    Same interface as ``SegmentReader`` for workers (``scan_batches(with_text=False)``).
    ``fallback=False`` (from ``AUTO_WORKERS`` workers on): once digests exist, read only them, even
    while their holder is silent, and wait for the successor. At that scale a fallback would have
    every worker open every segment of the run at the same moment, the storm shared reading is
    there to prevent; the successor publishes what the silent holder missed within a minute.
    """

    def __init__(self, run_dir: str | os.PathLike, run_id: str, dim: int, max_workers: int | None,
                 stale_after_s: float = 3.0 * HEARTBEAT_S, fallback: bool = True):
        self.raw = SegmentReader(run_dir, run_id, dim, max_workers)
        self.dir = Path(run_dir) / DIGEST_DIR
        self.run_id = run_id
        self.dim = dim
        self.stale_after_s = stale_after_s
        self.fallback = fallback
        self.progress: dict[int, _Progress] = {}
        """Per epoch (one holder's tenure), the generations read."""
        self.skipped: dict[str, str] = {}
        self._done: set[str] = set()
        self._listed: set[str] = set()
        self._advanced_at: float | None = None
        self.mode = "shards"
        self.digest_opens = 0
        self.digest_listings = 0
        self.digest_rows = 0

    @property
    def opens(self) -> int:
        return self.raw.opens + self.digest_opens

    @property
    def listings(self) -> int:
        return self.raw.listings + self.digest_listings

    @property
    def rows_read(self) -> int:
        return self.raw.rows_read + self.digest_rows

    def scan_batches(self, with_text: bool = False, with_curves: bool | None = None) -> list[RowBatch]:
        if with_text:
            raise ValueError("digests hold numbers and curves only: read the shards for parameters and messages")
        with_curves = bool(with_curves)
        names = self._list()
        now = time.monotonic()
        listed = {n.filename for n in names}
        # Digests advance when a name not listed before appears (a forged or stray one counts
        # once, then no more: it cannot make stale digests look fresh, nor fresh ones stale).
        if listed - self._listed - set(self.skipped):
            if self._listed or not self.fallback or self._holder_is_alive():
                self._advanced_at = now
        self._listed = listed
        fresh = self._advanced_at is not None and now - self._advanced_at <= self.stale_after_s
        if not names or (self.fallback and not fresh):
            self.mode = "shards"  # no aggregator yet, or it went silent: read what the workers wrote
            return self.raw.scan_batches(with_text=False, with_curves=with_curves)
        self.mode = "digests"
        batches = []
        for name in names:
            filename = name.filename
            if filename in self._done or filename in self.skipped:
                continue
            epoch, n = epoch_of(name.gen), name.gen & EPOCH_MASK
            progress = self.progress.get(epoch)
            if name.kind == "e":
                self.progress.setdefault(epoch, _Progress()).mark(n)
                self._done.add(filename)
                continue
            if name.kind == "c" and n > 1 and progress is not None and progress.upto >= n - 1:
                progress.mark_upto(n)  # it holds nothing this reader has not read
                self._done.add(filename)
                continue
            batch = self._read(filename, name, with_curves)
            if batch is not None:
                batches.append(batch)
                self.digest_rows += len(batch)
        self._done &= listed
        return batches

    def _unseen(self, gens: np.ndarray) -> np.ndarray:
        """Which rows of a compacted digest this reader has not read (rows keep the generation,
        of whatever epoch, of the digest that last changed them)."""
        mask = np.ones(len(gens), dtype=bool)
        epochs = gens >> EPOCH_BITS
        for epoch in np.unique(epochs).tolist():
            progress = self.progress.get(int(epoch))
            if progress is not None:
                rows = epochs == epoch
                mask[rows] = progress.unseen(gens[rows] & EPOCH_MASK)
        return mask

    def _holder_is_alive(self) -> bool:
        """At the first sight of digests: are they still being written? (Left by an earlier launch
        they may miss its last rows: until a holder of this launch publishes, read the shards.)"""
        fsops.count("open")
        try:
            beat = float(json.loads((self.dir / LEASE_NAME).read_text())["time"])
        except (OSError, ValueError, TypeError, KeyError):
            return False
        return time.time() - beat <= self.stale_after_s

    def _list(self) -> list[DigestName]:
        self.digest_listings += 1
        fsops.count("listing")
        try:
            with os.scandir(self.dir) as it:
                names = [e.name for e in it]
        except OSError:
            return []
        parsed = (DigestName.parse(n) for n in names)
        return sorted((n for n in parsed if n is not None), key=lambda n: (n.gen, n.kind != "c"))

    def _read(self, filename: str, name: DigestName, with_curves: bool) -> RowBatch | None:
        self.digest_opens += 1
        fsops.count("open")
        wanted = self._unseen if name.kind == "c" else None
        try:
            batch = read_segment(self.dir / filename, self.run_id, self.dim, None, wanted, False, with_curves)
        except FileNotFoundError:
            return None  # compacted away since the listing: the compacted digest holds its rows
        except Exception as exc:  # noqa: BLE001 - a broken digest is skipped; the next compaction covers it
            if not (self.dir / filename).exists():
                return None
            self.skipped[filename] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"adbo: ignoring {self.dir / filename}: {self.skipped[filename]}", RuntimeWarning, stacklevel=3)
            return None
        progress = self.progress.setdefault(epoch_of(name.gen), _Progress())
        if name.kind == "c":
            progress.mark_upto(name.gen & EPOCH_MASK)
        else:
            progress.mark(name.gen & EPOCH_MASK)
        self._done.add(filename)
        return batch


def describe_shared_reading(run_dir: str | os.PathLike) -> str | None:
    """One line for ``adbo status``: who writes the digests and how fresh they are; None without any."""
    directory = Path(run_dir) / DIGEST_DIR
    try:
        names = [n for n in (DigestName.parse(e) for e in os.listdir(directory)) if n is not None]
    except OSError:
        return None
    if not names:
        return None
    newest = max(n.gen for n in names)
    try:
        data = json.loads((directory / LEASE_NAME).read_text())
        age = time.time() - float(data["time"])
        holder = f"worker {data['worker']} on {data['host']} (pid {data['pid']}, renewed {age:.0f} s ago)"
        if age > 3 * HEARTBEAT_S:
            holder += ", silent: the next worker to look takes the role over"
    except (OSError, ValueError, TypeError, KeyError):
        holder = "nobody now (workers read the shards until one takes the role)"
    return (f"shared, {len(names)} digest file(s), the newest #{newest & EPOCH_MASK} of holder tenure "
            f"{epoch_of(newest)}; aggregator: {holder}")
