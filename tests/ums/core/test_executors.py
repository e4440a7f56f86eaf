"""The executors on their own: local pools, GPU workers, Dask clusters found as a user has them."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from pydantic import ValidationError

from tests.conftest import PROJECT_ROOT
from tests.ums.core.dask_cluster import loopback_cluster
from ums.core import executors
from ums.core.executors import DaskExecutor, ExecutorError, ExecutorSettings, LocalPoolExecutor, gpu_workers


def test_workers_with_a_running_cluster_are_refused_not_ignored():
    with pytest.raises(ValidationError, match="drop --workers"):
        ExecutorSettings(workers=4, scheduler="tcp://127.0.0.1:8786")
    assert ExecutorSettings(workers=4, executor="dask").workers == 4  # a LocalCluster of 4 is this command's own


def test_an_address_alone_means_dask_wherever_it_is_given():
    # a config file's executor: section has no --scheduler option to imply it: the settings do
    assert ExecutorSettings(scheduler="tcp://10.0.0.5:8786").executor == "dask"
    assert ExecutorSettings.model_validate({"scheduler_file": "s.json"}).executor == "dask"
    assert (ExecutorSettings().executor, ExecutorSettings(executor="local", scheduler="tcp://a:1").executor) == ("local", "local")


def test_a_gpu_stage_gets_one_local_worker_per_gpu(monkeypatch):
    monkeypatch.setattr(executors, "gpu_count", lambda: 2)
    assert gpu_workers(ExecutorSettings(), "fuse") == 2
    assert gpu_workers(ExecutorSettings(workers=1), "fuse") == 1
    with pytest.raises(ExecutorError, match="one worker per GPU"):
        gpu_workers(ExecutorSettings(workers=3), "fuse")
    monkeypatch.setattr(executors, "gpu_count", lambda: 0)
    assert gpu_workers(ExecutorSettings(), "fuse") == 1  # in this process, where the loader says there is no GPU


def visible_device_after(seconds: float) -> str:
    time.sleep(seconds)  # long enough that both workers hold a task
    return os.environ["CUDA_VISIBLE_DEVICES"]


def test_each_gpu_worker_sees_its_own_card():
    pool = LocalPoolExecutor(2, [], gpus=[0, 1])
    try:
        devices = sorted(device for _, device in pool.run(visible_device_after, [1.0, 1.0]))
    finally:
        pool.close()
    assert devices == ["0", "1"]


def test_pool_workers_leave_when_their_killed_driver_is_a_zombie_whose_parent_reads_its_pipes(tmp_path):
    """The parent blocks on the driver's pipes, which the workers inherited: nothing reaps the killed
    driver until they close, so a signal-0 probe would find it alive forever."""
    pids = tmp_path / "pids"
    pids.mkdir()
    driver = subprocess.Popen([sys.executable, "-m", "tests.ums.core.runner_stages", str(tmp_path / "ws"), "2", "60", str(pids)],
                              cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    driver.kill()
    driver.communicate(timeout=30)  # returns once every holder of the pipes has left


@pytest.fixture(scope="module")
def threaded_cluster(tmp_path_factory):
    with loopback_cluster(1, tmp_path_factory.mktemp("dask"), threads=2) as address:
        yield address


def test_a_cluster_whose_workers_run_several_threads_is_refused(threaded_cluster):
    with pytest.raises(ExecutorError, match="--nthreads 1"):
        DaskExecutor(ExecutorSettings(executor="dask", scheduler=threaded_cluster), 1, False, "crop")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with loopback_cluster(1, tmp_path_factory.mktemp("dask")) as address:
        yield address


def test_the_scheduler_in_dasks_own_configuration_is_used(cluster, monkeypatch):
    import dask

    with dask.config.set({"scheduler-address": cluster}):
        executor = DaskExecutor(ExecutorSettings(executor="dask"), 1, False, "crop")
    try:
        assert executor._cluster is None and executor.client.scheduler.address == cluster
        assert [result for _, result in executor.run(abs, [-3])] == [3]
    finally:
        executor.close()


def test_the_api_uses_a_client_the_caller_already_holds(cluster):
    from distributed import Client

    with Client(cluster, set_as_default=True) as client:
        executor = DaskExecutor(ExecutorSettings(executor="dask"), 1, False, "crop")
        assert executor.client is client and executor._cluster is None
        executor.close()
        assert client.status == "running"  # the caller's client stays theirs


def test_the_dashboard_is_served_on_loopback_when_asked():
    import urllib.request
    from urllib.parse import urlparse

    executor = DaskExecutor(ExecutorSettings(executor="dask", dashboard=True), 1, False, "crop")
    try:
        link = urlparse(executor.dashboard_link)
        assert link.hostname == "127.0.0.1" and link.port
        with urllib.request.urlopen(executor.dashboard_link, timeout=30) as page:
            assert page.status == 200
    finally:
        executor.close()
    quiet = DaskExecutor(ExecutorSettings(executor="dask"), 1, False, "crop")
    try:
        assert quiet.dashboard_link is None
    finally:
        quiet.close()
