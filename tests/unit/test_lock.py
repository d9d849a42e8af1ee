"""The environment's lock: one change at a time, and a refusal that names the holder."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path

import pytest

from lorepin_tasks.errors import Busy
from lorepin_tasks.runtime import lock


def test_a_refusal_names_the_holder_even_before_it_wrote_its_record(tmp_path: Path) -> None:
    """The holder takes the flock, then writes who it is: a run refused in between waits
    for that record instead of saying "another run"."""
    path = tmp_path / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)  # the holder, not yet recorded
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    record = {"pid": 4242, "who": "ana", "action": "feature.up", "since": "2026-11-30T16:00:00"}

    def record_later() -> None:
        time.sleep(0.2)
        os.pwrite(fd, json.dumps(record).encode(), 0)

    writer = threading.Thread(target=record_later)
    writer.start()
    try:
        holder = r"being changed by ana \(feature.up, pid 4242, since"
        with (
            pytest.raises(Busy, match=holder),
            lock.held(path, what="environment 'x'", who="bo", action="up"),
        ):
            pass
    finally:
        writer.join()
        os.close(fd)


def test_a_holder_that_never_says_who_it_is_is_another_run(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        with (
            pytest.raises(Busy, match="being changed by another run"),
            lock.held(path, what="environment 'x'", who="bo", action="up"),
        ):
            pass
    finally:
        os.close(fd)
