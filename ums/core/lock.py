"""The workspace writer lock: an exclusive ``flock`` on ``<workspace>/ums.lock`` held by the run that writes.

Readers (``ums status``, reports) never take it. The holder records who it is in the file so that a
refused writer can name the run it waits for. The kernel drops a ``flock`` when its holder dies, even
by SIGKILL, so a killed run never leaves the workspace locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_NAME = "ums.lock"
POLL_S = 0.1


class WriterLock:
    """One workspace's writer lock as seen by one holder; :meth:`acquire` and :meth:`release` nest."""

    def __init__(self, path: Path):
        self.path = path
        self.depth = 0
        self._fd: int | None = None

    def acquire(self, stage: str, wait_s: float = 0.0) -> bool:
        """Take the lock (True), or find it still held by another after ``wait_s`` seconds (False).

        Raises the OSError of a lock file that cannot be opened (a folder, a read-only workspace)."""
        if self.depth:
            self.depth += 1
            return True
        # No O_TRUNC: the file holds the current owner's description until we own it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _flock_within(fd, wait_s):
            os.close(fd)
            return False
        self._fd, self.depth = fd, 1
        try:
            _write_owner(fd, stage)
        except OSError:
            pass  # a full disk: the lock holds all the same, and a refused writer reads "does not say which"
        return True

    def release(self) -> None:
        if self.depth > 1:
            self.depth -= 1
            return
        self.close()

    def close(self) -> None:
        """Drop the lock whatever the depth (closing the descriptor releases the flock)."""
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self.depth = None, 0

    def owner(self) -> dict[str, Any] | None:
        """The holder's description, or None when the file is missing, empty or half written."""
        try:
            owner = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None


def _flock_within(fd: int, wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(POLL_S, remaining))


def _write_owner(fd: int, stage: str) -> None:
    owner = {
        "stage": stage,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(sys.argv),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(owner).encode("utf-8"), 0)


def describe_owner(owner: dict[str, Any] | None) -> str:
    """``crop`` (pid 1234 on host h, since ...: ums crop --workers 2), on one line."""
    if owner is None:
        return "another ums run (its ums.lock does not say which)"
    command = " ".join(str(owner.get("command", "?")).split())
    return (f"`{owner.get('stage', '?')}` (pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, "
            f"since {owner.get('since', '?')}: {command})")
