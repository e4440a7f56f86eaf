from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time

import numpy as np
import pytest

from ums.core.atomic import remove_stale_temporaries, temporary_path, write_bytes, write_image
from ums.core.records import Issue
from ums.core.workspace import DATABASE_NAME, SCHEMA_VERSION, Workspace, WorkspaceBusy, WorkspaceError, resolve_workspace_path

# spawn, not fork: a forked child would share the parent's open file descriptions (and their flocks).
SPAWN = multiprocessing.get_context("spawn")


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


def test_stale_temporaries_are_removed_when_a_writer_starts_not_on_open(tmp_path):
    stale = temporary_path(tmp_path / "thermal_raw" / "x.png")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    with Workspace.open(tmp_path) as ws:
        assert stale.exists()
        with ws.writing("crop"):
            assert not stale.exists()
    assert remove_stale_temporaries(tmp_path) == []


def _open_new_workspaces_in_step(folders, barrier, results):
    for folder in folders:
        barrier.wait(timeout=120)
        try:
            with Workspace.open(folder) as ws:
                results.put((folder, ws.schema_version, None))
        except Exception as exc:  # every failure is reported to the parent, which asserts on them
            results.put((folder, None, f"{type(exc).__name__}: {exc}"))


def test_two_processes_creating_one_workspace_at_once_both_succeed(tmp_path):
    folders = [str(tmp_path / f"ws{round_}") for round_ in range(20)]
    barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
    workers = [SPAWN.Process(target=_open_new_workspaces_in_step, args=(folders, barrier, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=300) for _ in range(2 * len(folders))]
    for worker in workers:
        worker.join(timeout=60)
    failures = [(folder, error) for folder, _, error in outcomes if error]
    assert failures == []
    assert [version for _, version, _ in outcomes] == [SCHEMA_VERSION] * len(outcomes)


def _hold_writer_lock(root, ready):
    with Workspace.open(root) as ws, ws.writing("crop"):
        temporary_path(ws.stage_dir("crop") / "vis.png").write_bytes(b"half a crop")
        ready.set()
        time.sleep(600)


def test_a_running_writer_keeps_its_temporaries_and_the_workspace(tmp_path):
    ready = SPAWN.Event()
    child = SPAWN.Process(target=_hold_writer_lock, args=(tmp_path, ready))
    child.start()
    try:
        assert ready.wait(timeout=120)
        in_flight = temporary_path(tmp_path / "crop" / "vis.png").with_name(f".vis.png.{child.pid}.tmp")
        with Workspace.open(tmp_path) as ws:  # what `ums status` does
            assert in_flight.exists()
            with pytest.raises(WorkspaceBusy) as busy:
                with ws.writing("align"):
                    pass
            message = str(busy.value)
            assert "`crop`" in message and f"pid {child.pid}" in message and "\n" not in message
            assert in_flight.exists()
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=60)
            with ws.writing("align"):
                assert not in_flight.exists()
    finally:
        child.kill()
        child.join(timeout=60)


def test_writing_is_reentrant_and_released_on_exceptions(tmp_path):
    with Workspace.open(tmp_path) as first, Workspace.open(tmp_path) as second:
        with pytest.raises(RuntimeError, match="inside"):
            with first.writing("crop"), first.writing("crop"):
                with pytest.raises(WorkspaceBusy, match="in use by `crop`"):
                    with second.writing("align"):
                        pass
                raise RuntimeError("crash inside the writer")
        with second.writing("align"):
            pass


def test_writing_waits_for_the_holder_up_to_wait_s(tmp_path):
    with Workspace.open(tmp_path) as holder, Workspace.open(tmp_path) as waiter:
        held = threading.Event()

        def hold_briefly():
            with holder.writing("crop"):
                held.set()
                time.sleep(0.5)

        thread = threading.Thread(target=hold_briefly)
        thread.start()
        assert held.wait(timeout=10)
        started = time.monotonic()
        with pytest.raises(WorkspaceBusy):
            with waiter.writing("align", wait_s=0.1):
                pass
        assert time.monotonic() - started >= 0.1
        with waiter.writing("align", wait_s=30):
            assert time.monotonic() - started >= 0.3
        thread.join()


def test_a_version_2_workspace_gains_the_prompt_column(tmp_path):
    from ums.core.records import LabelRecord
    from ums.core.workspace import MIGRATIONS

    connection = sqlite3.connect(tmp_path / DATABASE_NAME)
    for script in MIGRATIONS[:2]:
        connection.executescript(script)
    connection.execute("PRAGMA user_version=2")
    connection.close()
    with Workspace.open(tmp_path) as ws:
        assert ws.schema_version == SCHEMA_VERSION
        columns = [row[1] for row in ws._db.execute("PRAGMA table_info(labels)")]
        assert columns[-1] == "prompt"
        ws._db.execute("PRAGMA foreign_keys=OFF")  # a label without its capture row: only the column is tested
        label_id = ws.add_label("c1", LabelRecord(class_id=1, box=(1, 2, 3, 4), prompt="a person seen from above"))
        (stored,) = [label for label in ws.labels("c1") if label.id == label_id]
    assert stored.prompt == "a person seen from above"
