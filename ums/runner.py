"""The stage runner: one loop for every per-capture stage, in this process, on a local process pool
or on a Dask cluster.

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
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ums.progress import progress_bar
from ums.records import Issue, StageResult
from ums.workspace import Workspace

DASK_CONNECT_TIMEOUT_S = 10


class ExecutorError(RuntimeError):
    """The executor could not be started or reached (a Dask scheduler that does not answer)."""


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory) with tasks unfinished."""

    def __init__(self, unfinished: int, detail: str):
        super().__init__(detail)
        self.unfinished = unfinished


class ExecutorSettings(BaseModel):
    """How a stage's tasks run: the same keys on every per-capture stage (CLI: --workers,
    --executor, --scheduler, --scheduler-file). None of them changes a result."""

    model_config = ConfigDict(extra="forbid")

    workers: int = Field(0, ge=0, description="worker processes; 0: one per CPU core; 1: in this process")
    executor: Literal["local", "dask"] = Field("local", description="local process pool, or a Dask cluster")
    scheduler: str | None = Field(None, description="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    scheduler_file: Path | None = Field(None, description="scheduler file written by `dask scheduler --scheduler-file`")
    show_progress: bool = True


RUNNER_FIELDS = frozenset(ExecutorSettings.model_fields)


def settings_fingerprint(config: BaseModel, *inputs: str, exclude: Iterable[str] = ()) -> str:
    """A short hash of a stage's inputs and of the settings that change its outputs."""
    settings = config.model_dump_json(exclude=set(RUNNER_FIELDS) | set(exclude))
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


@contextmanager
def single_threaded() -> Iterator[None]:
    """OpenCV, torch and BLAS on one thread, restored afterwards.

    Parallelism comes from processes; thread-parallel reductions in OpenCV and torch change results
    in the last bits (two align runs differed by up to 4e-4 in transforms), which a dataset tool
    must not."""
    import cv2
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    previous = cv2.getNumThreads(), torch.get_num_threads() if torch else None
    cv2.setNumThreads(1)
    if torch:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        cv2.setNumThreads(previous[0])
        if torch:
            torch.set_num_threads(previous[1])


def _pool_worker_init() -> None:
    """Each pool worker: one thread per library for its whole life; Ctrl-C is the driver's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"  # for libraries a task imports later
    single_threaded().__enter__()  # never exited: the process ends with the pool


def _run_pinned(process, stage: str, task: Task) -> Outcome:
    with single_threaded():
        return execute(process, stage, task)


# -- executors -------------------------------------------------------------------------------------
class InProcessExecutor:
    """``--workers 1``: the tasks run here, one after another."""

    def run(self, function: Callable[[Task], Outcome], tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        with single_threaded():
            for index, task in enumerate(tasks):
                yield index, function(task)

    def close(self, cancel: bool = False) -> None:
        pass


class LocalPoolExecutor:
    """A process pool on this machine (forkserver: forking a process that runs threads can
    deadlock the child; the server preloads the stage's module so workers start fast)."""

    def __init__(self, workers: int, preload: Sequence[str]):
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["ums.runner", *preload])
        else:
            context = multiprocessing.get_context("spawn")
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_worker_init)

    def run(self, function, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        futures = {self._pool.submit(function, task): index for index, task in enumerate(tasks)}
        delivered = set()
        try:
            for future in as_completed(futures):
                outcome = future.result()
                delivered.add(future)
                yield futures[future], outcome
        except BrokenProcessPool:
            for future, index in futures.items():  # what finished before the death is kept
                if future not in delivered and future.done() and future.exception() is None:
                    delivered.add(future)
                    yield index, future.result()
            raise WorkerLost(len(futures) - len(delivered), "a worker process died (killed, or out of memory)") from None

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for process in list(getattr(self._pool, "_processes", {}).values()):
                process.terminate()  # a running task would otherwise finish first
        self._pool.shutdown(wait=True, cancel_futures=cancel)


class DaskExecutor:
    """Tasks on a Dask distributed cluster: an existing one (``--scheduler``, ``--scheduler-file``;
    dask-jobqueue on SLURM/PBS, Kubernetes, or `dask scheduler` / `dask worker` by hand) or a
    LocalCluster on 127.0.0.1. Workers must see the workspace at the same path."""

    def __init__(self, settings: ExecutorSettings, workers: int, gpu: bool, stage: str):
        from distributed import Client, LocalCluster

        self._cluster = None
        self.stage = stage
        self.gpu = gpu
        address = settings.scheduler
        try:
            if address or settings.scheduler_file:
                where = address or f"the scheduler file {settings.scheduler_file}"
                self.client = Client(address, scheduler_file=str(settings.scheduler_file) if settings.scheduler_file else None,
                                     timeout=f"{DASK_CONNECT_TIMEOUT_S}s", set_as_default=False)
            else:
                where = "a LocalCluster on 127.0.0.1"
                self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                             dashboard_address=None, silence_logs=40)
                self.client = Client(self._cluster, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            raise ExecutorError(f"cannot reach the Dask scheduler ({where}) within {DASK_CONNECT_TIMEOUT_S} s: {exc}; "
                                "is `dask scheduler` running there, and is the address right?") from exc
        if gpu:
            self._require_gpu_workers(where)

    def _require_gpu_workers(self, where: str) -> None:
        workers = self.client.scheduler_info().get("workers", {})
        if not any(w.get("resources", {}).get("GPU") for w in workers.values()):
            self.close()
            raise ExecutorError(f"the `{self.stage}` stage runs on a GPU, but no worker of {where} offers a GPU "
                                "resource: start the workers with `dask worker ... --resources GPU=1`")

    def run(self, function, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        from distributed import as_completed as dask_completed
        from distributed.scheduler import KilledWorker

        token = os.urandom(4).hex()
        resources = {"GPU": 1} if self.gpu else None
        futures = {self.client.submit(function, task, key=f"{self.stage}-{token}-{index}", pure=False,
                                      resources=resources): index for index, task in enumerate(tasks)}
        delivered = 0
        try:
            for future in dask_completed(futures, loop=self.client.loop):  # not the default client: we set none
                outcome = future.result()
                delivered += 1
                yield futures[future], outcome
        except KilledWorker as exc:
            raise WorkerLost(len(futures) - delivered, f"Dask gave up on a task whose workers kept dying: {exc}") from None
        finally:
            self.client.cancel(list(futures))

    def close(self, cancel: bool = False) -> None:
        client, cluster = getattr(self, "client", None), self._cluster
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


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
        self._stack.enter_context(self.workspace.writing(self.stage))
        if self.config.scheduler or self.config.scheduler_file:
            self._connect_or_release()  # a cluster that does not answer is said at once, not after planning
        self.run_id = self.workspace.start_run(self.stage, {**self.details, **self.config.model_dump(mode="json")})
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if self._executor is not None:
                self._executor.close(cancel=exc_type is not None)
            if exc_type is not None:
                self.summary["interrupted"] = exc_type.__name__
            self.workspace.finish_run(self.run_id, {k: str(v) for k, v in self.summary.items()})
        finally:
            self._stack.close()

    def _connect_or_release(self) -> None:
        try:
            self._executor_for(0)
        except BaseException:
            self._stack.close()
            raise

    def map(self, tasks: Sequence[Task], process: Callable[[Task], StageResult],
            commit: Callable[[Outcome], None], description: str, report: StageReport) -> list[Outcome]:
        """Run ``process`` on every task; ``commit`` each outcome in the driver, in task order.

        A lost worker ends the map early: what finished is committed, the rest counted as not run."""
        if not tasks:
            return []
        executor = self._executor_for(len(tasks))
        function = partial(_run_pinned if isinstance(executor, DaskExecutor) else execute, process, self.stage)
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
        settings = self.config
        if self._executor is not None:
            return self._executor
        if settings.executor == "dask":
            workers = settings.workers or default_workers()
            self._executor = DaskExecutor(settings, workers, self.gpu, self.stage)
            return self._executor
        workers = min(settings.workers or default_workers(), n_tasks)
        if workers <= 1:
            return InProcessExecutor()  # not kept: a later, larger map may still want the pool
        self._executor = LocalPoolExecutor(workers, self.preload)
        return self._executor


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
        run.summary = dict(report.rows())
    return report
