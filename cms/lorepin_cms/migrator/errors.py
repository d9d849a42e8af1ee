"""What can stop a migration run. Each class carries its exit code from the project's one
table (lorepin_cms.exit_codes), which `invoke db.*` passes on unchanged."""

from __future__ import annotations

from typing import ClassVar

from lorepin_cms.exit_codes import ExitCode


class MigrationError(Exception):
    """A run that did not complete; the message says where the database was left."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class BadInput(MigrationError):
    """A target or setting the migrator cannot use: refused before anything changed."""

    exit_code = ExitCode.BAD_INPUT


class LockBusy(MigrationError):
    """Another run holds the migration lock: try again when it is done."""

    exit_code = ExitCode.BUSY


class Refused(MigrationError):
    """The history or the database is not in a state that is safe to migrate."""

    exit_code = ExitCode.REFUSED


class ChecksumMismatch(Refused):
    """An applied revision's file changed after it was applied."""
