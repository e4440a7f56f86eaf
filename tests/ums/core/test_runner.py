"""The stage runner: errors become issues, lost workers and killed drivers resume, Dask and local
pools give the same bytes, and a scheduler that does not answer is one clear message."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from tests.conftest import PROJECT_ROOT
from tests.ums.core.dask_cluster import free_port, loopback_cluster
from tests.ums.core.runner_stages import SQUARE, SquareConfig, add_captures, quiet
from ums.cli import app
from ums.ingest import IngestConfig, ingest_flight
from ums.manifest import manifest_lines
from ums.core.executors import DaskExecutor, ExecutorError, ExecutorSettings
from ums.core.runner import StageReport, run_capture_stage
from ums.core.workspace import Workspace

PYTHON_BIN = Path(sys.executable).parent


def square_workspace(path: Path, n: int = 6) -> Workspace:
    workspace = Workspace.open(path)
    add_captures(workspace, n)
    return workspace


@pytest.mark.parametrize("workers", [1, 2])
def test_a_task_that_raises_becomes_an_issue_and_the_batch_goes_on(tmp_path, workers):
    with square_workspace(tmp_path / "ws") as ws:
        report = run_capture_stage(ws, SQUARE, SquareConfig(fail_on=[3]), StageReport(), quiet(workers=workers))
        assert (report.planned, report.done, report.failed, report.skipped) == (6, 5, 1, 0)
        [issue] = report.issues
        assert issue.stage == "square" and issue.capture_id == "c003" and issue.file == "/flight/c003.JPG"
        assert issue.message == "square failed: value 3 is bad input (rerun `ums square` to retry)"
        assert ws.stage_result("c003", "square")["status"] == "failed"
        stored = ws.stage_result("c004", "square")
        assert stored["outputs"]["square/c004/square.txt"]["size"] == 2
        assert stored["outputs"]["square/c004/square.txt"]["sha256"] == hashlib.sha256(b"16").hexdigest()
        assert stored | {"pid": 0, "outputs": None} == {
            "status": "done", "fingerprint": "v1", "square": 16, "pid": 0, "files": {"square": "square/c004/square.txt"},
            "threads": {"opencv": 1, "torch": 1, "openblas": 1, "openmp": 1}, "outputs": None}
        assert [i.capture_id for i in ws.issues("square")] == ["c003"]
        # a rerun skips what is done and retries what failed (its input may have been fixed)
        again = run_capture_stage(ws, SQUARE, SquareConfig(), StageReport(), quiet(workers=workers))
        assert (again.done, again.failed, again.skipped) == (1, 0, 5)
        assert ws.issues("square") == []


@pytest.mark.parametrize("damage", ["truncate", "same size, other bytes", "remove"])
def test_a_damaged_output_is_redone_by_the_next_run(tmp_path, damage):
    with square_workspace(tmp_path / "ws") as ws:
        config = SquareConfig()
        run_capture_stage(ws, SQUARE, config, StageReport(), quiet(workers=1))
        output = tmp_path / "ws" / "square" / "c005" / "square.txt"
        if damage == "truncate":
            output.write_text("2")
        elif damage == "remove":
            output.unlink()
        else:
            output.write_text("99")
        again = run_capture_stage(ws, SQUARE, config, StageReport(), quiet(workers=1))
        assert (again.planned, again.done, again.skipped, again.failed) == (6, 1, 5, 0)
        assert output.read_text() == "25"


def test_a_copied_output_with_the_same_bytes_is_still_current(tmp_path):
    with square_workspace(tmp_path / "ws") as ws:
        config = SquareConfig()
        run_capture_stage(ws, SQUARE, config, StageReport(), quiet(workers=1))
        output = tmp_path / "ws" / "square" / "c005" / "square.txt"
        os.utime(output, ns=(1, 1))  # a restore from backup: new time, same bytes
        again = run_capture_stage(ws, SQUARE, config, StageReport(), quiet(workers=1))
        assert (again.done, again.skipped) == (0, 6)


def test_a_task_whose_input_was_damaged_fails_naming_the_stage_to_rerun(tmp_path):
    from ums.core.records import StageResult
    from ums.core.runner import Task, execute
    from ums.core.stamps import stamp

    source = tmp_path / "crop" / "c1" / "vis.tif"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"x" * 100)
    task = Task(key="c1", workspace_root=tmp_path, capture_id="c1", inputs={"crop/c1/vis.tif": stamp(source)},
                inputs_stage="crop")
    calls = []

    def process(task: Task) -> StageResult:
        calls.append(task)
        return StageResult()

    assert execute(process, "align", "rerun `ums align`", task).status == "done"
    source.write_bytes(b"x" * 40)
    outcome = execute(process, "align", "rerun `ums align`", task)
    assert outcome.status == "failed" and len(calls) == 1  # never processed on a damaged input
    assert outcome.issues[0].message == ("align failed: crop/c1/vis.tif has 40 bytes where 100 were written (truncated "
                                         "or replaced): run `ums crop` (it redoes damaged outputs), then this stage again")


def test_a_full_disk_stops_the_run_with_what_finished_recorded_and_the_rerun_completes(tmp_path):
    from ums.core.atomic import NoSpaceLeft

    with square_workspace(tmp_path / "ws") as ws:
        with pytest.raises(NoSpaceLeft, match="0 B free"):
            run_capture_stage(ws, SQUARE, SquareConfig(no_space_on=[3]), StageReport(), quiet(workers=1))
        assert [ws.stage_result(f"c{i:03d}", "square") is not None for i in range(6)] == [True] * 3 + [False] * 3
        assert ws.runs("square")[-1]["finished_at"] is not None  # the run record is closed, not left open
        again = run_capture_stage(ws, SQUARE, SquareConfig(), StageReport(), quiet(workers=1))
        assert (again.done, again.skipped, again.failed) == (3, 3, 0)


def test_two_workers_share_the_tasks(tmp_path):
    with square_workspace(tmp_path / "ws", 8) as ws:
        run_capture_stage(ws, SQUARE, SquareConfig(seconds=0.2), StageReport(), quiet(workers=2))
        pids = {ws.stage_result(f"c{i:03d}", "square")["pid"] for i in range(8)}
        assert len(pids) == 2 and os.getpid() not in pids


def test_a_killed_worker_loses_nothing_and_the_rerun_resumes(tmp_path):
    marker = tmp_path / "die"
    marker.touch()
    with square_workspace(tmp_path / "ws") as ws:
        report = run_capture_stage(ws, SQUARE, SquareConfig(die_marker=str(marker)), StageReport(), quiet(workers=2))
        assert report.incomplete and report.not_run >= 1 and report.failed == 0
        assert "worker process died" in report.notices[0] and "rerun" in report.notices[0]
        statuses = [(ws.stage_result(f"c{i:03d}", "square") or {}).get("status") for i in range(6)]
        assert statuses[2] is None and set(statuses) <= {"done", None}  # nothing bad recorded as done
        marker.unlink()
        again = run_capture_stage(ws, SQUARE, SquareConfig(), StageReport(), quiet(workers=2))
        assert again.done == report.not_run and again.skipped == report.done and not again.incomplete
        assert all(ws.stage_result(f"c{i:03d}", "square")["square"] == i * i for i in range(6))


def test_pool_workers_leave_when_their_driver_is_killed(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    driver = subprocess.Popen([sys.executable, "-m", "tests.ums.core.runner_stages", str(tmp_path / "ws"), "2", "60", str(pids)],
                              cwd=PROJECT_ROOT)
    deadline = time.monotonic() + 60
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    workers = [int(path.name) for path in pids.iterdir()]
    assert len(workers) == 2 and driver.pid not in workers
    driver.kill()  # no shutdown of the pool at all
    driver.wait()
    deadline = time.monotonic() + 15
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(alive(pid) for pid in workers)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0  # a zombie has left already


# -- the real stages: same bytes whatever the executor ----------------------------------------------
def workspace_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every stage output file, and of the manifest with the workspace path factored out."""
    digests = {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
               for folder in ("thermal_raw", "crop", "align") for p in sorted((root / folder).rglob("*")) if p.is_file()}
    with Workspace.open(root, create=False) as ws:
        manifest = "\n".join(manifest_lines(ws, False)).replace(str(root), "<ws>")
    digests["manifest"] = hashlib.sha256(manifest.encode()).hexdigest()
    return digests


def run_cli(*args: str) -> None:
    result = CliRunner().invoke(app, [*args, "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def geometry_stages(flight: Path, root: Path, *executor: str) -> dict[str, str]:
    run_cli("ingest", str(flight), "--workspace", str(root), *executor)
    run_cli("crop", "--workspace", str(root), *executor)
    run_cli("align", "--workspace", str(root), *executor)
    return workspace_digest(root)


@pytest.fixture(scope="module")
def flight(tmp_path_factory) -> Path:
    from ums.synth import SynthFlightConfig, synth_flight

    out = tmp_path_factory.mktemp("flight")
    synth_flight(out, SynthFlightConfig(n=6, seed=11, show_progress=False))
    return out


@pytest.fixture(scope="module")
def reference(flight, tmp_path_factory) -> dict[str, str]:
    return geometry_stages(flight, tmp_path_factory.mktemp("one") / "ws", "--workers", "1")


def test_two_local_workers_write_the_same_bytes_as_one(flight, reference, tmp_path):
    assert geometry_stages(flight, tmp_path / "ws", "--workers", "2") == reference
    assert len(reference) > 6 * 6  # ir, ir16, vis, valid, aligned vis, overlay per capture, and more


def test_a_second_run_writes_the_same_bytes(flight, reference, tmp_path):
    root = tmp_path / "ws"
    geometry_stages(flight, root, "--workers", "2")
    for folder in ("crop", "align"):  # nothing left to skip: every output is made again
        subprocess.run(["rm", "-rf", str(root / folder)], check=True)
    assert geometry_stages(flight, root, "--workers", "2") == reference


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A scheduler and two single-threaded worker processes on 127.0.0.1, started as a cluster's are;
    the workers import the tests' own stage (tests.ums.core.runner_stages)."""
    with loopback_cluster(2, tmp_path_factory.mktemp("dask"), pythonpath=PROJECT_ROOT) as address:
        yield address


def test_a_dask_cluster_writes_the_same_bytes_as_a_local_run(flight, reference, dask_cluster, tmp_path):
    assert geometry_stages(flight, tmp_path / "ws", "--scheduler", dask_cluster) == reference


def test_a_failing_task_on_dask_is_an_issue_too(dask_cluster, tmp_path):
    with square_workspace(tmp_path / "ws") as ws:
        config = SquareConfig(fail_on=[1])
        report = run_capture_stage(ws, SQUARE, config, StageReport(), quiet(executor="dask", scheduler=dask_cluster))
        assert (report.done, report.failed) == (5, 1) and "value 1 is bad input" in report.issues[0].message
        assert len({ws.stage_result(f"c{i:03d}", "square")["pid"] for i in (0, 2, 3, 4, 5)} - {os.getpid()}) >= 1
        assert {ws.stage_result(f"c{i:03d}", "square")["threads"]["opencv"] for i in (0, 2, 3, 4, 5)} == {1}


def test_an_unreachable_scheduler_is_one_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr("ums.core.executors.DASK_CONNECT_TIMEOUT_S", 2)
    with square_workspace(tmp_path / "ws"):
        pass
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    result = CliRunner().invoke(app, ["crop", "--workspace", str(tmp_path / "ws"), "--scheduler", address, "--no-progress"])
    assert result.exit_code == 2
    assert "cannot reach the Dask scheduler" in result.output and address in result.output


def test_a_gpu_stage_refuses_a_cluster_without_gpu_workers(dask_cluster):
    with pytest.raises(ExecutorError, match="--resources GPU=1"):
        DaskExecutor(ExecutorSettings(executor="dask", scheduler=dask_cluster), 1, gpu=True, name="autolabel")


def test_a_second_writing_stage_exits_naming_the_running_one(flight, tmp_path):
    root = tmp_path / "ws"
    with Workspace.open(root) as ws:
        ingest_flight(ws, flight, IngestConfig(), quiet(workers=1))
    with Workspace.open(root) as running, running.writing("crop"):
        result = CliRunner().invoke(app, ["align", "--workspace", str(root), "--no-progress"])
    assert result.exit_code == 2 and "in use by `crop`" in result.output


# -- interrupted drivers ---------------------------------------------------------------------------
def start_cli(log: Path, *args: str) -> subprocess.Popen:
    """``ums ARGS`` with its output in ``log``: a file, not a pipe, so that waiting for the command
    is waiting for it alone and not for every process that inherited its output (its pool)."""
    with open(log, "w") as out:
        # an ignored SIGINT is inherited through exec, and some library in this test process may have
        # ignored it: the command must get Ctrl-C as a user's shell delivers it
        return subprocess.Popen([str(PYTHON_BIN / "ums"), *args, "--no-progress"], stdout=out, stderr=subprocess.STDOUT,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_results(root: Path, stage: str, at_least: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if (root / "ums.sqlite").exists():
            with Workspace.open(root, create=False) as ws:
                if sum(ws.stage_counts().get(stage, {}).values()) >= at_least:
                    return
        time.sleep(0.05)
    pytest.fail(f"{stage} did not record {at_least} results in time")


@contextmanager
def crop_in_progress(flight: Path, root: Path, workers: str) -> Iterator[subprocess.Popen]:
    """``ums crop`` on a freshly ingested workspace, held for good at its last capture: that capture's
    visible frame is swapped for a FIFO nobody writes, so the task reading it waits until it is
    killed. Yields once the other five are recorded; the frame is put back on leaving."""
    run_cli("ingest", str(flight), "--workspace", str(root), "--workers", "1")
    with Workspace.open(root, create=False) as ws:
        frame = Path(ws.captures()[-1].frames["W"].path)
    saved = frame.with_name(frame.name + ".saved")
    os.rename(frame, saved)
    os.mkfifo(frame)
    try:
        crop = start_cli(root.parent / "crop.log", "crop", "--workspace", str(root), "--workers", workers)
        wait_for_results(root, "crop", 5, crop)
        yield crop
    finally:
        os.remove(frame)
        os.rename(saved, frame)


def finish_and_digest(root: Path) -> dict[str, str]:
    run_cli("crop", "--workspace", str(root), "--workers", "2")
    run_cli("align", "--workspace", str(root), "--workers", "2")
    return workspace_digest(root)


@pytest.mark.slow
def test_a_driver_killed_mid_run_resumes_cleanly(flight, reference, tmp_path):
    root = tmp_path / "ws"
    with crop_in_progress(flight, root, "1") as crop:
        crop.kill()  # SIGKILL: no cleanup at all
        crop.wait()
    with Workspace.open(root, create=False) as ws:
        assert ws.stage_counts()["crop"]["done"] == 5
    assert finish_and_digest(root) == reference
    assert not list(root.rglob("*.tmp"))


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_the_rerun_resumes(flight, reference, tmp_path):
    root = tmp_path / "ws"
    with crop_in_progress(flight, root, "2") as crop:
        crop.send_signal(signal.SIGINT)
        crop.wait(timeout=60)
    output = (tmp_path / "crop.log").read_text()
    assert crop.returncode == 130 and "interrupted" in output and "Traceback" not in output, output
    assert finish_and_digest(root) == reference


def test_every_process_that_runs_tasks_keeps_freed_memory_for_reuse_once(monkeypatch):
    """glibc's default thresholds (and a Dask nanny's MALLOC_TRIM_THRESHOLD_) make every image array
    a fresh run of page faults (a gradient map 2.8x the time, bench/RESULTS.md): a Dask task, a
    pool worker and a batch run in this process fix them, once per process."""
    from ums.core import executors

    calls = []

    class Libc:
        def mallopt(self, parameter, value):
            calls.append((parameter, value))
            return 1

    monkeypatch.setattr(executors, "_c_library", Libc)
    thresholds = [(-3, 32 * 1024 * 1024), (-1, 64 * 1024 * 1024)]  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    monkeypatch.setattr(executors, "_MALLOC_TUNED", [])
    assert executors._call_single_threaded(abs, -3) == 3
    executors._call_single_threaded(abs, -4)
    assert calls == thresholds
    calls.clear()
    monkeypatch.setattr(executors, "_MALLOC_TUNED", [])
    assert list(executors.InProcessExecutor().run(abs, [-1, -2])) == [(0, 1), (1, 2)]
    assert calls == thresholds
    calls.clear()
    monkeypatch.setattr(executors, "_MALLOC_TUNED", [])
    # the worker's other settings are not this test's: none of them may stay behind in this process
    monkeypatch.setattr(executors, "_exit_with", lambda pid: None)
    monkeypatch.setattr(executors, "pin_threads", lambda: None)
    monkeypatch.setattr(executors.signal, "signal", lambda *args: None)
    for name in executors.ONE_THREAD_ENVIRONMENT:
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    executors._pool_worker_init(os.getpid())
    assert calls == thresholds


def test_a_stage_on_a_local_dask_cluster_names_its_dashboard_when_asked(tmp_path):
    with square_workspace(tmp_path / "ws") as ws:
        report = run_capture_stage(ws, SQUARE, SquareConfig(), StageReport(), quiet(executor="dask", workers=1, dashboard=True))
        assert report.done == 6
        [notice] = [notice for notice in report.notices if notice.startswith("Dask dashboard: ")]
        assert notice.startswith("Dask dashboard: http://127.0.0.1:") and notice.endswith("/status")


# -- where tasks run travels beside the config, never inside a task ----------------------------------
def executor_settings_in(value, where: str = "task") -> list[str]:
    """Every place in a task that holds executor settings: an instance, or a field of that name."""
    if isinstance(value, ExecutorSettings):
        return [where]
    found = []
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            if name in ExecutorSettings.model_fields:
                found.append(f"{where}.{name}")
            found += executor_settings_in(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found += executor_settings_in(item, f"{where}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += executor_settings_in(item, f"{where}[{key!r}]")
    return found


@pytest.fixture()
def mapped_tasks(monkeypatch) -> dict[str, list]:
    """Every task a TaskMap hands its executor, by the map's name (the stage), while still running them."""
    from ums.core.runner import TaskMap

    seen: dict[str, list] = {}
    real_map = TaskMap.map

    def recording_map(self, tasks, *args, **kwargs):
        seen.setdefault(self.name, []).extend(tasks)
        return real_map(self, tasks, *args, **kwargs)

    monkeypatch.setattr(TaskMap, "map", recording_map)
    return seen


@pytest.mark.slow
def test_no_task_of_any_stage_carries_executor_settings(synthetic_flight, tmp_path, mapped_tasks):
    """What a task carries is pickled to every worker and hashed into fingerprints: where it runs
    (workers, a scheduler's address, a progress bar) must not be in it, or it would change them."""
    import cv2
    import numpy as np

    from tests.conftest import aligned_workspace
    from tsjnet.fuse import FuseConfig, fuse_folders
    from ums import queue
    from ums.autolabel import stage as autolabel
    from ums.autolabel.detectors import DetectorConfig

    executor = ExecutorSettings(workers=1, executor="local", dashboard=True, show_progress=False)
    workspace = aligned_workspace(synthetic_flight, tmp_path / "ws")  # ingest, crop, align, as the stages map them
    weights = tmp_path / "detector.onnx"
    weights.write_bytes(b"planned, never loaded")
    tasks = {**mapped_tasks,
             "autolabel": autolabel.plan(workspace, autolabel.AutolabelConfig(detector=DetectorConfig(weights=weights),
                                                                              masks=False)),
             "queue": queue.plan(workspace, queue.QueueConfig())}
    workspace.close()
    for folder in ("ir", "vi"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.full((8, 8), 9, np.uint8))
    fuse_folders(tmp_path / "ir", tmp_path / "vi", tmp_path / "fused", FuseConfig(method="mean"), executor)
    tasks["fuse"] = mapped_tasks["fuse"]
    assert {stage: len(found) for stage, found in tasks.items()} == {
        "ingest": 8, "crop": 4, "align": 8, "autolabel": 4, "queue": 4, "fuse": 1}  # align: estimates, then renders
    for stage, found in tasks.items():
        for task in found:
            assert executor_settings_in(task) == [], stage
            assert b"ExecutorSettings" not in pickle.dumps(task), stage


def test_the_run_record_holds_the_stage_settings_and_where_they_ran_apart(tmp_path):
    with square_workspace(tmp_path / "ws") as ws:
        run_capture_stage(ws, SQUARE, SquareConfig(fail_on=[9]), StageReport(), quiet(workers=1))
        [run] = ws.runs("square")
    recorded = json.loads(run["config_json"])
    assert recorded == {**SquareConfig(fail_on=[9]).model_dump(mode="json"),
                        "executor": {"workers": 1, "executor": "local", "scheduler": None, "scheduler_file": None,
                                     "show_progress": False, "dashboard": False}}
