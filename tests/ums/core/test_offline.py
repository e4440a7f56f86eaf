"""Offline by construction: the demo pipeline and the heavy libraries' imports reach no host but
loopback. Runs in a subprocess because audit hooks cannot be removed once installed."""

from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import PROJECT_ROOT

AUDIT_SCRIPT = textwrap.dedent(
    """
    import ipaddress, json, socket, sys

    attempts = []

    def is_loopback(host):
        if host in (None, "", "localhost"):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def audit(event, args):
        if event == "socket.connect":
            sock, address = args
            if sock.family == socket.AF_UNIX:
                return
            host = address[0] if isinstance(address, tuple) else address
            if not is_loopback(host):
                attempts.append(f"connect {address!r}")
        elif event == "socket.getaddrinfo" and not is_loopback(args[0]):
            attempts.append(f"getaddrinfo {args[0]!r}")

    audit("socket.getaddrinfo", ("example.org", 443, 0, 0, 0, 0))  # the hook's own check
    assert attempts == ["getaddrinfo 'example.org'"], attempts
    attempts.clear()
    sys.addaudithook(audit)

    import ums
    from ums.demo import run_demo
    result = run_demo(sys.argv[1], n=2, show_progress=False)
    assert result.ingest.paired == 2 and result.crop.done == 2 and result.align.failed == 0, result
    assert result.autolabel.startswith("skipped") and "--detector" in result.autolabel, result.autolabel

    from ums.core.offline import configure_ultralytics
    configure_ultralytics()
    from ultralytics import YOLO
    YOLO("yolov8n.yaml")  # a model from the package's own config: no weights, no hub
    import albumentations
    import fiftyone
    import torchvision

    print("AUDIT " + json.dumps(attempts))
    """
)


@pytest.mark.slow
def test_demo_and_library_imports_stay_on_loopback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "UMS_CACHE_DIR": str(tmp_path / "cache")}
    for key in [k for k in env if k.startswith(("YOLO_", "FIFTYONE_"))]:
        del env[key]  # the settings must come from ums itself
    completed = subprocess.run(
        [sys.executable, "-c", AUDIT_SCRIPT, str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    line = next(l for l in completed.stdout.splitlines() if l.startswith("AUDIT "))
    assert json.loads(line[len("AUDIT "):]) == []
    assert (tmp_path / "cache" / "ultralytics" / "Ultralytics" / "Arial.ttf").exists()
    settings = json.loads((tmp_path / "cache" / "ultralytics" / "Ultralytics" / "settings.json").read_text())
    assert settings["sync"] is False
    assert (tmp_path / "demo" / "workspace" / "reports" / "index.html").exists()


def test_offline_settings_fill_only_gaps(monkeypatch, tmp_path):
    from ums.core.offline import apply_offline_environment

    monkeypatch.setenv("UMS_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("YOLO_OFFLINE", "custom")
    monkeypatch.delenv("FIFTYONE_DATABASE_DIR", raising=False)
    settings = apply_offline_environment()
    assert settings["YOLO_OFFLINE"] == "custom"
    assert settings["FIFTYONE_DATABASE_DIR"] == str(tmp_path / "fiftyone-db")
    assert settings["NO_ALBUMENTATIONS_UPDATE"] == "1" and settings["FIFTYONE_DO_NOT_TRACK"] == "true"
