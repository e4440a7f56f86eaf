"""A tiny per-capture stage for the runner's tests, in a module pool and Dask workers can import."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

from pydantic import BaseModel

from ums.core.atomic import NoSpaceLeft, write_text
from ums.core.records import CaptureRecord, StageResult
from ums.core.executors import ExecutorSettings
from ums.core.runner import CaptureStage, Task
from ums.core.workspace import Workspace

STAGE = "square"


class SquareConfig(BaseModel):
    fail_on: list[int] = []  # these values raise, as bad input would
    no_space_on: list[int] = []  # these values find the disk full
    die_marker: str | None = None  # while this file exists, the worker given value 2 kills itself
    seconds: float = 0.0  # per task, to give a test time to interrupt
    pid_dir: str | None = None  # each task leaves its worker's pid here as it starts


class SquareTask(Task):
    value: int
    config: SquareConfig


class SquareResult(StageResult):
    square: int
    pid: int
    threads: dict[str, int]  # what the worker computed with
    files: dict[str, str]


def add_captures(workspace: Workspace, n: int) -> None:
    captures = [CaptureRecord(capture_id=f"c{i:03d}", flight_root="/flight", folder="", sequence=i, timestamp=None,
                              frames={}) for i in range(n)]
    workspace.replace_flight("/flight", captures, [], scope="/flight")


def plan(workspace: Workspace, config: SquareConfig) -> list[SquareTask]:
    return [SquareTask(key=c.capture_id, capture_id=c.capture_id, workspace_root=workspace.root, fingerprint="v1",
                       file=f"/flight/{c.capture_id}.JPG", value=c.sequence, config=config)
            for c in workspace.captures()]


def process(task: SquareTask) -> SquareResult:
    if task.config.die_marker and task.value == 2 and Path(task.config.die_marker).exists():
        os.kill(os.getpid(), signal.SIGKILL)
    if task.config.pid_dir:
        (Path(task.config.pid_dir) / str(os.getpid())).touch()
    if task.value in task.config.fail_on:
        raise ValueError(f"value {task.value} is bad input")
    if task.value in task.config.no_space_on:
        raise NoSpaceLeft(errno.ENOSPC, "no space left on the disk for square.txt (it needs 2 B; 0 B free there)")
    time.sleep(task.config.seconds)
    out = task.output_dir(STAGE) / "square.txt"
    write_text(out, str(task.value ** 2))
    return SquareResult(square=task.value ** 2, pid=os.getpid(), files={"square": task.relative(out)}, threads=threads())


def threads() -> dict[str, int]:
    import cv2
    import torch
    from threadpoolctl import threadpool_info

    return {"opencv": cv2.getNumThreads(), "torch": torch.get_num_threads(),
            **{pool["internal_api"]: pool["num_threads"] for pool in threadpool_info()}}


SQUARE = CaptureStage(STAGE, plan, process)


def quiet(**executor) -> ExecutorSettings:
    """Where a test's run goes, without a progress bar."""
    return ExecutorSettings(show_progress=False, **executor)


def main(root: str, workers: int, seconds: float, pid_dir: str) -> None:
    """A driver in its own process (tests kill it): square six captures on ``workers`` processes."""
    from ums.core.runner import StageReport, run_capture_stage

    with Workspace.open(root) as workspace:
        add_captures(workspace, 6)
        config = SquareConfig(seconds=seconds, pid_dir=pid_dir)
        run_capture_stage(workspace, SQUARE, config, StageReport(), quiet(workers=workers))


if __name__ == "__main__":
    import sys

    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
