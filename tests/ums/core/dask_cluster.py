"""A Dask cluster on 127.0.0.1 started as a real one is: a `dask scheduler` and single-threaded
`dask worker` processes. Shared by the runner's tests and bench/stage_throughput.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DASK = Path(sys.executable).parent / "dask"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def loopback_cluster(workers: int, folder: Path, pythonpath: Path | None = None, threads: int = 1) -> Iterator[str]:
    """Yield the scheduler's address once every worker has joined; stop them all on exit.

    ``pythonpath`` lets workers import code that is not installed (a test's own stage), as a cluster
    imports a user's code."""
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, **({"PYTHONPATH": str(pythonpath)} if pythonpath else {})}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                  "--no-dashboard"], cwd=folder, **quiet)
    processes = [scheduler] + [
        subprocess.Popen([str(DASK), "worker", address, "--host", "127.0.0.1", "--nthreads", str(threads), "--no-dashboard",
                          "--name", f"w{i}"], cwd=Path.cwd(), **quiet) for i in range(workers)]
    try:
        from distributed import Client

        with Client(address, timeout="30s") as client:
            client.wait_for_workers(workers, timeout=60)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
