"""`ums weights`: the registry, the one networked command (against a server on 127.0.0.1), and
registered names wherever a weight path is taken."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import urllib.error
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.ums.autolabel.models import TINY_SAM, tiny_sam_checkpoint, yolov7_end_to_end
from ums import weights
from ums.cli import app
from ums.weights import REGISTRY, Weight, WeightsError, download, resolve_weights, verify

runner = CliRunner()


def checkpoint_bytes(n: int, seed: int = 7) -> bytes:
    """A real torch.save file of about ``n`` bytes: what every registered .pt/.pth is."""
    buffer = io.BytesIO()
    torch.save({"w": torch.from_numpy(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8))}, buffer)
    return buffer.getvalue()


BODY = checkpoint_bytes(300_000)
SIZE = len(BODY)
BODY_SHA256 = hashlib.sha256(BODY).hexdigest()
BIG = checkpoint_bytes(3 * 2**20 // 2, seed=8)  # 1.5 MiB: more than the 1 MiB a bad mirror sends
MiB = 2**20


@dataclass
class ServerState:
    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)  # file -> bytes sent before the connection drops, once
    chunked: bool = False  # send the body chunked (no Content-Length): only the chunking shows its end
    end_cleanly: bool = False  # after a cut, end the chunked body properly (a short body posing as whole)
    ignore_range: bool = False
    requests: list[tuple[str, str | None]] = field(default_factory=list)


class RangeHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        state: ServerState = self.server.state
        name, asked = self.path.lstrip("/"), self.headers.get("Range")
        state.requests.append((name, asked))
        body = state.files.get(name)
        if body is None:
            self.send_error(404)
            return
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked and not state.ignore_range else 0
        if start >= len(body):
            self.send_response(416)
            self.end_headers()
            return
        if state.chunked:
            self.protocol_version = "HTTP/1.1"  # chunked transfer encoding is HTTP/1.1's
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        sent = body[start:start + state.cut.pop(name, len(body))]
        if not state.chunked:
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(sent)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for offset in range(0, len(sent), 64 * 1024):
            chunk = sent[offset:offset + 64 * 1024]
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        if start + len(sent) == len(body) or state.end_cleanly:
            self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True  # a cut body: the connection closes inside the chunked stream

    def log_message(self, *args):
        pass


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("UMS_HOME", str(tmp_path / "ums-home"))
    monkeypatch.delenv("UMS_WEIGHTS_MIRROR", raising=False)
    (tmp_path / "ums-home").mkdir()
    return tmp_path / "ums-home"


@pytest.fixture
def server(monkeypatch):
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("UMS_WEIGHTS_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def tiny_entry(**changes) -> Weight:
    entry = Weight("tiny", "tiny.pt", "a test file", "none", "the test server", "http://192.0.2.1/never-used/tiny.pt",
                   size=len(BODY))
    return replace(entry, **changes)


# -- download ----------------------------------------------------------------------------------


def test_an_interrupted_download_resumes_with_only_the_rest(home, server):
    server.files["tiny.pt"] = BODY
    server.cut["tiny.pt"] = 120_000
    with pytest.raises(WeightsError, match=f"connection dropped after 120000 of {SIZE} bytes"):
        download(tiny_entry(), home)
    assert (home / "tiny.pt.part").stat().st_size == 120_000 and not (home / "tiny.pt").exists()

    path = download(tiny_entry(), home)
    assert server.requests == [("tiny.pt", None), ("tiny.pt", "bytes=120000-")]
    assert path == home / "tiny.pt" and path.read_bytes() == BODY and not (home / "tiny.pt.part").exists()
    recorded = json.loads((home / "hashes.json").read_text())["tiny.pt"]
    assert recorded["sha256"] == BODY_SHA256 and recorded["size"] == SIZE
    assert recorded["origin"].startswith("http://127.0.0.1:") and recorded["origin"].endswith("/tiny.pt")

    download(tiny_entry(), home)  # present and matching: no request at all
    assert len(server.requests) == 2


def test_a_server_ignoring_range_restarts_the_file(home, server):
    server.files["tiny.pt"] = BODY
    server.cut["tiny.pt"] = 50_000
    with pytest.raises(WeightsError, match="connection dropped"):
        download(tiny_entry(), home)
    server.ignore_range = True
    assert download(tiny_entry(), home).read_bytes() == BODY  # not 50,000 stale bytes + the whole file
    assert server.requests[-1] == ("tiny.pt", "bytes=50000-")


@pytest.mark.parametrize("change, message", [
    (dict(size=SIZE + 1), f"{SIZE} bytes, published {SIZE + 1}"),
    (dict(size=None, approx_mib=0.3), f"{SIZE / MiB:.3f} MiB, published 0.3 MiB"),
    (dict(sha256_prefix="00000000"), f"SHA-256 {BODY_SHA256[:16]}..., the file name says 00000000"),
    (dict(sha256="ab" * 32), f"SHA-256 {BODY_SHA256[:16]}..., published abababababababab..."),
])
def test_a_wrong_size_or_hash_is_refused_and_leaves_no_file(home, server, change, message):
    assert not BODY_SHA256.startswith("00000000")
    server.files["tiny.pt"] = BODY
    with pytest.raises(WeightsError, match="refused and deleted") as error:
        download(tiny_entry(**change), home)
    assert message in str(error.value)
    assert sorted(p.name for p in home.iterdir()) == []  # neither the final name, nor a .part, nor a hash record


def test_a_hash_differing_from_the_first_download_is_refused(home, server):
    (home / "hashes.json").write_text(json.dumps({"tiny.pt": {"sha256": "ab" * 32, "size": len(BODY),
                                                              "recorded": "2026-01-02T03:04:05+00:00"}}))
    server.files["tiny.pt"] = BODY
    with pytest.raises(WeightsError, match="recorded abababababababab... at first download") as error:
        download(tiny_entry(), home)
    assert "2026-01-02" in str(error.value)
    assert not (home / "tiny.pt").exists() and not (home / "tiny.pt.part").exists()


def test_the_torchvision_prefix_passes_for_a_matching_file(home, server):
    server.files["tiny.pt"] = BODY
    assert download(tiny_entry(size=None, sha256_prefix=BODY_SHA256[:8]), home).read_bytes() == BODY


# -- the command -------------------------------------------------------------------------------


def table_row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(f"│ {name} "))


def test_download_list_path_verify(home, server):
    server.files["yolov8n.pt"] = BODY
    server.cut["yolov8n.pt"] = 1000
    first = runner.invoke(app, ["weights", "download", "yolov8n"])
    assert first.exit_code == 1 and f"connection dropped after 1000 of {SIZE}" in first.output
    rows = {r["name"]: r for r in map(json.loads, runner.invoke(app, ["weights", "list", "--json"]).stdout.splitlines())}
    assert rows["yolov8n"]["present"] == "partial download (rerun download to resume)"

    second = runner.invoke(app, ["weights", "download", "yolov8n"])
    assert second.exit_code == 0, second.output
    assert f"yolov8n: {home / 'yolov8n.pt'}" in second.output.replace("\n", "")
    assert server.requests == [("yolov8n.pt", None), ("yolov8n.pt", "bytes=1000-")]

    listed = runner.invoke(app, ["weights", "list"])
    assert listed.exit_code == 0
    row = table_row(listed.output, "yolov8n")
    assert row.rstrip(" │").endswith("yes") and "0.3 MiB" in row and "AGPL-3.0" in row and "recorded 20" in row
    assert table_row(listed.output, "sam_vit_b").rstrip(" │").endswith("no")
    assert "357.7 MiB" in table_row(listed.output, "sam_vit_b")
    assert "~159.7 MiB" in table_row(listed.output, "fasterrcnn_resnet50_fpn")
    rows = [json.loads(line) for line in runner.invoke(app, ["weights", "list", "--json"]).stdout.splitlines()]
    assert len(rows) == len(REGISTRY) == 44
    assert [r["name"] for r in rows if r["present"] == "yes"] == ["yolov8n"]

    present = runner.invoke(app, ["weights", "path", "yolov8n"])
    assert present.exit_code == 0 and present.stdout.strip() == str(home / "yolov8n.pt")
    absent = runner.invoke(app, ["weights", "path", "sam_vit_b"])
    assert absent.exit_code == 1 and absent.stdout.strip() == str(home / "sam_vit_b_01ec64.pth")
    assert "ums weights download sam_vit_b" in absent.output
    assert runner.invoke(app, ["weights", "path", "yolov99"]).exit_code == 2

    ok = runner.invoke(app, ["weights", "verify"])
    assert ok.exit_code == 0
    assert (f"yolov8n: ok {SIZE} bytes, a PyTorch checkpoint; no size or SHA-256 is published for yolov8n.pt, so nothing "
            "shows it is the publisher's file: SHA-256 unchanged since 20") in ok.output
    corrupted = bytearray(BODY)
    corrupted[150_000] ^= 0xFF  # same size, one byte off
    (home / "yolov8n.pt").write_bytes(bytes(corrupted))
    bad = runner.invoke(app, ["weights", "verify"])
    assert bad.exit_code == 1 and bad.output.startswith("error: yolov8n: ") and bad.output.count("\n") == 1
    assert f"recorded {BODY_SHA256[:16]}..." in bad.output and "run `ums weights download yolov8n`" in bad.output


def test_manual_weights_give_their_address_and_record_a_placed_file(home, server):
    result = runner.invoke(app, ["weights", "download", "tsjnet_official"], env={"UMS_WEIGHTS_MIRROR": ""})
    assert result.exit_code == 1 and "pan.baidu.com/s/1TykTSd5UMAAAtHq1HumvXQ" in result.output
    assert server.requests == []
    (home / "TSJNet.pth").write_bytes(BODY)
    first, = verify(["tsjnet_official"])
    assert first.ok and "its SHA-256 is recorded now, to show later changes (trust on first use)" in first.message
    assert "no size or SHA-256 is published for TSJNet.pth" in first.message
    assert json.loads((home / "hashes.json").read_text())["TSJNet.pth"]["sha256"] == BODY_SHA256
    second, = verify(["tsjnet_official"])
    assert second.ok and "SHA-256 unchanged since 20" in second.message
    missing, = verify(["sam_vit_h"])
    assert not missing.ok and missing.message == f"sam_vit_h_4b8939.pth is absent from {home}"
    assert "ums weights download sam_vit_h" in missing.next_step


def test_verify_fails_a_random_file_even_with_its_hash_recorded(home):
    junk = np.random.default_rng(1).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    (home / "yolov8n.pt").write_bytes(junk)
    (home / "hashes.json").write_text(json.dumps({"yolov8n.pt": {"sha256": hashlib.sha256(junk).hexdigest(), "size": 1000,
                                                                 "recorded": "2026-01-02T03:04:05+00:00"}}))
    result = runner.invoke(app, ["weights", "verify", "yolov8n"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"error: yolov8n: {home / 'yolov8n.pt'}: not a PyTorch checkpoint")
    assert "ok" not in result.output.split(":")[1]


def test_verify_holds_sam_files_to_their_published_size_and_hash(home):
    entry = REGISTRY["sam_vit_b"]
    assert (entry.size, entry.sha256) == (375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912")
    assert all(len(REGISTRY[name].sha256) == 64 and REGISTRY[name].size for name in ("sam_vit_l", "sam_vit_h"))
    (home / entry.file).write_bytes(BODY)
    verdict, = verify(["sam_vit_b"])
    assert not verdict.ok
    assert verdict.message == (f"{home / entry.file}: {SIZE} bytes, published 375042383; SHA-256 {BODY_SHA256[:16]}..., "
                               "published ec2df62732614e57...")
    assert not (home / "hashes.json").exists()  # a failing file is never recorded as trusted


def test_the_list_says_plainly_what_is_published(home):
    rows = {row["name"]: row for row in map(json.loads, runner.invoke(app, ["weights", "list", "--json"]).stdout.splitlines())}
    assert rows["sam_vit_b"]["hash"] == "published size and SHA-256 + recorded on first download"
    assert rows["fasterrcnn_resnet50_fpn"]["hash"].startswith("published size (~159.743 MiB) and SHA-256 prefix 258fb6c6")
    assert rows["yolov8n"]["hash"] == "none published; recorded on first download"


def test_a_chunked_body_cut_at_1_mib_never_reaches_the_final_name(home, server):
    server.files["yolov8n.pt"] = BIG
    server.chunked = True
    server.cut["yolov8n.pt"] = MiB
    result = runner.invoke(app, ["weights", "download", "yolov8n"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "Traceback" not in result.output
    assert result.output.startswith(f"error: yolov8n: {server_url()}yolov8n.pt: connection dropped after {MiB} bytes (rerun")
    assert "UMS_WEIGHTS_MIRROR=" in result.output and f"copy yolov8n.pt into {home} by hand" in result.output
    assert not (home / "yolov8n.pt").exists() and not (home / "hashes.json").exists()
    assert (home / "yolov8n.pt.part").stat().st_size == MiB

    again = runner.invoke(app, ["weights", "download", "yolov8n"])  # the rest, still chunked
    assert again.exit_code == 0, again.output
    assert server.requests[-1] == ("yolov8n.pt", f"bytes={MiB}-")
    assert (home / "yolov8n.pt").read_bytes() == BIG
    assert json.loads((home / "hashes.json").read_text())["yolov8n.pt"]["size"] == len(BIG)


@pytest.mark.parametrize("known_size", [False, True])
def test_a_short_body_that_ends_cleanly_is_refused(home, server, known_size):
    server.files["tiny.pt"] = BIG
    server.chunked = server.end_cleanly = True
    server.cut["tiny.pt"] = MiB
    entry = tiny_entry(size=len(BIG) if known_size else None)
    with pytest.raises(WeightsError, match="refused and deleted") as error:
        download(entry, home)
    expected = f"{MiB} bytes, published {len(BIG)}" if known_size else "not a PyTorch checkpoint"
    assert expected in str(error.value)
    assert sorted(p.name for p in home.iterdir()) == []


def server_url() -> str:
    import os

    return os.environ["UMS_WEIGHTS_MIRROR"]


def test_a_failed_download_names_the_mirror_setting_and_the_manual_copy(home, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("UMS_WEIGHTS_MIRROR", f"http://127.0.0.1:{port}")
    result = runner.invoke(app, ["weights", "download", "yolov8n"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith(f"error: yolov8n: http://127.0.0.1:{port}/yolov8n.pt: Connection refused (")
    assert result.output.rstrip().endswith(
        f"(UMS_WEIGHTS_MIRROR=http://127.0.0.1:{port} gave no good yolov8n.pt: check that mirror, or copy yolov8n.pt "
        f"into {home} by hand and run `ums weights verify yolov8n`)")

    def unreachable(url, offset):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.delenv("UMS_WEIGHTS_MIRROR")
    monkeypatch.setattr(weights, "_open", unreachable)  # the publisher's address, without the network
    result = runner.invoke(app, ["weights", "download", "sam_vit_b"])
    assert result.exit_code == 1 and result.output.startswith("error: sam_vit_b: https://dl.fbaipublicfiles.com/")
    assert ("(set UMS_WEIGHTS_MIRROR=URL to a site mirror that serves sam_vit_b_01ec64.pth, or copy sam_vit_b_01ec64.pth "
            f"into {home} by hand and run `ums weights verify sam_vit_b`)") in result.output


def test_unknown_names_fail_before_any_download(home, server):
    server.files["yolov8n.pt"] = BODY
    result = runner.invoke(app, ["weights", "download", "yolov8n", "yolov99"])
    assert result.exit_code == 2 and server.requests == []
    assert result.output == "error: 'yolov99' is not a registered weight (`ums weights list` shows the names)\n"
    nothing = runner.invoke(app, ["weights", "verify"])
    assert nothing.exit_code == 1 and nothing.output.startswith(f"error: no registered weight file in {home}")


# -- names wherever a weight path is taken ------------------------------------------------------


def test_an_absent_name_is_an_error_naming_the_flag_and_never_a_download(home, server):
    with pytest.raises(FileNotFoundError, match=r"--detector yolov8x: .*run `ums weights download yolov8x`"):
        resolve_weights("yolov8x", "--detector")
    assert server.requests == []
    assert resolve_weights("not-registered.pt", "--detector") == Path("not-registered.pt")  # the loader says "no such file"


def test_detector_names_resolve_in_ums_home(home):
    from ums.autolabel.detectors import DetectorConfig, load_detector
    from ums.core.offline import configure_ultralytics

    yolov7_end_to_end(home / "yolov7.onnx", [[0, 100, 150, 300, 350, 2, 0.9]])
    detector = load_detector(DetectorConfig(weights="yolov7"))
    found = detector.detect(np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(found.boxes, [[100, 150, 300, 350]], atol=1e-3)
    assert found.classes.tolist() == [2]

    (home / "yolov7x.pt").write_bytes(b"a YOLOv7 pickle")  # downloaded, never exported
    with pytest.raises(FileNotFoundError, match=r"--detector yolov7x: yolov7x.pt is downloaded .* export.py --weights "
                                                r".*yolov7x.pt --grid --end2end .* --max-wh 640"):
        load_detector(DetectorConfig(weights="yolov7x"))

    configure_ultralytics()
    from ultralytics import YOLO

    YOLO("yolov8n.yaml").save(str(home / "yolov8n.pt"))
    config = DetectorConfig(weights="yolov8n")
    assert config.weights == home / "yolov8n.pt"  # what the labels' model name and the workers see
    assert type(load_detector(config)).__name__ == "UltralyticsDetector"


def test_sam_names_resolve_in_ums_home(home):
    from ums.autolabel.sam import SamConfig, load_sam

    tiny_sam_checkpoint(home / "sam_vit_b_01ec64.pth")
    config = SamConfig(checkpoint="sam_vit_b", model_type="custom", architecture=TINY_SAM)
    assert config.checkpoint == home / "sam_vit_b_01ec64.pth"
    predictor = load_sam(config)
    assert predictor.model.image_encoder.patch_embed.proj.out_channels == 32

    (home / "sam_vit_l_0b3195.pth").write_bytes(b"x")
    with pytest.raises(ValueError, match="is a vit_l checkpoint but sam.model_type is vit_b: add --sam-type vit_l"):
        load_sam(SamConfig(checkpoint="sam_vit_l"))
    with pytest.raises(FileNotFoundError, match="--sam sam_vit_h: .*ums weights download sam_vit_h"):
        load_sam(SamConfig(checkpoint="sam_vit_h", model_type="vit_h"))


def test_task_network_names_resolve_in_ums_home(home):
    from tsjnet.task_heads import read_state_dict

    torch.save({"backbone.weight": torch.arange(6.0)}, home / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")
    state = read_state_dict(Path("fasterrcnn_resnet50_fpn"), "--detector-weights")
    assert state["backbone.weight"].tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(FileNotFoundError, match="--segmenter-weights deeplabv3_resnet101: .*download deeplabv3_resnet101"):
        read_state_dict(Path("deeplabv3_resnet101"), "--segmenter-weights")


def test_tsjnet_convert_names_the_manual_download(home):
    from tsjnet.cli import app as tsjnet_app

    result = runner.invoke(tsjnet_app, ["convert", "tsjnet_official", str(home / "out")])
    assert result.exit_code == 2
    text = result.output.replace("\n", "")
    assert "tsjnet convert tsjnet_official" in text and "pan.baidu.com" in text and str(home / "TSJNet.pth") in text


# -- the registry against the pinned libraries ----------------------------------------------------


def test_torchvision_entries_are_torchvisions_own():
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights, DeepLabV3_ResNet101_Weights

    enums = {"fasterrcnn_resnet50_fpn": FasterRCNN_ResNet50_FPN_Weights.COCO_V1,
             "deeplabv3_resnet101": DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1,
             "deeplabv3_resnet50": DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1}
    for name, enum in enums.items():
        entry = REGISTRY[name]
        assert (entry.url, entry.approx_mib) == (enum.url, enum.meta["_file_size"])
        assert entry.url.endswith("/" + entry.file) and f"-{entry.sha256_prefix}." in entry.file
    assert REGISTRY["fasterrcnn_resnet50_fpn"].sha256_prefix == "258fb6c6"


def test_ultralytics_entries_are_assets_of_the_pinned_release():
    import inspect

    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES, attempt_download_asset

    release = inspect.signature(attempt_download_asset).parameters["release"].default
    assert release == weights.ULTRALYTICS_RELEASE == "v8.4.0"
    entries = [e for e in REGISTRY.values() if e.licence == "AGPL-3.0"]
    assert len(entries) == 30 and all(e.file in GITHUB_ASSETS_NAMES for e in entries)
    assert REGISTRY["yolov8x"].url == "https://github.com/ultralytics/assets/releases/download/v8.4.0/yolov8x.pt"
    assert {"mobileclip_blt.ts", "mobileclip2_b.ts"} <= {e.file for e in REGISTRY.values()} & GITHUB_ASSETS_NAMES


def test_open_vocabulary_detectors_name_the_text_encoder_their_yaml_asks_for():
    from ums.core.offline import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    for name in ("yoloe-v8s-seg", "yoloe-11m-seg", "yoloe-26x-seg"):
        variant = yaml_model_load(f"{name}.yaml").get("text_model", "mobileclip:blt")  # YOLOEModel's own default
        encoder = weights.TEXT_ENCODERS[f"yoloe:{variant}"]
        assert REGISTRY[name].after == f"its text encoder and tokenizer vocabulary: ums weights download {encoder} clip_bpe_vocab"
    assert REGISTRY["yolov8l-worldv2"].after.endswith("download clip_vit_b32 clip_bpe_vocab")
    clip = REGISTRY["clip_vit_b32"]
    assert clip.url.split("/")[-2] == clip.sha256 and clip.size is None  # the address carries the SHA-256
    assert weights.published_check(clip) == "published SHA-256"
    assert weights.published_check(REGISTRY["clip_bpe_vocab"]) == "published size and SHA-256"


def test_a_text_encoder_downloads_and_verifies_like_any_weight(home, server):
    encoder = io.BytesIO()
    torch.jit.save(torch.jit.trace(torch.nn.Linear(2, 2), torch.zeros(1, 2)), encoder)
    server.files["mobileclip_blt.ts"] = encoder.getvalue()
    result = runner.invoke(app, ["weights", "download", "mobileclip_blt"])
    assert result.exit_code == 0, result.output
    assert "next: its tokenizer vocabulary: ums weights download clip_bpe_vocab" in result.output
    ok, = verify(["mobileclip_blt"])
    assert ok.ok and ok.message.startswith(f"{len(encoder.getvalue())} bytes, a PyTorch checkpoint; no size or SHA-256")
    (home / "mobileclip_blt.ts").write_bytes(b"not an archive" * 100)
    bad, = verify(["mobileclip_blt"])
    assert not bad.ok and "not a PyTorch checkpoint" in bad.message
