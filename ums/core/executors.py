"""Where a batch of independent tasks runs: in this process, on a local process pool, or on a Dask
cluster. Knows nothing of workspaces: the stage runner (:mod:`ums.core.runner`) and ``tsjnet fuse`` use it.

Every worker computes on one thread (OpenCV, torch, BLAS): parallelism comes from processes, and
thread-parallel reductions would change results in their last bits.
"""

from __future__ import annotations

import multiprocessing
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

DASK_CONNECT_TIMEOUT_S = 10
DRIVER_WATCH_S = 1.0  # how often a pool worker checks that its driver still lives
T = TypeVar("T")
R = TypeVar("R")


class ExecutorError(RuntimeError):
    """The executor could not be started or reached (a Dask scheduler that does not answer)."""


class WorkerLost(RuntimeError):
    """A worker process died (killed, out of memory) with tasks unfinished."""

    def __init__(self, unfinished: int, detail: str):
        super().__init__(detail)
        self.unfinished = unfinished


class ExecutorSettings(BaseModel):
    """Where a stage's tasks run, passed beside the stage's config, never inside it: a task carries
    what to compute, not where (CLI: --workers, --executor, --scheduler, --scheduler-file,
    --dashboard; a ``--config`` file's ``executor:`` section). None of them changes a result."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(0, ge=0, description="worker processes; 0: one per CPU core; 1: in this process")
    executor: Literal["local", "dask"] = Field("local", description="local process pool, or a Dask cluster")
    scheduler: str | None = Field(None, description="address of a running Dask scheduler, e.g. tcp://10.0.0.5:8786")
    scheduler_file: Path | None = Field(None, description="scheduler file written by `dask scheduler --scheduler-file`")
    show_progress: bool = True
    dashboard: bool = Field(False, description="Dask: serve the dashboard of the LocalCluster this command starts on "
                            "127.0.0.1, or name the running cluster's own (its link is printed)")

    @model_validator(mode="before")
    @classmethod
    def _an_address_means_dask(cls, data):
        # an address says where the cluster is (an option, or a config file's executor: section): no need to say Dask too
        if isinstance(data, dict) and "executor" not in data and (data.get("scheduler") or data.get("scheduler_file")):
            return {**data, "executor": "dask"}
        return data

    @model_validator(mode="after")
    def _workers_are_local(self) -> ExecutorSettings:
        # silently ignoring --workers would leave a user believing it limits a shared cluster
        if self.workers and (self.scheduler or self.scheduler_file):
            raise ValueError("workers applies to processes this command starts; a running Dask cluster has the "
                             "workers it was started with: drop --workers (or start `dask worker --nworkers N` there)")
        return self


ONE_THREAD_ENVIRONMENT = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads() -> None:
    """OpenCV, torch (when loaded) and every BLAS/OpenMP pool loaded now on one thread, for good."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    torch = sys.modules.get("torch")
    if torch:
        torch.set_num_threads(1)
    threadpool_limits(1)  # not used as a context: the limit stays for the process's life


@contextmanager
def single_threaded() -> Iterator[None]:
    """OpenCV, torch and BLAS on one thread, restored afterwards.

    Parallelism comes from processes; thread-parallel reductions in OpenCV and torch change results
    in their last bits (a fused image differed between 1 and 2 torch threads), which a dataset tool
    must not. A library first loaded inside (torch, by a model loader) reads the environment."""
    import cv2
    from threadpoolctl import threadpool_limits

    saved_environment = {name: os.environ.get(name) for name in ONE_THREAD_ENVIRONMENT}
    os.environ.update(dict.fromkeys(ONE_THREAD_ENVIRONMENT, "1"))
    torch = sys.modules.get("torch")
    previous_cv, previous_torch = cv2.getNumThreads(), torch.get_num_threads() if torch else None
    limits = threadpool_limits(1)
    cv2.setNumThreads(1)
    if torch:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        limits.restore_original_limits()
        cv2.setNumThreads(previous_cv)
        torch = sys.modules.get("torch")
        if torch:
            torch.set_num_threads(previous_torch or default_workers())
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _pool_worker_init(driver_pid: int, devices=None) -> None:
    """Each pool worker: one thread per library for its whole life; Ctrl-C is the driver's; it
    leaves when the driver dies; and on a GPU stage it takes one GPU of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if devices is not None:  # before CUDA starts in this process: the worker then sees only its GPU
        os.environ["CUDA_VISIBLE_DEVICES"] = str(devices.get())
    os.environ.update(dict.fromkeys(ONE_THREAD_ENVIRONMENT, "1"))  # for libraries a task loads later
    pin_threads()
    reuse_freed_memory()
    threading.Thread(target=_exit_with, args=(driver_pid,), name="ums-driver-watch", daemon=True).start()


def _exit_with(driver_pid: int) -> None:
    """A pool worker waits on its task queue forever when the driver dies without closing the pool
    (kill -9, the out-of-memory killer): nothing else would ever end it, nor its forkserver."""
    while True:
        time.sleep(DRIVER_WATCH_S)
        if not _alive(driver_pid):
            os._exit(1)


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs. A killed driver whose own parent has not reaped it yet (one that
    is blocked reading the driver's pipes, which these workers hold open) is a zombie: it answers
    a signal-0 probe like a live process, so its state is read as well."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no procfs: the signal probe is all there is
    return state not in (b"Z", b"X")


def _call_single_threaded(function: Callable[[T], R], task: T) -> R:
    """On a Dask worker: pinned per task, not for the worker's life (the cluster may be shared)."""
    reuse_freed_memory()
    with single_threaded():
        return function(task)


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MALLOC_TUNED: list[bool] = []


def _c_library():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def reuse_freed_memory() -> None:
    """Let glibc keep freed image buffers for reuse in this process, once per process (every process
    that runs tasks: pool workers, a Dask worker, the driver running a batch itself).

    By default glibc serves each array above 128 KB (one 640x512 image plane is 1.3 MB) with a fresh
    mmap, or hands the top of its heap back to the OS as soon as 2x its adaptive threshold lies free
    there; either way the next image faults its pages in one by one, and on a virtual machine a
    page fault is dear. A gradient map of align's ECC took 5.4 ms that way and 1.9 ms with the
    thresholds fixed at 32 MB (mmap) and 64 MB (trim); the geometry pipeline as a whole ran in
    0.85x the time (bench/RESULTS.md, "Freed memory"). A Dask nanny makes it worse: it starts its
    worker with MALLOC_TRIM_THRESHOLD_=65536, which also pins the mmap threshold at 128 KB (align's
    registration took 2.4x the CPU time). The process still returns freed memory beyond 64 MB."""
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED.append(True)
    try:
        libc = _c_library()
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)
    except (OSError, AttributeError):
        pass  # not glibc: its allocator has no such thresholds


# -- executors -------------------------------------------------------------------------------------
class InProcessExecutor:
    """``--workers 1``: the tasks run here, one after another."""

    def run(self, function: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        reuse_freed_memory()
        with single_threaded():
            for index, task in enumerate(tasks):
                yield index, function(task)

    def close(self, cancel: bool = False) -> None:
        pass


class LocalPoolExecutor:
    """A process pool on this machine (forkserver: forking a process that runs threads can
    deadlock the child; the server preloads the stage's module so workers start fast)."""

    def __init__(self, workers: int, preload: Sequence[str], gpus: Sequence[int] | None = None):
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["ums.core.executors", *preload])
        else:
            context = multiprocessing.get_context("spawn")
        self.workers = workers
        devices = None
        if gpus is not None:
            devices = context.Queue()
            for index in gpus:
                devices.put(index)
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_pool_worker_init,
                                         initargs=(os.getpid(), devices))

    def run(self, function: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
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

    def __init__(self, settings: ExecutorSettings, workers: int, gpu: bool, name: str):
        from distributed import Client, LocalCluster

        self._cluster = None
        self._own_client = True
        self.name = name  # the batch's name: task keys and messages
        self.gpu = gpu
        address = settings.scheduler or (None if settings.scheduler_file else configured_scheduler())
        existing = None if (address or settings.scheduler_file) else existing_client()
        try:
            if existing is not None:  # the API called from a session that already holds a client
                where = f"this process's Dask client ({existing.scheduler.address})"
                self.client, self._own_client = existing, False
            elif address or settings.scheduler_file:
                where = address or f"the scheduler file {settings.scheduler_file}"
                self.client = Client(address, scheduler_file=str(settings.scheduler_file) if settings.scheduler_file else None,
                                     timeout=f"{DASK_CONNECT_TIMEOUT_S}s", set_as_default=False)
            else:
                where = "a LocalCluster on 127.0.0.1"
                dashboard = "127.0.0.1:0" if settings.dashboard else None  # a free port, never another interface
                self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                                             dashboard_address=dashboard, silence_logs=40)
                self.client = Client(self._cluster, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            self.close()
            raise ExecutorError(f"cannot reach the Dask scheduler ({where}) within {DASK_CONNECT_TIMEOUT_S} s: {exc}; "
                                "is `dask scheduler` running there, and is the address right?") from exc
        self._require_single_threaded_workers(where)
        if gpu:
            self._require_gpu_workers(where)
        self.dashboard_link = self.client.dashboard_link if settings.dashboard else None

    def _require_single_threaded_workers(self, where: str) -> None:
        """Refuse workers with several threads: each task pins OpenCV, torch and BLAS to one thread
        for its duration, and tasks running side by side in one process would undo each other's
        settings, so results would depend on the cluster."""
        threads = sorted({info.get("nthreads", 1) for info in self.client.scheduler_info().get("workers", {}).values()})
        if threads and threads[-1] > 1:
            self.close()
            raise ExecutorError(f"the workers of {where} run {threads[-1]} threads each; ums needs single-threaded "
                                "workers so that results never depend on the cluster: start them with "
                                "`dask worker ... --nthreads 1` (and --nworkers N for several per machine)")

    def _require_gpu_workers(self, where: str) -> None:
        workers = self.client.scheduler_info().get("workers", {})
        if not any(w.get("resources", {}).get("GPU") for w in workers.values()):
            self.close()
            raise ExecutorError(f"`{self.name}` runs on a GPU, but no worker of {where} offers a GPU "
                                "resource: start the workers with `dask worker ... --resources GPU=1`")

    def run(self, function: Callable[[T], R], tasks: Sequence[T]) -> Iterator[tuple[int, R]]:
        from distributed import as_completed as dask_completed
        from distributed.scheduler import KilledWorker

        token = os.urandom(4).hex()
        resources = {"GPU": 1} if self.gpu else None
        futures = {self.client.submit(_call_single_threaded, function, task, key=f"{self.name}-{token}-{index}", pure=False,
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
        if client is not None and self._own_client:
            client.close()
        if cluster is not None:
            cluster.close()


def configured_scheduler() -> str | None:
    """A scheduler address from Dask's own configuration (DASK_SCHEDULER_ADDRESS, dask.yaml)."""
    import dask

    return dask.config.get("scheduler-address", None)


def existing_client():
    """The Dask client this process made its default, if any."""
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def open_executor(settings: ExecutorSettings, n_tasks: int, name: str, gpu: bool = False, preload: Sequence[str] = ()):
    """The executor ``settings`` ask for, sized to ``n_tasks`` (a small local batch runs in process)."""
    if settings.executor == "dask":
        return DaskExecutor(settings, settings.workers or default_workers(), gpu, name)
    if gpu:
        workers = min(gpu_workers(settings, name), n_tasks)
        return LocalPoolExecutor(workers, preload, gpus=range(workers)) if workers > 1 else InProcessExecutor()
    workers = min(settings.workers or default_workers(), n_tasks)
    if workers <= 1:
        return InProcessExecutor()
    return LocalPoolExecutor(workers, preload)


def gpu_workers(settings: ExecutorSettings, name: str) -> int:
    """One local worker per GPU: more would load a model per process onto one card."""
    gpus = max(gpu_count(), 1)  # none: one worker, whose model loader says there is no GPU
    if settings.workers > gpus:
        raise ExecutorError(f"`{name}` runs on the GPU and this machine has {gpus} GPU(s): one worker per GPU, so "
                            f"--workers {settings.workers} cannot be honoured (drop --workers, or use --workers {gpus})")
    return settings.workers or gpus


def gpu_count() -> int:
    """CUDA devices torch sees. A GPU stage loads its model, and so torch, in the driver before its
    run starts (to fail early naming the weights); this layer never imports a model library itself."""
    torch = sys.modules.get("torch")
    return torch.cuda.device_count() if torch is not None else 0
