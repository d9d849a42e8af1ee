"""What can stop a migration run; each error carries the process's exit code."""

from __future__ import annotations


class MigrationError(Exception):
    """A run that did not complete; the message says where the database was left."""

    exit_code = 1


class LockBusy(MigrationError):
    exit_code = 3


class ChecksumMismatch(MigrationError):
    exit_code = 4
