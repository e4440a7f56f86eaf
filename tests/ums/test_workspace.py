from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from ums.atomic import remove_stale_temporaries, temporary_path, write_bytes, write_image
from ums.records import Issue
from ums.workspace import DATABASE_NAME, SCHEMA_VERSION, Workspace, WorkspaceError, resolve_workspace_path


def test_new_workspace_is_migrated_and_in_wal_mode(tmp_path):
    with Workspace.open(tmp_path / "ws") as ws:
        assert ws.schema_version == SCHEMA_VERSION
    connection = sqlite3.connect(tmp_path / "ws" / DATABASE_NAME)
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"files", "captures", "stage_results", "issues", "runs"} <= tables


def test_open_without_create_names_the_flag(tmp_path):
    with pytest.raises(WorkspaceError, match="--workspace"):
        Workspace.open(tmp_path / "missing", create=False)


def test_newer_schema_is_refused(tmp_path):
    Workspace.open(tmp_path).close()
    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(WorkspaceError, match="newer than this ums"):
        Workspace.open(tmp_path)


def test_workspace_location_precedence(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UMS_WORKSPACE", raising=False)
    assert resolve_workspace_path() == tmp_path / "ums-workspace"
    monkeypatch.setenv("UMS_WORKSPACE", str(tmp_path / "env"))
    assert resolve_workspace_path() == tmp_path / "env"
    assert resolve_workspace_path(tmp_path / "flag") == tmp_path / "flag"


def test_failed_transaction_changes_nothing(tmp_path):
    with Workspace.open(tmp_path) as ws:
        with pytest.raises(RuntimeError):
            with ws.transaction() as db:
                db.execute("INSERT INTO runs (stage, config_json, started_at) VALUES ('x', '{}', 'now')")
                raise RuntimeError("crash inside the transaction")
        assert ws.runs() == []


def test_issues_are_replaced_per_stage_and_scope(tmp_path):
    with Workspace.open(tmp_path) as ws:
        ws.replace_issues("ingest", "a", [Issue(stage="ingest", message="one"), Issue(stage="ingest", message="two")])
        ws.replace_issues("ingest", "b", [Issue(stage="ingest", message="other flight")])
        ws.replace_issues("ingest", "a", [Issue(stage="ingest", message="three")])
        assert sorted(i.message for i in ws.issues()) == ["other flight", "three"]


def test_atomic_writes_leave_no_temporaries(tmp_path):
    target = write_bytes(tmp_path / "sub" / "a.bin", b"payload")
    assert target.read_bytes() == b"payload"
    image = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    png = write_image(tmp_path / "raw.png", image)
    import cv2

    np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), image)
    assert not list(tmp_path.rglob("*.tmp"))


def test_stale_temporaries_are_removed_on_open(tmp_path):
    stale = temporary_path(tmp_path / "thermal_raw" / "x.png")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    Workspace.open(tmp_path).close()
    assert not stale.exists()
    assert remove_stale_temporaries(tmp_path) == []
