"""workflows/candle_hpo.py end to end: real Parsl sites, real training, real shards, `adbo status`."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="the CANDLE objective needs torch: pip install -e '.[candle]'")

import adbo  # noqa: E402
from adbo.objectives import candle_data as cd
from adbo.objectives.candle_combo import combo_space
from candle_helpers import FileServer, free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = os.path.dirname(sys.executable)
WORKFLOW = str(ROOT / "workflows" / "candle_hpo.py")


def workflow(*args, timeout=300):
    env = {**os.environ, "PARSL_TRACKING": "false", "NO_PROXY": "127.0.0.1,localhost"}
    for var in ("http_proxy", "HTTP_PROXY"):
        env.pop(var, None)
    return subprocess.run([sys.executable, WORKFLOW, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env=env)


def status(run_dir):
    out = subprocess.run([os.path.join(BIN, "adbo"), "status", str(run_dir), "--json"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def load_workflow():
    spec = importlib.util.spec_from_file_location("candle_hpo_under_test", WORKFLOW)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def search_args(tmp_path, site):
    return ["--site", site, "--workers", "2", "--max-evals", "6", "--epochs", "1", "--data", "synthetic",
            "--synthetic-size", "tiny", "--data-cache", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run"),
            "--timeout", "120", "--n-initial", "4", "--no-progress"]


def check_search(tmp_path, stdout):
    run_dir = tmp_path / "run"
    assert "best validation R2:" in stdout and "best configuration:" in stdout
    s = status(run_dir)
    assert s["workers"] == 2 and s["direction"] == "maximize" and s["evaluations"] >= 6
    assert s["ok"] >= 1 and s["in_flight"] == 0
    assert -1.0 <= s["best_objective"] <= 1.0  # a validation R2
    assert set(s["best_params"]) <= set(combo_space().keys())
    df = adbo.load_results(str(run_dir))
    final = df[df.status != "in_flight"]
    assert sorted(final.worker.unique()) == [0, 1]  # both workers evaluated
    ok = final[final.status == "ok"]
    for col in ("metadata_val_r2", "metadata_test_r2", "metadata_epochs", "metadata_n_params",
                "metadata_train_seconds", "metadata_train_loss", "metadata_val_loss"):
        assert col in df.columns and ok[col].notna().all(), col
    assert (ok.objective == ok.metadata_val_r2.clip(lower=-1.0)).all()
    failed = final[final.status == "failed"]
    assert failed.error.str.len().gt(0).all()  # a failure carries its reason
    trained = final[final.status.isin(["ok", "stopped"])]
    # Validation R2 is reported every epoch (the stopper's input): one curve point per epoch run.
    assert (trained.curve.map(len) == trained.metadata_epochs).all()
    assert (trained.objective == trained.curve.map(lambda c: c[-1][1])).all()
    assert list((tmp_path / "cache" / "processed").glob("combo-*.npz"))  # parsed once, reused by workers
    return s


def test_candle_hpo_on_local_processes(tmp_path):
    """The command line as users run it: Parsl's HighThroughputExecutor, one process per worker."""
    out = workflow(*search_args(tmp_path, "local"))
    assert out.returncode == 0, out.stdout + out.stderr
    check_search(tmp_path, out.stdout)


def test_candle_hpo_on_local_threads_and_relaunch(tmp_path, capsys):
    wf = load_workflow()
    assert wf.main(search_args(tmp_path, "local-threads")) == 0
    s = check_search(tmp_path, capsys.readouterr().out)
    # relaunching the same command resumes: same objective identity, budget already spent
    assert wf.main(search_args(tmp_path, "local-threads")) == 0
    assert status(tmp_path / "run")["evaluations"] == s["evaluations"]


def test_candle_hpo_stops_trainings_early_by_default(tmp_path):
    args = search_args(tmp_path, "local-threads")
    args[args.index("--epochs") + 1] = "3"
    args[args.index("--max-evals") + 1] = "8"
    out = workflow(*args, "--stopper-options", "min_peers=2")
    assert out.returncode == 0, out.stdout + out.stderr
    s = check_search(tmp_path, out.stdout)
    df = adbo.load_results(str(tmp_path / "run"))
    stopped = df[df.status == "stopped"]
    assert s["stopped"] == len(stopped) and len(stopped) + s["ok"] + s["failures"] == s["evaluations"]
    # Rungs at epochs 1 (and 3, the last epoch: never a rung); a stopped training ran one epoch.
    assert (stopped.metadata_stopped == "stopper").all() and (stopped.step == 1.0).all()
    assert stopped.metadata_stop_reason.str.contains("successive halving").all()


def test_prepare_only_downloads_from_a_server_and_parses(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    source = cd.write_synthetic_combo(tmp_path / "source", "tiny", seed=2)
    files = {n: (source / n).read_bytes() for n in cd.REQUIRED_FILES}
    with FileServer(files, cut={cd.RESPONSE_FILE}) as server:
        code = load_workflow().main(["--data", "download", "--data-url", server.url, "--data-cache",
                                     str(tmp_path / "cache"), "--no-data-manifest", "--prepare-only"])
    out = capsys.readouterr().out
    assert code == 0
    info = json.loads(out[out.index("{"):])
    assert info["label"] == "candle-public" and info["rows"] == len(cd.build_dataset(source))
    assert any(r["range"] for r in server.requests)  # the cut transfer was resumed
    for name, body in files.items():
        assert hashlib.sha256((tmp_path / "cache" / "raw" / name).read_bytes()).digest() == hashlib.sha256(body).digest()


def test_without_data_the_workflow_explains_how_to_stage_it(tmp_path, capsys):
    wf = load_workflow()
    code = wf.main(["--data", "download", "--data-url", f"http://127.0.0.1:{free_port()}/combo/",
                    "--data-cache", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert "could not download" in err and "curl" in err and cd.RESPONSE_FILE in err
    assert not (tmp_path / "run").exists()
    code = wf.main(["--data", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "curl" in err


def test_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        load_workflow().main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--site", "--workers", "--max-evals", "--timeout", "--epochs", "--data", "--run-dir", "--seed",
                 "--data-cache", "--synthetic-size", "--synthetic-seed", "--max-rows", "--split-seed", "--data-url",
                 "--no-data-manifest", "--prepare-only", "--device", "--amp", "--threads", "--permanent-dropout",
                 "--walltime", "--surrogate", "--n-initial", "--overlap", "--no-progress"):
        assert flag in text, flag


def test_batch_sites_take_the_shared_flags_and_dry_run_before_any_data_work(tmp_path, capsys):
    code = load_workflow().main(["--site", "polaris", "--account", "PROJ", "--queue", "debug", "--nodes", "1",
                                 "--walltime", "0:30:00", "--interface", "lo", "--dry-run", "--data", "download",
                                 "--data-cache", str(tmp_path / "cache"), "--run-dir", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0 and "#PBS" in out and "--available-accelerators" in out  # one GPU per worker
    assert not (tmp_path / "cache").exists()  # nothing downloaded or generated for a dry run
