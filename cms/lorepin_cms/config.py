"""Runtime configuration of the CMS, read once from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# cms/lorepin_cms/config.py -> repository root (also /app inside the image).
ROOT = Path(__file__).resolve().parents[2]


class ConfigError(Exception):
    """The environment does not describe a usable configuration."""


def database_url(environ: Mapping[str, str] = os.environ) -> URL:
    """The database URL: DATABASE_URL, or LOREPIN_DB_* parts with the password from a file.

    The file form keeps the password out of `docker inspect` (Compose/Docker secrets).
    """
    if url := environ.get("DATABASE_URL"):
        try:
            return make_url(url)
        except ArgumentError:  # its message may quote the URL, password and all
            raise ConfigError(
                "DATABASE_URL: not a database URL (postgresql+psycopg://USER@HOST:PORT/NAME)"
            ) from None
    password = environ.get("LOREPIN_DB_PASSWORD")
    if password is None and (path := environ.get("LOREPIN_DB_PASSWORD_FILE")):
        try:
            password = Path(path).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read LOREPIN_DB_PASSWORD_FILE {path}: {exc.strerror}"
            ) from exc
    port = environ.get("LOREPIN_DB_PORT", "5432")
    if not port.isdigit():
        raise ConfigError(f"LOREPIN_DB_PORT: not a port number: {port!r}")
    host = environ.get("LOREPIN_DB_HOST", "127.0.0.1")
    # "db,db-replica": libpq tries each and keeps the one that takes writes, so after a
    # failover the CMS finds the promoted replica by itself (a dead host costs <= 3 s).
    several = {"target_session_attrs": "read-write", "connect_timeout": "3"}
    return URL.create(
        "postgresql+psycopg",
        username=environ.get("LOREPIN_DB_USER", "lorepin"),
        password=password,
        host=host,
        port=int(port),
        database=environ.get("LOREPIN_DB_NAME", "lorepin"),
        query=several if "," in host else {},
    )


def positive_int(environ: Mapping[str, str], name: str, default: int) -> int:
    """An optional whole-number setting above zero; unset or empty means `default`."""
    raw = environ.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a whole number above 0, got {raw!r}")
    return value


POOLERS = ("none", "transaction")


def pooler(environ: Mapping[str, str]) -> str:
    """LOREPIN_DB_POOLER: "none" (the default: the CMS's own pool talks to PostgreSQL), or
    "transaction" (a transaction-mode pooler, pgbouncer, stands between them)."""
    raw = (environ.get("LOREPIN_DB_POOLER") or "none").strip().lower()
    if raw not in POOLERS:
        raise ConfigError(f"LOREPIN_DB_POOLER must be one of {', '.join(POOLERS)}, got {raw!r}")
    return raw


def switch(environ: Mapping[str, str], name: str, default: bool = True) -> bool:
    """An on/off setting; unset or empty means `default`."""
    raw = (environ.get(name) or ("on" if default else "off")).strip().lower()
    if raw not in ("on", "off"):
        raise ConfigError(f"{name} must be on or off, got {raw!r}")
    return raw == "on"


@dataclass(frozen=True, kw_only=True)
class Config:
    database_url: URL
    version: str
    git_revision: str
    migrations_dir: Path
    geocoder_url: str | None = None
    admin_dir: Path = ROOT / "cms" / "admin" / "dist"
    max_body_bytes: int = 1024 * 1024
    # Connections per process, and so worker threads per process (see app.create_app).
    db_pool_size: int = 16
    # How long a request waits for a connection before it is a 503.
    db_pool_timeout: float = 5.0
    # Set on every connection of the CMS: a statement running longer is cancelled (the
    # request gets a 503), and a session idle inside a transaction that long is ended.
    db_statement_timeout_ms: int = 15_000
    db_idle_in_transaction_timeout_ms: int = 30_000
    # "transaction": a transaction-mode pooler (pgbouncer) is between the CMS and
    # PostgreSQL, so a connection keeps no session state from one transaction to the next:
    # no server-side prepared statements, and the two timeouts above are the pooler's to
    # set on its server connections (its connect_query), not the CMS's.
    db_pooler: str = "none"
    # Request and pool metrics (lorepin_cms.metrics); "off" only to measure what they cost.
    metrics: bool = True
    # User activity (lorepin_cms.activity): recorded unless "off", kept this many days.
    activity: bool = True
    activity_retention_days: int = 30
    # Failed authentications a client address may make in a minute before it gets 429s.
    auth_failures_per_minute: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Config:
        return cls(
            database_url=database_url(environ),
            version=environ.get("LOREPIN_VERSION", "0.0.0-dev"),
            git_revision=environ.get("LOREPIN_GIT_REVISION", "unknown"),
            migrations_dir=Path(environ.get("LOREPIN_MIGRATIONS_DIR", ROOT / "migrations")),
            geocoder_url=environ.get("LOREPIN_GEOCODER_URL") or None,
            max_body_bytes=positive_int(environ, "LOREPIN_MAX_BODY_BYTES", 1024 * 1024),
            db_pool_size=positive_int(environ, "LOREPIN_DB_POOL_SIZE", 16),
            db_pool_timeout=positive_int(environ, "LOREPIN_DB_POOL_TIMEOUT", 5),
            db_statement_timeout_ms=positive_int(
                environ, "LOREPIN_DB_STATEMENT_TIMEOUT_MS", 15_000
            ),
            db_idle_in_transaction_timeout_ms=positive_int(
                environ, "LOREPIN_DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 30_000
            ),
            db_pooler=pooler(environ),
            metrics=switch(environ, "LOREPIN_METRICS"),
            activity=switch(environ, "LOREPIN_ACTIVITY"),
            activity_retention_days=positive_int(environ, "LOREPIN_ACTIVITY_RETENTION_DAYS", 30),
            auth_failures_per_minute=positive_int(environ, "LOREPIN_AUTH_FAILURES_PER_MINUTE", 10),
        )
