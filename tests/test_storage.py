import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from adbo.segments import SegmentName, bucket_name
from adbo.space import SearchSpace
from adbo.storage import (
    IN_FLIGHT,
    OK,
    SHARD_DIR,
    EvalRow,
    ResultTable,
    RunDirectoryError,
    SegmentReader,
    SegmentWriter,
    open_run,
    read_run_info,
    scan_run,
)

SPACE = SearchSpace({"a": (0.0, 1.0), "b": ["x", "y"]})


def row(worker, seq, status=OK, value=1.0):
    x = np.array([(0.1 * seq) % 1, 0.25])
    return EvalRow(worker=worker, seq=seq, status=status, x=x, params={"a": float(x[0]), "b": "x"},
                   objective=value if status == OK else float("nan"), t_started=1.0 + seq, t_finished=2.0 + seq,
                   eval_id=f"w{worker}-s{seq}")


def bucket(run_dir, worker):
    return Path(run_dir) / SHARD_DIR / bucket_name(worker)


def test_run_json_is_created_private_and_a_different_search_is_refused(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize", {"max_evals": 10, "workers": 2})
    assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"
    assert read_run_info(run_dir).run_id == info.run_id
    # Same search, new settings: reopened with the same id; the worker count only grows.
    again = open_run(run_dir, SPACE, "mod:f", "maximize", {"max_evals": 99, "workers": 8})
    assert again.run_id == info.run_id and read_run_info(run_dir).settings["max_evals"] == 99
    open_run(run_dir, SPACE, "mod:f", "maximize", {"workers": 1})
    assert read_run_info(run_dir).max_workers == 8
    other = SearchSpace({"a": (0.0, 2.0), "c": ["x", "y"]})
    before = Path(run_dir, "run.json").read_text()
    with pytest.raises(RunDirectoryError) as err:
        open_run(run_dir, other, "mod:g", "minimize")
    text = str(err.value)
    assert "added ['c']" in text and "removed ['b']" in text and "changed ['a']" in text
    assert "objective differs" in text and "direction differs" in text and "Nothing in the directory" in text
    assert Path(run_dir, "run.json").read_text() == before


def test_segments_are_published_atomically_and_read_once(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    writer = SegmentWriter(run_dir, 3, info.run_id, SPACE.dim)
    reader = SegmentReader(run_dir, info.run_id, SPACE.dim)
    writer.append([row(3, 0, IN_FLIGHT)])
    first = reader.scan()
    assert [(r.worker, r.seq, r.status) for r in first] == [(3, 0, IN_FLIGHT)]
    opens = reader.opens
    assert reader.scan() == [] and reader.opens == opens  # nothing new: nothing opened
    writer.append([row(3, 0, OK, 5.0)])
    second = reader.scan()
    assert reader.opens == opens + 1 and second[0].objective == 5.0
    assert not [n for n in os.listdir(bucket(run_dir, 3)) if n.endswith(".tmp")]


def test_writers_are_spread_over_bucket_directories(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    for w in (0, 63, 64, 200):
        SegmentWriter(run_dir, w, info.run_id, SPACE.dim).append([row(w, 0)])
    assert sorted(os.listdir(Path(run_dir) / SHARD_DIR)) == ["b0000", "b0001", "b0003"]
    reader = SegmentReader(run_dir, info.run_id, SPACE.dim)
    assert sorted(r.worker for r in reader.scan()) == [0, 63, 64, 200]
    assert reader.listings == 4  # shards/ once, each bucket once; no stat of anything


def test_table_keeps_final_rows_over_in_flight_in_any_order():
    for keep in (True, False):
        table = ResultTable(SPACE.dim, keep_rows=keep)
        table.upsert([row(1, 0, OK, 3.0)])
        table.upsert([row(1, 0, IN_FLIGHT)])
        assert table.status[0] == OK and table.n_final == 1
        table.upsert([row(2, 0, IN_FLIGHT)])
        assert table.n_in_flight == 1
        table.upsert([row(2, 0, OK, 4.0), row(2, 0, OK, 4.0)])
        assert len(table) == 2 and table.n_in_flight == 0
        X, y, st = table.view()
        assert list(y) == [3.0, 4.0] and list(st) == [OK, OK]
        assert table.max_seq(2) == 0 and table.max_seq(9) == -1


def test_compaction_keeps_every_row_and_readers_read_only_new_rows(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    writer = SegmentWriter(run_dir, 0, info.run_id, SPACE.dim, compact_every=5)
    early = SegmentReader(run_dir, info.run_id, SPACE.dim)
    early_table = ResultTable(SPACE.dim)
    for seq in range(23):
        writer.append([row(0, seq, IN_FLIGHT)])
        writer.append([row(0, seq, OK, float(seq))])
        if seq % 4 == 0:
            early_table.upsert(early.scan())
    early_table.upsert(early.scan())
    late = SegmentReader(run_dir, info.run_id, SPACE.dim)
    late_table = ResultTable(SPACE.dim)
    late_table.upsert(late.scan())
    for table in (early_table, late_table):
        assert sorted(r.seq for r in table.rows) == list(range(23))
        assert all(r.status == OK for r in table.rows)
    assert len(os.listdir(bucket(run_dir, 0))) <= 6
    # The early reader never re-read a row it already had, although compaction rewrote them all.
    assert early.rows_read <= 46
    assert late.rows_read <= 23 + 6  # the compacted segment (23 final rows) plus a few newer ones
    # A reader that is up to date skips a new compacted segment without opening it.
    opens = early.opens
    writer.compact()
    assert early.scan() == [] and early.opens == opens


def test_restarted_writer_continues_and_keeps_everything(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    w = SegmentWriter(run_dir, 7, info.run_id, SPACE.dim, compact_every=3)
    for seq in range(5):
        w.append([row(7, seq)])
    w.append([row(7, 5, IN_FLIGHT)])
    stray = bucket(run_dir, 7) / "w000007-g000000099.h5.tmp"
    stray.write_bytes(b"partial")
    again = SegmentWriter(run_dir, 7, info.run_id, SPACE.dim, compact_every=3)
    assert not stray.exists()
    assert again.next_seq() == 6 and [r.status for r in again.rows][-1] == IN_FLIGHT
    assert again.gen == w.gen
    for seq in range(6, 12):
        again.append([row(7, seq)])
    _, table, _ = scan_run(run_dir)
    assert sorted(r.seq for r in table.rows) == list(range(12))


def test_hostile_files_are_skipped_with_one_warning_each(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize", {"workers": 4})
    SegmentWriter(run_dir, 0, info.run_id, SPACE.dim).append([row(0, 0)])
    b0 = bucket(run_dir, 0)
    (b0 / "w000001-g000000001.h5").write_bytes(os.urandom(512))
    good = next(b0.glob("w000000-*.h5")).read_bytes()
    (b0 / "w000002-g000000001.h5").write_bytes(good[: len(good) // 2])  # truncated
    (b0 / "notes.txt").write_text("hello")
    (Path(run_dir) / SHARD_DIR / "README").write_text("stray at the top")
    (Path(run_dir) / SHARD_DIR / "old-results").mkdir()
    SegmentWriter(run_dir, 3, "another-run", SPACE.dim).append([row(3, 0)])  # a foreign segment
    with h5py.File(b0 / "w000003-g000000007.h5", "w") as f:
        f.attrs["format_version"] = 99
        f.attrs["run_id"] = info.run_id
    with h5py.File(b0 / "w000002-g000000005.h5", "w") as f:
        f.attrs["format_version"] = 1
        f.attrs["run_id"] = info.run_id
        f.attrs["worker"] = 2
        f.create_dataset("x", data=np.zeros((1, 2)))
    os.rename(next(b0.glob("w000000-*.h5")), b0 / "w000001-g000000004.h5")  # a renamed peer's file
    SegmentWriter(run_dir, 9, info.run_id, SPACE.dim).append([row(9, 0)])  # unknown writer (4 workers)
    reader = SegmentReader(run_dir, info.run_id, SPACE.dim, max_workers=4)
    with pytest.warns(RuntimeWarning) as caught:
        rows = reader.scan()
    assert rows == []
    why = reader.skipped
    assert len(why) == 10 and len(caught) == 10
    assert all("ignoring" in str(w.message) for w in caught)
    assert "another-run" in why["b0000/w000003-g000000001.h5"]
    assert "newer" in why["b0000/w000003-g000000007.h5"]
    assert "wrong schema" in why["b0000/w000002-g000000005.h5"]
    assert "named for worker 1" in why["b0000/w000001-g000000004.h5"]
    assert "unknown worker 9" in why["b0000/w000009-g000000001.h5"]
    assert "a stray file" in why["README"]
    assert "a stray directory" in why["old-results"] and (Path(run_dir) / SHARD_DIR / "old-results").is_dir()
    # A second scan warns about nothing again, and writing goes on as usual.
    SegmentWriter(run_dir, 0, info.run_id, SPACE.dim).append([row(0, 1)])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [(r.worker, r.seq) for r in reader.scan()] == [(0, 1)]


def test_status_counts_skipped_files(run_dir, tmp_path):
    import subprocess
    import sys

    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    SegmentWriter(run_dir, 0, info.run_id, SPACE.dim).append([row(0, 0)])
    (bucket(run_dir, 0) / "w000005-g000000001.h5").write_bytes(b"\x89HDF garbage")
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "adbo"), "status", run_dir, "--json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["segments_skipped"] == 1 and status["evaluations"] == 1


def test_run_json_garbage_is_a_clear_error(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunDirectoryError, match="not valid JSON"):
        read_run_info(tmp_path)
    with pytest.raises(RunDirectoryError, match="not an adbo run directory"):
        read_run_info(tmp_path / "missing")
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 9}))
    with pytest.raises(RunDirectoryError, match="upgrade adbo"):
        read_run_info(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(RunDirectoryError, match="not written by adbo"):
        read_run_info(tmp_path)


def test_segment_names():
    assert SegmentName.parse("w000012-g000000003.h5") == SegmentName(12, 3, False)
    assert SegmentName.parse("w000012-g000000003-c.h5") == SegmentName(12, 3, True)
    assert SegmentName(12, 3, True).filename == "w000012-g000000003-c.h5"
    for bad in ("w12-g3.h5", "w000012-g000000003.h5.tmp", "x.h5"):
        assert SegmentName.parse(bad) is None


def test_an_orphaned_writer_stops_when_its_worker_id_is_restarted(run_dir):
    from adbo.storage import WriterSuperseded

    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    orphan = SegmentWriter(run_dir, 4, info.run_id, SPACE.dim)
    orphan.append([row(4, 0)])
    restarted = SegmentWriter(run_dir, 4, info.run_id, SPACE.dim)
    with pytest.raises(WriterSuperseded, match="restarted elsewhere"):
        orphan.append([row(4, 1, OK, 99.0)])
    restarted.append([row(4, 1)])
    _, table, _ = scan_run(run_dir)
    assert sorted((r.seq, r.objective) for r in table.rows) == [(0, 1.0), (1, 1.0)]
