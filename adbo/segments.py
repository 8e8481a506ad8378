"""The HDF5 segment file: its name, its layout, and reading it defensively.

A segment is written once and never changed. Its name says who wrote it and in which
generation (``wWORKER-gGEN.h5``); a compacted segment (``wWORKER-gGEN-c.h5``) holds every row
its writer published in generations before ``GEN``. Each row also carries the generation that
first published it, so a reader that already read some of those generations reads only the rest.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from .rows import EvalRow
from .runinfo import FORMAT_VERSION

WORKERS_PER_BUCKET = 64
"""Writers sharing one subdirectory of shards/: at 2,000 workers, 32 directories of at most
64 writers x (compaction threshold + 1) entries, instead of one directory of 30,000+."""

HDF5_LOCKING = os.environ.get("ADBO_HDF5_LOCKING", "0") == "1"
"""HDF5 file locking, off unless ADBO_HDF5_LOCKING=1. flock fails or is slow on Lustre and NFS,
and adbo gains nothing from it: no file is ever opened for writing once it is published."""

_STR = h5py.string_dtype()
MAX_GEN = 10**18 - 1
"""The largest generation a segment name can hold. Names have 9 digits, zero-padded, and more only
once the number needs them (no leading zero then), so each generation has exactly one name and
every name a writer can produce is one readers accept; 18 digits still fit the rows' int64."""
_NAME = re.compile(r"^w(\d{6})-g(\d{9}|[1-9]\d{9,17})(-c)?\.h5$", re.ASCII)

# Two datasets per segment (numbers with the encoded vector, and text), not one per field: opening a
# dataset costs h5py about as much as reading it, and workers, which read only the first, open
# thousands of small segments per scan at scale.
NUMERIC = np.dtype([
    ("worker", "<i8"), ("seq", "<i8"), ("gen", "<i8"), ("n_observations", "<i8"), ("status", "<i1"),
    ("objective", "<f8"), ("t_submitted", "<f8"), ("t_started", "<f8"), ("t_finished", "<f8"),
    ("bo_overhead_s", "<f8"),
])
TEXT_FIELDS = ("eval_id", "hostname", "error", "params", "metadata")
CURVE = np.dtype([("row", "<i8"), ("step", "<f8"), ("value", "<f8")])
"""Learning-curve points of a segment's rows (``row`` indexes the rows dataset). The dataset is
written only when some row has a curve, and workers open it only when a stopper needs curves, so
runs without early stopping pay nothing for it."""


@functools.lru_cache(maxsize=None)
def numeric_dtype(dim: int) -> np.dtype:
    """The per-row record: the numeric fields plus the encoded vector ``x``, read in one go."""
    return np.dtype(NUMERIC.descr + [("x", "<f8", (dim,))])


@functools.lru_cache(maxsize=None)
def _numeric_h5type(dim: int) -> h5py.h5t.TypeID:
    """The HDF5 type of the record, to compare with a file's (H5Tequal is 2x cheaper than h5py
    converting the file's compound type to a numpy dtype, which the hot path would do per file)."""
    return h5py.h5t.py_create(numeric_dtype(dim))

@dataclass(frozen=True)
class SegmentName:
    worker: int
    gen: int
    compacted: bool

    @property
    def filename(self) -> str:
        """The published name; refused for numbers readers would not parse back (they would skip it)."""
        if not (0 <= self.worker <= 999_999 and 0 <= self.gen <= MAX_GEN):
            raise ValueError(f"no segment name for worker {self.worker}, generation {self.gen}: "
                             f"workers go up to 999999 and generations up to {MAX_GEN}")
        return f"w{self.worker:06d}-g{self.gen:09d}{'-c' if self.compacted else ''}.h5"

    @staticmethod
    def parse(name: str) -> "SegmentName | None":
        m = _NAME.match(name)
        return SegmentName(int(m.group(1)), int(m.group(2)), m.group(3) is not None) if m else None


def bucket_name(worker: int) -> str:
    return f"b{worker // WORKERS_PER_BUCKET:04d}"


def is_bucket_name(name: str) -> bool:
    return len(name) == 5 and name[0] == "b" and name[1:].isdigit()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


@dataclass
class RowBatch:
    """Rows of one segment as columns; parameters and metadata stay JSON text until asked for.

    Workers only need the numeric columns and ``x`` to fit their surrogate, so they never pay
    for decoding tens of thousands of parameter dicts.
    """

    numeric: np.ndarray
    x: np.ndarray
    text: np.ndarray
    curves: dict[int, np.ndarray] | None = None
    """Row index in this batch -> (n, 2) array of (step, value); None when not read."""

    def __len__(self) -> int:
        return len(self.numeric)

    def rows(self) -> list[EvalRow]:
        out = []
        for i, rec in enumerate(self.numeric):
            eval_id, hostname, error, params, metadata = (_text(v) for v in self.text[i])
            out.append(
                EvalRow(
                    worker=int(rec["worker"]), seq=int(rec["seq"]), status=int(rec["status"]), x=self.x[i],
                    params=json.loads(params) if params else {}, objective=float(rec["objective"]),
                    metadata=json.loads(metadata) if metadata else {},
                    t_submitted=float(rec["t_submitted"]), t_started=float(rec["t_started"]),
                    t_finished=float(rec["t_finished"]), bo_overhead_s=float(rec["bo_overhead_s"]),
                    n_observations=int(rec["n_observations"]), hostname=hostname, error=error,
                    eval_id=eval_id, gen=int(rec["gen"]),
                    curve=self.curves.get(i) if self.curves else None,
                )
            )
        return out


def write_segment(path: Path, rows: list[EvalRow], run_id: str, worker: int, dim: int) -> None:
    """Write ``rows`` to ``path`` (a temporary name: publishing is the caller's rename)."""
    n = len(rows)
    numeric = np.zeros(n, dtype=numeric_dtype(dim))
    for i, r in enumerate(rows):
        numeric[i] = (r.worker, r.seq, r.gen, r.n_observations, r.status, r.objective, r.t_submitted,
                      r.t_started, r.t_finished, r.bo_overhead_s, np.asarray(r.x, dtype=np.float64))
    text = np.empty((n, len(TEXT_FIELDS)), dtype=object)
    for i, r in enumerate(rows):
        text[i] = (r.eval_id, r.hostname, r.error, json.dumps(r.params, default=_json_default),
                   json.dumps(r.metadata, default=_json_default))
    points = [(i, r.curve) for i, r in enumerate(rows) if r.curve is not None and len(r.curve)]
    with h5py.File(path, "w", locking=HDF5_LOCKING) as f:
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["run_id"] = run_id
        f.attrs["worker"] = worker
        f.create_dataset("rows", data=numeric)
        f.create_dataset("text", data=text.reshape(n, len(TEXT_FIELDS)), dtype=_STR)
        if points:
            curve = np.zeros(sum(len(c) for _, c in points), dtype=CURVE)
            at = 0
            for i, c in points:
                c = np.asarray(c, dtype=np.float64).reshape(-1, 2)
                curve["row"][at: at + len(c)] = i
                curve["step"][at: at + len(c)] = c[:, 0]
                curve["value"][at: at + len(c)] = c[:, 1]
                at += len(c)
            f.create_dataset("curve", data=curve)


class SegmentRejected(ValueError):
    """A file in the shard directory that adbo will not use; the message says why."""


def read_segment(
    path: str | os.PathLike,
    run_id: str | None,
    dim: int,
    expected_worker: int | None = None,
    wanted: Callable[[np.ndarray], np.ndarray] | None = None,
    with_text: bool = True,
    with_curves: bool = True,
) -> RowBatch | None:
    """The rows of one segment that ``wanted(gens)`` selects (all by default), checked first.

    Raises ``SegmentRejected`` for a file of another run, a newer format, a wrong schema or a
    writer that does not match its name; h5py's own errors for unreadable bytes.
    """
    if not with_text:
        return _read_numbers(path, run_id, dim, expected_worker, wanted, with_curves)
    with h5py.File(path, "r", locking=HDF5_LOCKING) as f:
        attrs = f.attrs
        version = int(attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise SegmentRejected(f"format version {version} is newer than this adbo ({FORMAT_VERSION}); upgrade adbo")
        if version < 1:
            raise SegmentRejected("no adbo format version: not an adbo segment")
        stored_run = attrs.get("run_id")
        if run_id is not None and stored_run != run_id:
            raise SegmentRejected(f"belongs to run {stored_run!r}, not this run {run_id!r}")
        if expected_worker is not None and int(attrs.get("worker", -1)) != expected_worker:
            raise SegmentRejected(f"written by worker {attrs.get('worker')}, but named for worker {expected_worker}")
        try:
            rows_ds = f["rows"]
            text_ds = f["text"] if with_text else None
        except KeyError as exc:
            raise SegmentRejected(f"wrong schema: {exc}") from None
        if rows_ds.dtype != numeric_dtype(dim) or rows_ds.ndim != 1:
            raise SegmentRejected(f"wrong schema: expected the row layout of {dim} parameters")
        n = rows_ds.shape[0]
        if text_ds is not None and (text_ds.ndim != 2 or text_ds.shape != (n, len(TEXT_FIELDS))):
            raise SegmentRejected("wrong schema: the text dataset does not match the rows")
        # One read of the whole record array: for the small segments of a live run that is
        # cheaper than reading the generations first (each dataset access costs ~0.5 ms in h5py).
        numeric = rows_ds[()]
        keep = np.ones(n, dtype=bool) if wanted is None else wanted(numeric["gen"])
        if not keep.any():
            return None
        idx = np.flatnonzero(keep)
        lo, hi = int(idx[0]), int(idx[-1]) + 1  # one contiguous slice: rows are in generation order
        # Workers fit on numbers only: skipping the text saves most of the bytes and objects.
        text = text_ds[lo:hi] if text_ds is not None else np.full((hi - lo, len(TEXT_FIELDS)), "", dtype=object)
        points = f["curve"][()] if with_curves and "curve" in f else None
    curves = _curves_of(points, keep, n) if points is not None else None
    keep = keep[lo:hi]
    records = numeric[lo:hi][keep]
    batch = RowBatch(records, records["x"], text[keep], curves)
    if expected_worker is not None and np.any(batch.numeric["worker"] != expected_worker):
        raise SegmentRejected(f"holds rows of other workers than its writer {expected_worker}")
    return batch


def _file_access() -> h5py.h5p.PropFAID:
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_file_locking(HDF5_LOCKING, True)  # (use locks?, ignore "locking unsupported")
    return fapl


_FAPL = _file_access()


def _attribute(fid: h5py.h5f.FileID, name: bytes) -> Any:
    try:
        attr = h5py.h5a.open(fid, name)
    except KeyError:
        return None
    value = np.empty(attr.shape, dtype=attr.dtype)
    attr.read(value)
    value = value[()]
    return value.decode() if isinstance(value, bytes) else value


def _read_numbers(
    path: str | os.PathLike,
    run_id: str | None,
    dim: int,
    expected_worker: int | None,
    wanted: Callable[[np.ndarray], np.ndarray] | None,
    with_curves: bool = False,
) -> RowBatch | None:
    """``read_segment`` without the text, through h5py's low-level API: the workers' hot path.

    At scale a worker reads one small segment per evaluation of every peer, so this runs
    hundreds of times a second across a node; h5py's high-level objects cost about half of
    that time (3.6 ms against 1.4 ms per segment on a 2-core VM). The checks are the same,
    except that the writer is checked on the rows themselves rather than on the file's attribute.
    """
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY, fapl=_FAPL)
    try:
        version = _attribute(fid, b"format_version")
        version = -1 if version is None else int(version)
        if version > FORMAT_VERSION:
            raise SegmentRejected(f"format version {version} is newer than this adbo ({FORMAT_VERSION}); upgrade adbo")
        if version < 1:
            raise SegmentRejected("no adbo format version: not an adbo segment")
        stored_run = _attribute(fid, b"run_id")
        if run_id is not None and stored_run != run_id:
            raise SegmentRejected(f"belongs to run {stored_run!r}, not this run {run_id!r}")
        try:
            dataset = h5py.h5d.open(fid, b"rows")
        except KeyError:
            raise SegmentRejected("wrong schema: 'rows' is missing") from None
        try:
            if len(dataset.shape) != 1 or not dataset.get_type().equal(_numeric_h5type(dim)):
                raise SegmentRejected(f"wrong schema: expected the row layout of {dim} parameters")
            numeric = np.empty(dataset.shape, dtype=numeric_dtype(dim))
            if len(numeric):
                dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, numeric)
        finally:
            dataset.close()
        points = _read_curve_points(fid) if with_curves else None
    finally:
        fid.close()
    if expected_worker is not None and np.any(numeric["worker"] != expected_worker):
        raise SegmentRejected(f"holds rows of other workers than its writer {expected_worker}")
    keep = np.ones(len(numeric), dtype=bool) if wanted is None else wanted(numeric["gen"])
    curves = _curves_of(points, keep, len(numeric)) if points is not None else None
    numeric = numeric[keep]
    if not len(numeric):
        return None
    return RowBatch(numeric, numeric["x"], np.full((len(numeric), len(TEXT_FIELDS)), "", dtype=object), curves)


def _read_curve_points(fid: h5py.h5f.FileID) -> np.ndarray | None:
    """The segment's curve points, or None when it has none (one link lookup, no dataset opened)."""
    root = h5py.h5g.open(fid, b"/")
    try:
        if not root.links.exists(b"curve"):
            return None
    finally:
        root.close()
    dataset = h5py.h5d.open(fid, b"curve")
    try:
        if len(dataset.shape) != 1 or not dataset.get_type().equal(_curve_h5type()):
            raise SegmentRejected("wrong schema: the curve dataset does not hold (row, step, value) points")
        points = np.empty(dataset.shape, dtype=CURVE)
        if len(points):
            dataset.read(h5py.h5s.ALL, h5py.h5s.ALL, points)
        return points
    finally:
        dataset.close()


@functools.lru_cache(maxsize=None)
def _curve_h5type() -> h5py.h5t.TypeID:
    return h5py.h5t.py_create(CURVE)


def _curves_of(points: np.ndarray, keep: np.ndarray, n: int) -> dict[int, np.ndarray]:
    """Curve points grouped by row, re-indexed to the kept rows (``keep`` over the ``n`` stored rows)."""
    if points.dtype != CURVE:
        raise SegmentRejected("wrong schema: the curve dataset does not hold (row, step, value) points")
    rows = points["row"]
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise SegmentRejected("wrong schema: curve points refer to rows the segment does not have")
    new_index = np.cumsum(keep) - 1
    out: dict[int, np.ndarray] = {}
    order = np.argsort(rows, kind="stable")
    rows, points = rows[order], points[order]
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.empty(0, dtype=int)
    ends = np.r_[starts[1:], len(rows)]
    for a, b in zip(starts.tolist(), ends.tolist()):
        r = int(rows[a])
        if keep[r]:
            out[int(new_index[r])] = np.column_stack([points["step"][a:b], points["value"][a:b]])
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
