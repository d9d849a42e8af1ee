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

from lorepin_cms import db_roles
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


# -- the owner's password (`db.rotate-password`) ------------------------------------------

SCRAM_ITERATIONS = 4096  # PostgreSQL's scram_iterations default
# Nothing of a password change reaches the server's log: not a slow statement, not a
# failing one, not pgaudit (the session's own settings; the owner is a superuser).
UNLOGGED = (
    "SET log_statement = 'none'; SET log_min_duration_statement = -1; "
    "SET log_min_error_statement = panic; SET pgaudit.log = 'none'"
)
WAL_RECEIVER = "SELECT pid, status FROM pg_stat_wal_receiver"


def scram_verifier(password: str, salt: bytes, iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL keeps of a password (RFC 5802/7677, its pg_authid form): made here,
    so the server never sees the password itself. `password`: ASCII (SASLprep leaves it)."""
    import base64
    import hashlib
    import hmac

    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


# Each login role and the secret file that holds its password (docs/security.md).
LOGIN_ROLES = {
    DB_USER: "db_password",
    db_roles.CMS_ROLE: "cms_db_password",
    db_roles.MONITOR_ROLE: "monitor_db_password",
}
EXISTING_LOGIN_ROLES = (  # those of LOGIN_ROLES there (a test holds the two together)
    "SELECT rolname FROM pg_roles WHERE rolname IN ('lorepin', 'lorepin_cms', 'lorepin_monitor')"
)


def set_password(role: str, verifier: str) -> str:
    if role not in LOGIN_ROLES:
        raise ConfigError(f"{role!r} is not one of the toolkit's login roles")
    return f"ALTER ROLE {role} PASSWORD '{verifier}'"


def with_password(conninfo: str, password: str) -> str:
    """A replica's primary_conninfo with another password (every other option kept)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        options = conninfo_to_dict(conninfo)
    except Exception as exc:  # psycopg.ProgrammingError: libpq could not parse it
        raise ConfigError(f"the replica's primary_conninfo cannot be read: {exc}") from None
    if not options.get("host"):
        raise ConfigError("the replica has no primary_conninfo: clone it again (`db.rejoin`)")
    options["password"] = password
    return make_conninfo("", **{k: str(v) for k, v in options.items()})
