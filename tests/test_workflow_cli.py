"""The workflow command lines: site help, dry runs, bad flags."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args, env=None):
    return subprocess.run([sys.executable, "workflows/synthetic_hpo.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=env)


def test_polaris_dry_run_prints_the_batch_script_for_1920_workers(tmp_path):
    run_dir = tmp_path / "dry"
    out = run("--site", "polaris", "--account", "MyProject", "--nodes", "480", "--walltime", "3:00:00",
              "--interface", "lo", "--dry-run", "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    script = out.stdout
    assert "1920 workers" in script
    assert "#PBS -l select=480:ncpus=64:ngpus=4" in script
    assert "#PBS -l walltime=03:00:00" in script and "#PBS -l filesystems=home:eagle" in script
    assert "--max_workers_per_node=4" in script and "--available-accelerators 0 1 2 3" in script
    assert "mpiexec" in script and "--ppn 1" in script and "export TMPDIR=/tmp" in script
    assert "-A MyProject" in script and "-q prod" in script
    assert not run_dir.exists(), "a dry run creates nothing"


def test_site_help_and_environment_variables(tmp_path):
    out = run("--site", "polaris", "--help")
    assert out.returncode == 0 and "--account" in out.stdout and "ADBO_ACCOUNT" in out.stdout
    import os

    env = {**os.environ, "ADBO_ACCOUNT": "FromEnv", "ADBO_INTERFACE": "lo"}
    out = run("--site", "polaris", "--nodes", "2", "--walltime", "0:30:00", "--queue", "debug", "--dry-run",
              "--run-dir", str(tmp_path / "d"), env=env)
    assert out.returncode == 0, out.stderr
    assert "-A FromEnv" in out.stdout and "-q debug" in out.stdout


def test_queue_rules_are_enforced_from_the_command_line(tmp_path):
    out = run("--site", "polaris", "--account", "X", "--nodes", "20", "--queue", "debug", "--walltime", "1:00:00",
              "--interface", "lo", "--dry-run", "--run-dir", str(tmp_path / "d"))
    assert out.returncode != 0
    assert "debug" in out.stderr and "2" in out.stderr
