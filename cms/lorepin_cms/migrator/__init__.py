"""Applies the CMS's Alembic migrations so they cannot hurt a live database.

- One run at a time per database: a session-level advisory lock (it dies with the
  process, so it can never be left behind); a second run waits, then names the holder.
- Bounded locks: `lock_timeout` and `statement_timeout` on the session; a revision that
  hits the lock timeout is retried a few times, then the run fails.
- One transaction per revision: a failure leaves the database at the last good revision.
- A log in the database itself (`lorepin_ops.migration_log`) and a checksum of every
  applied revision's file (`lorepin_ops.migration_checksums`): editing an applied
  revision is refused unless explicitly accepted (and that is logged too).

Used by the `migrate` service (`python -m lorepin_cms.migrator upgrade`) and by the
toolkit's `invoke db.*` tasks, which run this same module inside the environment.

Modules: `planning` (pure: what a run will do), `ledger` (the `lorepin_ops` records),
`runner` (lock, transactions, retries), `errors`, and the command line in `__main__`.
"""

from lorepin_cms.migrator.errors import (
    BadInput,
    ChecksumMismatch,
    LockBusy,
    MigrationError,
    Refused,
)
from lorepin_cms.migrator.runner import Migrator, Options, alembic_config, default_who

__all__ = [
    "BadInput",
    "ChecksumMismatch",
    "LockBusy",
    "MigrationError",
    "Migrator",
    "Options",
    "Refused",
    "alembic_config",
    "default_who",
]
