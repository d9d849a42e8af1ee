"""Who may do what in the CMS: users with a role, their API tokens, and each request's check.

Roles, each allowed what the ones before it are: viewer (reads drafts), editor (creates,
changes and deletes pins), admin (the same; manages users and tokens with the toolkit).
Published pins stay public to read.

A token reads `lp_<key>_<secret>`. The key (12 characters) is public: it names the token in
lists, logs and revocations. The secret (256 random bits) is shown once, when the token is
made, and kept only as its SHA-256: a random 256-bit secret cannot be guessed, so a slow
password hash would buy nothing (GitHub's and PyPI's tokens are kept the same way). A
token's role is at most its user's, and a demoted user's tokens are demoted with them.

`python -m lorepin_cms.access ...` is the command line the toolkit's `invoke cms.user.add`
and `cms.token.*` run in the environment's migrate container: one `error:` line and an
exit code from lorepin_cms.exit_codes on every refusal.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import re
import secrets
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from lorepin_cms.config import ConfigError, database_url
from lorepin_cms.exit_codes import BadInput, ExitCode, LorePinError, Refused
from lorepin_cms.models import ROLES

TOKEN = re.compile(r"lp_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})")
KEY = re.compile(r"[A-Za-z0-9]{12}")
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # the table's own check says the same
MAX_DAYS = 365
DEFAULT_DAYS = 90

security = logging.getLogger("lorepin_cms.security")

LOOKUP = text(
    "SELECT t.secret_sha256, t.role AS token_role, t.expires_at, t.revoked_at, "
    "u.name, u.role AS user_role FROM api_tokens t JOIN cms_users u ON u.id = t.user_id "
    "WHERE t.key = :key"
)


def at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def lesser(a: str, b: str) -> str:
    return a if ROLES.index(a) <= ROLES.index(b) else b


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who a request comes from: a user, the role their token gives, the token's key."""

    user: str
    role: str
    key: str


class Unauthenticated(Exception):
    """The request's credentials do not hold; `reason` is for the security log only (the
    client is told no more than that the token is not valid)."""

    def __init__(self, reason: str, key: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.key = key


def authenticate(conn: Connection, header: str | None, now: datetime) -> Caller | None:
    """The caller an Authorization header names: None without one; Unauthenticated when it
    is not a valid, current token of this CMS."""
    if header is None:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("not a bearer token")
    match = TOKEN.fullmatch(credentials.strip())
    if match is None:
        raise Unauthenticated("malformed token")
    key, secret = match.groups()
    row = conn.execute(LOOKUP, {"key": key}).one_or_none()
    if row is None:
        raise Unauthenticated("unknown token", key)
    if not hmac.compare_digest(row.secret_sha256, digest(secret)):
        raise Unauthenticated("wrong secret", key)
    if row.revoked_at is not None:
        raise Unauthenticated("revoked token", key)
    if row.expires_at <= now:
        raise Unauthenticated("expired token", key)
    return Caller(user=row.name, role=lesser(row.token_role, row.user_role), key=key)


class FailureLimit:
    """At most `limit` failed authentications per client address in a sliding minute; the
    next are refused unchecked (429) until the oldest leaves the window. Per worker, in
    memory: a guesser meets the limit of each worker it reaches, and still cannot guess."""

    WINDOW = 60.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str, now: float | None = None) -> int:
        """Seconds until `client` may try again; 0 when it may now."""
        now = time.monotonic() if now is None else now
        seen = self.failures.get(client)
        while seen and seen[0] <= now - self.WINDOW:
            seen.popleft()
        if not seen:
            self.failures.pop(client, None)
            return 0
        return int(seen[0] + self.WINDOW - now) + 1 if len(seen) >= self.limit else 0

    def failed(self, client: str, now: float | None = None) -> None:
        if len(self.failures) > 100_000:  # a flood of addresses cannot grow it without end
            self.failures.clear()
        self.failures.setdefault(client, deque()).append(time.monotonic() if now is None else now)


# The command line


def check_role(role: str) -> str:
    if role not in ROLES:
        raise BadInput(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise BadInput(
            f"invalid user name {name!r}: 1 to 64 of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )
    return name


def add_user(conn: Connection, name: str, role: str) -> None:
    try:
        conn.execute(
            text("INSERT INTO cms_users (name, role) VALUES (:name, :role)"),
            {"name": check_name(name), "role": check_role(role)},
        )
    except IntegrityError:
        raise Refused(f"user {name!r} already exists") from None


def create_token(
    conn: Connection, user: str, role: str | None, days: int, now: datetime
) -> tuple[str, datetime]:
    """A new token of `user` (the whole token, shown once) and when it expires."""
    if not 1 <= days <= MAX_DAYS:
        raise BadInput(f"a token lasts 1 to {MAX_DAYS} days, not {days}")
    found = conn.execute(
        text("SELECT id, role FROM cms_users WHERE name = :name"), {"name": check_name(user)}
    ).one_or_none()
    if found is None:
        raise BadInput(f"no user {user!r} (`invoke cms.user.add` makes one)")
    role = check_role(role or found.role)
    if not at_least(found.role, role):
        raise Refused(f"user {user!r} is a {found.role}: a token cannot give them {role}")
    key = "".join(secrets.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
                  for _ in range(12))  # fmt: skip
    secret = secrets.token_urlsafe(32)  # 43 characters
    expires = now + timedelta(days=days)
    conn.execute(
        text(
            "INSERT INTO api_tokens (key, secret_sha256, user_id, role, expires_at) "
            "VALUES (:key, :sha, :user_id, :role, :expires)"
        ),
        {"key": key, "sha": digest(secret), "user_id": found.id, "role": role, "expires": expires},
    )
    return f"lp_{key}_{secret}", expires


def list_tokens(conn: Connection, now: datetime) -> list[dict[str, Any]]:
    rows = conn.execute(
        text(
            "SELECT t.key, u.name AS user, t.role, u.role AS user_role, t.created_at, "
            "t.expires_at, t.revoked_at FROM api_tokens t JOIN cms_users u ON u.id = t.user_id "
            "ORDER BY t.created_at, t.id"
        )
    ).all()
    return [
        {
            "key": r.key,
            "user": r.user,
            "role": lesser(r.role, r.user_role),
            "created": r.created_at.isoformat(timespec="seconds"),
            "expires": r.expires_at.isoformat(timespec="seconds"),
            "state": "revoked"
            if r.revoked_at is not None
            else ("expired" if r.expires_at <= now else "active"),
        }
        for r in rows
    ]


def revoke_token(conn: Connection, key: str) -> bool:
    """Revoke the token; False when it already was."""
    if not KEY.fullmatch(key):
        raise BadInput(f"invalid token key {key!r}: the 12 characters after `lp_`")
    state = conn.execute(
        text("SELECT revoked_at FROM api_tokens WHERE key = :key"), {"key": key}
    ).one_or_none()
    if state is None:
        raise BadInput(f"no token {key!r} (`invoke cms.token.list` shows them)")
    if state.revoked_at is not None:
        return False
    conn.execute(text("UPDATE api_tokens SET revoked_at = now() WHERE key = :key"), {"key": key})
    return True


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise BadInput(f"{message} (see --help)")


def parser() -> Parser:
    top = Parser(prog="python -m lorepin_cms.access", description=__doc__.splitlines()[0])
    verbs = top.add_subparsers(dest="verb", required=True, parser_class=Parser)
    user = verbs.add_parser("user-add", help="add a user with a role")
    user.add_argument("name")
    user.add_argument("role")
    create = verbs.add_parser("token-create", help="a new token of a user, printed once")
    create.add_argument("user")
    create.add_argument("--role", default=None, help="at most the user's (default: theirs)")
    create.add_argument("--days", type=int, default=DEFAULT_DAYS)
    verbs.add_parser("token-list", help="every token as JSON lines, never a secret")
    revoke = verbs.add_parser("token-revoke", help="revoke a token by its key")
    revoke.add_argument("key")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        now = datetime.now(UTC)
        engine = create_engine(database_url(), connect_args={"connect_timeout": 5})
        with engine.begin() as conn:
            if args.verb == "user-add":
                add_user(conn, args.name, args.role)
                print(f"added user {args.name} ({args.role})")
            elif args.verb == "token-create":
                token, expires = create_token(conn, args.user, args.role, args.days, now)
                print(json.dumps({"token": token, "expires": expires.isoformat("T", "seconds")}))
            elif args.verb == "token-list":
                for row in list_tokens(conn, now):
                    print(json.dumps(row))
            elif not revoke_token(conn, args.key):
                print(f"token {args.key} was already revoked")
            else:
                print(f"revoked token {args.key}")
    except LorePinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return int(ExitCode.BAD_INPUT)
    except DBAPIError as exc:
        print(f"error: database: {str(exc.orig).splitlines()[0]}", file=sys.stderr)
        return int(ExitCode.FAILED)
    return int(ExitCode.OK)


if __name__ == "__main__":
    raise SystemExit(main())
