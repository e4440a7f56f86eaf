"""The stage runner: one loop for every per-capture stage, in this process, on a local process pool
or on a Dask cluster (:mod:`ums.executors`).

A stage supplies ``plan(workspace, config) -> tasks`` and a pure, picklable ``process(task) ->
result`` that reads its inputs and writes its outputs under the workspace through
:mod:`ums.atomic`. The runner owns everything else: the writer lock, the run record, the progress
bar, skipping finished work, turning an exception into an issue and a ``failed`` result (the batch
goes on), and every database write: workers never open the workspace database. Outcomes are
committed in plan order and every worker computes on one thread, so the outputs and the manifest are
the same bytes whatever the executor, the worker count or the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from ums.executors import (
    ExecutorSettings,
    InProcessExecutor,
    WorkerLost,
    open_executor,
)
from ums.progress import progress_bar
from ums.records import Issue, StageResult
from ums.workspace import Workspace

DASK_CONNECT_TIMEOUT_S = 10


def settings_fingerprint(config: BaseModel, *inputs: str, exclude: Iterable[str] = ()) -> str:
    """A short hash of a stage's inputs and of the settings that change its outputs."""
    settings = config.model_dump_json(exclude=set(ExecutorSettings.model_fields) | set(exclude))
    return hashlib.sha256("|".join([*inputs, settings]).encode()).hexdigest()[:16]


class Task(BaseModel):
    """One unit of work for ``process``: everything it needs, nothing that needs the database."""

    model_config = ConfigDict(frozen=True)

    key: str  # the capture id (the stage-result row it fills), or a source file
    workspace_root: Path
    fingerprint: str = ""
    file: str | None = None  # the file an issue about this task names
    capture_id: str | None = None

    def output_dir(self, stage: str) -> Path:
        return self.workspace_root / stage / self.key

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.workspace_root))


@dataclass(frozen=True)
class Outcome:
    task: Task
    result: StageResult | None  # None: ``process`` raised
    issues: list[Issue]

    @property
    def status(self) -> str:
        return "failed" if self.result is None else self.result.status


# -- running one task ------------------------------------------------------------------------------
def execute(process: Callable[[Task], StageResult], stage: str, task: Task) -> Outcome:
    """Run ``process`` on ``task``; an exception becomes a failed outcome with an issue."""
    try:
        result = process(task)
    except Exception as exc:  # noqa: BLE001 - one bad capture never stops the batch
        return Outcome(task, None, [failure_issue(stage, task, exc)])
    issues = [issue.model_copy(update={"stage": stage, "capture_id": issue.capture_id or task.capture_id,
                                       "file": issue.file or task.file}) for issue in result.issues]
    return Outcome(task, result, issues)


def failure_issue(stage: str, task: Task, error: BaseException) -> Issue:
    expected = isinstance(error, (ValueError, OSError))
    detail = str(error) if expected else f"unexpected {type(error).__name__}: {error}"
    return Issue(stage=stage, file=task.file, capture_id=task.capture_id, message=f"{stage} failed: {detail}")


# -- one run of one stage --------------------------------------------------------------------------
@dataclass
class StageReport:
    """What a run did, in counts a person reads; ``rows`` names them per stage."""

    planned: int = 0  # tasks the plan made, finished or not
    done: int = 0
    skipped: int = 0
    failed: int = 0
    not_run: int = 0
    issues: list[Issue] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # run-level news: a lost worker, nothing to do

    row_names = ("done now", "already done (skipped)", "failed")

    def rows(self) -> list[tuple[str, object]]:
        rows = list(zip(self.row_names, (self.done, self.skipped, self.failed)))
        if self.not_run:
            rows.append(("not run (rerun to resume)", self.not_run))
        return rows

    @property
    def incomplete(self) -> bool:
        return self.not_run > 0

    def count(self, outcome: Outcome) -> None:
        if outcome.status == "failed":
            self.failed += 1
        else:
            self.done += 1
        self.issues.extend(outcome.issues)


class StageRun:
    """The writer lock, the run record and the executor of one stage run; ``map`` runs tasks.

    The executor is started on first use and kept for the run (align maps twice)."""

    def __init__(self, workspace: Workspace, stage: str, config: ExecutorSettings, gpu: bool = False,
                 preload: Sequence[str] = (), details: dict[str, Any] | None = None):
        self.workspace, self.stage, self.config, self.gpu = workspace, stage, config, gpu
        self.preload = tuple(preload)
        self.details = details or {}
        self.summary: dict[str, Any] = {}
        self._executor = None
        self._stack = ExitStack()

    def __enter__(self) -> StageRun:
        if self.config.scheduler or self.config.scheduler_file:
            self._executor_for(0)  # a cluster that does not answer is said at once, not after planning
        try:
            self.summary = self._stack.enter_context(
                self.workspace.recorded_run(self.stage, {**self.details, **self.config.model_dump(mode="json")}))
        except BaseException:
            self._close_executor(cancel=True)
            raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self._close_executor(cancel=exc_type is not None)
        finally:
            self._stack.__exit__(exc_type, exc, traceback)

    def _close_executor(self, cancel: bool) -> None:
        if self._executor is not None:
            self._executor.close(cancel=cancel)
            self._executor = None

    def map(self, tasks: Sequence[Task], process: Callable[[Task], StageResult],
            commit: Callable[[Outcome], None], description: str, report: StageReport) -> list[Outcome]:
        """Run ``process`` on every task; ``commit`` each outcome in the driver, in task order.

        A lost worker ends the map early: what finished is committed, the rest counted as not run."""
        if not tasks:
            return []
        executor = self._executor_for(len(tasks))
        function = partial(execute, process, self.stage)
        finished: dict[int, Outcome] = {}
        next_to_commit = 0
        try:
            stream = executor.run(function, tasks)
            for index, outcome in progress_bar(stream, description, self.config.show_progress, total=len(tasks)):
                finished[index] = outcome
                while next_to_commit in finished:  # plan order: the same database whatever finished first
                    commit(finished[next_to_commit])
                    next_to_commit += 1
        except WorkerLost as lost:
            report.not_run += lost.unfinished
            report.notices.append(f"{lost}: {lost.unfinished} task(s) not finished and nothing recorded for them; "
                                  "rerun the same command to resume")
        finally:
            for index in sorted(i for i in finished if i >= next_to_commit):  # finished work is never lost
                commit(finished[index])
        return [finished[index] for index in sorted(finished)]

    def _executor_for(self, n_tasks: int):
        if self._executor is not None:
            return self._executor
        executor = open_executor(self.config, n_tasks, self.stage, self.gpu, self.preload)
        if not isinstance(executor, InProcessExecutor):  # a later, larger map may still want a pool
            self._executor = executor
        return executor


# -- per-capture stages ----------------------------------------------------------------------------
@dataclass(frozen=True)
class CaptureStage:
    """A per-capture stage as the runner sees it. ``is_current(previous, task)`` says whether a
    stored result still stands (default: done, same fingerprint, output files present)."""

    name: str
    plan: Callable[[Workspace, Any], list[Task]]
    process: Callable[[Task], StageResult]
    is_current: Callable[[Workspace, dict[str, Any] | None, Task], bool] | None = None
    gpu: Callable[[Any], bool] = lambda config: False


def outputs_current(workspace: Workspace, previous: dict[str, Any] | None, task: Task) -> bool:
    return (previous is not None and previous["status"] == "done" and previous.get("fingerprint") == task.fingerprint
            and all(workspace.absolute(path).exists() for path in previous.get("files", {}).values()))


def commit_capture_outcome(workspace: Workspace, stage: str, outcome: Outcome) -> None:
    """Store a capture's result (or why it failed) with that capture's issues of the stage."""
    task = outcome.task
    if outcome.result is None:
        stored = {"fingerprint": task.fingerprint, "reason": outcome.issues[0].message}
    else:
        stored = {"fingerprint": task.fingerprint, **outcome.result.stored()}
    workspace.record_outcome(task.key, stage, outcome.status, stored, outcome.issues)


def run_capture_stage(workspace: Workspace, stage: CaptureStage, config: ExecutorSettings,
                      report: StageReport) -> StageReport:
    """Plan, skip what is current, run the rest, commit each capture as it finishes."""
    is_current = stage.is_current or outputs_current
    with StageRun(workspace, stage.name, config, gpu=stage.gpu(config), preload=[stage.process.__module__]) as run:
        workspace.replace_issues(stage.name, "workspace", [])  # issues live per capture now
        tasks = stage.plan(workspace, config)
        report.planned = len(tasks)
        todo = [task for task in tasks if not is_current(workspace, workspace.stage_result(task.key, stage.name), task)]
        report.skipped = len(tasks) - len(todo)
        if not tasks:
            report.notices.append(f"nothing to {stage.name}: no capture is ready for this stage")
        outcomes = run.map(todo, stage.process, partial(commit_capture_outcome, workspace, stage.name),
                           stage.name, report)
        for outcome in outcomes:
            report.count(outcome)
        run.summary.update(report.rows())
    return report
