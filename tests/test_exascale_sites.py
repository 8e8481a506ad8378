"""Aurora (PBS Pro) and Frontier (Slurm) through Parsl's real providers, with a fake scheduler.

As in test_hpc_sites.py, fake qsub/sbatch (and their companions) on PATH record their arguments
and keep a copy of each job script that Parsl's own provider wrote from its template; only the
scheduler is fake. One test starts a real HighThroughputExecutor worker pool on this machine,
with the sites' accelerator lists, to see the device variables each worker really gets. Every
config listens on loopback, so nothing leaves this machine.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
import sys
from pathlib import Path

import parsl
import pytest
from parsl.app.app import python_app
from parsl.config import Config
from parsl.executors import HighThroughputExecutor
from parsl.launchers import MpiExecLauncher, SrunLauncher
from parsl.providers import LocalProvider, PBSProProvider, SlurmProvider

from adbo.site_configs import available_sites, load_site, make_config
from adbo.site_options import (
    FLAGS_BY_NAME,
    allocation_seconds,
    default_workers,
    describe_site,
    dry_run,
    site_help_requested,
)

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = {"interface": "lo"}
AURORA = {"account": "MYPROJ"}
FRONTIER = {"account": "ABC123"}
TILES = ["0.0", "0.1", "1.0", "1.1", "2.0", "2.1", "3.0", "3.1", "4.0", "4.1", "5.0", "5.1"]
GCDS = ["0", "1", "2", "3", "4", "5", "6", "7"]

# The fake PBS and Slurm commands that record the job script Parsl writes: the same as for Polaris.
from test_hpc_sites import Scheduler, scheduler  # noqa: E402,F401 - a pytest fixture, used by name


def submit_first_block(config: Config, run_dir: Path) -> str:
    """What Parsl does for block 0: prepare the executor and hand its command to provider.submit."""
    executor = config.executors[0]
    executor.run_dir = str(run_dir)
    executor.provider.script_dir = str(run_dir / "submit_scripts")
    os.makedirs(executor.provider.script_dir)
    executor.logconf_path = None
    executor.initialize_scaling()  # composes the process_worker_pool command line
    return executor.provider.submit(executor._get_launch_command("0"), 1, f"parsl.{executor.label}.block-0")


def pool_line(script: str) -> str:
    return next(line for line in script.splitlines() if line.startswith("process_worker_pool.py"))


def affinity_groups(pool: str) -> list[set[int]]:
    """The CPUs of each worker, from the pool's ``--cpu-affinity list:a-b,c-d:...`` argument."""
    text = pool.split("--cpu-affinity list:")[1].split()[0]
    groups = []
    for group in text.split(":"):
        cpus: set[int] = set()
        for part in group.split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
        groups.append(cpus)
    return groups


# --------------------------------------------------------------------------------------------
# Aurora job scripts
# --------------------------------------------------------------------------------------------


def test_aurora_job_script_has_twelve_workers_per_node_one_per_tile(tmp_path, scheduler):
    config = make_config("aurora", workers=3072, run_dir=str(tmp_path), nodes=256, walltime="6:00:00",
                         worker_init="module load frameworks; source /flare/me/env/bin/activate", **AURORA, **LOOPBACK)
    (executor,) = config.executors
    provider = executor.provider
    assert isinstance(executor, HighThroughputExecutor) and isinstance(provider, PBSProProvider)
    assert isinstance(provider.launcher, MpiExecLauncher)
    assert executor.available_accelerators == TILES and executor.max_workers_per_node == 12
    assert executor.prefetch_capacity == 0
    assert (provider.nodes_per_block, provider.init_blocks, provider.max_blocks) == (256, 1, 1)

    assert submit_first_block(config, tmp_path / "parsl") == "4242.fake-pbs"
    (qsub,) = scheduler.calls("qsub")
    assert qsub[1:5] == ["-q", "prod", "-A", "MYPROJ"]
    script = scheduler.script()
    assert "#PBS -l select=256:ncpus=208\n" in script
    assert "#PBS -l walltime=06:00:00\n" in script
    assert "#PBS -l filesystems=home:flare\n" in script
    assert ("module load frameworks; source /flare/me/env/bin/activate\nexport TMPDIR=/tmp\n"
            "export ZE_FLAT_DEVICE_HIERARCHY=COMPOSITE") in script, "COMPOSITE after the user's setup (frameworks: FLAT)"
    assert "export ADBO_ALLOCATION_END=$(( $(date +%s) + 21600 ))" in script
    assert "WORKERCOUNT=256\n" in script
    assert "mpiexec --cpu-bind none --ppn 1 -n $WORKERCOUNT --hostfile $HOSTFILE" in script

    pool = pool_line(script)
    assert "--max_workers_per_node=12 " in pool and "-a 127.0.0.1 " in pool
    assert pool.split("--available-accelerators ")[1].split() == TILES
    groups = affinity_groups(pool)
    assert len(groups) == 12 and all(len(g) == 16 for g in groups), "8 cores and their hyperthreads each"
    assert not set().union(*groups) & {0, 52, 104, 156}, "the cores ALCF reserves for the system are left alone"
    socket0, socket1 = set(range(0, 52)) | set(range(104, 156)), set(range(52, 104)) | set(range(156, 208))
    assert all(g <= socket0 for g in groups[:6]), "tiles of GPUs 0-2: cores of socket 0"
    assert all(g <= socket1 for g in groups[6:]), "tiles of GPUs 3-5: cores of socket 1"
    assert all(len(g & h) == 0 for i, g in enumerate(groups) for h in groups[i + 1:])


def test_aurora_small_runs_use_the_first_tiles_and_the_default_environment(tmp_path, scheduler):
    four = make_config("aurora", workers=4, run_dir=str(tmp_path), queue="debug", **AURORA, **LOOPBACK).executors[0]
    assert four.available_accelerators == ["0.0", "0.1", "1.0", "1.1"] and four.max_workers_per_node == 4

    config = make_config("aurora", workers=20, run_dir=str(tmp_path), queue="debug-scaling", walltime="0:30:00",
                         **AURORA, **LOOPBACK)
    submit_first_block(config, tmp_path / "parsl")
    script = scheduler.script()
    assert scheduler.calls("qsub")[0][1:3] == ["-q", "debug-scaling"]
    assert "#PBS -l select=2:ncpus=208\n" in script and "#PBS -l walltime=00:30:00\n" in script
    assert f"module load frameworks\nsource {sys.prefix}/bin/activate\nexport TMPDIR=/tmp\n" in script


def test_aurora_capacity_request_is_split_and_keeps_extra_directives(tmp_path, scheduler):
    config = make_config("aurora", workers=384, run_dir=str(tmp_path), queue="capacity", walltime="72:00:00",
                         filesystems="flare:daos_user_fs", scheduler_options="#PBS -l place=scatter", **AURORA,
                         **LOOPBACK)
    provider = config.executors[0].provider
    assert (provider.nodes_per_block, provider.init_blocks, provider.max_blocks) == (16, 2, 2)
    submit_first_block(config, tmp_path / "parsl")
    script = scheduler.script()
    assert "#PBS -l select=16:ncpus=208\n" in script and "#PBS -l walltime=72:00:00\n" in script
    assert "#PBS -l filesystems=flare:daos_user_fs\n#PBS -l place=scatter\n" in script


def test_aurora_queues_adbo_does_not_know_are_passed_unchecked(tmp_path, scheduler):
    config = make_config("aurora", workers=24, run_dir=str(tmp_path), queue="lustre_scaling", walltime="30:00:00",
                         **AURORA, **LOOPBACK)
    submit_first_block(config, tmp_path / "parsl")
    assert scheduler.calls("qsub")[0][1:3] == ["-q", "lustre_scaling"]


# --------------------------------------------------------------------------------------------
# Frontier job scripts
# --------------------------------------------------------------------------------------------


def test_frontier_job_script_has_eight_workers_per_node_one_per_gcd(tmp_path, scheduler):
    config = make_config("frontier", workers=1472, run_dir=str(tmp_path), nodes=184, walltime="12:00:00",
                         **FRONTIER, **LOOPBACK)
    (executor,) = config.executors
    assert isinstance(executor.provider, SlurmProvider) and isinstance(executor.provider.launcher, SrunLauncher)
    assert executor.available_accelerators == GCDS and executor.max_workers_per_node == 8
    assert executor.prefetch_capacity == 0

    assert submit_first_block(config, tmp_path / "parsl") == "4343"
    script = scheduler.script()
    for directive in ("--nodes=184", "--time=720", "--ntasks-per-node=1", "--exclusive", "--partition=batch",
                      "--account=ABC123"):
        assert f"#SBATCH {directive}\n" in script
    assert "--qos" not in script, "batch runs in the default QOS"
    assert f"module load miniforge3\nsource {sys.prefix}/bin/activate\nexport HIP_VISIBLE_DEVICES=0 " in script
    assert "export ADBO_ALLOCATION_END=$(( $(date +%s) + 43200 ))" in script
    assert ("srun --ntasks 184 -l --ntasks-per-node=1 --cpus-per-task=56 --gpus-per-node=8 --cpu-bind=none bash"
            in script)

    pool = pool_line(script)
    assert "--max_workers_per_node=8 " in pool and "-a 127.0.0.1 " in pool
    assert pool.split("--available-accelerators ")[1].split() == GCDS
    groups = affinity_groups(pool)
    # OLCF's NUMA note: GCD 0 sits on the L3 region of cores 48-55, GCD 4 on 0-7, GCD 7 on 40-47.
    assert groups[0] == set(range(49, 56)) | set(range(113, 120))
    assert groups[4] == set(range(1, 8)) | set(range(65, 72))
    assert groups[7] == set(range(41, 48)) | set(range(105, 112))
    assert not set().union(*groups) & set(range(0, 128, 8)), "the first core of each L3 region is Slurm's"


@pytest.mark.parametrize("queue, partition, qos", [("debug", "batch", "debug"), ("extended", "extended", None)])
def test_frontier_debug_is_a_qos_and_extended_a_partition(tmp_path, scheduler, queue, partition, qos):
    config = make_config("frontier", workers=16, run_dir=str(tmp_path), queue=queue, **FRONTIER, **LOOPBACK)
    submit_first_block(config, tmp_path / "parsl")
    script = scheduler.script()
    assert f"#SBATCH --partition={partition}\n" in script and "#SBATCH --nodes=2\n" in script
    assert (f"#SBATCH --qos={qos}\n" in script) if qos else ("--qos" not in script)


# --------------------------------------------------------------------------------------------
# What each worker really gets: a real worker pool with the sites' accelerator lists
# --------------------------------------------------------------------------------------------

DEVICE_VARIABLES = ("PARSL_WORKER_RANK", "ZE_AFFINITY_MASK", "ZE_FLAT_DEVICE_HIERARCHY", "ROCR_VISIBLE_DEVICES",
                    "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")

# The task is a child process of the worker, as an objective is (adbo.evaluator passes the
# worker's environment on), and a standard-library function Parsl ships by name: this test
# module is not importable where the workers run. Each worker's child waits until every
# worker of its pool holds a task, so that every rank answers exactly once.
_REPORT = ('touch "$BARRIER/$PARSL_WORKER_RANK"; n=0; '
           'while [ "$(ls "$BARRIER" | wc -l)" -lt "$WORKERS" ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done; '
           'env')


def _parse_env(text: str) -> dict:
    pairs = (line.partition("=") for line in text.splitlines())
    return {name: value for name, sep, value in pairs if sep and name in DEVICE_VARIABLES}


def hip_devices(env: dict, gcds_on_node: int = 8) -> list[int]:
    """The GCDs a HIP program sees: ROCr filters by ROCR_VISIBLE_DEVICES, then HIP picks indices
    into what is left from HIP_VISIBLE_DEVICES, or CUDA_VISIBLE_DEVICES when that is unset
    (ROCclr's device selection)."""
    rocr = env.get("ROCR_VISIBLE_DEVICES")
    visible = [int(i) for i in rocr.split(",")] if rocr else list(range(gcds_on_node))
    chosen = env.get("HIP_VISIBLE_DEVICES") or env.get("CUDA_VISIBLE_DEVICES")
    if not chosen:
        return visible
    return [visible[int(i)] for i in chosen.split(",") if int(i) < len(visible)]


@pytest.mark.timeout(150)
def test_each_worker_of_a_node_sees_only_its_own_tile_or_gcd(tmp_path, scheduler):
    """A full node of each site, both pools at once (their start-up is most of the time)."""
    sites = {"aurora": {**AURORA, "queue": "debug"}, "frontier": FRONTIER}
    pools, apps = [], {}
    for site, options in sites.items():
        module = load_site(site)
        site_executor = make_config(site, workers=module.slots_per_node(), run_dir=str(tmp_path), **options,
                                    **LOOPBACK).executors[0]
        # This machine has neither the site's cores nor its scheduler: the same accelerators and
        # job environment, run by a local provider, without CPU pinning.
        pools.append(HighThroughputExecutor(
            label=site, address="127.0.0.1", loopback_address="127.0.0.1", encrypted=False,
            max_workers_per_node=site_executor.max_workers_per_node,
            available_accelerators=site_executor.available_accelerators, cores_per_worker=0.01, prefetch_capacity=0,
            provider=LocalProvider(init_blocks=1, min_blocks=1, max_blocks=1,
                                   worker_init="\n".join(module.JOB_ENVIRONMENT)),
        ))
        apps[site] = python_app(subprocess.check_output, executors=[site])
    seen: dict[str, dict[int, dict]] = {}
    with parsl.load(Config(executors=pools, run_dir=str(tmp_path / "parsl"), usage_tracking=0, strategy="none")):
        futures = {}
        for pool in pools:
            barrier = tmp_path / f"barrier-{pool.label}"
            barrier.mkdir()
            script = f"BARRIER={shlex.quote(str(barrier))} WORKERS={pool.max_workers_per_node}; " + _REPORT
            futures[pool.label] = [apps[pool.label](["sh", "-c", script], text=True)
                                   for _ in range(pool.max_workers_per_node)]
        for site, site_futures in futures.items():
            envs = [_parse_env(f.result(timeout=120)) for f in site_futures]
            seen[site] = {int(env["PARSL_WORKER_RANK"]): env for env in envs}
    parsl.clear()

    aurora, frontier = seen["aurora"], seen["frontier"]
    assert sorted(aurora) == list(range(12)) and sorted(frontier) == list(range(8)), "one task per worker"
    assert [aurora[i]["ZE_AFFINITY_MASK"] for i in range(12)] == TILES
    assert {env.get("ZE_FLAT_DEVICE_HIERARCHY") for env in aurora.values()} == {"COMPOSITE"}
    assert [frontier[i]["ROCR_VISIBLE_DEVICES"] for i in range(8)] == GCDS
    assert [hip_devices(frontier[i]) for i in range(8)] == [[i] for i in range(8)]
    # Without the job's HIP_VISIBLE_DEVICES=0, Parsl's CUDA_VISIBLE_DEVICES=i would hide GCD i from HIP.
    assert [hip_devices({**frontier[i], "HIP_VISIBLE_DEVICES": None}) for i in range(8)] == [[0]] + [[]] * 7


# --------------------------------------------------------------------------------------------
# Queue rules and other refusals
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("options, message", [
    ({"queue": "prod", "nodes": 4},
     r"'prod' takes jobs of 256 to 10624 nodes; a job of 4 node\(s\) is outside that range; 4 node\(s\) fit "
     r"--queue debug-scaling \(2-256 nodes\), --queue capacity \(1-16 nodes\)"),
    ({"queue": "debug", "nodes": 3}, r"'debug' takes jobs of 1 to 2 nodes and runs at most one job.*--queue debug-scaling"),
    ({"queue": "debug-scaling", "nodes": 300},
     r"at most one job at a time.*300 nodes would take 2 jobs of 150 nodes.*300 node\(s\) fit --queue prod \(256-10624"),
    ({"queue": "debug-scaling", "nodes": 1}, r"a job of 1 node\(s\) is outside that range; 1 node\(s\) fit --queue debug "
                                             r"\(1-2 nodes\), --queue capacity \(1-16 nodes\)"),
    ({"queue": "prod", "nodes": 300, "walltime": "13:00:00"},
     r"routes jobs of 256-1024 nodes to 'small', which allows at most 12:00:00 of walltime; 13:00:00 was asked\. "
     r"Ask for --walltime 12:00:00 or less, or at least 1025 nodes per job \(allowed up to 24:00:00\)"),
    ({"queue": "prod", "nodes": 1500, "walltime": "20:00:00"}, r"to 'medium', which allows at most 18:00:00"),
    ({"queue": "prod", "nodes": 2000, "walltime": "25:00:00"}, r"to 'large', which allows at most 24:00:00"),
    ({"queue": "prod", "nodes": 256, "walltime": "0:04:00"}, r"needs at least 00:05:00"),
    ({"queue": "debug", "nodes": 1, "walltime": "2:00:00"}, r"'debug' allows at most 01:00:00"),
    ({"queue": "capacity", "nodes": 48}, r"'capacity' takes jobs of 1 to 16 nodes and runs at most 2 jobs.*48 nodes "
                                         r"would take 3 jobs of 16 nodes"),
    ({"queue": "capacity", "nodes": 8, "walltime": "169:00:00"}, r"'capacity' allows at most 168:00:00"),
    ({"queue": "prod", "nodes": 3000, "nodes_per_block": 256}, r"at most 10 jobs at a time.*12 jobs of 256 nodes"),
    ({"nodes": 10625}, r"aurora has 10624 nodes; 10625 were asked for"),
    ({"queue": "debug", "nodes": 1, "workers": 13}, r"13 workers need 2 nodes at 12 worker\(s\) per node.*--nodes 2 or "
                                                    r"run --workers 12"),
    ({"account": None}, r"aurora needs --account \(or ADBO_ACCOUNT\): the ALCF project"),
    ({"queue": "debug", "filesystems": "home flare"}, r"filesystems must be names joined by colons, like home:flare"),
    ({"queue": "debug", "filesystems": "flare:daos"}, r"no filesystem called 'daos'.*ask for 'flare:daos_user_fs'"),
])
def test_aurora_queue_rules_refuse_with_the_limit_and_the_fix(tmp_path, options, message):
    options = {**AURORA, **options}
    workers = options.pop("workers", 12 * (options.get("nodes") or 1))
    with pytest.raises(ValueError, match=message):
        make_config("aurora", workers=workers, run_dir=str(tmp_path), **LOOPBACK, **options)


@pytest.mark.parametrize("options, message", [
    ({"nodes": 10, "walltime": "6:00:00"},
     r"'batch' routes jobs of 1-91 nodes to 'bin 5', which allows at most 02:00:00 of walltime; 06:00:00 was asked\. "
     r"Ask for --walltime 02:00:00 or less, or at least 92 nodes per job \(allowed up to 12:00:00\); or use --queue "
     r"extended, which takes 10-node jobs for up to 24:00:00"),
    ({"nodes": 100, "walltime": "8:00:00"}, r"to 'bin 4', which allows at most 06:00:00.*at least 184 nodes per job"
                                            r" \(allowed up to 12:00:00\)$"),
    ({"nodes": 2000, "walltime": "13:00:00"}, r"to 'bin 2', which allows at most 12:00:00 of walltime; 13:00:00 was "
                                              r"asked\. Ask for --walltime 12:00:00 or less$"),
    ({"queue": "debug", "nodes": 4, "walltime": "3:00:00"}, r"'debug' allows at most 02:00:00"),
    ({"queue": "extended", "nodes": 65}, r"'extended' takes jobs of 1 to 64 nodes and runs at most one job.*65 nodes "
                                         r"would take 2 jobs of 33 nodes.*--queue batch \(1-9472 nodes\)"),
    ({"queue": "extended", "nodes": 10, "walltime": "25:00:00"}, r"'extended' allows at most 24:00:00"),
    ({"nodes": 50, "nodes_per_block": 10}, r"at most 4 jobs at a time.*50 nodes would take 5 jobs of 10 nodes"),
    ({"nodes": 9857}, r"frontier has 9856 nodes; 9857 were asked for"),
    ({"nodes": 2, "workers": 17}, r"17 workers need 3 nodes at 8 worker\(s\) per node.*--nodes 3 or run --workers 16"),
    ({"account": None}, r"frontier needs --account \(or ADBO_ACCOUNT\): the OLCF project"),
])
def test_frontier_queue_rules_refuse_with_the_limit_and_the_fix(tmp_path, scheduler, options, message):
    options = {**FRONTIER, **options}
    workers = options.pop("workers", 8 * (options.get("nodes") or 1))
    with pytest.raises(ValueError, match=message):
        make_config("frontier", workers=workers, run_dir=str(tmp_path), **LOOPBACK, **options)


def test_frontier_accepts_a_whole_machine_request_as_equal_jobs(tmp_path, scheduler):
    provider = make_config("frontier", workers=8 * 9600, run_dir=str(tmp_path), walltime="12:00:00", **FRONTIER,
                           **LOOPBACK).executors[0].provider
    assert (provider.nodes_per_block, provider.max_blocks) == (4800, 2), "more than one job takes: two bin-2 jobs"
    unchecked = make_config("frontier", workers=8, run_dir=str(tmp_path), queue="gpu-test", walltime="48:00:00",
                            **FRONTIER, **LOOPBACK).executors[0].provider
    assert unchecked.partition == "gpu-test" and unchecked.qos is None


# --------------------------------------------------------------------------------------------
# Addresses: a parameter, never probed
# --------------------------------------------------------------------------------------------


from test_hpc_sites import no_traffic  # noqa: E402,F401 - a pytest fixture, used by name


@pytest.mark.parametrize("site, options", [("aurora", {**AURORA, "queue": "debug"}), ("frontier", FRONTIER)])
@pytest.mark.parametrize("how", [{"interface": "lo"}, {"address": "127.0.0.1"}])
def test_building_the_configs_on_loopback_sends_nothing(tmp_path, scheduler, no_traffic, site, options, how):
    config = make_config(site, workers=8, run_dir=str(tmp_path), **options, **how)
    (executor,) = config.executors
    assert executor.address == "127.0.0.1" and executor.all_addresses == {"127.0.0.1"}
    assert config.usage_tracking == 0 and config.exit_mode == "wait" and config.retries == 1
    assert config.run_dir == os.path.join(str(tmp_path), "logs", "parsl")
    assert make_config(site, workers=8, run_dir=str(tmp_path), **options, **how).executors[0] is not executor


@pytest.mark.parametrize("site, options", [("aurora", {**AURORA, "queue": "debug"}), ("frontier", FRONTIER)])
def test_missing_interface_is_named(tmp_path, scheduler, site, options):
    with pytest.raises(ValueError, match=rf"{site}: network interface 'nosuch0' is not on this host"):
        make_config(site, workers=8, run_dir=str(tmp_path), interface="nosuch0", **options)


# --------------------------------------------------------------------------------------------
# Dry run, command line, help, allocations
# --------------------------------------------------------------------------------------------


def _workflow_main():
    spec = importlib.util.spec_from_file_location("synthetic_hpo_cli", ROOT / "workflows" / "synthetic_hpo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_dry_run_from_the_command_line_prints_the_aurora_script(tmp_path, scheduler, capsys):
    run_dir = tmp_path / "runs" / "big"
    main = _workflow_main()
    assert main(["--site", "aurora", "--account", "MYPROJ", "--nodes", "2048", "--walltime", "24:00:00",
                 "--dry-run", "--run-dir", str(run_dir)]) == 0
    text = capsys.readouterr().out
    assert scheduler.calls("qsub") == [] and not run_dir.exists(), "a dry run submits and creates nothing"
    assert "site aurora, 24576 workers" in text
    assert "1 batch job (Parsl block) of 2048 node(s) each, 12 worker slot(s) per node = 24576 slots" in text
    assert "#PBS -l select=2048:ncpus=208\n" in text and "#PBS -l filesystems=home:flare\n" in text
    assert f"qsub  -q prod -A MYPROJ {run_dir}/logs/parsl/000/submit_scripts/parsl.adbo_aurora.block-0." in text
    assert "--available-accelerators 0.0 0.1 1.0 1.1 2.0 2.1 3.0 3.1 4.0 4.1 5.0 5.1" in text
    assert "interface 'hsn0' is not on this host" in text, "off Aurora the address is a marked placeholder"

    assert main(["--site", "aurora", "--account", "MYPROJ", "--workers", "48", "--dry-run", "--run-dir",
                 str(run_dir)]) == 2
    assert "'prod' takes jobs of 256 to 10624 nodes" in capsys.readouterr().err


def test_dry_run_of_frontier(tmp_path, scheduler):
    text = dry_run("frontier", 64, str(tmp_path / "run"), account="ABC123", queue="debug", address="127.0.0.1")
    assert scheduler.calls("sbatch") == [] and not (tmp_path / "run").exists()
    assert "1 batch job (Parsl block) of 8 node(s) each, 8 worker slot(s) per node = 64 slots" in text
    assert "#SBATCH --qos=debug\n" in text and "#SBATCH --partition=batch\n" in text
    assert "--available-accelerators 0 1 2 3 4 5 6 7" in text and "submit command: sbatch " in text


def test_both_sites_are_registered_and_documented():
    assert {"aurora", "frontier"} <= set(available_sites())
    for site in ("aurora", "frontier"):
        module = load_site(site)
        text = describe_site(site)
        assert module.DESCRIPTION in text and module.EXAMPLE in text
        for name, opt in module.OPTIONS.items():
            assert name in FLAGS_BY_NAME, f"{site} option {name} has no command-line flag"
            assert f"{FLAGS_BY_NAME[name].flag} / ADBO_{name.upper()}" in text and opt.help in text
        assert site_help_requested(["--site", site, "--help"]) == text
    assert "-> small" in describe_site("aurora") and "capacity" in describe_site("aurora")
    assert "5.1 (ZE_AFFINITY_MASK)" in describe_site("aurora")
    assert "-> bin 5" in describe_site("frontier") and "extended" in describe_site("frontier")


def test_workers_and_allocations_follow_the_nodes():
    assert default_workers("aurora", {"nodes": 256}) == 3072
    assert default_workers("frontier", {"nodes": 184}) == 1472
    assert allocation_seconds("aurora", {"walltime": "6:00:00"}) == 21600
    assert allocation_seconds("frontier", {}) == 3600
