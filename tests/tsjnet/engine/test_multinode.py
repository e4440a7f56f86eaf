"""`tsjnet train` on two "nodes": two torchrun launches joined by a c10d rendezvous on 127.0.0.1 (gloo, CPU)
train as ONE job of world size 2, bit for bit the job that a single `torchrun --nproc-per-node 2` runs.

torchrun's rendezvous TCPStore listens on every interface whatever host it is given (PyTorch has no bind
address for it), so where user namespaces allow, every launch runs in one private network namespace that
holds nothing but ``lo``: no server is reachable from outside 127.0.0.1 and nothing leaves it.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import PROJECT_ROOT
from tests.tsjnet.conftest import make_ums_export
from tsjnet.engine.state import load_state

TINY_CONFIG = PROJECT_ROOT / "pipelines" / "train-tiny.yaml"
TIMEOUT_S = 300
DONE = "trained 2 steps (1 epochs)"  # 8 training pairs, 2 per step per process: 2 steps for world size 2 (4 for 1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def loopback_namespace():
    """The command prefix that enters a private network namespace holding only ``lo`` ([] where unavailable)."""
    if not all(shutil.which(tool) for tool in ("unshare", "nsenter", "ip")):
        yield []
        return
    holder = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sh", "-c",
                               "ip link set lo up && echo ready && exec sleep 3600"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        prefix = ["nsenter", "--target", str(holder.pid), "--user", "--net", "--"]
        ready = holder.stdout.readline().strip() == "ready"
        usable = ready and subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
        yield prefix if usable else []
    finally:
        holder.kill()
        holder.wait()


def environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("TORCHELASTIC_", "MASTER_", "GLOO_", "NCCL_"))
           and key not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(PROJECT_ROOT),
            "PYTHONUNBUFFERED": "1"}


def run_launches(prefix: list[str], launches: list[list[str]], data: Path, out: Path, logs: Path) -> list[str]:
    """Start every torchrun launch at once, each in its own session; wait for all (killing all on a failure or
    the timeout); return their outputs."""
    train = ["-m", "tsjnet.cli", "train", "--data", str(data), "--config", str(TINY_CONFIG), "--out", str(out),
             "--no-pretrained", "--epochs", "1", "--device", "cpu", "--no-progress"]
    processes, paths = [], []
    try:
        for index, torchrun in enumerate(launches):
            paths.append(logs / f"{out.name}-{index}.log")
            with open(paths[-1], "wb") as log:
                processes.append(subprocess.Popen(
                    [*prefix, sys.executable, "-m", "torch.distributed.run", *torchrun, "--local-addr", "127.0.0.1",
                     "--max-restarts", "0", *train],
                    cwd=PROJECT_ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline and any(p.poll() is None for p in processes):
            if any(p.poll() not in (None, 0) for p in processes):
                break
            time.sleep(0.5)
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    outputs = [path.read_text(errors="replace") for path in paths]
    codes = [p.returncode for p in processes]
    assert codes == [0] * len(launches), "\n\n".join(f"rc {c}:\n{o[-3000:]}" for c, o in zip(codes, outputs))
    return outputs


@pytest.mark.slow
def test_two_torchrun_nodes_train_as_one_job(tmp_path):
    data = make_ums_export(tmp_path / "data", names=tuple("abcdefghi"))  # train a-h, val i
    endpoint, run_id = f"127.0.0.1:{free_port()}", f"tsjnet-test-{os.getpid()}"
    with loopback_namespace() as prefix:
        # --node-rank is left out: c10d ignores it and ranks nodes as they join; is_host picks the store's host
        nodes = [["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint,
                  "--rdzv-id", run_id, "--rdzv-conf", f"is_host={int(node == 0)}"] for node in (0, 1)]
        outputs = run_launches(prefix, nodes, data, tmp_path / "nodes", tmp_path)
        run_launches(prefix, [["--standalone", "--nnodes", "1", "--nproc-per-node", "2"]], data, tmp_path / "single",
                     tmp_path)

    assert sum(DONE in output for output in outputs) == 1, outputs  # one job, one rank 0, which alone reports
    with open(tmp_path / "nodes" / "metrics.csv", newline="") as handle:
        assert [int(row["step"]) for row in csv.DictReader(handle)] == [1, 2]
    counters = load_state(tmp_path / "nodes" / "checkpoints" / "last.pt")["counters"]
    assert (counters["global_step"], counters["epoch"]) == (2, 1)
    nodes, single = load_file(tmp_path / "nodes" / "tsjnet.safetensors"), load_file(tmp_path / "single" / "tsjnet.safetensors")
    assert nodes.keys() == single.keys() and all(torch.equal(nodes[key], single[key]) for key in nodes)
