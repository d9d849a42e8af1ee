"""Database commands for an environment, as argv lists. Pure: no I/O.

Migrations run inside the environment, in a one-off container of the `migrate` service
(the CMS image with the migrator), so every environment, local or remote, is migrated
by the same code over its own network with its own secrets.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from pathlib import Path

from lorepin_tasks.errors import ConfigError

MIGRATOR = ["python", "-m", "lorepin_cms.migrator"]
REVISION = re.compile(r"^(head|base|[0-9a-zA-Z_]{1,32})$")
ONEOFF = "migrator"  # the label kind of the migrator's one-off containers
DB_USER = DB_NAME = "lorepin"


def revision(value: str, what: str = "revision") -> str:
    if not value:
        raise ConfigError(f"say which {what}: a revision id, 'head' or 'base' (invoke db.history)")
    if not REVISION.fullmatch(value):
        raise ConfigError(f"invalid {what} {value!r}: use a revision id, 'head' or 'base'")
    return value


def migrator(action: Sequence[str], *, who: str, lock_wait: float | None = None) -> list[str]:
    """The migrator's command line, for a one-off `migrate` container."""
    options = ["--who", who]
    if lock_wait is not None:
        options += ["--lock-wait", f"{lock_wait:g}"]
    return [*MIGRATOR, *options, *action]


def upgrade_action(to: str, accept_changed: Sequence[str] = ()) -> list[str]:
    action = ["upgrade", "--to", revision(to)]
    for rev in accept_changed:
        action += ["--accept-changed", revision(rev)]
    return action


def downgrade_action(to: str) -> list[str]:
    if not to:
        raise ConfigError("say which revision to go back to: --to REV (see `invoke db.history`)")
    return ["downgrade", "--to", revision(to)]


def alembic(root: Path, *args: str) -> list[str]:
    """Alembic of the toolkit's own interpreter (found with or without an active venv)."""
    return [sys.executable, "-m", "alembic", "-c", str(root / "alembic.ini"), *args]


# Rules off for every revision, and why. Timeouts: the migrator sets lock_timeout and
# statement_timeout on every session (and offline SQL starts with both).
SQUAWK_EXCLUDED = {
    "prefer-robust-stmts": "Alembic applies each revision once, in a transaction, and "
    "records it: IF NOT EXISTS would hide a half-applied state instead of failing",
}
PG_VERSION = "15"


def squawk(binary: str, sql_file: Path) -> list[str]:
    """The migration linter on one revision's offline SQL, as JSON."""
    return [
        binary,
        "--reporter",
        "json",
        f"--pg-version={PG_VERSION}",
        f"--exclude={','.join(SQUAWK_EXCLUDED)}",
        str(sql_file),
    ]
