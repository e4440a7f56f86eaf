"""The workspace: one folder holding a dataset build.

``ums.sqlite`` (stdlib sqlite3, WAL) is the manifest of source files, captures, stage results and
issues; derived files live in one folder per stage beside it. Everything a stage writes goes
through :mod:`ums.atomic`, and every database change is a transaction, so a process killed at any
instant leaves a workspace that the next run can read and resume.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ums.atomic import remove_stale_temporaries
from ums.lock import LOCK_NAME, WriterLock, describe_owner
from ums.records import CaptureManifest, CaptureRecord, FileProbe, Issue, LabelRecord

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
)
SCHEMA_VERSION = len(MIGRATIONS)


class WorkspaceError(RuntimeError):
    pass


class WorkspaceBusy(WorkspaceError):
    """Another live run holds the workspace's writer lock."""


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

    # -- lifecycle -----------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | os.PathLike[str] | None = None, create: bool = True) -> Workspace:
        path = resolve_workspace_path(root)
        database = path / DATABASE_NAME
        if not database.exists() and not create:
            raise WorkspaceError(
                f"no workspace at {path} (no {DATABASE_NAME}); run `ums ingest FLIGHT_DIR "
                f"--workspace {path}` first, or pass --workspace / set UMS_WORKSPACE"
            )
        path.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(database, timeout=30, isolation_level=None)
        connection.row_factory = sqlite3.Row
        _enable_wal(connection)
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        workspace = cls(path, connection)
        workspace._migrate()
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
            raise WorkspaceError(
                f"workspace {self.root} has schema version {version}, newer than this ums "
                f"({SCHEMA_VERSION}); upgrade ums"
            )

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
        still holds the lock after ``wait_s`` seconds.
        """
        first = self._writer.depth == 0
        if not self._writer.acquire(stage, wait_s):
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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def stage_dir(self, stage: str) -> Path:
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
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
            db.executemany(
                "INSERT INTO labels (capture_id, taxonomy, class_id, box_json, score, mask_json, source, reviewed, "
                "model, provenance_json, tags_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [label.row_values(capture_id, now) for label in fresh],
            )
        return len(fresh)

    def add_label(self, capture_id: str, label: LabelRecord) -> int:
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO labels (capture_id, taxonomy, class_id, box_json, score, mask_json, source, reviewed, "
                "model, provenance_json, tags_json, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                label.row_values(capture_id, utc_now()),
            )
        return int(cursor.lastrowid)

    def update_label(self, label: LabelRecord) -> None:
        """Write every field of an existing label (matched by id)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE labels SET taxonomy = ?, class_id = ?, box_json = ?, score = ?, mask_json = ?, source = ?, "
                "reviewed = ?, model = ?, provenance_json = ?, tags_json = ?, updated_at = ? WHERE id = ?",
                (label.taxonomy, label.class_id, json.dumps(list(label.box)), label.score,
                 json.dumps(label.mask) if label.mask else None, label.source, int(label.reviewed), label.model,
                 json.dumps(label.provenance), json.dumps(label.tags), utc_now(), label.id),
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


def _enable_wal(connection: sqlite3.Connection) -> None:
    for delay in (*WAL_RETRY_DELAYS_S, None):
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if delay is None or not _is_busy(exc):
                raise
            time.sleep(delay)


def _is_busy(error: sqlite3.OperationalError) -> bool:
    return getattr(error, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(error)


def _statements(script: str) -> list[str]:
    return [statement.strip() for statement in script.split(";") if statement.strip()]
