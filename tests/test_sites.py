"""Site configs: one slot per worker, loopback only, no usage tracking."""

import pytest
from parsl.executors import HighThroughputExecutor, ThreadPoolExecutor

from adbo.site_configs import available_sites, load_site, make_config


def test_known_sites_and_clear_error_for_unknown():
    assert {"local", "local-processes", "local-threads"} <= set(available_sites())
    assert load_site("local_threads") is load_site("local-threads")
    with pytest.raises(ValueError, match="unknown site 'polaris2'; known sites: .*local, local-processes, local-threads"):
        load_site("polaris2")


@pytest.mark.parametrize("workers", [1, 4, 64])
def test_local_processes_have_a_slot_per_worker_on_loopback(tmp_path, workers):
    config = make_config("local-processes", workers=workers, run_dir=str(tmp_path))
    (executor,) = config.executors
    assert isinstance(executor, HighThroughputExecutor)
    assert executor.address == "127.0.0.1" and executor.loopback_address == "127.0.0.1"
    # Parsl starts min(max_workers_per_node, cores / cores_per_worker) workers per node.
    import os

    cores = os.cpu_count()
    assert min(executor.max_workers_per_node, int(cores / executor.cores_per_worker)) >= workers
    assert config.usage_tracking == 0
    assert config.exit_mode == "wait"
    assert executor.encrypted


@pytest.mark.parametrize("site,evaluation", [("local", "process"), ("local-threads", "in-process")])
def test_local_and_local_threads_have_a_thread_per_worker(tmp_path, site, evaluation):
    config = make_config(site, workers=12, run_dir=str(tmp_path))
    (executor,) = config.executors
    assert isinstance(executor, ThreadPoolExecutor) and executor.max_threads == 12
    assert config.usage_tracking == 0
    # local runs each worker's evaluations in a child process; local-threads in the worker thread.
    assert load_site(site).DEFAULT_EVALUATION == evaluation


def test_configs_are_fresh_each_time(tmp_path):
    a = make_config("local", workers=2, run_dir=str(tmp_path))
    b = make_config("local", workers=2, run_dir=str(tmp_path))
    assert a is not b and a.executors[0] is not b.executors[0]
