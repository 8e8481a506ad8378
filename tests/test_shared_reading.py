"""Shared reading (adbo.digests): aggregators killed mid-write, take-overs, stale digests, a real launch."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest

import adbo
from adbo import fsops
from adbo.digests import DIGEST_DIR, LEASE_NAME, Aggregator, DigestName, SharedReader
from adbo.storage import IN_FLIGHT, OK, ResultTable, SegmentWriter, scan_run

from storage_procs import DIM, make_row
from test_storage_crashes import ENV, SCRIPT, Acks, new_run
from user_scripts import UserRun, write

HEARTBEAT = 0.2


def _spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, SCRIPT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV)


def _holder(digests: Path) -> tuple[int | None, str]:
    try:
        lease = json.loads((digests / LEASE_NAME).read_text())
        return int(lease["pid"]), str(lease["incarnation"])
    except (OSError, ValueError, KeyError):
        return None, ""


def _holder_pid(digests: Path) -> int | None:
    return _holder(digests)[0]


def _tmp_digests(digests: Path, incarnation: str = "") -> list[str]:
    return [n for n in os.listdir(digests) if n.startswith("d-g") and n.endswith(".tmp") and incarnation in n]


def test_an_aggregator_killed_mid_write_loses_nothing_and_its_role_passes_on(tmp_path):
    run_dir = str(tmp_path / "run")
    run_id = new_run(run_dir)
    digests = Path(run_dir) / DIGEST_DIR
    acks = Acks()
    writers = [_spawn("writer", run_dir, run_id, str(w), "4", "9") for w in range(3)]
    pumps = [threading.Thread(target=acks.pump, args=(p, threading.Event())) for p in writers]
    for t in pumps:
        t.start()
    # Two aggregator candidates, as two workers would run them; a killed one is restarted.
    roles = {w: _spawn("aggregator", run_dir, run_id, str(w), str(HEARTBEAT), "3") for w in (0, 1)}
    stop = threading.Event()
    problems: list[str] = []
    modes: set[str] = set()

    def read_continuously() -> None:
        reader = SharedReader(run_dir, run_id, DIM, None, stale_after_s=3 * HEARTBEAT)
        while not stop.is_set():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    rows = [r for b in reader.scan_batches(with_curves=False) for r in b.rows()]
                except Exception as exc:  # noqa: BLE001 - counted: that is the point
                    problems.append(repr(exc))
                    continue
            problems.extend(str(w.message) for w in caught if str(w.message).startswith("adbo"))
            problems.extend(f"partial row {r}" for r in rows if r.x[1] * 1000 != r.worker)
            modes.add(reader.mode)
            time.sleep(0.01)

    watcher = threading.Thread(target=read_continuously)
    watcher.start()
    rng = random.Random(7)
    mid_write = takeovers = stalls = 0
    try:
        deadline = time.time() + 9.0
        while time.time() < deadline:
            pid, incarnation = _holder(digests)
            holder = next((w for w, p in roles.items() if p.pid == pid), None)
            if holder is None:
                time.sleep(0.01)
                continue
            # Most kills wait for a digest being written (frozen with SIGSTOP while its temporary
            # file is there, so the kill surely lands mid-write); some land anywhere in a round.
            until = time.time() + (1.0 if rng.random() < 0.8 else 0.0)
            while time.time() < until:
                if _tmp_digests(digests, incarnation):
                    roles[holder].send_signal(signal.SIGSTOP)
                    if _tmp_digests(digests, incarnation):
                        break
                    roles[holder].send_signal(signal.SIGCONT)
            if rng.random() < 0.35:
                # A stall instead (a slow filesystem, a swapped-out node): frozen past its lease
                # while the other candidate takes over, then it wakes up mid-round and must not
                # publish anything a reader could confuse with its successor's digests.
                roles[holder].send_signal(signal.SIGSTOP)
                wait_until = time.time() + 60 * HEARTBEAT  # a restarted candidate imports first
                while _holder_pid(digests) in (pid, None) and time.time() < wait_until:
                    time.sleep(0.02)
                roles[holder].send_signal(signal.SIGCONT)
                assert _holder_pid(digests) not in (pid, None), ("nobody took a stalled holder's role over",
                                                                 {w: (p.poll(), p.stderr.read()[-2000:] if p.poll() is not None else "") for w, p in roles.items()})
                stalls += 1
                continue
            roles[holder].send_signal(signal.SIGKILL)
            roles[holder].wait()
            mid_write += bool(_tmp_digests(digests, incarnation))
            roles[holder] = _spawn("aggregator", run_dir, run_id, str(holder), str(HEARTBEAT), "3")
            # The role passes on within a few heartbeats: the lease names a live process again.
            wait_until = time.time() + 60 * HEARTBEAT  # a restarted candidate imports first
            while _holder_pid(digests) in (pid, None) and time.time() < wait_until:
                time.sleep(0.02)
            assert _holder_pid(digests) in {p.pid for p in roles.values()}, "nobody took the aggregator role over"
            takeovers += 1
        for p in writers:
            assert p.wait(timeout=60) == 0
        for t in pumps:
            t.join()
        time.sleep(10 * HEARTBEAT)  # the holder gathers the writers' last rows
    finally:
        stop.set()
        watcher.join()
        for p in roles.values():
            p.kill()
            p.wait()
            p.stdout.close()
            p.stderr.close()
    assert takeovers >= 3 and mid_write >= 1 and stalls >= 1, (takeovers, mid_write, stalls)
    assert not problems, "\n".join(problems[:5])
    assert "digests" in modes
    # A fresh reader finds every acknowledged row, intact and as far along as acknowledged,
    # in the digests alone, which the successors rebuilt from what the killed holders left.
    reader = SharedReader(run_dir, run_id, DIM, None, stale_after_s=1e9)
    table = ResultTable(DIM)
    table.upsert(r for b in reader.scan_batches(with_curves=False) for r in b.rows())
    assert reader.mode == "digests" and reader.raw.opens == 0
    assert len(table) == len(scan_run(run_dir)[1].rows)
    for key, status in acks.best.items():
        i = table.index.get(key)
        assert i is not None, f"acknowledged row {key} missing from the digests"
        assert table.X[i][1] * 1000 == key[0] and (status == IN_FLIGHT or table.status[i] == status)
    assert not _tmp_digests(digests) or len(_tmp_digests(digests)) == 1  # at most the last kill's leftover


def _rows(writer: SegmentWriter, worker: int, seqs: range) -> None:
    for seq in seqs:
        writer.append([make_row(worker, seq, OK)])


def test_a_worker_reads_the_shards_while_digests_are_missing_or_stale(tmp_path):
    run_dir = str(tmp_path / "run")
    run_id = new_run(run_dir)
    writer = SegmentWriter(run_dir, 5, run_id, DIM)
    _rows(writer, 5, range(4))
    reader = SharedReader(run_dir, run_id, DIM, None, stale_after_s=0.5)
    table = ResultTable(DIM)
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert reader.mode == "shards" and len(table) == 4  # no aggregator yet
    role = Aggregator(run_dir, 0, run_id, DIM, None, period_s=lambda: 0.0, heartbeat_s=0.1)
    role.step()
    assert role.holding
    _rows(writer, 5, range(4, 6))
    role.step()
    before = fsops.snapshot()
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert reader.mode == "digests" and len(table) == 6
    spent = fsops.since(before)
    # One listing, the lease (is a holder alive?, asked once) and the two digests (the epoch's
    # first, holding every row, and one with the two new rows): no shard opened.
    assert spent["listing"] == 1 and spent["open"] == 3
    # The holder goes silent (no more rounds): after stale_after_s the reader reads the shards again.
    _rows(writer, 5, range(6, 9))
    time.sleep(0.6)
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert reader.mode == "shards" and len(table) == 9
    # A successor takes over once it has seen the lease unchanged for three heartbeats (by its own
    # clock), and publishes what the shards hold beyond the digests.
    successor = Aggregator(run_dir, 1, run_id, DIM, None, period_s=lambda: 0.0, heartbeat_s=0.1)
    successor.step()
    assert not successor.holding  # first sight of the lease: it may be alive
    time.sleep(0.35)
    assert successor.step() > 0 and successor.holding and successor.incarnation != role.incarnation
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert reader.mode == "digests" and len(table) == 9
    # The silent holder wakes up, sees the lease names its successor, and steps down.
    role.step()
    assert not role.holding and successor.holding


def test_at_scale_a_worker_waits_for_the_successor_instead_of_reading_every_shard(tmp_path):
    run_dir = str(tmp_path / "run")
    run_id = new_run(run_dir)
    writers = [SegmentWriter(run_dir, w, run_id, DIM) for w in range(4)]
    for w in writers:
        _rows(w, w.worker, range(3))
    role = Aggregator(run_dir, 0, run_id, DIM, None, heartbeat_s=0.1)
    role.step()
    role.release()  # the holder's launch ended: the lease is gone, the digests stay
    reader = SharedReader(run_dir, run_id, DIM, None, stale_after_s=0.3, fallback=False)
    table = ResultTable(DIM)
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert reader.mode == "digests" and len(table) == 12 and reader.raw.opens == 0
    for w in writers:
        _rows(w, w.worker, range(3, 5))  # published while nobody gathers them
    time.sleep(0.4)
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert reader.mode == "digests" and len(table) == 12 and reader.raw.opens == 0  # late, and no storm
    successor = Aggregator(run_dir, 3, run_id, DIM, None, heartbeat_s=0.1)
    successor.step()
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert len(table) == 20 and reader.raw.opens == 0


def test_stray_names_in_the_digest_directory_are_left_alone(tmp_path):
    run_dir = str(tmp_path / "run")
    run_id = new_run(run_dir)
    writer = SegmentWriter(run_dir, 0, run_id, DIM)
    _rows(writer, 0, range(3))
    role = Aggregator(run_dir, 0, run_id, DIM, None)
    digests = Path(run_dir) / DIGEST_DIR
    (digests / "notes.txt").write_text("mine")
    (digests / DigestName(7, "0123abcd").filename).mkdir()  # a directory named like a digest
    (digests / DigestName(8, "0123abcd").filename).write_bytes(b"not hdf5")
    (digests / DigestName(10**18 - 1, "0123abcd").filename).write_bytes(b"forged")
    role.step()  # the holder logs what it cannot read and leaves it alone
    assert role.holding and role.digests_published == 1
    reader = SharedReader(run_dir, run_id, DIM, None)
    with pytest.warns(RuntimeWarning, match="ignoring"):
        rows = [r for b in reader.scan_batches() for r in b.rows()]
    assert sorted(r.seq for r in rows) == [0, 1, 2] and reader.mode == "digests"
    role.compact()
    assert (digests / "notes.txt").read_text() == "mine"
    assert (digests / DigestName(8, "0123abcd").filename).read_bytes() == b"not hdf5"
    assert (digests / DigestName(7, "0123abcd").filename).is_dir()


SEARCH = """
    import json, sys, time
    import adbo

    def objective(params):
        time.sleep(0.05)
        return -(params["x"] - 0.3) ** 2

    if __name__ == "__main__":
        result = adbo.optimize(objective, {"x": (0.0, 1.0)}, "run", site="local", workers=4, max_evals=48,
                               n_initial=4, shared_reading=sys.argv[1], progress=False)
        reports = result.worker_reports
        print(json.dumps({"digests_published": sum(r["digests_published"] for r in reports),
                          "fs_ops": [r["fs_ops"] for r in reports]}))
"""


def test_a_launch_with_shared_reading_reads_digests_and_finishes_its_budget(tmp_path):
    write(tmp_path, "search.py", SEARCH)
    run = UserRun(tmp_path, "search.py", "on")
    assert run.wait(240) == 0, run.stderr[-3000:]
    frame = adbo.load_results(tmp_path / "run")
    assert len(frame) == 48 and (frame.status == "ok").all()
    digests = sorted((tmp_path / "run" / DIGEST_DIR).iterdir())
    assert any(DigestName.parse(p.name) for p in digests)
    logs = "".join(p.read_text() for p in (tmp_path / "run" / "logs").glob("worker-*.log"))
    assert "holds the aggregator role" in logs
    # The holder published digests, and a joining worker's reader misses nothing (digests first,
    # and the shards for what the last holder did not gather before the launch ended).
    reports = json.loads(run.stdout.strip().splitlines()[-1])
    assert reports["digests_published"] >= 1
    assert all(set(ops) == set(fsops.KINDS) for ops in reports["fs_ops"])
    assert not (tmp_path / "run" / DIGEST_DIR / LEASE_NAME).exists()  # released on the way out
    reader = SharedReader(tmp_path / "run", scan_run(tmp_path / "run")[0].run_id, 1, None)
    table = ResultTable(1)
    table.upsert(r for b in reader.scan_batches() for r in b.rows())
    assert table.n_final == 48 and reader.mode == "shards"  # nobody holds the role: the shards are the truth
    status = subprocess.run([str(Path(sys.executable).parent / "adbo"), "status", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "reading      shared" in status.stdout and "aggregator: nobody now" in status.stdout
    with pytest.raises(ValueError, match="shared_reading='sometimes'"):
        adbo.optimize(lambda p: 0.0, {"x": (0.0, 1.0)}, tmp_path / "other", workers=1, shared_reading="sometimes")
