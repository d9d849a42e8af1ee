"""One change at a time per environment: an advisory lock on a file of the environment.

`flock` belongs to the open file, so the kernel releases it when the holder exits,
however it exits (`kill -9` included): it can never be left behind. The holder writes
who it is into the file, so a second run can say who holds it and since when.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from lorepin_tasks.errors import Busy


@contextmanager
def held(path: Path, *, what: str, who: str, action: str) -> Iterator[None]:
    """Hold the lock at `path` for the block, or raise Busy naming its holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"{what} is being changed by {holder(fd)}; try again when it is done"
            ) from None
        record = {
            "pid": os.getpid(),
            "who": who,
            "action": action,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


RECORD_WAIT = 1.0  # seconds a refused run waits for the holder to write who it is


def holder(fd: int, wait: float = RECORD_WAIT) -> str:
    """Who holds the lock, from its record. The holder writes it just after taking the
    lock: a run that looks in between waits a moment for it rather than say nobody."""
    deadline = time.monotonic() + wait
    while True:
        try:
            record = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return (
                f"{record['who']} ({record['action']}, pid {record['pid']}, "
                f"since {record['since']})"
            )
        except (ValueError, KeyError, TypeError):
            if time.monotonic() >= deadline:
                return "another run"
            time.sleep(0.05)


def holder_of(path: Path) -> str | None:
    """Who holds the lock at `path` now, or None (for `status`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return holder(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
