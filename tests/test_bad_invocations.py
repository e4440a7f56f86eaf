"""Every mistake one line: bad invocations of both commands end with exactly one ``error:`` line, the
exit code the project promises (2: the user's mistake; 1: the command did nothing it was asked) and
never a traceback. A few run as real processes, the way a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import PROJECT_ROOT, aligned_workspace
from tsjnet.cli import app as tsjnet_app
from ums.cli import app as ums_app

APPS = {"ums": ums_app, "tsjnet": tsjnet_app}


@pytest.fixture(scope="module")
def places(synthetic_flight, tmp_path_factory) -> SimpleNamespace:
    """The folders and files the bad invocations point at (made once: most cases only read them)."""
    from ums.export import export_workspace
    from ums.core.executors import ExecutorSettings
    from ums.ingest import IngestConfig, ingest_flight
    from ums.core.workspace import Workspace

    base = tmp_path_factory.mktemp("bad")
    with Workspace.open(base / "ingested") as ws:
        ingest_flight(ws, synthetic_flight, IngestConfig(), ExecutorSettings(show_progress=False))
    aligned = aligned_workspace(synthetic_flight, base / "aligned")
    export_workspace(aligned, base / "coco-export", "coco")
    aligned.close()
    for folder in ("foreign", "home", "empty-home", "ir", "vi"):
        (base / folder).mkdir()
    (base / "foreign" / "notes.txt").write_text("not an export")
    (base / "a-file.txt").write_text("a file, not a folder")
    (base / "home" / "yolov8n.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    (base / "broken.yaml").write_text("seed: [1,\n")
    (base / "bad-value.yaml").write_text("timestamp_tolerance_s: fast\n")
    (base / "crop-workers.yaml").write_text("output_width: 640\nworkers: 4\n")  # the form before `executor:`
    (base / "train-amp.yaml").write_text("amp: fp8\n")
    (base / "train-batch.yaml").write_text("batch_size: 1\n")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}"
    return SimpleNamespace(base=base, ingested=base / "ingested", aligned=base / "aligned", coco=base / "coco-export",
                           foreign=base / "foreign", file=base / "a-file.txt", home=base / "home",
                           empty_home=base / "empty-home", ir=base / "ir", vi=base / "vi", closed=closed,
                           flight=synthetic_flight)


@dataclass(frozen=True)
class Case:
    id: str
    cli: str
    args: Callable[[SimpleNamespace], list[str]]
    code: int
    says: Callable[[SimpleNamespace], str] | str  # in the error line
    env: Callable[[SimpleNamespace], dict[str, str]] = field(default=lambda p: {})
    no_gpu: bool = False  # the check a machine without a GPU makes, made the same on one with a GPU


def weights_env(home: str = "home", mirror: str | None = None) -> Callable[[SimpleNamespace], dict[str, str]]:
    return lambda p: {"UMS_HOME": str(getattr(p, home)), "UMS_WEIGHTS_MIRROR": p.closed if mirror == "closed" else ""}


CASES = [
    # -- the failures users found --------------------------------------------------------------
    Case("review before align", "ums", lambda p: ["review", "-w", str(p.ingested), "--no-launch"], 1,
         "nothing to review: no capture in"),
    Case("export into a file", "ums", lambda p: ["export", str(p.file), "-f", "msrs", "-w", str(p.aligned)], 2,
         lambda p: f"{p.file} is a file, not a folder"),
    Case("fuse on a missing GPU", "tsjnet", lambda p: ["fuse", "--ir", str(p.ir), "--vi", str(p.vi), "--out",
                                                      str(p.base / "fused"), "--device", "cuda"], 2,
         "--device cuda: torch sees no CUDA GPU", no_gpu=True),
    Case("train batch of one", "tsjnet", lambda p: ["train", "--data", str(p.base), "--batch-size", "1"], 2,
         "invalid value for '--batch-size': should be greater than or equal to 2"),
    Case("fuse method foo", "tsjnet", lambda p: ["fuse", "--ir", "a", "--vi", "b", "--out", "c", "--method", "foo"], 2,
         "'foo' is not one of tsjnet, mean, max, laplacian"),
    Case("fuse precision fp8", "tsjnet", lambda p: ["fuse", "--ir", "a", "--vi", "b", "--out", "c", "--precision", "fp8"], 2,
         "invalid value for '--precision': 'fp8' is not one of fp32, bf16, fp16"),
    Case("align motion affine", "ums", lambda p: ["align", "-w", str(p.ingested), "--motion", "affine"], 2,
         "'affine' is not one of translation, euclidean, similarity"),
    Case("export into a foreign folder", "ums", lambda p: ["export", str(p.foreign), "-f", "coco", "-w", str(p.aligned)], 2,
         "is not empty and is no ums export (choose a new or empty folder, or add --overwrite"),
    Case("export over another layout", "ums", lambda p: ["export", str(p.coco), "-f", "yolo", "-w", str(p.aligned)], 2,
         "holds a coco export of this workspace, which a yolo export would mix with"),
    Case("export with nothing aligned", "ums", lambda p: ["export", str(p.base / "new-export"), "-f", "msrs",
                                                          "-w", str(p.ingested)], 1, "nothing to export"),
    Case("export into the workspace", "ums", lambda p: ["export", str(p.aligned / "out"), "-f", "voc", "-w", str(p.aligned)],
         2, "is inside the workspace"),
    Case("verify a random yolov8n.pt", "ums", lambda p: ["weights", "verify", "yolov8n"], 1,
         "not a PyTorch checkpoint", env=weights_env()),
    Case("download from a dead mirror", "ums", lambda p: ["weights", "download", "yolov8n"], 1,
         lambda p: f"gave no good yolov8n.pt: check that mirror, or copy yolov8n.pt into {p.empty_home} by hand",
         env=weights_env("empty_home", "closed")),
    # -- options and arguments ----------------------------------------------------------------
    Case("align method foo", "ums", lambda p: ["align", "-w", str(p.ingested), "--method", "foo"], 2,
         "'foo' is not one of ecc, learned"),
    Case("align executor spark", "ums", lambda p: ["align", "-w", str(p.ingested), "--executor", "spark"], 2,
         "'spark' is not one of local, dask"),
    Case("autolabel sam image", "ums", lambda p: ["autolabel", "-w", str(p.aligned), "--sam-image", "radar"], 2,
         "'radar' is not one of visible, thermal, best"),
    Case("autolabel detector format", "ums", lambda p: ["autolabel", "-w", str(p.aligned), "--detector-format", "yolov5"], 2,
         "'yolov5' is not one of auto, ultralytics, yolov7-onnx"),
    Case("crop size big", "ums", lambda p: ["crop", "-w", str(p.ingested), "--size", "big"], 2,
         "--size 'big' is no size (write WIDTHxHEIGHT"),
    Case("crop negative workers", "ums", lambda p: ["crop", "-w", str(p.ingested), "--workers", "-1"], 2,
         "'--workers' / '-j': should be greater than or equal to 0"),
    Case("unknown command", "ums", lambda p: ["aling"], 2, "no such command 'aling'"),
    Case("unknown option", "ums", lambda p: ["align", "--bogus"], 2, "no such option: --bogus (see `ums align --help`)"),
    Case("export without format", "ums", lambda p: ["export", str(p.base / "x")], 2, "missing option '--format'"),
    Case("export format foo", "ums", lambda p: ["export", str(p.base / "x"), "-f", "pascal"], 2,
         "'pascal' is not one of msrs, coco, yolo, voc, semantic"),
    Case("review port zero", "ums", lambda p: ["review", "--port", "0"], 2, "'--port': should be greater than or equal to 1"),
    Case("align-train model (the dense matcher is in bench/ now)", "ums",
         lambda p: ["align-train", "--pairs", "a", "--out", "b.pt", "--model", "dense"], 2, "error: no such option: --model"),
    Case("learned align on a missing GPU", "ums", lambda p: ["align", "-w", str(p.ingested), "--method", "learned",
                                                             "--device", "cuda:0"], 2,
         "--device cuda:0: torch sees no CUDA GPU", no_gpu=True),
    Case("align device typo", "ums", lambda p: ["align", "-w", str(p.ingested), "--method", "learned", "--device", "gpu"], 2,
         "--device 'gpu' is not a device (use cpu, cuda or cuda:N)"),
    # -- workspaces and paths -----------------------------------------------------------------
    Case("status without workspace", "ums", lambda p: ["status", "-w", str(p.base / "nowhere")], 2, "no workspace at"),
    Case("manifest without workspace", "ums", lambda p: ["manifest", "-w", str(p.base / "nowhere")], 2, "no workspace at"),
    Case("workspace is a file", "ums", lambda p: ["ingest", str(p.flight), "-w", str(p.file), "--no-progress"], 2,
         lambda p: str(p.file)),
    Case("ingest a missing flight", "ums", lambda p: ["ingest", str(p.base / "no-card"), "-w", str(p.base / "ws2")], 2,
         "does not exist"),
    Case("ingest bad config value", "ums", lambda p: ["ingest", str(p.flight), "-w", str(p.base / "ws3"), "--config",
                                                      str(p.base / "bad-value.yaml")], 2,
         "invalid ingest setting timestamp_tolerance_s='fast' in"),
    Case("ingest missing config", "ums", lambda p: ["ingest", str(p.flight), "-w", str(p.base / "ws4"), "--config",
                                                    str(p.base / "absent.yaml")], 2,
         "No such file or directory (check the --config path)"),
    Case("crop config holding workers", "ums", lambda p: ["crop", "-w", str(p.ingested), "--config",
                                                          str(p.base / "crop-workers.yaml")], 2,
         lambda p: f"workers in {p.base / 'crop-workers.yaml'} says where the stage runs, not what it computes (move it "
                   "under an `executor:` section, e.g. `executor: {workers: 4}`, or give --workers)"),
    Case("crop workers on a running cluster", "ums", lambda p: ["crop", "-w", str(p.ingested), "--workers", "2",
                                                                "--scheduler", "tcp://127.0.0.1:9"], 2,
         "invalid executor settings: workers applies to processes this command starts"),
    Case("split broken yaml", "ums", lambda p: ["split", "-w", str(p.aligned), "--config", str(p.base / "broken.yaml")], 2,
         "not valid YAML at line 2"),
    Case("align before crop", "ums", lambda p: ["align", "-w", str(p.ingested), "--no-progress"], 1,
         "nothing to align: no capture is ready for it (run `ums crop` first)"),
    Case("synth-flight into a file", "ums", lambda p: ["synth-flight", str(p.file), "--n", "1", "--no-progress"], 2,
         lambda p: str(p.file)),
    Case("weights path unknown", "ums", lambda p: ["weights", "path", "yolov99"], 2, "'yolov99' is not a registered weight"),
    Case("weights download unknown", "ums", lambda p: ["weights", "download", "yolo"], 2, "'yolo' is not a registered weight",
         env=weights_env("empty_home")),
    Case("verify with nothing there", "ums", lambda p: ["weights", "verify"], 1, "no registered weight file in",
         env=weights_env("empty_home")),
    # -- tsjnet ---------------------------------------------------------------------------------
    Case("tsjnet unknown command", "tsjnet", lambda p: ["fusion"], 2, "no such command 'fusion'"),
    Case("fuse without --ir", "tsjnet", lambda p: ["fuse", "--vi", "b", "--out", "c"], 2, "missing option '--ir'"),
    Case("fuse device tpu", "tsjnet", lambda p: ["fuse", "--ir", str(p.ir), "--vi", str(p.vi), "--out", "c", "--device", "tpu"],
         2, "--device 'tpu' is not a device (use cpu, cuda or cuda:N)"),
    Case("fuse batch zero", "tsjnet", lambda p: ["fuse", "--ir", "a", "--vi", "b", "--out", "c", "--batch-size", "0"], 2,
         "'--batch-size': should be greater than or equal to 1"),
    Case("fuse no pairs", "tsjnet", lambda p: ["fuse", "--ir", str(p.ir), "--vi", str(p.vi), "--out", str(p.base / "f"),
                                               "--method", "mean", "--no-progress"], 2, "no pair was fused"),
    Case("eval convention foo", "tsjnet", lambda p: ["eval", "--ir", "a", "--vi", "b", "--fused", "c", "--convention", "x"],
         2, "'x' is not one of tsjnet, cddfuse"),
    Case("eval metric foo", "tsjnet", lambda p: ["eval", "--ir", "a", "--vi", "b", "--fused", "c", "--metric", "PSNR",
                                                 "--metric", "SNR"], 2, "'SNR' is not one of SSIM, PSNR"),
    Case("eval-seg segmenter foo", "tsjnet", lambda p: ["eval-seg", "--images", "a=b", "--labels", "c", "--segmenter", "unet"],
         2, "'unet' is not one of deeplabv3_resnet101"),
    Case("eval-det images without name", "tsjnet", lambda p: ["eval-det", "--images", str(p.ir), "--labels", str(p.vi),
                                                               "--no-pretrained", "--no-progress"], 2,
         "names no image set (write NAME=FOLDER, e.g. --images fused=runs/fused)"),
    Case("train amp fp8", "tsjnet", lambda p: ["train", "--data", "x", "--amp", "fp8"], 2, "'fp8' is not one of none, bf16, fp16"),
    Case("train config amp fp8", "tsjnet", lambda p: ["train", "--data", str(p.base), "--config", str(p.base / "train-amp.yaml")],
         2, "invalid train setting amp='fp8' in"),
    Case("train config batch one", "tsjnet", lambda p: ["train", "--data", str(p.base), "--no-pretrained", "--config",
                                                        str(p.base / "train-batch.yaml")], 2,
         "batch_size 1 is too small: the network's batch normalisation needs at least 2"),
    Case("convert absent official", "tsjnet", lambda p: ["convert", "tsjnet_official", str(p.base / "conv")], 2,
         "tsjnet convert tsjnet_official", env=weights_env("empty_home")),
    Case("summary missing config", "tsjnet", lambda p: ["summary", "--config", str(p.base / "absent.yaml")], 2,
         lambda p: str(p.base / "absent.yaml")),
]


@pytest.fixture
def no_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_the_battery_is_big_enough():
    assert len(CASES) >= 30 and {case.cli for case in CASES} == {"ums", "tsjnet"}
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_every_mistake_is_one_error_line(case, places, request):
    if case.no_gpu:
        request.getfixturevalue("no_gpu")
    result = CliRunner().invoke(APPS[case.cli], case.args(places), env={"COLUMNS": "250", **case.env(places)})
    output = result.output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.exit_code == case.code, output
    assert len(errors) == 1, output
    assert "Traceback" not in output and "errors.pydantic.dev" not in output, output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    says = case.says(places) if callable(case.says) else case.says
    assert says in errors[0], output


# -- the way a user runs them: real processes --------------------------------------------------------


def run_cli(module: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=environment,
                          timeout=300)


def test_a_real_process_prints_one_line_and_no_traceback(places):
    review = run_cli("ums", "review", "-w", str(places.ingested), "--no-launch")
    assert review.returncode == 1 and review.stdout == ""
    assert review.stderr.startswith("error: nothing to review") and review.stderr.count("\n") == 1
    batch = run_cli("tsjnet.cli", "train", "--data", "x", "--batch-size", "1")
    assert batch.returncode == 2 and "Traceback" not in batch.stderr
    assert batch.stderr == ("error: invalid value for '--batch-size': should be greater than or equal to 2 "
                            "(see `tsjnet train --help`)\n")


def test_an_unexpected_exception_is_one_line_unless_debugging(places, monkeypatch):
    import ums.report

    def broken(workspace):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(ums.report, "summarize", broken)
    result = CliRunner().invoke(ums_app, ["status", "-w", str(places.ingested)], env={"UMS_DEBUG": ""})
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == ("error: unexpected ZeroDivisionError: division by zero (run again with UMS_DEBUG=1 for the "
                             "traceback, and report it)\n")
    debug = CliRunner().invoke(ums_app, ["status", "-w", str(places.ingested)], env={"UMS_DEBUG": "1"})
    assert debug.exit_code == 1 and "Traceback" in debug.output and "ZeroDivisionError" in debug.output
    assert debug.output.splitlines()[-1].startswith("error: unexpected ZeroDivisionError")


SLOW_CROP = """
import pathlib, sys, time

import ums.crop

def slow_crop(workspace, settings, executor):  # a stage that is mid-way when the signal comes
    with workspace.recorded_run("crop", {}):
        pathlib.Path(sys.argv[1]).write_text("started")
        time.sleep(120)

ums.crop.crop_workspace = slow_crop
from ums.cli import app

app(["crop", "-w", sys.argv[2], "--no-progress"])
"""


def test_sigterm_mid_stage_ends_like_ctrl_c(tmp_path):
    from ums.core.workspace import Workspace

    Workspace.open(tmp_path / "ws").close()
    started = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen([sys.executable, "-c", SLOW_CROP, str(started), str(tmp_path / "ws")], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not started.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), process.communicate(timeout=10)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stderr == "crop interrupted: what finished is recorded; rerun the same command to resume\n"
    with Workspace.open(tmp_path / "ws", create=False) as ws:
        run, = ws.runs("crop")
    assert run["finished_at"] is not None
    assert json.loads(run["summary_json"]) == {"interrupted": "KeyboardInterrupt"}
