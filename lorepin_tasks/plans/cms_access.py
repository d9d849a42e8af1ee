"""The CMS's users and API tokens as SQL, for `invoke cms.user.add` and `cms.token.*`. Pure.

The rules (names, roles, the token's form and hash) are the CMS's own (lorepin_cms.access);
this module only writes them as statements for a psql session, which has no bind
parameters: every value is checked against its format first and then quoted.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from lorepin_cms import access
from lorepin_tasks.errors import ConfigError, Refused
from lorepin_tasks.runtime.pg import literal

TABLES = "SELECT to_regclass('api_tokens') IS NOT NULL AND to_regclass('cms_users') IS NOT NULL"
TOKEN_COLUMNS = ("key", "user", "role", "created", "expires", "state")


def days(text: str) -> int:
    """A token's lifetime: `90d`, `90` or `12w`; 1 day to a year."""
    raw = text.strip().lower()
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in ("d", "w") else (raw, "d")
    if not re.fullmatch(r"[0-9]{1,4}", number):  # ASCII digits: int() takes others too
        raise ConfigError(f"--expires must be days or weeks like 90d or 12w, got {text!r}")
    count = int(number) * (7 if unit == "w" else 1)
    if not 1 <= count <= access.MAX_DAYS:
        raise ConfigError(f"--expires must be 1 to {access.MAX_DAYS} days, got {text!r}")
    return count


def user_sql(name: str) -> str:
    """The user's role (no row when there is no such user)."""
    return f"SELECT role FROM cms_users WHERE name = {literal(access.check_name(name))}"


def add_user_sql(name: str, role: str) -> str:
    return (
        "INSERT INTO cms_users (name, role) VALUES "
        f"({literal(access.check_name(name))}, {literal(access.check_role(role))})"
    )


def token_role(user: str, user_role: str, asked: str) -> str:
    """The role a new token of `user` gets: what was asked, never more than theirs."""
    role = access.check_role(asked or user_role)
    if not access.at_least(user_role, role):
        raise Refused(f"user {user!r} has the role {user_role}: a token of theirs cannot be {role}")
    return role


def add_token_sql(user: str, role: str, key: str, secret_sha256: str, expires: datetime) -> str:
    """The new token's row: its key and the hash of its secret (lorepin_cms.access)."""
    return (
        "INSERT INTO api_tokens (key, secret_sha256, user_id, role, expires_at) "
        f"SELECT {literal(key)}, {literal(secret_sha256)}, id, {literal(role)}, "
        f"{literal(expires.isoformat())}::timestamptz "
        f"FROM cms_users WHERE name = {literal(access.check_name(user))}"
    )


LIST_SQL = (
    "SELECT t.key, u.name, t.role, u.role, to_char(t.created_at AT TIME ZONE 'UTC', "
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), to_char(t.expires_at AT TIME ZONE 'UTC', "
    '\'YYYY-MM-DD"T"HH24:MI:SS"Z"\'), t.revoked_at IS NOT NULL, t.expires_at <= now() '
    "FROM api_tokens t JOIN cms_users u ON u.id = t.user_id ORDER BY t.created_at, t.id"
)


def tokens(rows: list[list[str]]) -> list[dict[str, Any]]:
    """LIST_SQL's rows: each token's key, user, role (capped by the user's), dates, state."""
    found = []
    for key, user, role, user_role, created, expires, revoked, expired in rows:
        state = "revoked" if revoked == "t" else ("expired" if expired == "t" else "active")
        found.append(
            {
                "key": key,
                "user": user,
                "role": access.lesser(role, user_role),
                "created": created,
                "expires": expires,
                "state": state,
            }
        )
    return found


def token_state_sql(key: str) -> str:
    """`t` when the token is revoked, `f` when not (no row when there is no such token)."""
    key = access.check_key(key)
    return f"SELECT revoked_at IS NOT NULL FROM api_tokens WHERE key = {literal(key)}"


def revoke_sql(key: str) -> str:
    return (
        f"UPDATE api_tokens SET revoked_at = now() WHERE key = {literal(access.check_key(key))} "
        "AND revoked_at IS NULL"
    )


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no tokens\n"
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in TOKEN_COLUMNS]
    lines = [
        [c.upper() for c in TOKEN_COLUMNS],
        *([str(r[c]) for c in TOKEN_COLUMNS] for r in rows),
    ]
    return "".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n"
                   for line in lines)  # fmt: skip
