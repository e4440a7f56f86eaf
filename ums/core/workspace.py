"""The workspace: one folder holding a dataset build.

``ums.sqlite`` (stdlib sqlite3, WAL) is the manifest of source files, captures, stage results and
issues; derived files live in one folder per stage beside it. Everything a stage writes goes
through :mod:`ums.core.atomic`, and every database change is a transaction, so a process killed at any
instant leaves a workspace that the next run can read and resume.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import sqlite3
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ums.core.atomic import free_bytes, human_bytes, remove_stale_temporaries
from ums.core.lock import LOCK_NAME, WriterLock, describe_owner
from ums.core.records import CaptureManifest, CaptureRecord, FileProbe, Issue, LabelRecord

DATABASE_NAME = "ums.sqlite"
DEFAULT_WORKSPACE = "ums-workspace"

# Switching a new database to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY at once
# (skipping the busy handler) while another process holds it; so retry a few times, backing off.
WAL_RETRY_DELAYS_S = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)

# Each entry moves the schema one version up; never edit a released entry, append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE files (
        path TEXT PRIMARY KEY,
        flight_root TEXT NOT NULL,
        size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        sha256 TEXT,
        probe_json TEXT,
        error TEXT,
        present INTEGER NOT NULL DEFAULT 1,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX files_by_root ON files (flight_root);
    CREATE INDEX files_by_sha ON files (sha256);
    CREATE TABLE captures (
        capture_id TEXT PRIMARY KEY,
        flight_root TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        timestamp TEXT,
        record_json TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX captures_by_root ON captures (flight_root);
    CREATE TABLE stage_results (
        capture_id TEXT NOT NULL REFERENCES captures (capture_id),
        stage TEXT NOT NULL,
        status TEXT NOT NULL,
        result_json TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (capture_id, stage)
    );
    CREATE TABLE issues (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stage TEXT NOT NULL,
        scope TEXT NOT NULL,
        level TEXT NOT NULL,
        file TEXT,
        capture_id TEXT,
        message TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX issues_by_scope ON issues (stage, scope);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        stage TEXT NOT NULL,
        config_json TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        summary_json TEXT
    );
    """,
    # 2: labels. Automatic labels may be replaced by a later autolabel run; labels a human made,
    # edited or reviewed never are (source = 'human' or reviewed = 1).
    """
    CREATE TABLE labels (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        capture_id TEXT NOT NULL REFERENCES captures (capture_id),
        taxonomy TEXT NOT NULL,
        class_id INTEGER NOT NULL,
        box_json TEXT NOT NULL,
        score REAL,
        mask_json TEXT,
        source TEXT NOT NULL CHECK (source IN ('auto', 'human')),
        reviewed INTEGER NOT NULL DEFAULT 0,
        model TEXT,
        provenance_json TEXT,
        tags_json TEXT NOT NULL DEFAULT '[]',
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX labels_by_capture ON labels (capture_id);
    """,
    # 3: the text prompt an open-vocabulary detector was given for a label's class (NULL otherwise)
    """
    ALTER TABLE labels ADD COLUMN prompt TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# the columns of LabelRecord.row_values, in its order
INSERT_LABEL = ("INSERT INTO labels (capture_id, taxonomy, class_id, box_json, score, mask_json, source, reviewed, model, "
                "provenance_json, tags_json, prompt, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


class WorkspaceError(RuntimeError):
    """A workspace that cannot be used as asked; the message is one line naming the file and the next step."""


class WorkspaceBusy(WorkspaceError):
    """Another live run holds the workspace's writer lock."""


class WorkspaceReadOnly(WorkspaceError):
    """The workspace cannot be written (read-only folder, file or mount); commands that only read still work."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


class WorkspaceFull(WorkspaceError):
    """The disk under the workspace is full: the write that failed was not recorded."""


class WorkspaceDamaged(WorkspaceError):
    """``ums.sqlite`` is not a readable SQLite database (garbage, truncated, damaged pages)."""


def resolve_workspace_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``--workspace`` when given, else ``$UMS_WORKSPACE``, else ``./ums-workspace``."""
    chosen = explicit or os.environ.get("UMS_WORKSPACE") or DEFAULT_WORKSPACE
    return Path(chosen).expanduser().resolve()


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class Workspace:
    """A dataset build on disk. Open with :meth:`open`; usable as a context manager."""

    def __init__(self, root: Path, connection: sqlite3.Connection):
        self.root = root
        self._db = connection
        self._writer = WriterLock(root / LOCK_NAME)
        self.read_only_reason: str | None = None  # why the workspace cannot be written, when it cannot

    @property
    def read_only(self) -> bool:
        return self.read_only_reason is not None

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None, create: bool = True) -> Workspace:
        """Open (with ``create``, make) the workspace at ``root``; read-only when it cannot be written.

        A read-only workspace serves every reader; its first write raises :class:`WorkspaceReadOnly`.
        Every way the folder or its database can be unusable is a :class:`WorkspaceError`."""
        path = resolve_workspace_path(root)
        database = path / DATABASE_NAME
        exists = _check_location(path, database)
        if not exists and not create:
            raise WorkspaceError(
                f"no workspace at {path} (no {DATABASE_NAME}); run `ums ingest FLIGHT_DIR "
                f"--workspace {path}` first, or pass --workspace / set UMS_WORKSPACE"
            )
        if not exists:
            _make_folder(path)
        reason = _read_only_reason(path, database if exists else None)
        if reason and not exists:
            raise WorkspaceReadOnly(f"cannot create a workspace in {path}: {reason}; pass --workspace a folder "
                                    "you can write", reason)
        if reason is None:
            try:
                return cls._open_writable(path, database)
            except WorkspaceReadOnly as refused:  # e.g. a -shm file another user owns: reading still works
                reason = refused.reason
        return cls._open_read_only(path, database, reason)

    @classmethod
    def _open_writable(cls, path: Path, database: Path) -> Workspace:
        connection = _connect(path, str(database))
        try:
            _enable_wal(connection)
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            workspace = cls(path, connection)
            workspace._migrate()
        except BaseException:
            connection.close()
            raise
        return workspace

    @classmethod
    def _open_read_only(cls, path: Path, database: Path, reason: str) -> Workspace:
        """Open with ``mode=ro``; where SQLite cannot open the write-ahead log's index in a folder it
        cannot write, read the file as it is (``immutable=1``), which is exact only while no -wal file
        holds changes not yet in it (a writer must create one first, and cannot here)."""
        uri = f"{database.as_uri()}?mode=ro"
        connection = _connect(path, uri)
        try:
            if not _can_read(connection):
                connection.close()
                if _log_pending(database):
                    raise WorkspaceReadOnly(
                        f"cannot read workspace {path}: {reason}, and {DATABASE_NAME}-wal holds changes SQLite can only "
                        "read with write access to the folder; make it writable for one `ums status` (which merges "
                        "them), or copy the workspace to a writable folder", reason)
                connection = _connect(path, f"{uri}&immutable=1")
            connection.execute("PRAGMA foreign_keys=ON")
            workspace = cls(path, connection)
            workspace.read_only_reason = reason
            version = workspace.schema_version
        except BaseException:
            connection.close()
            raise
        if version < SCHEMA_VERSION:
            workspace.close()
            raise WorkspaceReadOnly(f"workspace {path} was written by an older ums and must be upgraded, which "
                                    f"writes to it, but {reason}; {_MAKE_WRITABLE}", reason)
        if version > SCHEMA_VERSION:
            workspace.close()
            raise _newer_schema(path, version)
        return workspace

    def close(self) -> None:
        self._writer.close()
        self._db.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _migrate(self) -> None:
        version = self.schema_version
        while version < SCHEMA_VERSION:
            with self.transaction():
                # Another process may have migrated between our read and our write lock.
                version = self.schema_version
                if version < SCHEMA_VERSION:
                    self._apply_migration(version)
                    version += 1
        if version > SCHEMA_VERSION:
            raise _newer_schema(self.root, version)

    def _apply_migration(self, version: int) -> None:
        for statement in _statements(MIGRATIONS[version]):
            self._db.execute(statement)
        self._db.execute(f"PRAGMA user_version={version + 1}")

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    @contextmanager
    def writing(self, stage: str, wait_s: float = 0.0) -> Iterator[Workspace]:
        """Hold the workspace's writer lock while a stage writes; nested calls in one object just count.

        The first entry deletes stale temporaries: with the lock held no other writer is alive, so
        every temporary left is a killed writer's. Raises :class:`WorkspaceBusy` when another run
        still holds the lock after ``wait_s`` seconds, :class:`WorkspaceReadOnly` on a read-only
        workspace, and a :class:`WorkspaceError` when ``ums.lock`` cannot be opened (a folder, say).
        """
        first = self._writer.depth == 0
        self._refuse_if_read_only(f"`{stage}` writes to it")
        try:
            acquired = self._writer.acquire(stage, wait_s)
        except OSError as exc:
            raise _lock_error(self.root, exc) from exc
        if not acquired:
            raise WorkspaceBusy(
                f"workspace {self.root} is in use by {describe_owner(self._writer.owner())}; "
                "wait for it to finish or use another workspace"
            )
        try:
            if first:
                remove_stale_temporaries(self.root)
            yield self
        finally:
            self._writer.release()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._refuse_if_read_only("this command writes to it")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            # A COMMIT that failed (disk full) may leave the transaction open; the next one could not begin.
            self._roll_back()
            raise

    def _roll_back(self) -> None:
        if not self._db.in_transaction:
            return  # SQLite already rolled back (it does on some errors, such as a full disk)
        try:
            self._db.execute("ROLLBACK")
        except (sqlite3.Error, WorkspaceError):
            pass  # the error being raised says what went wrong; closing the connection rolls back anyway

    def _refuse_if_read_only(self, what: str) -> None:
        if self.read_only_reason is not None:
            raise WorkspaceReadOnly(f"workspace {self.root} is read-only ({self.read_only_reason}): {what}; "
                                    f"{_MAKE_WRITABLE}", self.read_only_reason)

    def stage_dir(self, stage: str) -> Path:
        """The folder a stage writes its files into, made when missing."""
        folder = self.root / stage
        self._refuse_if_read_only(f"this command writes into {folder}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _folder_error(self.root, folder, exc) from exc
        return folder

    def absolute(self, relative: str) -> Path:
        return self.root / relative

    # -- runs ----------------------------------------------------------------------------------
    @contextmanager
    def recorded_run(self, stage: str, settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """One run of ``stage``: the writer lock, and a run record whose summary is the dict the
        caller fills (stored when the run ends, with ``interrupted`` when it did not finish)."""
        summary: dict[str, Any] = {}
        with self.writing(stage):
            run_id = self.start_run(stage, settings)
            try:
                yield summary
            except BaseException as exc:
                summary["interrupted"] = type(exc).__name__
                raise
            finally:
                self.finish_run(run_id, {key: str(value) for key, value in summary.items()})

    def start_run(self, stage: str, config: dict[str, Any]) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (stage, config_json, started_at) VALUES (?, ?, ?)",
                (stage, json.dumps(config, default=str), utc_now()),
            )
        return int(cursor.lastrowid)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, summary_json = ? WHERE id = ?",
                (utc_now(), json.dumps(summary, default=str), run_id),
            )

    def runs(self, stage: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT * FROM runs" + (" WHERE stage = ?" if stage else "") + " ORDER BY id"
        rows = self._db.execute(query, (stage,) if stage else ()).fetchall()
        return [dict(row) for row in rows]

    # -- source files --------------------------------------------------------------------------
    def known_files(self, flight_root: str) -> dict[str, sqlite3.Row]:
        rows = self._db.execute("SELECT * FROM files WHERE flight_root = ?", (flight_root,))
        return {row["path"]: row for row in rows}

    def record_probe(self, flight_root: str, probe: FileProbe) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files (path, flight_root, size, mtime_ns, sha256, "
                "probe_json, error, present, updated_at) VALUES (?, ?, ?, ?, ?, ?, NULL, 1, ?)",
                (
                    probe.path, flight_root, probe.size, probe.mtime_ns, probe.sha256,
                    probe.model_dump_json(), utc_now(),
                ),
            )

    def record_unreadable(
        self, flight_root: str, path: str, size: int, mtime_ns: int, sha256: str | None, error: str
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO files (path, flight_root, size, mtime_ns, sha256, "
                "probe_json, error, present, updated_at) VALUES (?, ?, ?, ?, ?, NULL, ?, 1, ?)",
                (path, flight_root, size, mtime_ns, sha256, error, utc_now()),
            )

    def mark_files_missing(self, paths: Iterable[str]) -> None:
        with self.transaction() as db:
            db.executemany("UPDATE files SET present = 0 WHERE path = ?", [(p,) for p in paths])

    def mark_file_present(self, path: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE files SET present = 1 WHERE path = ?", (path,))

    def file_counts(self) -> dict[str, int]:
        row = self._db.execute(
            "SELECT COUNT(*) AS total, SUM(present = 1 AND probe_json IS NOT NULL) AS readable, "
            "SUM(present = 1 AND error IS NOT NULL) AS unreadable, SUM(present = 0) AS missing "
            "FROM files"
        ).fetchone()
        return {key: int(row[key] or 0) for key in ("total", "readable", "unreadable", "missing")}

    # -- captures ------------------------------------------------------------------------------
    def replace_flight(
        self, flight_root: str, captures: list[CaptureRecord], issues: list[Issue], scope: str
    ) -> None:
        """Store a flight's captures and the ingest issues of that flight in one transaction.

        Captures that disappear from the grouping (all their files removed) are kept: their stage
        results and labels may hold human work, so nothing is deleted.
        """
        now = utc_now()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO captures (capture_id, flight_root, sequence, timestamp, record_json, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (capture_id) DO UPDATE SET "
                "record_json = excluded.record_json, updated_at = excluded.updated_at",
                [
                    (c.capture_id, flight_root, c.sequence, c.timestamp, c.model_dump_json(), now)
                    for c in captures
                ],
            )
            self._replace_issues(db, "ingest", scope, issues, now)

    def replace_issues(self, stage: str, scope: str, issues: list[Issue]) -> None:
        with self.transaction() as db:
            self._replace_issues(db, stage, scope, issues, utc_now())

    @staticmethod
    def _replace_issues(
        db: sqlite3.Connection, stage: str, scope: str, issues: list[Issue], now: str
    ) -> None:
        db.execute("DELETE FROM issues WHERE stage = ? AND scope = ?", (stage, scope))
        db.executemany(
            "INSERT INTO issues (stage, scope, level, file, capture_id, message, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(i.stage, scope, i.level, i.file, i.capture_id, i.message, now) for i in issues],
        )

    def captures(self) -> list[CaptureRecord]:
        rows = self._db.execute(
            "SELECT record_json FROM captures ORDER BY flight_root, timestamp, sequence, capture_id"
        )
        return [CaptureRecord.model_validate_json(row["record_json"]) for row in rows]

    def capture_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM captures").fetchone()[0]

    def issues(self, stage: str | None = None) -> list[Issue]:
        query = "SELECT * FROM issues" + (" WHERE stage = ?" if stage else "") + " ORDER BY id"
        rows = self._db.execute(query, (stage,) if stage else ())
        return [
            Issue(
                stage=row["stage"], level=row["level"], file=row["file"],
                capture_id=row["capture_id"], message=row["message"],
            )
            for row in rows
        ]

    # -- stage results -------------------------------------------------------------------------
    def record_stage_result(
        self, capture_id: str, stage: str, status: str, result: dict[str, Any]
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO stage_results (capture_id, stage, status, result_json, "
                "updated_at) VALUES (?, ?, ?, ?, ?)",
                (capture_id, stage, status, json.dumps(result, default=str), utc_now()),
            )

    def stage_results(self, capture_id: str) -> dict[str, Any]:
        rows = self._db.execute(
            "SELECT stage, status, result_json FROM stage_results WHERE capture_id = ?",
            (capture_id,),
        )
        return {
            row["stage"]: {"status": row["status"], **json.loads(row["result_json"])}
            for row in rows
        }

    def stage_result(self, capture_id: str, stage: str) -> dict[str, Any] | None:
        """One stage's stored result of one capture (with its ``status``), or None."""
        row = self._db.execute(
            "SELECT status, result_json FROM stage_results WHERE capture_id = ? AND stage = ?", (capture_id, stage)
        ).fetchone()
        return None if row is None else {"status": row["status"], **json.loads(row["result_json"])}

    def captures_with(self, stage: str, status: str = "done") -> list[tuple[CaptureRecord, dict[str, Any]]]:
        """The captures whose ``stage`` result has ``status``, with that result, in capture order."""
        rows = self._db.execute(
            "SELECT c.record_json, r.status, r.result_json FROM captures c JOIN stage_results r "
            "ON r.capture_id = c.capture_id AND r.stage = ? WHERE r.status = ? "
            "ORDER BY c.flight_root, c.timestamp, c.sequence, c.capture_id",
            (stage, status),
        )
        return [
            (CaptureRecord.model_validate_json(row["record_json"]),
             {"status": row["status"], **json.loads(row["result_json"])})
            for row in rows
        ]

    def results_with(self, stage: str, status: str = "done") -> list[tuple[str, dict[str, Any]]]:
        """(capture id, result) of the captures whose ``stage`` result has ``status``, in capture
        order, without reading the capture records: what a reader of one stage's results over a
        season of captures needs (the review queue ranks 10,000 in well under a second)."""
        rows = self._db.execute(
            "SELECT c.capture_id, r.result_json FROM captures c JOIN stage_results r "
            "ON r.capture_id = c.capture_id AND r.stage = ? WHERE r.status = ? "
            "ORDER BY c.flight_root, c.timestamp, c.sequence, c.capture_id",
            (stage, status),
        )
        return [(row["capture_id"], json.loads(row["result_json"])) for row in rows]

    def record_outcome(
        self, capture_id: str, stage: str, status: str, result: dict[str, Any], issues: list[Issue]
    ) -> None:
        """A capture's stage result and that capture's issues of the stage, in one transaction: a
        rerun that redoes the capture replaces both, and a killed driver never keeps one without the
        other."""
        now = utc_now()
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO stage_results (capture_id, stage, status, result_json, "
                "updated_at) VALUES (?, ?, ?, ?, ?)",
                (capture_id, stage, status, json.dumps(result, default=str), now),
            )
            self._replace_issues(db, stage, capture_id, issues, now)

    def stage_counts(self) -> dict[str, Counter[str]]:
        counts: dict[str, Counter[str]] = {}
        rows = self._db.execute(
            "SELECT stage, status, COUNT(*) AS n FROM stage_results GROUP BY stage, status"
        )
        for row in rows:
            counts.setdefault(row["stage"], Counter())[row["status"]] = row["n"]
        return counts

    # -- labels --------------------------------------------------------------------------------
    def labels(self, capture_id: str | None = None) -> list[LabelRecord]:
        query = "SELECT * FROM labels" + (" WHERE capture_id = ?" if capture_id else "") + " ORDER BY id"
        rows = self._db.execute(query, (capture_id,) if capture_id else ())
        return [LabelRecord.from_row(row) for row in rows]

    def replace_auto_labels(
        self, capture_id: str, labels: list[LabelRecord],
        select: Callable[[list[LabelRecord], list[LabelRecord]], list[LabelRecord]] | None = None,
    ) -> int:
        """Swap a capture's unreviewed automatic labels for ``labels`` in one transaction.

        Human and reviewed labels stay. ``select(new, kept)`` (the caller's rule, e.g. autolabel's
        "a box that repeats a human box is dropped") chooses which new labels to add, seeing the
        labels that stay in the same transaction. Returns how many labels were written."""
        with self.transaction() as db:
            db.execute("DELETE FROM labels WHERE capture_id = ? AND source = 'auto' AND reviewed = 0", (capture_id,))
            kept = [LabelRecord.from_row(r) for r in db.execute("SELECT * FROM labels WHERE capture_id = ?", (capture_id,))]
            fresh = select(labels, kept) if select is not None else labels
            now = utc_now()
            db.executemany(INSERT_LABEL, [label.row_values(capture_id, now) for label in fresh])
        return len(fresh)

    def add_label(self, capture_id: str, label: LabelRecord) -> int:
        with self.transaction() as db:
            cursor = db.execute(INSERT_LABEL, label.row_values(capture_id, utc_now()))
        return int(cursor.lastrowid)

    def update_label(self, label: LabelRecord) -> None:
        """Write every field of an existing label (matched by id)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE labels SET taxonomy = ?, class_id = ?, box_json = ?, score = ?, mask_json = ?, source = ?, "
                "reviewed = ?, model = ?, provenance_json = ?, tags_json = ?, prompt = ?, updated_at = ? WHERE id = ?",
                (label.taxonomy, label.class_id, json.dumps(list(label.box)), label.score,
                 json.dumps(label.mask) if label.mask else None, label.source, int(label.reviewed), label.model,
                 json.dumps(label.provenance), json.dumps(label.tags), label.prompt, utc_now(), label.id),
            )

    def mark_label_reviewed(self, label_id: int, reviewed: bool = True) -> None:
        with self.transaction() as db:
            db.execute("UPDATE labels SET reviewed = ?, updated_at = ? WHERE id = ?", (int(reviewed), utc_now(), label_id))

    # -- the public manifest -------------------------------------------------------------------
    def manifest(self) -> Iterator[CaptureManifest]:
        """One :class:`CaptureManifest` per capture, paths made absolute."""
        issues_by_capture: dict[str, list[Issue]] = {}
        for issue in self.issues():
            if issue.capture_id:
                issues_by_capture.setdefault(issue.capture_id, []).append(issue)
        for capture in self.captures():
            reference = capture.reference_frame
            thermal_raw = capture.thermal_raw
            if thermal_raw is not None:
                thermal_raw = thermal_raw.model_copy(
                    update={"path": str(self.absolute(thermal_raw.path))}
                )
            yield CaptureManifest(
                capture_id=capture.capture_id,
                sequence=capture.sequence,
                timestamp=capture.timestamp,
                folder=capture.folder,
                flight_root=capture.flight_root,
                frames=capture.frames,
                exif=reference.exif,
                xmp=reference.xmp,
                thermal_raw=thermal_raw,
                stages=self.stage_results(capture.capture_id),
                labels=[label.model_dump(exclude={"mask"}) | {"has_mask": label.mask is not None}
                        for label in self.labels(capture.capture_id)],
                issues=issues_by_capture.get(capture.capture_id, []),
            )


# -- opening ---------------------------------------------------------------------------------------
_MAKE_WRITABLE = ("make it writable (chmod -R u+w, or remount the disk read-write) or copy it to a writable folder "
                  "and pass that with --workspace")


def _check_location(path: Path, database: Path) -> bool:
    """Whether ``database`` exists; refuses, in one line, a ``path`` that cannot be a workspace folder."""
    folder = _stat(path, path)
    if folder is not None and not stat.S_ISDIR(folder.st_mode):
        raise WorkspaceError(f"workspace {path} is a file, not a folder: pass --workspace (or set UMS_WORKSPACE to) "
                             "a folder, new or an existing workspace")
    found = _stat(database, path) if folder is not None else None
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise WorkspaceError(f"{database} is not a file (a folder?), so {path} is not a usable workspace: move it "
                             "aside, or pass --workspace another folder")
    return found is not None


def _stat(target: Path, root: Path) -> os.stat_result | None:
    try:
        return target.stat()
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise WorkspaceError(f"workspace {root}: a folder above it is a file; pass --workspace a folder") from None
    except OSError as exc:
        raise WorkspaceError(f"cannot read workspace {root} ({exc.strerror}): check its permissions, or pass "
                             "--workspace another folder") from exc


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise WorkspaceReadOnly(f"cannot create workspace folder {path} ({exc.strerror}): pass --workspace a "
                                    "folder you can write", exc.strerror) from exc
        raise _folder_error(path, path, exc) from exc


def _read_only_reason(path: Path, database: Path | None) -> str | None:
    """Why this process cannot write the workspace, or None. ``os.access`` asks as the real user, and
    root passes it except on a read-only mount, which is when root cannot write either."""
    if not os.access(path, os.W_OK):
        return "it is on a read-only disk or mount" if _on_read_only_mount(path) else "its folder is not writable by you"
    if database is not None and not os.access(database, os.W_OK):
        return f"{DATABASE_NAME} is not writable by you"
    return None


def _on_read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _connect(root: Path, database: str) -> sqlite3.Connection:
    try:
        connection = sqlite3.connect(database, timeout=30, isolation_level=None, factory=_Connection,
                                     uri=database.startswith("file:"))
    except sqlite3.DatabaseError as exc:
        raise _storage_error(root, exc) or WorkspaceError(f"cannot open {root / DATABASE_NAME} ({exc})") from exc
    connection.workspace_root = root
    connection.row_factory = sqlite3.Row
    return connection


def _can_read(connection: sqlite3.Connection) -> bool:
    """False where SQLite cannot open a WAL database's index (-shm) in a folder it cannot write."""
    try:
        sqlite3.Connection.execute(connection, "SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if _primary_code(exc) in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY):
            return False
        raise _storage_error(connection.workspace_root, exc) or exc
    except sqlite3.DatabaseError as exc:
        raise _storage_error(connection.workspace_root, exc) or exc
    return True


def _log_pending(database: Path) -> bool:
    try:
        return database.with_name(f"{DATABASE_NAME}-wal").stat().st_size > 0
    except OSError:
        return False


def _newer_schema(root: Path, version: int) -> WorkspaceError:
    return WorkspaceError(f"workspace {root} has schema version {version}, newer than this ums ({SCHEMA_VERSION}); upgrade ums")


def _enable_wal(connection: sqlite3.Connection) -> None:
    for delay in (*WAL_RETRY_DELAYS_S, None):
        try:
            # the plain sqlite3 call: its busy error is retried here, not translated
            sqlite3.Connection.execute(connection, "PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if delay is None or not _is_busy(exc):
                raise _storage_error(connection.workspace_root, exc) or exc
            time.sleep(delay)
        except sqlite3.DatabaseError as exc:
            raise _storage_error(connection.workspace_root, exc) or exc


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(error)


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]


# -- storage failures as one line ------------------------------------------------------------------
# Room kept free beyond what the write-ahead log holds: a checkpoint copies the log's pages into
# ums.sqlite, which can grow by that much, and the next stage's records and files need room too.
DISK_MARGIN_BYTES = 64 * 2**20


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _storage_error(root: Path, error: sqlite3.Error) -> WorkspaceError | None:
    """The one-line error for a failure of the database's storage; None for a bug in a statement."""
    code = _primary_code(error)
    database = root / DATABASE_NAME
    if code == sqlite3.SQLITE_FULL:
        return WorkspaceFull(_disk_full_message(root, f"{DATABASE_NAME} could not grow"))
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return WorkspaceDamaged(
            f"workspace database {database} is damaged ({error}): restore it from a backup, or move {DATABASE_NAME} "
            f"and any {DATABASE_NAME}-wal and {DATABASE_NAME}-shm aside and run `ums ingest FLIGHT_DIR --workspace "
            f"{root}` again for each flight, then the later stages, which redo every capture (labels added or "
            "edited in `ums review` were only in the database)")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM):
        reason = f"SQLite cannot write {DATABASE_NAME}: {error}"
        return WorkspaceReadOnly(f"workspace {root} is read-only ({reason}); {_MAKE_WRITABLE}", reason)
    if code == sqlite3.SQLITE_CANTOPEN:
        return WorkspaceError(f"cannot open {database} ({error}): check that you can read and write {root} and its "
                              f"{DATABASE_NAME}* files, or pass --workspace another folder")
    if code == sqlite3.SQLITE_IOERR:
        return WorkspaceError(f"disk error on {database} ({error}; {human_bytes(free_bytes(root))} free there): "
                              "check the disk (and its free space), then rerun the same command")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return WorkspaceError(f"{database} is locked by another process ({error}): wait for the other ums command "
                              "to finish, then rerun")
    return None


def _disk_full_message(root: Path, what: str) -> str:
    try:
        log = (root / f"{DATABASE_NAME}-wal").stat().st_size
    except OSError:
        log = 0
    needed = DISK_MARGIN_BYTES + log
    return (f"disk full: {what} in workspace {root}, whose disk has {human_bytes(free_bytes(root))} free; free at "
            f"least {human_bytes(needed)} there, then rerun the same command (what was not recorded is redone)")


def _folder_error(root: Path, folder: Path, error: OSError) -> WorkspaceError:
    """A folder of the workspace that could not be made, as one line."""
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"cannot create {folder}: {error.strerror}"
        return WorkspaceReadOnly(f"workspace {root} is read-only ({reason}); {_MAKE_WRITABLE}", reason)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return WorkspaceFull(_disk_full_message(root, f"no room to create {folder}"))
    if error.errno in (errno.EEXIST, errno.ENOTDIR):
        return WorkspaceError(f"cannot create folder {folder}: it or a folder above it is a file; move that file "
                              "aside, or pass --workspace another folder")
    return WorkspaceError(f"cannot create folder {folder} ({error.strerror}); pass --workspace another folder")


def _lock_error(root: Path, error: OSError) -> WorkspaceError:
    """The writer lock file that could not be opened, as one line."""
    lock = root / LOCK_NAME
    if error.errno == errno.EISDIR:
        return WorkspaceError(f"{lock} is a folder, not the writer lock file ums keeps there: move it aside "
                              f"(mv {lock} {lock}.moved), then rerun the command")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = f"cannot open {LOCK_NAME} for writing: {error.strerror}"
        return WorkspaceReadOnly(f"workspace {root} is read-only ({reason}); {_MAKE_WRITABLE}", reason)
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return WorkspaceFull(_disk_full_message(root, f"no room for {LOCK_NAME}"))
    return WorkspaceError(f"cannot open the writer lock {lock} ({error.strerror}): move it aside, then rerun the command")


def _translating(method):
    """``method`` of a cursor, raising a storage failure as its WorkspaceError (bugs stay sqlite3 errors)."""

    @functools.wraps(method)
    def translated(cursor, *args):
        try:
            return method(cursor, *args)
        except sqlite3.DatabaseError as exc:
            error = _storage_error(cursor.connection.workspace_root, exc)
            if error is None:
                raise
            raise error from exc

    return translated


class _Cursor(sqlite3.Cursor):
    """Raises a full disk, a damaged file or a read-only database as a WorkspaceError, wherever the
    failure shows: SQLite reads pages lazily, so a damaged one may show only while rows are fetched."""

    execute = _translating(sqlite3.Cursor.execute)
    executemany = _translating(sqlite3.Cursor.executemany)
    executescript = _translating(sqlite3.Cursor.executescript)
    fetchone = _translating(sqlite3.Cursor.fetchone)
    fetchmany = _translating(sqlite3.Cursor.fetchmany)
    fetchall = _translating(sqlite3.Cursor.fetchall)
    __next__ = _translating(sqlite3.Cursor.__next__)


class _Connection(sqlite3.Connection):
    """A connection whose cursors are :class:`_Cursor` (``Connection.execute`` would make plain ones)."""

    workspace_root: Path

    def cursor(self, factory: type[sqlite3.Cursor] = _Cursor) -> sqlite3.Cursor:
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)
