"""Who may do what in the CMS: users with a role, their API tokens, and each request's check.

Roles, each allowed what the ones before it are: viewer (reads drafts), editor (creates,
changes and deletes pins), admin (the same; manages users and tokens with the toolkit).
Published pins stay public to read.

A token reads `lp_<key>_<secret>`. The key (12 characters) is public: it names the token in
lists, logs and revocations. The secret (256 random bits) is shown once, when the token is
made, and kept only as its SHA-256: a random 256-bit secret cannot be guessed, so a slow
password hash would buy nothing (GitHub's and PyPI's tokens are kept the same way). A
token's role is at most its user's, and a demoted user's tokens are demoted with them.

Users and tokens are managed with the toolkit (`invoke cms.user.add`, `cms.token.*`), which
uses the rules here; the CMS itself only checks tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, insert, text

from lorepin_cms.exit_codes import BadInput
from lorepin_cms.models import ROLES, ApiToken, User

TOKEN = re.compile(r"lp_([A-Za-z0-9]{12})_([A-Za-z0-9_-]{43})")
KEY = re.compile(r"[A-Za-z0-9]{12}")
KEY_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"  # none look alike
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")  # the table's own check says the same
MAX_DAYS = 365
DEFAULT_DAYS = 90

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


def check_key(key: str) -> str:
    if key.startswith("lp_"):  # a whole token pasted: never repeat its secret
        raise BadInput("that is a whole token: give its key, the 12 characters after `lp_`")
    if not KEY.fullmatch(key):
        raise BadInput(f"invalid token key {key[:24]!r}: the 12 characters after `lp_`")
    return key


def new_token() -> tuple[str, str]:
    """A new token and its key: `lp_<key>_<secret>`, the secret from the OS's CSPRNG."""
    key = "".join(secrets.choice(KEY_LETTERS) for _ in range(12))
    return f"lp_{key}_{secrets.token_urlsafe(32)}", key  # 32 bytes: 43 characters


def secret_of(token: str) -> str:
    match = TOKEN.fullmatch(token)
    if match is None:
        raise ValueError("not a token")
    return match.group(2)


def user_with_token(conn: Connection, name: str, role: str, days: int) -> str:
    """A new user and a token of theirs with their role, lasting `days`: the token. For
    throwaway environments' seeds and tests; operators use `invoke cms.user.add`."""
    token, key = new_token()
    user = conn.execute(
        insert(User).values(name=check_name(name), role=check_role(role)).returning(User.id)
    ).scalar_one()
    conn.execute(
        insert(ApiToken).values(
            key=key,
            secret_sha256=digest(secret_of(token)),
            user_id=user,
            role=role,
            expires_at=datetime.now(UTC) + timedelta(days=days),
        )
    )
    return token
