"""A run directory full of strangers: nothing adbo did not write is ever deleted, nothing crashes.

Every test works on real files in pytest's temporary directories: real HDF5 segments, real
copies, real directories and modes, and the real ``adbo`` command in a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from adbo.runinfo import RunDirectoryWarning
from adbo.segments import MAX_GEN, SegmentName, bucket_name, write_segment
from adbo.space import SearchSpace
from adbo.storage import (
    OK,
    RUN_FILE,
    SHARD_DIR,
    EvalRow,
    RunDirectoryError,
    SegmentReader,
    SegmentWriter,
    open_run,
    read_run_info,
    scan_run,
)

SPACE = SearchSpace({"a": (0.0, 1.0), "b": ["x", "y"]})
ADBO = os.path.join(os.path.dirname(sys.executable), "adbo")


def row(worker: int, seq: int, value: float = 1.0) -> EvalRow:
    x = np.array([(0.1 * seq) % 1, 0.25])
    return EvalRow(worker=worker, seq=seq, status=OK, x=x, params={"a": float(x[0]), "b": "x"}, objective=value,
                   t_started=1.0 + seq, t_finished=2.0 + seq, eval_id=f"w{worker}-s{seq}")


def bucket(run_dir, worker: int) -> Path:
    return Path(run_dir) / SHARD_DIR / bucket_name(worker)


def tree(root) -> dict[str, tuple[str, bytes | None, int]]:
    """Every entry under ``root``: its kind, its bytes (files) and its mode, to compare before and after."""
    out = {}
    for path in sorted(Path(root).rglob("*")):
        mode = os.lstat(path).st_mode
        kind = "dir" if stat.S_ISDIR(mode) else "file"
        out[str(path.relative_to(root))] = (kind, path.read_bytes() if kind == "file" else None, stat.S_IMODE(mode))
    return out


def status(run_dir, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([ADBO, "status", str(run_dir), *extra], capture_output=True, text=True, timeout=120)


def quiet_writer(*args, **kwargs) -> SegmentWriter:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return SegmentWriter(*args, **kwargs)


# 1. A relaunch never deletes another run's data.

def test_a_writer_never_deletes_another_runs_segments_or_planted_files(tmp_path):
    first = tmp_path / "first"
    old = open_run(first, SPACE, "mod:f", "maximize")
    writer = SegmentWriter(first, 0, old.run_id, SPACE.dim, compact_every=3)
    for seq in range(5):
        writer.append([row(0, seq, value=-1.0)])
    # A new run (another run_id in its run.json) into which the first run's shards were copied.
    second = tmp_path / "second"
    new = open_run(second, SPACE, "mod:f", "maximize")
    assert new.run_id != old.run_id
    bucket(second, 0).mkdir()
    for path in bucket(first, 0).iterdir():
        shutil.copy2(path, bucket(second, 0) / path.name)
    for name in ("w000000-g000000050.h5", "w000000-g000000051-c.h5", "w000000-g000000003.h5"):
        if not (bucket(second, 0) / name).exists():
            (bucket(second, 0) / name).write_bytes(os.urandom(700))  # random bytes named like segments
    foreign = {p.name: p.read_bytes() for p in bucket(second, 0).iterdir()}
    assert len(foreign) >= 5

    with pytest.warns(RuntimeWarning, match="leaves alone"):
        mine = SegmentWriter(second, 0, new.run_id, SPACE.dim, compact_every=3)
    assert mine.rows == [] and mine.next_seq() == 0
    for seq in range(12):  # several compactions
        mine.append([row(0, seq, value=float(seq))])
    relaunched = quiet_writer(second, 0, new.run_id, SPACE.dim, compact_every=3)  # a relaunch of worker 0
    assert relaunched.next_seq() == 12
    for seq in range(12, 20):
        relaunched.append([row(0, seq, value=float(seq))])

    for name, data in foreign.items():
        assert (bucket(second, 0) / name).read_bytes() == data, f"{name} was deleted or overwritten"
    _, table, reader = scan_run(second)
    assert sorted((r.seq, r.objective) for r in table.rows) == [(s, float(s)) for s in range(20)]
    assert {key.split("/")[1] for key in reader.skipped} == set(foreign)
    mine_left = set(os.listdir(bucket(second, 0))) - set(foreign)
    assert len(mine_left) <= 4, mine_left  # its own segments were compacted as usual


def test_results_without_a_valid_run_json_are_refused_and_left_untouched(tmp_path):
    source = tmp_path / "source"
    info = open_run(source, SPACE, "mod:f", "maximize")
    SegmentWriter(source, 0, info.run_id, SPACE.dim).append([row(0, 0)])

    orphan = tmp_path / "orphan"  # the shards, copied without their run.json
    orphan.mkdir(mode=0o700)
    shutil.copytree(source / SHARD_DIR, orphan / SHARD_DIR)
    before = tree(orphan)
    with pytest.raises(RunDirectoryError) as err:
        open_run(orphan, SPACE, "mod:f", "maximize", {"workers": 2})
    text = str(err.value)
    assert "no run.json" in text and "Restore run.json" in text and "new run directory" in text
    assert tree(orphan) == before  # nothing created (no run.json, no logs/), nothing changed

    (orphan / RUN_FILE).write_text("[1, 2]")  # a damaged run.json does not make a fresh start either
    before = tree(orphan)
    with pytest.raises(RunDirectoryError, match="not an object"):
        open_run(orphan, SPACE, "mod:f", "maximize")
    assert tree(orphan) == before


# 2. A directory named like a segment.

def test_a_directory_named_like_a_segment_is_skipped_and_kept(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    b0 = bucket(run_dir, 0)
    b0.mkdir()
    for name in ("w000000-g000000034.h5", "w000000-g000000002.h5", "w000000-g000000004-c.h5"):
        (b0 / name).mkdir()
        (b0 / name / "inside").write_text("keep me")
    with pytest.warns(RuntimeWarning, match="not a regular file"):
        writer = SegmentWriter(run_dir, 0, info.run_id, SPACE.dim, compact_every=2)
    for seq in range(6):
        writer.append([row(0, seq)])  # compacts twice, and steps over generations 2 and 4
    for name in ("w000000-g000000034.h5", "w000000-g000000002.h5", "w000000-g000000004-c.h5"):
        assert (b0 / name / "inside").read_text() == "keep me"
    reader = SegmentReader(run_dir, info.run_id, SPACE.dim)
    with pytest.warns(RuntimeWarning, match="a directory, not a segment file"):
        rows = reader.scan()
    assert sorted(r.seq for r in rows) == list(range(6))
    assert set(reader.skipped) == {"b0000/w000000-g000000034.h5", "b0000/w000000-g000000002.h5",
                                   "b0000/w000000-g000000004-c.h5"}


# 3. A file named like a bucket.

def test_a_file_named_like_a_bucket_is_skipped_and_refused_by_its_writer(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize", {"workers": 100})
    SegmentWriter(run_dir, 0, info.run_id, SPACE.dim).append([row(0, 0)])
    planted = Path(run_dir) / SHARD_DIR / "b0001"
    planted.write_bytes(b"not a bucket")
    _, table, reader = scan_run(run_dir)
    assert [r.seq for r in table.rows] == [0]
    assert "directory" in reader.skipped["b0001"]

    out = status(run_dir)
    assert out.returncode == 0, out.stderr
    assert "shards/b0001: " in out.stdout and "Traceback" not in out.stderr

    with pytest.raises(RunDirectoryError) as err:
        SegmentWriter(run_dir, 64, info.run_id, SPACE.dim)  # worker 64 lives in b0001
    assert str(planted) in str(err.value) and "remove or rename" in str(err.value)
    assert planted.read_bytes() == b"not a bucket"


# 4. A name with an absurd generation.

def test_a_planted_huge_generation_does_not_hide_later_rows(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize", {"workers": 4})
    SegmentWriter(run_dir, 2, info.run_id, SPACE.dim).append([row(2, 0)])
    planted = bucket(run_dir, 2) / "w000002-g999999999.h5"
    planted.write_bytes(os.urandom(1024))
    data = planted.read_bytes()
    writer = quiet_writer(run_dir, 2, info.run_id, SPACE.dim, compact_every=4)
    assert writer.gen == 1 and writer.next_seq() == 1
    names = [writer.append([row(2, seq)]) for seq in range(1, 10)]
    assert all(SegmentName.parse(n) is not None for n in names) and writer.gen < 100
    assert planted.read_bytes() == data
    reader = SegmentReader(run_dir, info.run_id, SPACE.dim, max_workers=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert sorted(r.seq for r in reader.scan()) == list(range(10))
    assert list(reader.skipped) == ["b0000/w000002-g999999999.h5"]


def _forge_own_segment(run_dir, run_id: str, worker: int, gen: int) -> Path:
    """A valid segment of this run and worker at generation ``gen``, as if it had written it."""
    path = bucket(run_dir, worker) / SegmentName(worker, gen, False).filename
    tmp = path.with_name(path.name + ".forging")
    write_segment(tmp, [row(worker, 0).evolve(gen=gen)], run_id, worker, SPACE.dim)
    os.replace(tmp, path)
    return path


def test_names_past_nine_digits_stay_readable_and_the_last_generation_is_an_error(run_dir):
    assert SegmentName.parse("w000002-g1000000000.h5") == SegmentName(2, 10**9, False)
    assert SegmentName.parse("w000002-g0000000001.h5") is None  # one name per generation
    assert SegmentName(2, 10**9, True).filename == "w000002-g1000000000-c.h5"
    with pytest.raises(ValueError):
        SegmentName(2, MAX_GEN + 1, False).filename

    info = open_run(run_dir, SPACE, "mod:f", "maximize")
    bucket(run_dir, 2).mkdir()
    _forge_own_segment(run_dir, info.run_id, 2, 10**9 - 1)
    writer = SegmentWriter(run_dir, 2, info.run_id, SPACE.dim)
    assert writer.append([row(2, 1)]) == "w000002-g1000000000.h5"
    _, table, reader = scan_run(run_dir)
    assert sorted(r.seq for r in table.rows) == [0, 1] and not reader.skipped

    last = _forge_own_segment(run_dir, info.run_id, 3, MAX_GEN)
    writer = SegmentWriter(run_dir, 3, info.run_id, SPACE.dim)
    with pytest.raises(RunDirectoryError, match="cannot publish generation"):
        writer.append([row(3, 1)])
    assert [p.name for p in bucket(run_dir, 3).glob("w000003-*")] == [last.name]


# 8. Modes: group access, private runs, world-writable directories.

def test_group_access_reaches_every_directory_adbo_creates(tmp_path):
    previous = os.umask(0o077)  # the strictest usual umask: mkdir alone would keep the group out
    try:
        run = tmp_path / "group"
        info = open_run(run, SPACE, "mod:f", "maximize", {"workers": 100}, group_access=True)
        assert read_run_info(run).settings["group_access"] is True
        SegmentWriter(run, 70, info.run_id, SPACE.dim).append([row(70, 0)])
    finally:
        os.umask(previous)
    for directory in (run, run / SHARD_DIR, run / "logs", run / "owners", bucket(run, 70)):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o750, directory
    assert stat.S_IMODE(os.stat(run / "owners" / "w000070").st_mode) == 0o600  # claims stay the owner's
    assert stat.S_IMODE(os.stat(run / RUN_FILE).st_mode) == 0o640
    segment = next(bucket(run, 70).glob("*.h5"))
    assert stat.S_IMODE(os.stat(segment).st_mode) == 0o640
    # A relaunch keeps the choice recorded; new settings do not drop it.
    open_run(run, SPACE, "mod:f", "maximize", {"workers": 2}, group_access=True)
    assert read_run_info(run).settings["group_access"] is True and read_run_info(run).max_workers == 100


def test_a_private_run_is_private_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        run = tmp_path / "private"
        info = open_run(run, SPACE, "mod:f", "maximize")
        assert read_run_info(run).settings["group_access"] is False
        SegmentWriter(run, 1, info.run_id, SPACE.dim).append([row(1, 0)])
        SegmentWriter(run, 200, info.run_id, SPACE.dim, dir_mode=0o750).append([row(200, 0)])  # asked for
    finally:
        os.umask(previous)
    for directory in (run, run / SHARD_DIR, run / "logs", run / "owners", bucket(run, 1)):
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700, directory
    assert stat.S_IMODE(os.stat(run / "owners" / "w000001").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(run / RUN_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(bucket(run, 200)).st_mode) == 0o750


def test_a_world_writable_run_directory_gets_a_warning(tmp_path):
    run = tmp_path / "open"
    run.mkdir()
    os.chmod(run, 0o777)
    with pytest.warns(RunDirectoryWarning, match="chmod o-w") as caught:
        open_run(run, SPACE, "mod:f", "maximize")
    assert str(run) in str(caught[0].message)
    os.chmod(run, 0o700)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_run(run, SPACE, "mod:f", "maximize")


# 9. A damaged run.json, a failed write, and what `adbo status` says about skipped files.

def _valid_run_json(run_dir) -> dict:
    open_run(run_dir, SPACE, "mod:f", "maximize", {"workers": 2})
    return json.loads((Path(run_dir) / RUN_FILE).read_text())


@pytest.mark.parametrize("damage", [
    "[1, 2]", '"a string"', "null", "space=42", "space='abc'", "space={'x': 1}", "space={'hyperparameters': []}",
    "space={'hyperparameters': [{'garbage': 1}]}", "direction='up'", "created='yesterday'", "settings=[1]",
    "settings={'workers': 'many'}", "format_version='one'", "run_id=7",
])
def test_a_damaged_run_json_is_one_clear_line(run_dir, damage):
    data = _valid_run_json(run_dir)
    if "=" in damage:
        key, value = damage.split("=", 1)
        data[key] = eval(value)  # noqa: S307 - the test's own literals
        text = json.dumps(data)
    else:
        text = damage
    (Path(run_dir) / RUN_FILE).write_text(text)
    with pytest.raises(RunDirectoryError) as err:
        read_run_info(run_dir)
    message = str(err.value)
    assert "\n" not in message and "run.json" in message
    assert "damaged or was not written by adbo" in message and "restore it" in message
    out = status(run_dir)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("adbo: ") and out.stderr.count("\n") == 1


def test_a_search_space_configspace_cannot_decode_is_a_clear_error(run_dir):
    data = _valid_run_json(run_dir)
    data["space"]["hyperparameters"] = [{"name": "a", "type": "no-such-type"}]
    (Path(run_dir) / RUN_FILE).write_text(json.dumps(data))
    with pytest.raises(RunDirectoryError, match="search space in run.json cannot be read"):
        read_run_info(run_dir).space
    out = status(run_dir)
    assert out.returncode == 2 and "Traceback" not in out.stderr and "damaged" in out.stderr


def test_a_failed_run_json_write_leaves_no_temporary_file(tmp_path):
    """A real failed write: the file size limit (as on a full disk, the write itself fails)."""
    existing = tmp_path / "existing"
    open_run(existing, SPACE, "mod:f", "maximize", {"workers": 2})
    before = (existing / RUN_FILE).read_bytes()
    fresh = tmp_path / "fresh"
    script = textwrap.dedent(f"""
        import resource, signal
        from adbo.space import SearchSpace
        from adbo.storage import RunDirectoryError, open_run
        space = SearchSpace({{"a": (0.0, 1.0), "b": ["x", "y"]}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        for run_dir in ({str(existing)!r}, {str(fresh)!r}):
            try:
                open_run(run_dir, space, "mod:f", "maximize", {{"workers": 8}})
                print("WROTE", run_dir)
            except RunDirectoryError as exc:
                print("REFUSED", exc)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("REFUSED cannot write") for line in lines), out.stdout
    assert "previous run.json is unchanged" in lines[0] and "No run was created" in lines[1]
    assert (existing / RUN_FILE).read_bytes() == before
    for run_dir in (existing, fresh):
        assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]
    assert not (fresh / RUN_FILE).exists()


def test_status_names_the_skipped_files_and_why(run_dir):
    info = open_run(run_dir, SPACE, "mod:f", "maximize", {"workers": 4})
    SegmentWriter(run_dir, 0, info.run_id, SPACE.dim).append([row(0, 0)])
    for gen in range(1, 8):
        (bucket(run_dir, 0) / f"w000001-g{gen:09d}.h5").write_bytes(os.urandom(300))
    out = status(run_dir)
    assert out.returncode == 0, out.stderr
    assert "skipped      7 " in out.stdout
    for gen in range(1, 6):
        assert f"shards/b0000/w000001-g{gen:09d}.h5: " in out.stdout
    assert "w000001-g000000006.h5" not in out.stdout and "and 2 more" in out.stdout
    lines = [line for line in out.stdout.splitlines() if "w000001-g000000001.h5" in line]
    assert len(lines) == 1 and len(lines[0].split(": ", 1)[1]) > 5  # the reason is there
    as_json = json.loads(status(run_dir, "--json").stdout)
    assert as_json["segments_skipped"] == 7 and len(as_json["skipped_files"]) == 7
    assert all(why for why in as_json["skipped_files"].values())
