"""Real writer processes killed with SIGKILL, and concurrent writers and readers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

from adbo.space import SearchSpace
from adbo.storage import IN_FLIGHT, OK, SegmentReader, open_run, scan_run

from storage_procs import row_is_intact

SCRIPT = str(Path(__file__).with_name("storage_procs.py"))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}


def new_run(run_dir: str) -> str:
    return open_run(run_dir, SearchSpace({"seq": (0, 10**6), "worker": (0, 1000)}), "test:rows", "maximize").run_id


class Acks:
    """Acknowledgements read from a writer's stdout: (worker, seq) -> highest status acknowledged."""

    def __init__(self) -> None:
        self.best: dict[tuple[int, int], int] = {}
        self.count = 0
        self.lock = threading.Lock()

    def pump(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        for line in proc.stdout:
            if line.startswith("READY"):
                ready.set()
            parts = line.split()
            if len(parts) == 4 and parts[0] == "ACK":
                key, status = (int(parts[1]), int(parts[2])), int(parts[3])
                with self.lock:
                    self.count += 1
                    if self.best.get(key, IN_FLIGHT) == IN_FLIGHT:
                        self.best[key] = status


def kill_loop(run_dir: str, run_id: str, worker: int, kills: int, acks: Acks, rng: random.Random) -> None:
    for _ in range(kills):
        proc = subprocess.Popen([sys.executable, SCRIPT, "writer", run_dir, run_id, str(worker), "3", "600"],
                                stdout=subprocess.PIPE, text=True, env=ENV)
        ready = threading.Event()
        pump = threading.Thread(target=acks.pump, args=(proc, ready))
        pump.start()
        ready.wait(timeout=60)
        # Most kills land mid-append (including mid-compaction); some during recovery at start-up.
        time.sleep(rng.uniform(0.0, 0.05) if rng.random() < 0.2 else rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        pump.join()
        proc.stdout.close()


def test_sigkilled_writers_lose_nothing_acknowledged(tmp_path):
    run_dir = str(tmp_path / "run")
    run_id = new_run(run_dir)
    acks = Acks()
    stop = threading.Event()
    scan_errors: list[str] = []
    scans = [0]

    def read_continuously() -> None:
        reader = SegmentReader(run_dir, run_id, 2)
        while not stop.is_set():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    rows = reader.scan()
                except Exception as exc:  # noqa: BLE001
                    scan_errors.append(repr(exc))
                    continue
            scan_errors.extend(str(w.message) for w in caught if str(w.message).startswith("adbo"))
            scan_errors.extend(f"partial row {r}" for r in rows if not row_is_intact(r))
            scans[0] += 1

    watcher = threading.Thread(target=read_continuously)
    watcher.start()
    loops = [threading.Thread(target=kill_loop, args=(run_dir, run_id, w, 35, acks, random.Random(w))) for w in range(3)]
    for t in loops:
        t.start()
    for t in loops:
        t.join()
    stop.set()
    watcher.join()

    assert not scan_errors, "\n".join(scan_errors[:5])
    assert scans[0] > 20
    assert acks.count > 300, "the writers must have been killed while appending, not only at start-up"
    # Every acknowledged row is there, once, intact, at least as far along as acknowledged.
    info, table, reader = scan_run(run_dir)
    assert not reader.skipped
    stored = {(r.worker, r.seq): r for r in table.rows}
    assert len(stored) == len(table.rows)
    for key, status in acks.best.items():
        assert key in stored, f"acknowledged row {key} was lost"
        assert row_is_intact(stored[key])
        if status != IN_FLIGHT:
            assert stored[key].status == status
    # Nothing but the row being written was lost: each worker's sequence has no holes.
    for w in range(3):
        seqs = sorted(s for (wk, s) in stored if wk == w)
        assert seqs == list(range(len(seqs)))
    # A last restart cleans every leftover temporary file of each writer.
    for w in range(3):
        subprocess.run([sys.executable, SCRIPT, "writer", run_dir, run_id, str(w), "3", "0"], env=ENV, check=True,
                       capture_output=True)
    assert not list(Path(run_dir).rglob("*.tmp"))


def test_concurrent_writers_and_readers(tmp_path):
    run_dir = str(tmp_path / "run")
    run_id = new_run(run_dir)
    duration = 6.0
    writers = [subprocess.Popen([sys.executable, SCRIPT, "writer", run_dir, run_id, str(w), "4", str(duration)],
                                stdout=subprocess.DEVNULL, env=ENV) for w in range(3)]
    readers = [subprocess.Popen([sys.executable, SCRIPT, "reader", run_dir, run_id, str(duration + 1)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV) for _ in range(3)]
    for p in writers:
        assert p.wait(timeout=120) == 0
    final = scan_run(run_dir)[1]
    for p in readers:
        out, err = p.communicate(timeout=120)
        result = dict(kv.split("=") for kv in out.split()[1:])
        assert int(result["errors"]) == 0, err[-2000:]
        assert int(result["partial"]) == 0
        assert int(result["scans"]) > 10
        assert int(result["rows"]) >= len(final) - 3 * 2  # at most the rows written after its last scan
    assert len(final) > 30 and all(r.status in (IN_FLIGHT, OK) for r in final.rows)
