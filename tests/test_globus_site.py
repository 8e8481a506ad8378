"""The Globus Compute site, offline: the SDK's own serializer, fresh processes, a real search.

Only the Globus service is replaced (by tests/offline_compute.py, a real subclass of
globus_compute_sdk.Executor); Parsl, the worker entry point, the serializer and the run
directory are the real ones.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("globus_compute_sdk", reason="globus-compute-sdk is not installed (pip install '.[globus]')")

from globus_compute_sdk.serialize import ComputeSerializer  # noqa: E402
from parsl.executors import GlobusComputeExecutor  # noqa: E402

import adbo  # noqa: E402
from adbo.evaluation import objective_identity  # noqa: E402
from adbo.objectives.synthetic import SyntheticObjective  # noqa: E402
from adbo.site_configs import make_config  # noqa: E402
from adbo.site_configs.globus_compute import template_variables  # noqa: E402
from adbo.site_options import allocation_seconds, dry_run  # noqa: E402
from adbo.space import SearchSpace  # noqa: E402
from adbo.storage import open_run  # noqa: E402
from adbo.worker import run_worker  # noqa: E402
from offline_compute import OfflineComputeExecutor  # noqa: E402

RUN_IN_FRESH_PROCESS = """
import sys
from globus_compute_sdk.serialize import ComputeSerializer
serde = ComputeSerializer()
fn, args, kwargs = serde.unpack_and_deserialize(open(sys.argv[1]).read())
open(sys.argv[2], "w").write(serde.serialize(fn(*args, **kwargs)))
"""


@pytest.fixture
def offline_endpoint():
    executor = OfflineComputeExecutor(max_workers=2)
    yield executor
    executor.shutdown(wait=True)


def test_worker_entry_point_survives_the_sdk_serializer_and_runs_in_a_fresh_interpreter(tmp_path):
    objective = SyntheticObjective("ackley", 3)
    run_dir = str(tmp_path / "run")
    open_run(run_dir, SearchSpace(objective.space()), objective_identity(objective), "minimize", settings={"workers": 1})
    settings = {"max_evals": 4, "n_initial": 2, "seed": 3}
    serde = ComputeSerializer()
    payload = serde.pack_buffers([serde.serialize(run_worker), serde.serialize((run_dir, 0, objective, settings)),
                                  serde.serialize({})])

    fn, args, kwargs = serde.unpack_and_deserialize(payload)
    assert fn.__module__ == "adbo.worker" and fn.__name__ == "run_worker"
    assert args[:2] == (run_dir, 0) and args[3] == settings and kwargs == {}
    assert (args[2].problem, args[2].dim) == ("ackley", 3)

    task, result = tmp_path / "task.txt", tmp_path / "result.txt"
    task.write_text(payload)
    # -I: no PYTHONPATH, no script directory, no user site: only what an endpoint would have installed.
    subprocess.run([sys.executable, "-I", "-c", RUN_IN_FRESH_PROCESS, str(task), str(result)],
                   cwd=tmp_path, check=True, timeout=120, capture_output=True)
    report = serde.deserialize(result.read_text())
    assert report["worker"] == 0 and report["evaluations"] == 4
    frame = adbo.load_results(run_dir)
    final = frame[frame.status != "in_flight"]
    assert len(final) == 4 and set(final.worker) == {0}


def test_config_wraps_the_injected_executor(tmp_path, offline_endpoint):
    config = make_config("globus-compute", workers=2, run_dir=str(tmp_path), executor=offline_endpoint,
                         account="MYPROJ", nodes=2, walltime="0:30:00")
    (executor,) = config.executors
    assert isinstance(executor, GlobusComputeExecutor) and executor.executor is offline_endpoint
    assert config.usage_tracking == 0 and config.exit_mode == "wait"
    assert config.run_dir == os.path.join(str(tmp_path), "logs", "parsl")
    # Options for a templated endpoint travel as user_endpoint_config (templates/globus_compute_polaris.yaml).
    assert executor.user_endpoint_config == {"account": "MYPROJ", "nodes_per_block": 2, "max_blocks": 1,
                                             "walltime": "00:30:00"}
    assert make_config("globus-compute", workers=2, run_dir=str(tmp_path), executor=offline_endpoint) is not config


def test_config_errors_are_clear_and_nothing_is_contacted(tmp_path):
    with pytest.raises(ValueError, match="needs --endpoint UUID"):
        make_config("globus-compute", workers=2, run_dir=str(tmp_path))
    with pytest.raises(ValueError, match="is not a UUID"):
        make_config("globus-compute", workers=2, run_dir=str(tmp_path), endpoint="polaris")
    with pytest.raises(TypeError, match="must be a globus_compute_sdk.Executor"):
        make_config("globus-compute", workers=2, run_dir=str(tmp_path), executor=object())


def test_dry_run_and_allocation_of_the_globus_site(tmp_path):
    endpoint = "2d8a3f4e-0000-4000-8000-000000000000"
    text = dry_run("globus-compute", 8, str(tmp_path / "run"), endpoint=endpoint, account="MYPROJ", walltime="2:00:00")
    assert endpoint in text and "nothing was sent" in text and '"account": "MYPROJ"' in text
    assert "globus_compute_polaris.yaml" in text
    assert allocation_seconds("globus-compute", {"walltime": "2:00:00"}) == 7200
    assert allocation_seconds("globus-compute", {}) is None


def test_a_search_through_the_globus_compute_site_completes_offline(tmp_path, offline_endpoint, monkeypatch):
    # Every worker must evaluate: the objective holds each process until both have started.
    monkeypatch.setenv("ADBO_TEST_BARRIER", str(tmp_path / "barrier"))
    monkeypatch.setenv("ADBO_TEST_PEERS", "2")
    run_dir = str(tmp_path / "run")
    result = adbo.launch("failing_objectives:quadratic_after_peers", {"a": (0.0, 1.0), "b": (0.0, 1.0)}, run_dir,
                         site="globus-compute", site_options={"executor": offline_endpoint}, workers=2, max_evals=8,
                         direction="minimize", n_initial=4, seed=1, progress=False, poll_interval=0.2)
    assert not result.worker_errors
    assert result.summary["evaluations"] >= 8
    assert len(offline_endpoint.payloads) == 2, "one task per worker, each through the SDK serializer"
    assert len(offline_endpoint.pids) == 2 and os.getpid() not in offline_endpoint.pids
    assert len(list((tmp_path / "barrier").iterdir())) == 2, "the objective ran in both endpoint processes"
    frame = adbo.load_results(run_dir)
    assert set(frame.worker) == {0, 1}
    assert not frame.duplicated(["worker", "seq"]).any()


def test_polaris_endpoint_template_gives_one_worker_per_gpu_and_takes_adbo_variables():
    template = (Path(__file__).parents[1] / "templates" / "globus_compute_polaris.yaml").read_text()
    for line in ("type: GlobusComputeEngine", "max_workers_per_node: 4", "available_accelerators: 4",
                 "prefetch_capacity: 0", "type: PBSProProvider", "select_options: ngpus=4",
                 "type: MpiExecLauncher", "overrides: --depth=64 --ppn 1", "export TMPDIR=/tmp"):
        assert line in template
    used = set(re.findall(r"{{\s*(\w+)", template))
    sent = set(template_variables(account="A", queue="prod", nodes=20, nodes_per_block=10, walltime="3:00:00",
                                  worker_init="module load conda"))
    assert used - sent == {"interface", "filesystems"}, "the rest have defaults and can be sent explicitly"
    assert sent <= used, "every option adbo sends is a template variable"


def test_polaris_endpoint_template_renders_to_valid_yaml():
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    template = (Path(__file__).parents[1] / "templates" / "globus_compute_polaris.yaml").read_text()
    values = {"account": "A", "queue": "prod", "walltime": "03:00:00", "nodes_per_block": 10, "max_blocks": 2,
              "worker_init": "module load conda; conda activate base", "interface": "hsn0", "filesystems": "home:eagle"}
    rendered = re.sub(r"{{\s*(\w+)[^}]*}}", lambda m: str(values[m.group(1)]), template)
    config = yaml.safe_load(rendered)
    assert config["engine"]["provider"]["nodes_per_block"] == 10 and config["engine"]["provider"]["walltime"] == "03:00:00"
