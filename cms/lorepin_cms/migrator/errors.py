"""What can stop a migration run: the project's one error hierarchy (lorepin_cms.exit_codes),
whose classes carry their exit codes, which `invoke db.*` passes on unchanged."""

from __future__ import annotations

from lorepin_cms import exit_codes


class MigrationError(exit_codes.LorePinError):
    """A run that did not complete; the message says where the database was left."""


class BadInput(MigrationError, exit_codes.BadInput):
    """A target or setting the migrator cannot use: refused before anything changed."""


class LockBusy(MigrationError, exit_codes.Busy):
    """Another run holds the migration lock: try again when it is done."""


class Refused(MigrationError, exit_codes.Refused):
    """The history or the database is not in a state that is safe to migrate."""


class ChecksumMismatch(Refused):
    """An applied revision's file changed after it was applied."""
