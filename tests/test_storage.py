import json
import os

import h5py
import numpy as np
import pytest

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
)

SPACE = SearchSpace({"a": (0.0, 1.0), "b": ["x", "y"]})


def row(worker, seq, status=OK, value=1.0):
    x = np.array([0.1 * seq % 1, 0.25])
    return EvalRow(worker=worker, seq=seq, status=status, x=x, params={"a": float(x[0]), "b": "x"},
                   objective=value if status == OK else float("nan"), t_started=1.0 + seq, t_finished=2.0 + seq,
                   eval_id=f"w{worker}-s{seq}")


def test_run_json_is_created_private_and_a_different_search_is_refused(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize", {"max_evals": 10})
    assert oct(os.stat(run_dir).st_mode & 0o777) == "0o700"
    assert read_run_info(run_dir).run_id == info.run_id
    # Same search, new settings: reopened, same id.
    assert open_run(run_dir, SPACE, "mod:f", "maximize", {"max_evals": 99}).run_id == info.run_id
    other = SearchSpace({"a": (0.0, 2.0), "c": ["x", "y"]})
    with pytest.raises(RunDirectoryError) as err:
        open_run(run_dir, other, "mod:g", "minimize")
    text = str(err.value)
    assert "added ['c']" in text and "removed ['b']" in text and "changed ['a']" in text
    assert "objective differs" in text and "direction differs" in text and "Nothing in the directory" in text
    assert read_run_info(run_dir).run_id == info.run_id


def test_segments_are_published_atomically_and_read_once(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    writer = SegmentWriter(run_dir, 3, info.run_id, SPACE.dim)
    reader = SegmentReader(run_dir, info.run_id, SPACE.dim)
    writer.append([row(3, 0, IN_FLIGHT)])
    first = reader.scan()
    assert [(r.worker, r.seq, r.status) for r in first] == [(3, 0, IN_FLIGHT)]
    assert reader.scan() == []  # nothing new: nothing opened
    opens = reader.opens
    writer.append([row(3, 0, OK, 5.0)])
    second = reader.scan()
    assert reader.opens == opens + 1 and second[0].objective == 5.0
    assert not [n for n in os.listdir(os.path.join(run_dir, SHARD_DIR)) if n.endswith(".tmp")]


def test_table_keeps_final_rows_over_in_flight_in_any_order():
    table = ResultTable(SPACE.dim)
    table.upsert([row(1, 0, OK, 3.0)])
    table.upsert([row(1, 0, IN_FLIGHT)])
    assert table.rows[0].status == OK and table.n_final == 1
    table.upsert([row(2, 0, IN_FLIGHT)])
    assert table.n_in_flight == 1
    table.upsert([row(2, 0, OK, 4.0), row(2, 0, OK, 4.0)])
    assert len(table) == 2 and table.n_in_flight == 0
    X, y, st = table.view()
    assert list(y) == [3.0, 4.0] and list(st) == [OK, OK]


def test_compaction_keeps_every_row_for_readers_old_and_new(run_dir):
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
    late_table = ResultTable(SPACE.dim)
    late_table.upsert(SegmentReader(run_dir, info.run_id, SPACE.dim).scan())
    for table in (early_table, late_table):
        assert sorted(r.seq for r in table.rows) == list(range(23))
        assert all(r.status == OK for r in table.rows)
    assert len(os.listdir(os.path.join(run_dir, SHARD_DIR))) <= 6


def test_restarted_writer_continues_numbering_and_removes_its_temp_files(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    w = SegmentWriter(run_dir, 7, info.run_id, SPACE.dim)
    w.append([row(7, 0)])
    stray = os.path.join(run_dir, SHARD_DIR, "w000007-g000000099.h5.tmp")
    open(stray, "wb").write(b"partial")
    again = SegmentWriter(run_dir, 7, info.run_id, SPACE.dim)
    assert not os.path.exists(stray)
    again.append([row(7, 1)])
    assert sorted(os.listdir(os.path.join(run_dir, SHARD_DIR))) == ["w000007-g000000001.h5", "w000007-g000000002.h5"]


def test_hostile_files_are_skipped_with_a_warning(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    SegmentWriter(run_dir, 0, info.run_id, SPACE.dim).append([row(0, 0)])
    shards = os.path.join(run_dir, SHARD_DIR)
    open(os.path.join(shards, "w000001-g000000001.h5"), "wb").write(os.urandom(512))
    open(os.path.join(shards, "notes.h5"), "w").write("hello")
    SegmentWriter(run_dir, 2, "another-run", SPACE.dim).append([row(2, 0)])  # a foreign segment
    with h5py.File(os.path.join(shards, "w000003-g000000001.h5"), "w") as f:
        f.attrs["format_version"] = 99
        f.attrs["run_id"] = info.run_id
    reader = SegmentReader(run_dir, info.run_id, SPACE.dim)
    with pytest.warns(RuntimeWarning) as caught:
        rows = reader.scan()
    assert [(r.worker, r.seq) for r in rows] == [(0, 0)]
    assert len(reader.skipped) == 4
    assert "another-run" in reader.skipped["w000002-g000000001.h5"]
    assert "newer" in reader.skipped["w000003-g000000001.h5"]
    assert len(caught) == 4 and all("ignoring" in str(w.message) for w in caught)


def test_run_json_garbage_is_a_clear_error(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunDirectoryError, match="not valid JSON"):
        read_run_info(tmp_path)
    with pytest.raises(RunDirectoryError, match="not an adbo run directory"):
        read_run_info(tmp_path / "missing")
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 9}))
    with pytest.raises(RunDirectoryError, match="upgrade adbo"):
        read_run_info(tmp_path)
