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
from adbo.segments import SegmentName, bucket_name, write_segment
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


# 1. Results without their run.json are never started over.

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


# 8. A world-writable run directory.

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


# 9. A damaged run.json and a failed write.

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


