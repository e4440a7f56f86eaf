"""Hostile but realistic workspaces: read-only, a full disk, a damaged database, a folder where the
lock file goes, ``--workspace`` naming a file. Each is one ``error:`` line (a WorkspaceError), never a
traceback, and nothing is recorded as done that is not."""

from __future__ import annotations

import errno
import json
import os
import pwd
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ums.core.atomic
import ums.core.lock
from ums.core.atomic import NoSpaceLeft, write_bytes
from ums.cli import app
from ums.manifest import manifest_records
from ums.core.records import CaptureRecord, ExifSummary, FrameRecord
from ums.report import summarize
from ums.core.workspace import (
    DATABASE_NAME,
    Workspace,
    WorkspaceBusy,
    WorkspaceDamaged,
    WorkspaceError,
    WorkspaceFull,
    WorkspaceReadOnly,
)

runner = CliRunner()
FLIGHT = "/flight"


def capture(index: int, note: str = "") -> CaptureRecord:
    frame = FrameRecord(path=f"{FLIGHT}/DJI_{index:04d}_T.JPG{note}", sha256="0" * 64, width=640, height=512,
                        camera_letter="T", size=1000, exif=ExifSummary(), xmp={})
    return CaptureRecord(capture_id=f"c{index:03d}", flight_root=FLIGHT, folder="", sequence=index, timestamp=None,
                         frames={"T": frame})


def make_workspace(root: Path, captures: int = 3, cropped: int = 2, note: str = "") -> Path:
    """A workspace of ``captures`` captures, the first ``cropped`` of them with a done crop result."""
    with Workspace.open(root) as ws:
        records = [capture(i, note) for i in range(captures)]
        ws.replace_flight(FLIGHT, records, [], scope=FLIGHT)
        for record in records[:cropped]:
            ws.record_outcome(record.capture_id, "crop", "done", {"files": {}}, [])
    return root


def error_line(result) -> str:
    """The command's one output line, which must be an ``error:`` line (exit 2)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# -- a read-only workspace -------------------------------------------------------------------------
@pytest.fixture
def shared_folder():
    """A folder an unprivileged user can reach (pytest's own temporary folders are private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="ums-hostile-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def make_read_only(root: Path) -> None:
    for path in root.iterdir():
        path.chmod(0o444)
    root.chmod(0o555)


def as_user_who_cannot_write(function, *args):
    """``function(*args)`` in a forked child that cannot write files it does not own: this user, or
    ``nobody`` when the tests run as root (root writes whatever the permissions say). Returns what it
    returns (JSON data), or fails with the child's traceback."""
    if os.geteuid() == 0:
        try:
            nobody = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and no `nobody` user to drop to: root writes through read-only permissions")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only modules imported before the fork are usable after dropping to nobody
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(nobody.pw_gid)
                os.setuid(nobody.pw_uid)
            answer = {"result": function(*args)}
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the parent, which fails the test
            answer = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(json.dumps(answer).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = json.loads(pipe.read() or b'{"error": "the child died"}')
    os.waitpid(pid, 0)
    assert "error" not in answer, answer.get("traceback", answer["error"])
    return answer["result"]


def read_and_try_to_write(root: str) -> dict:
    """What `ums status`, `ums manifest` and `ums crop` do, through the API and the CLI."""
    out = {}
    with Workspace.open(root, create=False) as ws:
        summary = summarize(ws)
        out["read_only"] = ws.read_only
        out["captures"] = summary.captures
        out["crop"] = dict(summary.stages.get("crop", {}))
        out["manifest"] = [record["capture_id"] for record in manifest_records(ws)]
        try:
            with ws.writing("crop"):
                out["wrote"] = True
        except WorkspaceReadOnly as exc:
            out["refused"] = str(exc)
    status = runner.invoke(app, ["status", "--workspace", root])
    out["status"] = (status.exit_code, status.output)
    manifest = runner.invoke(app, ["manifest", "--workspace", root, "--json"])
    out["manifest_cli"] = (manifest.exit_code, manifest.stdout)
    crop = runner.invoke(app, ["crop", "--workspace", root, "--no-progress", "--workers", "1"])
    out["crop_cli"] = (crop.exit_code, crop.output)
    report = runner.invoke(app, ["report", "--workspace", root])
    out["report_cli"] = (report.exit_code, report.output)
    return out


def warm_up_cli(root: Path) -> None:
    """Run the commands once as ourselves: the child may not import what they load lazily (the
    virtualenv can live in a folder only root can enter)."""
    spare = make_workspace(root.parent / "warm-up")
    for command in (["status"], ["manifest", "--json"], ["crop", "--no-progress", "--workers", "1"], ["report"]):
        runner.invoke(app, [*command, "--workspace", str(spare)])
    runner.invoke(app, ["status", "--workspace", str(root.parent / "missing")])


@pytest.mark.parametrize("log", ["merged", "live writer's log"])
def test_a_read_only_workspace_is_read_and_refuses_writes_in_one_line(shared_folder, log):
    root = make_workspace(shared_folder / "ws")
    warm_up_cli(root)
    writer = None
    if log == "live writer's log":  # a capture committed to ums.sqlite-wal only, its writer still open
        writer = sqlite3.connect(root / DATABASE_NAME, isolation_level=None)
        writer.execute("INSERT INTO captures (capture_id, flight_root, sequence, timestamp, record_json, updated_at) "
                       "VALUES (?, ?, 3, NULL, ?, 'now')", ("c003", FLIGHT, capture(3).model_dump_json()))
        assert (root / f"{DATABASE_NAME}-wal").stat().st_size > 0
    (root / "reports").mkdir()  # an earlier `ums report`'s: only the read-only check stops the next one
    make_read_only(root)
    try:
        seen = as_user_who_cannot_write(read_and_try_to_write, str(root))
    finally:
        if writer is not None:
            writer.close()
    expected = 4 if writer is not None else 3
    assert seen["read_only"] is True and seen["captures"] == expected and seen["crop"] == {"done": 2}
    assert seen["manifest"] == [f"c{i:03d}" for i in range(expected)]
    assert "wrote" not in seen
    assert seen["refused"] == (f"workspace {root} is read-only (its folder is not writable by you): `crop` writes to "
                               "it; make it writable (chmod -R u+w, or remount the disk read-write) or copy it to a "
                               "writable folder and pass that with --workspace")
    status_code, status_output = seen["status"]
    assert status_code == 0 and re.search(rf"captures\W+{expected}\b", status_output), status_output
    manifest_code, manifest_output = seen["manifest_cli"]
    assert manifest_code == 0 and [json.loads(line)["capture_id"] for line in manifest_output.splitlines()] == \
        [f"c{i:03d}" for i in range(expected)]
    crop_code, crop_output = seen["crop_cli"]
    assert crop_code == 2 and crop_output.strip() == f"error: {seen['refused']}", crop_output
    report_code, report_output = seen["report_cli"]
    assert report_code == 2 and report_output.strip() == (
        f"error: workspace {root} is read-only (its folder is not writable by you): this command writes into "
        f"{root / 'reports'}; make it writable (chmod -R u+w, or remount the disk read-write) or copy it to a writable "
        "folder and pass that with --workspace"), report_output


def open_new_workspace(root: str) -> str:
    try:
        Workspace.open(root).close()
    except WorkspaceReadOnly as exc:
        return str(exc)
    return "created"


def test_a_new_workspace_in_a_read_only_folder_is_one_line(shared_folder):
    (shared_folder / "empty").mkdir()
    (shared_folder / "empty").chmod(0o555)
    assert as_user_who_cannot_write(open_new_workspace, str(shared_folder / "empty")) == (
        f"cannot create a workspace in {shared_folder / 'empty'}: its folder is not writable by you; pass --workspace "
        "a folder you can write")
    shared_folder.chmod(0o555)
    assert as_user_who_cannot_write(open_new_workspace, str(shared_folder / "new")) == (
        f"cannot create workspace folder {shared_folder / 'new'} (Permission denied): pass --workspace a folder you "
        "can write")


def open_for_status(root: str) -> str:
    try:
        with Workspace.open(root, create=False) as ws:
            return f"read {ws.capture_count()} captures"
    except WorkspaceError as exc:
        return str(exc)


def test_an_unmerged_log_without_its_index_in_a_read_only_folder_is_one_line(shared_folder):
    # A copy that kept ums.sqlite-wal but not ums.sqlite-shm: SQLite must rebuild the index, and cannot
    # in a folder it cannot write; reading ums.sqlite alone would silently miss the log's captures.
    root = make_workspace(shared_folder / "ws")
    script = ("import os, sqlite3, sys\n"
              "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
              "db.execute(\"UPDATE captures SET updated_at = 'later'\")\n"
              "os._exit(0)\n")  # killed: the log is never merged into ums.sqlite
    subprocess.run([sys.executable, "-c", script, str(root / DATABASE_NAME)], check=True)
    (root / f"{DATABASE_NAME}-shm").unlink()
    make_read_only(root)
    assert as_user_who_cannot_write(open_for_status, str(root)) == (
        f"cannot read workspace {root}: its folder is not writable by you, and {DATABASE_NAME}-wal holds changes "
        "SQLite can only read with write access to the folder; make it writable for one `ums status` (which merges "
        "them), or copy the workspace to a writable folder")
    root.chmod(0o755)
    assert open_for_status(str(root)) == "read 3 captures"


# -- a full disk -----------------------------------------------------------------------------------
def fill_disk(ws: Workspace) -> None:
    """SQLite's page limit raises what a full disk raises: `database or disk is full` (SQLITE_FULL)."""
    pages = ws._db.execute("PRAGMA page_count").fetchone()[0]
    ws._db.execute(f"PRAGMA max_page_count = {pages}")


def test_a_full_disk_records_nothing_half_done_and_the_rerun_records_the_rest(tmp_path):
    root = make_workspace(tmp_path / "ws", captures=6, cropped=0)
    big = {"files": {}, "matrix": "x" * 20000}  # more than the free pages left: each result needs new pages
    with Workspace.open(root) as ws:
        for index in range(3):
            ws.record_outcome(f"c{index:03d}", "crop", "done", big, [])
        fill_disk(ws)
        with pytest.raises(WorkspaceFull) as full:
            ws.record_outcome("c003", "crop", "done", big, [])
        message = str(full.value)
        assert message.startswith(f"disk full: {DATABASE_NAME} could not grow in workspace {root}, whose disk has ")
        assert re.search(r"free; free at least 6\d\.\d MB there, then rerun the same command \(what was not recorded "
                         r"is redone\)$", message) and "\n" not in message
        assert ws.stage_result("c003", "crop") is None  # not recorded, so the rerun redoes it
        assert summarize(ws).stages["crop"] == {"done": 3}  # and the workspace still reads
        ws._db.execute("PRAGMA max_page_count = 1073741823")  # space returns
        todo = [c.capture_id for c in ws.captures() if ws.stage_result(c.capture_id, "crop") is None]
        assert todo == ["c003", "c004", "c005"]
        for capture_id in todo:
            ws.record_outcome(capture_id, "crop", "done", big, [])
        assert summarize(ws).stages["crop"] == {"done": 6}
    with Workspace.open(root, create=False) as ws:
        assert ws.stage_result("c005", "crop")["matrix"] == "x" * 20000


def test_a_full_disk_while_a_file_is_written_leaves_no_temporary_and_names_the_space(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ums.core.atomic.os, "fsync", disk_full)  # some filesystems only say it at fsync
    target = tmp_path / "crop" / "c000" / "vis.tif"
    with pytest.raises(NoSpaceLeft) as full:
        write_bytes(target, b"x" * 3000)
    assert isinstance(full.value, OSError) and full.value.errno == errno.ENOSPC  # a capture's failure, as before
    assert re.fullmatch(rf"no space left on the disk for {re.escape(str(target))} \(it needs 2\.9 KB; [\d.]+ [KMG]?B "
                        r"free there\): free space on that disk, then rerun the same command", str(full.value))
    assert list(target.parent.iterdir()) == []


def test_a_full_disk_when_the_lock_file_is_written_still_locks(tmp_path, monkeypatch):
    def disk_full(fd, stage):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ums.core.lock, "_write_owner", disk_full)
    with Workspace.open(tmp_path) as first, Workspace.open(tmp_path) as second:
        with first.writing("crop"):
            with pytest.raises(WorkspaceBusy, match=r"in use by another ums run \(its ums.lock does not say which\)"):
                with second.writing("align"):
                    pass
        with second.writing("align"):
            pass


# -- a damaged database ----------------------------------------------------------------------------
def damage(database: Path, how: str) -> None:
    data = database.read_bytes()
    noise = random.Random(7).randbytes(len(data))
    page = 4096
    assert len(data) >= 8 * page, "too small a database to damage its pages"
    damaged = {
        "garbage": noise,
        "truncated": data[:len(data) // 2],
        "damaged pages": data[:page] + noise[page:],  # the header and schema intact, every table page noise
    }[how]
    database.write_bytes(damaged)


def damaged_message(root: Path, error: str) -> str:
    return (f"workspace database {root / DATABASE_NAME} is damaged ({error}): restore it from a backup, or move "
            f"{DATABASE_NAME} and any {DATABASE_NAME}-wal and {DATABASE_NAME}-shm aside and run `ums ingest FLIGHT_DIR "
            f"--workspace {root}` again for each flight, then the later stages, which redo every capture (labels "
            "added or edited in `ums review` were only in the database)")


@pytest.mark.parametrize("how, error", [("garbage", "file is not a database"),
                                        ("truncated", "database disk image is malformed"),
                                        ("damaged pages", "database disk image is malformed")])
def test_a_damaged_database_is_one_line_naming_the_file_and_the_way_back(tmp_path, how, error):
    root = make_workspace(tmp_path / "ws", captures=60, cropped=60, note="/" + "n" * 400)
    damage(root / DATABASE_NAME, how)
    with pytest.raises(WorkspaceDamaged) as damaged:
        with Workspace.open(root, create=False) as ws:  # the header may still read: the damage shows on a query
            summarize(ws)
    assert str(damaged.value) == damaged_message(root, error)
    with pytest.raises(WorkspaceDamaged, match="is damaged"):
        with Workspace.open(root, create=False) as ws:  # what `ums manifest` reads
            list(manifest_records(ws))
    for command in (["status"], ["crop", "--no-progress", "--workers", "1"]):
        line = error_line(runner.invoke(app, [*command, "--workspace", str(root)]))
        assert line == f"error: {damaged_message(root, error)}"
    assert root.joinpath(DATABASE_NAME).stat().st_size > 0  # left as it was, for a backup or a rescue


def test_ingest_into_a_garbage_database_is_one_line(tmp_path, synthetic_flight):
    root = make_workspace(tmp_path / "ws", captures=60, cropped=0, note="/" + "n" * 400)
    damage(root / DATABASE_NAME, "garbage")
    line = error_line(runner.invoke(app, ["ingest", str(synthetic_flight), "--workspace", str(root), "--no-progress"]))
    assert line == f"error: {damaged_message(root, 'file is not a database')}"


# -- ums.lock is a folder -------------------------------------------------------------------------------
def test_a_folder_where_the_lock_file_goes_is_one_line_and_readers_still_read(tmp_path):
    root = make_workspace(tmp_path / "ws")
    (root / "ums.lock").mkdir()
    expected = (f"{root / 'ums.lock'} is a folder, not the writer lock file ums keeps there: move it aside "
                f"(mv {root / 'ums.lock'} {root / 'ums.lock'}.moved), then rerun the command")
    with Workspace.open(root, create=False) as ws:
        with pytest.raises(WorkspaceError) as refused:
            with ws.writing("crop"):
                pass
        assert str(refused.value) == expected
        assert ws.capture_count() == 3
    assert error_line(runner.invoke(app, ["crop", "--workspace", str(root), "--no-progress", "--workers", "1"])) == \
        f"error: {expected}"
    status = runner.invoke(app, ["status", "--workspace", str(root)])
    assert status.exit_code == 0 and re.search(r"captures\W+3\b", status.output)


# -- --workspace names a file ----------------------------------------------------------------------
def test_a_workspace_option_naming_a_file_is_one_line(tmp_path, synthetic_flight):
    file = tmp_path / "notes.txt"
    file.write_text("my notes\n")
    expected = (f"error: workspace {file} is a file, not a folder: pass --workspace (or set UMS_WORKSPACE to) a "
                "folder, new or an existing workspace")
    assert error_line(runner.invoke(app, ["ingest", str(synthetic_flight), "-w", str(file), "--no-progress"])) == expected
    assert error_line(runner.invoke(app, ["status", "-w", str(file)])) == expected
    assert file.read_text() == "my notes\n"
    with pytest.raises(WorkspaceError) as below:
        Workspace.open(file / "ws")
    assert str(below.value) == f"workspace {file / 'ws'}: a folder above it is a file; pass --workspace a folder"
