"""Batch sites through Parsl's real providers, with fake scheduler commands on PATH.

The fake qsub/qstat/qdel and sbatch/squeue/scancel/sacct are shell scripts that record their
arguments and keep a copy of each job script. Parsl's own provider writes the script from its
template and runs them, exactly as it would on Polaris or Perlmutter: only the scheduler is fake.
Every config listens on loopback, so nothing leaves this machine.
"""

from __future__ import annotations

import argparse
import os
import socket
import stat
import sys
import time
from pathlib import Path

import parsl
import pytest
from parsl.executors import HighThroughputExecutor
from parsl.launchers import MpiExecLauncher, SingleNodeLauncher, SrunLauncher
from parsl.providers import PBSProProvider, SlurmProvider

from adbo.site_configs import load_site, make_config
from adbo.site_options import (
    FLAGS_BY_NAME,
    add_site_arguments,
    allocation_seconds,
    default_workers,
    describe_site,
    dry_run,
    site_help_requested,
    site_options_from_args,
)

HPC_SITES = ["polaris", "perlmutter", "pbs", "slurm"]
LOOPBACK = {"interface": "lo"}

FAKE = {
    "qsub": 'echo "4242.fake-pbs"',
    "qstat": 'echo \'{"Jobs": {"4242.fake-pbs": {"job_state": "Q"}}}\'',
    "qdel": "true",
    "sbatch": 'echo "Submitted batch job 4343"',
    "squeue": 'echo "4343 PD"',
    "scancel": "true",
    "sacct": 'echo "Slurm accounting storage is disabled" >&2; exit 1',
}


class Scheduler:
    """Where the fake scheduler commands leave their record."""

    def __init__(self, root: Path):
        self.root = root
        self.log = root / "calls.log"
        self.scripts = root / "scripts"
        self.scripts.mkdir(parents=True)

    def calls(self, command: str | None = None) -> list[list[str]]:
        if not self.log.exists():
            return []
        rows = [line.split("\t") for line in self.log.read_text().splitlines()]
        return [row for row in rows if command is None or row[0] == command]

    def script(self) -> str:
        (path,) = sorted(self.scripts.iterdir())
        return path.read_text()


@pytest.fixture
def scheduler(tmp_path, monkeypatch) -> Scheduler:
    record = Scheduler(tmp_path / "scheduler")
    bindir = record.root / "bin"
    bindir.mkdir()
    for name, answer in FAKE.items():
        script = bindir / name
        script.write_text(
            "#!/bin/sh\n"
            f'( printf "%s" "{name}"; for a in "$@"; do printf "\\t%s" "$a"; done; echo ) >> "{record.log}"\n'
            'for last in "$@"; do :; done\n'
            f'case "{name}" in qsub|sbatch) cp "$last" "{record.scripts}/$(basename "$last")";; esac\n'
            f"{answer}\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    # Parsl's interchange is a console script beside this interpreter.
    path = os.pathsep.join([str(bindir), os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    monkeypatch.setenv("PATH", path)
    return record


def submit_first_block(config, run_dir: Path) -> str:
    """What Parsl does for block 0: prepare the executor and hand its command to provider.submit."""
    executor = config.executors[0]
    executor.run_dir = str(run_dir)
    executor.provider.script_dir = str(run_dir / "submit_scripts")
    os.makedirs(executor.provider.script_dir)
    executor.logconf_path = None
    executor.initialize_scaling()  # composes the process_worker_pool command line
    return executor.provider.submit(executor._get_launch_command("0"), 1, f"parsl.{executor.label}.block-0")


# --------------------------------------------------------------------------------------------
# Job scripts
# --------------------------------------------------------------------------------------------


def test_polaris_job_script_asks_for_gpus_filesystems_and_one_worker_per_gpu(tmp_path, scheduler):
    config = make_config("polaris", workers=1920, run_dir=str(tmp_path), account="MYPROJ", nodes=480,
                         walltime="3:00:00", worker_init="source /lus/eagle/me/env/bin/activate", **LOOPBACK)
    (executor,) = config.executors
    provider = executor.provider
    assert isinstance(executor, HighThroughputExecutor) and isinstance(provider, PBSProProvider)
    assert executor.available_accelerators == ["0", "1", "2", "3"] and executor.max_workers_per_node == 4
    assert executor.cpu_affinity.startswith("list:24-31") and executor.prefetch_capacity == 0
    assert isinstance(provider.launcher, MpiExecLauncher)
    assert (provider.nodes_per_block, provider.init_blocks, provider.max_blocks) == (480, 1, 1)

    assert submit_first_block(config, tmp_path / "parsl") == "4242.fake-pbs"
    (qsub,) = scheduler.calls("qsub")
    assert qsub[1:5] == ["-q", "prod", "-A", "MYPROJ"]
    script = scheduler.script()
    assert "#PBS -l select=480:ncpus=64:ngpus=4\n" in script
    assert "#PBS -l walltime=03:00:00\n" in script
    assert "#PBS -l filesystems=home:eagle\n" in script
    assert "source /lus/eagle/me/env/bin/activate\nexport TMPDIR=/tmp\n" in script
    assert "export ADBO_ALLOCATION_END=$(( $(date +%s) + 10800 ))" in script
    assert "WORKERCOUNT=480\n" in script
    assert "mpiexec --cpu-bind none --depth=64 --ppn 1 -n $WORKERCOUNT --hostfile $HOSTFILE" in script
    pool = next(line for line in script.splitlines() if line.startswith("process_worker_pool.py"))
    assert "--max_workers_per_node=4" in pool and "--available-accelerators 0 1 2 3" in pool
    assert "-a 127.0.0.1 " in pool and "-p 0 " in pool


def test_polaris_default_environment_is_the_one_running_adbo(tmp_path, scheduler):
    config = make_config("polaris", workers=8, run_dir=str(tmp_path), account="A", queue="debug", **LOOPBACK)
    submit_first_block(config, tmp_path / "parsl")
    script = scheduler.script()
    assert "module use /soft/modulefiles; module load conda\n" in script
    assert sys.prefix in script and "export TMPDIR=/tmp" in script
    assert "#PBS -l select=2:ncpus=64:ngpus=4\n" in script and "#PBS -l walltime=01:00:00\n" in script
    assert scheduler.calls("qsub")[0][1:3] == ["-q", "debug"]


def test_polaris_request_too_big_for_one_job_is_split_into_blocks(tmp_path, scheduler):
    config = make_config("polaris", workers=2240, run_dir=str(tmp_path), account="A", walltime="6:00:00",
                         scheduler_options="#PBS -l place=scatter", filesystems="home:grand:eagle", **LOOPBACK)
    provider = config.executors[0].provider
    assert (provider.nodes_per_block, provider.init_blocks, provider.max_blocks) == (280, 2, 2)
    submit_first_block(config, tmp_path / "parsl")
    script = scheduler.script()
    assert "#PBS -l select=280:ncpus=64:ngpus=4\n" in script
    assert "#PBS -l filesystems=home:grand:eagle\n#PBS -l place=scatter\n" in script


def test_perlmutter_job_script(tmp_path, scheduler):
    config = make_config("perlmutter", workers=64, run_dir=str(tmp_path), account="m1234", walltime="6:00:00",
                         **LOOPBACK)
    (executor,) = config.executors
    assert isinstance(executor.provider, SlurmProvider) and isinstance(executor.provider.launcher, SrunLauncher)
    assert executor.available_accelerators == ["0", "1", "2", "3"] and executor.max_workers_per_node == 4
    assert scheduler.calls("sacct"), "Parsl's SlurmProvider probes sacct when it is built"

    assert submit_first_block(config, tmp_path / "parsl") == "4343"
    (sbatch,) = scheduler.calls("sbatch")
    script = scheduler.script()
    assert [Path(sbatch[1]).name] == [p.name for p in scheduler.scripts.iterdir()]
    for directive in ("--nodes=16", "--time=360", "--ntasks-per-node=1", "--exclusive", "--account=m1234",
                      "--qos=regular", "--constraint=gpu", "--gpus-per-node=4"):
        assert f"#SBATCH {directive}\n" in script
    assert "module load python\n" in script and "export ADBO_ALLOCATION_END=$(( $(date +%s) + 21600 ))" in script
    assert ("srun --ntasks 16 -l --ntasks-per-node=1 --cpus-per-task=128 --gpus-per-node=4 --cpu-bind=none bash"
            in script)


def test_generic_pbs_with_gpus_and_mpiexec(tmp_path, scheduler):
    config = make_config("pbs", workers=12, run_dir=str(tmp_path), queue="workq", account="proj", gpus_per_node=2,
                         cpus_per_node=32, walltime="2:00:00", launcher_overrides="--map-by ppr:1:node", **LOOPBACK)
    executor = config.executors[0]
    assert executor.available_accelerators == ["0", "1"] and executor.max_workers_per_node == 2
    submit_first_block(config, tmp_path / "parsl")
    assert scheduler.calls("qsub")[0][1:5] == ["-q", "workq", "-A", "proj"]
    script = scheduler.script()
    assert "#PBS -l select=6:ncpus=32:ngpus=2\n" in script and "#PBS -l walltime=02:00:00\n" in script
    assert "mpiexec --bind-to none --map-by ppr:1:node -n $WORKERCOUNT" in script and "WORKERCOUNT=6\n" in script


def test_generic_pbs_cpu_node_uses_the_single_node_launcher(tmp_path, scheduler):
    config = make_config("pbs", workers=8, run_dir=str(tmp_path), workers_per_node=8, cpus_per_node=64, **LOOPBACK)
    executor = config.executors[0]
    assert isinstance(executor.provider.launcher, SingleNodeLauncher)
    assert executor.max_workers_per_node == 8 and executor.available_accelerators == []
    submit_first_block(config, tmp_path / "parsl")
    assert scheduler.calls("qsub")[0][1:2] != ["-q"], "no queue given: the site's default queue"
    assert "#PBS -l select=1:ncpus=64\n" in scheduler.script()


def test_generic_slurm_job_script(tmp_path, scheduler):
    config = make_config("slurm", workers=16, run_dir=str(tmp_path), queue="gpu", qos="normal", constraint="a100",
                         account="acct", gpus_per_node=8, walltime="4:00:00", **LOOPBACK)
    submit_first_block(config, tmp_path / "parsl")
    script = scheduler.script()
    for directive in ("--nodes=2", "--time=240", "--partition=gpu", "--qos=normal", "--constraint=a100",
                      "--account=acct", "--gpus-per-node=8", "--exclusive"):
        assert f"#SBATCH {directive}\n" in script
    assert "srun --ntasks 2 -l --ntasks-per-node=1 --cpu-bind=none --gpus-per-node=8 bash" in script


# --------------------------------------------------------------------------------------------
# Parsl itself submitting (and cancelling) through the fake scheduler
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("site, options, submit, cancel", [
    ("polaris", {"account": "A", "queue": "debug"}, "qsub", "qdel"),
    ("perlmutter", {"account": "m1", "queue": "debug", "walltime": "0:30:00"}, "sbatch", "scancel"),
])
def test_parsl_submits_the_blocks_and_cancels_them_at_exit(tmp_path, scheduler, site, options, submit, cancel):
    config = make_config(site, workers=4, run_dir=str(tmp_path), address="127.0.0.1", **options)
    with parsl.load(config):
        deadline = time.time() + 30  # Parsl's strategy launches the initial blocks on its first tick
        while not scheduler.calls(submit) and time.time() < deadline:
            time.sleep(0.2)
    parsl.clear()
    assert len(scheduler.calls(submit)) == 1
    assert scheduler.calls(cancel), f"{cancel} was not called when Parsl shut down"
    assert "#!/bin/bash" in scheduler.script()


# --------------------------------------------------------------------------------------------
# Queue rules and other refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"queue": "debug", "nodes": 3}, r"'debug' takes jobs of 1 to 2 nodes and runs at most one job.*--queue debug-scaling"),
    ({"queue": "debug-scaling", "nodes": 11},
     r"'debug-scaling' takes jobs of 1 to 10 nodes.*11 nodes would take 2 jobs.*11 node\(s\) fit --queue prod \(10-496"),
    ({"queue": "prod", "nodes": 2}, r"'prod' takes jobs of 10 to 496 nodes; a job of 2 node\(s\).*--queue debug \(1-2 nodes\)"),
    ({"queue": "prod", "nodes": 20, "walltime": "6:00:00"},
     r"routes jobs of 10-24 nodes to 'small', which allows at most 03:00:00.*--walltime 03:00:00.*at least 25 nodes"),
    ({"queue": "prod", "nodes": 480, "walltime": "25:00:00"}, r"at most 24:00:00"),
    ({"queue": "prod", "nodes": 480, "walltime": "0:02:00"}, r"needs at least 00:05:00"),
    ({"queue": "debug", "nodes": 1, "walltime": "2:00:00"}, r"'debug' allows at most 01:00:00"),
    ({"queue": "prod", "nodes": 200, "nodes_per_block": 10}, r"at most 10 jobs at a time.*200 nodes would take 20 jobs of 10 nodes"),
    ({"queue": "prod", "nodes": 600}, r"polaris has 560 nodes"),
    ({"nodes": 10, "workers": 41}, r"41 workers need 11 nodes.*--nodes 11"),
    ({"walltime": "1:30"}, r"ambiguous.*1:30:00"),
    ({"account": None}, r"needs --account \(or ADBO_ACCOUNT\)"),
    ({"queue": "debug", "filesystems": "home eagle"}, r"filesystems must look like home:eagle"),
])
def test_polaris_queue_rules_refuse_with_the_limit_and_the_fix(tmp_path, options, message):
    options = {"account": "A", **options}
    workers = options.pop("workers", 4 * (options.get("nodes") or 1))
    with pytest.raises(ValueError, match=message):
        make_config("polaris", workers=workers, run_dir=str(tmp_path), **LOOPBACK, **options)


def test_polaris_accepts_its_flagship_request(tmp_path):
    config = make_config("polaris", workers=1920, run_dir=str(tmp_path), account="A", walltime="24:00:00", **LOOPBACK)
    assert config.executors[0].provider.nodes_per_block == 480


def test_perlmutter_qos_rules(tmp_path):
    two_jobs = make_config("perlmutter", workers=40, run_dir=str(tmp_path), account="m1", queue="debug",
                           walltime="0:20:00", **LOOPBACK).executors[0].provider
    assert (two_jobs.nodes_per_block, two_jobs.max_blocks) == (5, 2), "debug runs two jobs at once: split"
    with pytest.raises(ValueError, match=r"'debug' takes jobs of 1 to 8 nodes and runs at most 2 jobs"):
        make_config("perlmutter", workers=80, run_dir=str(tmp_path), account="m1", queue="debug",
                    walltime="0:20:00", **LOOPBACK)
    with pytest.raises(ValueError, match=r"'debug' allows at most 00:30:00"):
        make_config("perlmutter", workers=4, run_dir=str(tmp_path), account="m1", queue="debug", **LOOPBACK)
    with pytest.raises(ValueError, match=r"'regular' allows at most 48:00:00"):
        make_config("perlmutter", workers=4, run_dir=str(tmp_path), account="m1", walltime="3d", **LOOPBACK)


def test_generic_sites_refuse_bad_layouts(tmp_path):
    with pytest.raises(ValueError, match="cannot each have one of 2 GPUs"):
        make_config("slurm", workers=4, run_dir=str(tmp_path), gpus_per_node=2, workers_per_node=4, **LOOPBACK)
    with pytest.raises(ValueError, match="gpus_per_node must be at least 0"):
        make_config("pbs", workers=4, run_dir=str(tmp_path), gpus_per_node=-1, **LOOPBACK)


# --------------------------------------------------------------------------------------------
# Addresses: a parameter, never probed
# --------------------------------------------------------------------------------------------

SITE_OPTIONS = {
    "polaris": {"account": "A", "queue": "debug"},
    "perlmutter": {"account": "m1"},
    "pbs": {},
    "slurm": {},
}


@pytest.fixture
def no_traffic(monkeypatch):
    """Fail on any connection or datagram to a non-loopback address, and on Parsl's address probing."""
    def loopback_only(address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "::1", "localhost") and not host.startswith("/"):
            raise AssertionError(f"traffic to {address!r}")

    for name in ("connect", "connect_ex"):
        original = getattr(socket.socket, name)
        monkeypatch.setattr(socket.socket, name, lambda self, addr, _o=original: (loopback_only(addr), _o(self, addr))[1])
    original_sendto = socket.socket.sendto
    monkeypatch.setattr(socket.socket, "sendto", lambda self, *a, _o=original_sendto: (loopback_only(a[-1]), _o(self, *a))[1])
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (loopback_only(host), [])[1])

    def probe(*_a, **_k):
        raise AssertionError("Parsl was left to probe for addresses")

    monkeypatch.setattr("parsl.executors.high_throughput.executor.get_all_addresses", probe)


@pytest.mark.parametrize("site", HPC_SITES)
@pytest.mark.parametrize("how", [{"interface": "lo"}, {"address": "127.0.0.1"}])
def test_building_any_site_config_on_loopback_sends_nothing(tmp_path, scheduler, no_traffic, site, how):
    config = make_config(site, workers=8, run_dir=str(tmp_path), **SITE_OPTIONS[site], **how)
    (executor,) = config.executors
    assert executor.address == "127.0.0.1" and executor.all_addresses == {"127.0.0.1"}
    assert executor.loopback_address == "127.0.0.1"
    assert config.usage_tracking == 0 and config.exit_mode == "wait"
    assert config.run_dir == os.path.join(str(tmp_path), "logs", "parsl")
    assert make_config(site, workers=8, run_dir=str(tmp_path), **SITE_OPTIONS[site], **how).executors[0] is not executor


@pytest.mark.parametrize("site", ["pbs", "slurm"])
def test_generic_sites_need_an_interface_or_address(tmp_path, scheduler, site):
    with pytest.raises(ValueError, match="--interface"):
        make_config(site, workers=2, run_dir=str(tmp_path))


def test_missing_interface_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"network interface 'nosuch0' is not on this host"):
        make_config("polaris", workers=4, run_dir=str(tmp_path), account="A", queue="debug", interface="nosuch0")
    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        make_config("polaris", workers=4, run_dir=str(tmp_path), account="A", queue="debug", address="login-node")


# --------------------------------------------------------------------------------------------
# Dry run, help, command line, allocations
# --------------------------------------------------------------------------------------------


def test_dry_run_prints_the_polaris_script_and_submits_nothing(tmp_path, scheduler):
    run_dir = tmp_path / "runs" / "candle"
    text = dry_run("polaris", 1920, str(run_dir), account="X", nodes=480, walltime=10800)
    assert scheduler.calls("qsub") == [] and not run_dir.exists()
    assert "1 batch job (Parsl block) of 480 node(s) each, 4 worker slot(s) per node = 1920 slots" in text
    assert "#PBS -l select=480:ncpus=64:ngpus=4\n" in text and "#PBS -l filesystems=home:eagle\n" in text
    assert "#PBS -l walltime=03:00:00\n" in text and "mpiexec --cpu-bind none --depth=64 --ppn 1" in text
    assert "--max_workers_per_node=4" in text and "--available-accelerators 0 1 2 3" in text
    assert f"qsub  -q prod -A X {run_dir}/logs/parsl/000/submit_scripts/parsl.adbo_polaris.block-0." in text
    assert "interface 'bond0' is not on this host" in text, "off Polaris the address is a marked placeholder"


def test_dry_run_of_slurm_and_local_sites(tmp_path, scheduler):
    text = dry_run("perlmutter", 8, str(tmp_path / "run"), account="m1", address="127.0.0.1")
    assert "#SBATCH --gpus-per-node=4\n" in text and "submit command: sbatch " in text
    assert scheduler.calls("sbatch") == []
    assert "there is no batch script" in dry_run("local", 2, str(tmp_path / "run"))


def test_describe_site_documents_every_option():
    for site in HPC_SITES + ["globus-compute"]:
        module = load_site(site)
        text = describe_site(site)
        assert module.DESCRIPTION in text
        for name, opt in module.OPTIONS.items():
            if opt.cli:
                assert name in FLAGS_BY_NAME, f"{site} option {name} has no command-line flag"
                assert f"{FLAGS_BY_NAME[name].flag} / ADBO_{name.upper()}" in text
            assert opt.help in text
    assert "prod" in describe_site("polaris") and "-> large" in describe_site("polaris")
    assert "GLOBUS_COMPUTE_CLIENT_SECRET" in describe_site("globus-compute")
    assert site_help_requested(["--site", "polaris", "--help"]) == describe_site("polaris")
    assert site_help_requested(["--site", "polaris"]) is None


def test_site_options_from_flags_and_environment(monkeypatch, capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--walltime", type=float, default=None)  # a workflow's own flag stays
    add_site_arguments(parser)
    monkeypatch.setenv("ADBO_QUEUE", "debug-scaling")
    monkeypatch.setenv("ADBO_ACCOUNT", "FROM_ENV")
    args = parser.parse_args(["--account", "MYPROJ", "--nodes", "8", "--walltime", "3600", "--dry-run",
                              "--site-option", "retries=3", "--filesystems", "home:grand"])
    options = site_options_from_args("polaris", args)
    assert options == {"account": "MYPROJ", "queue": "debug-scaling", "nodes": 8, "walltime": 3600.0,
                       "filesystems": "home:grand", "retries": 3}
    assert args.dry_run is True
    assert default_workers("polaris", options) == 32
    assert allocation_seconds("polaris", options) == 3600

    capsys.readouterr()
    slurm_options = site_options_from_args("slurm", args)
    err = capsys.readouterr().err
    # One line for the user, not a Python warning with a source path.
    assert err == "adbo: site 'slurm' does not use --filesystems; it was ignored (see `--site slurm --help`)\n"
    assert "filesystems" not in slurm_options and slurm_options["queue"] == "debug-scaling"
    assert site_options_from_args("local-threads", parser.parse_args(["--walltime", "60"])) == {}
    assert capsys.readouterr().err == ""  # the workflow's own --walltime is not reported as ignored
    with pytest.raises(ValueError, match="has no option 'bogus'"):
        site_options_from_args("polaris", parser.parse_args(["--site-option", "bogus=1"]))


def test_site_flags_parse_walltimes_and_report_bad_values(capsys):
    parser = argparse.ArgumentParser()
    add_site_arguments(parser)
    assert parser.parse_args(["--walltime", "3:00:00"]).walltime == 10800
    assert parser.parse_args(["--walltime", "90m"]).walltime == 5400
    with pytest.raises(SystemExit):
        parser.parse_args(["--walltime", "1:30"])
    assert "ambiguous" in capsys.readouterr().err


def test_allocation_seconds_of_each_site():
    assert load_site("polaris").allocation_seconds(walltime="3:00:00") == 10800
    assert load_site("polaris").allocation_seconds() == 3600
    assert load_site("perlmutter").allocation_seconds(walltime="1-00:00:00") == 86400
    assert load_site("pbs").allocation_seconds(walltime=1800) == 1800
    assert load_site("slurm").allocation_seconds(walltime="2h") == 7200
