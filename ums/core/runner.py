"""The stage runner: one loop for every per-capture stage, in this process, on a local process pool
or on a Dask cluster (:mod:`ums.core.executors`).

A stage is a recipe (:class:`CaptureStage`): ``plan(workspace, config) -> tasks`` and a pure,
picklable ``process(task) -> result`` that reads its inputs and writes its outputs under the
workspace through :mod:`ums.core.atomic`, plus optional hooks: what counts as current, the driver's
writes for one outcome (labels beside the result), a driver step that plans a further pass (align's
flight offset) and a final step (ingest's grouping). The runner owns everything else: the writer
lock, the run record, the progress bar, skipping current work, checking that a task's inputs are
the files their stage wrote, stamping what a task wrote, turning an exception into an issue and a
``failed`` outcome (never cached: the next run retries it; the batch goes on), and every database
write: workers never open the workspace database. Outcomes are recorded in plan order and every
worker computes on one thread, so the outputs and the manifest are the same bytes whatever the
executor, the worker count or the run. Where tasks run (:class:`ums.core.executors.ExecutorSettings`)
is passed beside a stage's config, never inside it: a task carries what to compute, and its
fingerprint cannot depend on the executor.

:class:`TaskMap` is the part that needs no workspace (``tsjnet fuse`` maps folders with it).
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

from ums.core.atomic import NoSpaceLeft
from ums.core.executors import ExecutorSettings, InProcessExecutor, WorkerLost, open_executor
from ums.core.progress import progress_bar
from ums.core.records import Issue, StageResult
from ums.core.stamps import FileStamp, first_damage, stamps
from ums.core.workspace import Workspace


def settings_fingerprint(config: BaseModel, *inputs: str, exclude: Iterable[str] = ()) -> str:
    """A short hash of a stage's inputs and of the settings that change its outputs (where the tasks
    run is no setting of a stage: it travels beside the config)."""
    settings = config.model_dump_json(exclude=set(exclude))
    return hashlib.sha256("|".join([*inputs, settings]).encode()).hexdigest()[:16]


class Task(BaseModel):
    """One unit of work for ``process``: everything it needs, nothing that needs the database."""

    model_config = ConfigDict(frozen=True)

    key: str  # the capture id (the stage-result row it fills), or a source file
    workspace_root: Path
    fingerprint: str = ""
    file: str | None = None  # the file an issue about this task names
    capture_id: str | None = None
    # files an earlier stage wrote and this task reads, with their stamps: checked before ``process``
    inputs: dict[str, FileStamp] = {}
    inputs_stage: str | None = None  # the stage that wrote them: the one to rerun when they are damaged

    def output_dir(self, stage: str) -> Path:
        return self.workspace_root / stage / self.key

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.workspace_root))


@dataclass(frozen=True)
class Outcome:
    task: Task
    result: Any  # a StageResult; None: ``process`` raised; with ``current``, what the stage kept
    issues: list[Issue]
    current: bool = False  # not run: the stored result still stands

    @property
    def status(self) -> str:
        return "failed" if self.result is None else getattr(self.result, "status", "done")


# -- running one task (on a worker) ----------------------------------------------------------------
class DamagedInput(ValueError):
    """A file an earlier stage wrote is missing, truncated or altered."""


def execute(process: Callable[[Task], StageResult], stage: str, retry: str, task: Task) -> Outcome:
    """Run ``process`` on ``task``; an exception becomes a failed outcome with an issue."""
    try:
        check_inputs(task)
        result = process(task)
        stamp_outputs(task, result)
    except NoSpaceLeft:
        raise  # the disk's, not the capture's: every task after it would fail alike, so the run stops with one line
    except Exception as exc:  # noqa: BLE001 - one bad capture never stops the batch
        return Outcome(task, None, [failure_issue(stage, task, exc, retry)])
    issues = [issue.model_copy(update={"stage": stage, "capture_id": issue.capture_id or task.capture_id,
                                       "file": issue.file or task.file}) for issue in getattr(result, "issues", [])]
    return Outcome(task, result, issues)


def check_inputs(task: Task) -> None:
    damaged = first_damage(task.workspace_root, task.inputs)
    if damaged:
        relative, problem = damaged
        producer = task.inputs_stage or "the earlier stage"
        raise DamagedInput(f"{relative} {problem}: run `ums {producer}` (it redoes damaged outputs), then this stage again")


def stamp_outputs(task: Task, result: StageResult) -> None:
    files = getattr(result, "files", None)
    if isinstance(result, StageResult) and isinstance(files, dict) and result.status == "done":
        result.outputs = stamps(task.workspace_root, files)


def failure_issue(stage: str, task: Task, error: BaseException, retry: str | None = None) -> Issue:
    expected = isinstance(error, (ValueError, OSError))
    detail = str(error) if expected else f"unexpected {type(error).__name__}: {error}"
    retry = retry or f"rerun `ums {stage}`"
    next_step = "" if isinstance(error, DamagedInput) else f" ({retry} to retry)"
    return Issue(stage=stage, file=task.file, capture_id=task.capture_id, message=f"{stage} failed: {detail}{next_step}")


# -- counts a person reads -------------------------------------------------------------------------
@dataclass
class StageReport:
    """What a run did. ``planned == done + skipped + failed + not_run``; ``rows`` names the counts."""

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
        if outcome.current:
            self.skipped += 1
        elif outcome.status == "failed":
            self.failed += 1
        else:
            self.done += 1
        self.issues.extend(outcome.issues)


# -- mapping tasks onto an executor ----------------------------------------------------------------
class TaskMap:
    """An executor kept for a run (a stage may map twice), and the map that feeds it tasks and hands
    their outcomes to the driver in task order."""

    def __init__(self, settings: ExecutorSettings | None, name: str, gpu: bool = False, preload: Sequence[str] = (),
                 retry: str | None = None):
        self.settings = settings or ExecutorSettings()
        self.name, self.gpu, self.preload = name, gpu, tuple(preload)
        self.retry = retry or f"rerun `ums {name}`"  # what a failure's issue tells the user to do
        self._executor = None

    def __enter__(self) -> TaskMap:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self.close(cancel=exc_type is not None)

    def connect(self) -> None:
        """Reach a cluster now: one that does not answer is said at once, not after planning."""
        if self.settings.scheduler or self.settings.scheduler_file:
            self._executor_for(0)

    def close(self, cancel: bool = False) -> None:
        if self._executor is not None:
            self._executor.close(cancel=cancel)
            self._executor = None

    def map(self, tasks: Sequence[Task], process: Callable[[Task], Any], record: Callable[[Outcome], None],
            description: str, report: StageReport) -> list[Outcome]:
        """Run ``process`` on every task; ``record`` each outcome in the driver, in task order.

        A lost worker ends the map early: what finished is recorded, the rest counted as not run."""
        if not tasks:
            return []
        executor = self._executor_for(len(tasks))
        link = getattr(executor, "dashboard_link", None)
        if link and not any(link in notice for notice in report.notices):
            report.notices.append(f"Dask dashboard: {link}")
        function = partial(execute, process, self.name, self.retry)
        finished: dict[int, Outcome] = {}
        next_to_record = 0
        try:
            stream = executor.run(function, tasks)
            for index, outcome in progress_bar(stream, description, self.settings.show_progress, total=len(tasks)):
                finished[index] = outcome
                while next_to_record in finished:  # plan order: the same database whatever finished first
                    record(finished[next_to_record])
                    next_to_record += 1
        except WorkerLost as lost:
            report.not_run += lost.unfinished
            report.notices.append(f"{lost}: {lost.unfinished} task(s) not finished and nothing recorded for them; "
                                  "rerun the same command to resume")
        finally:
            for index in sorted(i for i in finished if i >= next_to_record):  # finished work is never lost
                record(finished[index])
        return [finished[index] for index in sorted(finished)]

    def _executor_for(self, n_tasks: int):
        if self._executor is not None:
            return self._executor
        executor = open_executor(self.settings, n_tasks, self.name, self.gpu, self.preload)
        if not isinstance(executor, InProcessExecutor):  # a later, larger map may still want a pool
            self._executor = executor
        return executor


class StageRun(TaskMap):
    """A :class:`TaskMap` under the workspace's writer lock, with the run recorded: the stage's
    settings, and under ``executor`` where it ran."""

    def __init__(self, workspace: Workspace, stage: str, config: BaseModel, executor: ExecutorSettings | None = None,
                 gpu: bool = False, preload: Sequence[str] = (), details: dict[str, Any] | None = None):
        super().__init__(executor, stage, gpu, preload)
        self.workspace, self.stage, self.config = workspace, stage, config
        self.details = details or {}
        self.summary: dict[str, Any] = {}
        self._stack = ExitStack()

    def __enter__(self) -> StageRun:
        self.connect()
        try:
            self.summary = self._stack.enter_context(
                self.workspace.recorded_run(self.stage, {**self.details, **self.config.model_dump(mode="json"),
                                                         "executor": self.settings.model_dump(mode="json")}))
        except BaseException:
            self.close(cancel=True)
            raise
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            self.close(cancel=exc_type is not None)
        finally:
            self._stack.__exit__(exc_type, exc, traceback)


# -- the stage recipe ------------------------------------------------------------------------------
@dataclass
class StageContext:
    """What a stage's hooks see in the driver: the run's workspace, settings, report, and ``state``
    for what one pass hands the next (align's estimates, ingest's probes)."""

    workspace: Workspace
    stage: str
    config: Any
    report: StageReport
    state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Pass:
    """One map over tasks: those ``current`` are recorded as kept, the rest run on the executor."""

    tasks: list[Task]
    process: Callable[[Task], Any]
    current: Callable[[StageContext, Task], Any]  # the stored result that still stands, or None
    record: Callable[[StageContext, Outcome], None]
    description: str
    then: Callable[[StageContext, Pass], Pass | None] | None = None  # plans the pass that follows this one


@dataclass(frozen=True)
class CaptureStage:
    """A per-capture stage as the runner sees it.

    ``current(context, task)``: the stored result when it still stands (default: done, same
    fingerprint, every output intact against its stamp). ``record(context, outcome)``: the driver's
    writes for one outcome, kept or new (default: the stage result with the capture's issues, counted).
    ``then(context, finished)``: a further pass planned in the driver from the pass just run, or None.
    ``finish(context)``: the driver's last step, after every pass."""

    name: str
    plan: Callable[[Workspace, Any], list[Task]]
    process: Callable[[Task], Any]
    current: Callable[[StageContext, Task], Any] | None = None
    record: Callable[[StageContext, Outcome], None] | None = None
    then: Callable[[StageContext, Pass], Pass | None] | None = None
    finish: Callable[[StageContext], None] | None = None
    gpu: Callable[[Any], bool] = lambda config: False
    nothing_to_do: str = "no capture is ready for this stage"
    details: Callable[[Any], dict[str, Any]] = lambda config: {}

    def first_pass(self, context: StageContext) -> Pass:
        return Pass(self.plan(context.workspace, context.config), self.process, self.current or stored_result_current,
                    self.record or record_capture_outcome, self.name, self.then)


def stored_result_current(context: StageContext, task: Task) -> dict[str, Any] | None:
    previous = context.workspace.stage_result(task.key, context.stage)
    return previous if outputs_current(context.workspace, previous, task) else None


def outputs_current(workspace: Workspace, previous: dict[str, Any] | None, task: Task) -> bool:
    """Done with the same fingerprint, and every output the result names is the file it wrote."""
    if previous is None or previous["status"] != "done" or previous.get("fingerprint") != task.fingerprint:
        return False
    return outputs_intact(workspace, previous)


def outputs_intact(workspace: Workspace, previous: dict[str, Any]) -> bool:
    """Every output a stored result names is the file its stage wrote (by its stamp)."""
    if previous.get("outputs") is not None:
        return first_damage(workspace.root, previous["outputs"]) is None
    # a result from before outputs were stamped: its files must at least exist
    return all(workspace.absolute(path).exists() for path in previous.get("files", {}).values())


def record_capture_outcome(context: StageContext, outcome: Outcome) -> None:
    """Store a capture's result (or why it failed) with that capture's issues of the stage, and count it."""
    if not outcome.current:
        store_capture_outcome(context.workspace, context.stage, outcome)
    context.report.count(outcome)


def store_capture_outcome(workspace: Workspace, stage: str, outcome: Outcome, status: str | None = None,
                          extra: dict[str, Any] | None = None) -> None:
    task = outcome.task
    if outcome.result is None:
        stored = {"fingerprint": task.fingerprint, "reason": outcome.issues[0].message}
    else:
        stored = {"fingerprint": task.fingerprint, **outcome.result.stored(), **(extra or {})}
    workspace.record_outcome(task.key, stage, status or outcome.status, stored, outcome.issues)


def run_pass(run: TaskMap, context: StageContext, stage_pass: Pass) -> list[Outcome]:
    """Record what is current as kept, run the rest; every outcome goes through the pass's ``record``."""
    todo = []
    for task in stage_pass.tasks:
        kept = stage_pass.current(context, task)
        if kept is None:
            todo.append(task)
        else:
            stage_pass.record(context, Outcome(task, kept, [], current=True))
    return run.map(todo, stage_pass.process, partial(stage_pass.record, context), stage_pass.description, context.report)


def run_capture_stage(workspace: Workspace, stage: CaptureStage, config: BaseModel, report: StageReport,
                      executor: ExecutorSettings | None = None) -> StageReport:
    """Plan, skip what is current, run the rest on ``executor`` (None: its defaults), record each
    capture as it finishes; then any further pass the stage plans, and its final step."""
    with StageRun(workspace, stage.name, config, executor, gpu=stage.gpu(config), preload=[stage.process.__module__],
                  details=stage.details(config)) as run:
        workspace.replace_issues(stage.name, "workspace", [])  # issues live per capture now
        context = StageContext(workspace, stage.name, config, report)
        stage_pass: Pass | None = stage.first_pass(context)
        report.planned = len(stage_pass.tasks)
        if not stage_pass.tasks:
            report.notices.append(f"nothing to {stage.name}: {stage.nothing_to_do}")
        while stage_pass is not None:
            run_pass(run, context, stage_pass)
            stage_pass = stage_pass.then(context, stage_pass) if stage_pass.then else None
        if stage.finish:
            stage.finish(context)
        run.summary.update(report.rows())
    return report
