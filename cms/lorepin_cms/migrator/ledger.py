"""The migrator's records in the database itself, schema `lorepin_ops`.

- `migration_log`: every run (who, when, from, to, outcome, duration, detail), including
  refused and lock-busy ones;
- `migration_checksums`: the sha256 of every applied revision's file;
- `migration_lock_holder`: who holds the migration lock, in full, for the runs that wait
  (the session's application_name would do, but PostgreSQL keeps only 63 bytes of it).

The tables are created (if missing) by the run that holds the migration lock, so two
runs never race to create them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.script import Script
from sqlalchemy import Connection, text

from lorepin_cms.migrator.planning import RevisionFile

OPS_SCHEMA = "lorepin_ops"

OPS_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {OPS_SCHEMA};
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.migration_log (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    who text NOT NULL,
    action text NOT NULL,
    from_rev text,
    to_rev text,
    outcome text NOT NULL,
    duration_ms integer,
    detail text
);
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.migration_checksums (
    revision text PRIMARY KEY,
    filename text NOT NULL,
    sha256 text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    recorded_by text NOT NULL
);
-- What a CMS build needs to know of revisions newer than itself (lorepin_cms/compat.py).
ALTER TABLE {OPS_SCHEMA}.migration_checksums ADD COLUMN IF NOT EXISTS down_revision text;
ALTER TABLE {OPS_SCHEMA}.migration_checksums
    ADD COLUMN IF NOT EXISTS contract boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS {OPS_SCHEMA}.migration_lock_holder (
    pid integer PRIMARY KEY,
    who text NOT NULL,
    since timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True, kw_only=True)
class Holder:
    who: str
    since: datetime


def revision_file(script: Script) -> RevisionFile:
    path = Path(script.path)
    down = script.down_revision
    return RevisionFile(
        revision=script.revision,
        filename=path.name,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        down_revision=down if isinstance(down, str) or down is None else ",".join(down),
        contract=bool(getattr(script.module, "contract", None)),
    )


class Ledger:
    """The `lorepin_ops` records of one database, written as `who`."""

    def __init__(self, conn: Connection, who: str) -> None:
        self.conn = conn
        self.who = who

    def create(self) -> None:
        self.conn.execute(text(OPS_DDL))

    def log(
        self,
        action: str,
        outcome: str,
        *,
        from_rev: str | None = None,
        to_rev: str | None = None,
        duration_ms: int | None = None,
        detail: str | None = None,
    ) -> None:
        self.conn.execute(
            text(
                f"INSERT INTO {OPS_SCHEMA}.migration_log "
                "(who, action, from_rev, to_rev, outcome, duration_ms, detail) "
                "VALUES (:who, :action, :from_rev, :to_rev, :outcome, :duration_ms, :detail)"
            ),
            {
                "who": self.who,
                "action": action,
                "outcome": outcome,
                "from_rev": from_rev,
                "to_rev": to_rev,
                "duration_ms": duration_ms,
                "detail": detail,
            },
        )

    def checksums(self) -> dict[str, str]:
        rows = self.conn.execute(
            text(f"SELECT revision, sha256 FROM {OPS_SCHEMA}.migration_checksums")
        ).all()
        return {row.revision: row.sha256 for row in rows}

    def record_checksum(self, file: RevisionFile) -> None:
        self.conn.execute(
            text(
                f"INSERT INTO {OPS_SCHEMA}.migration_checksums "
                "(revision, filename, sha256, recorded_by, down_revision, contract) "
                "VALUES (:r, :f, :s, :w, :d, :c) ON CONFLICT (revision) DO UPDATE SET "
                "filename = excluded.filename, sha256 = excluded.sha256, "
                "recorded_at = now(), recorded_by = excluded.recorded_by, "
                "down_revision = excluded.down_revision, contract = excluded.contract"
            ),
            {
                "r": file.revision,
                "f": file.filename,
                "s": file.sha256,
                "w": self.who,
                "d": file.down_revision,
                "c": file.contract,
            },
        )

    def describe(self, files: list[RevisionFile]) -> None:
        """Keep each applied revision's place and kind (rows from before they were kept)."""
        for file in files:
            self.conn.execute(
                text(
                    f"UPDATE {OPS_SCHEMA}.migration_checksums "
                    "SET down_revision = :d, contract = :c WHERE revision = :r "
                    "AND (down_revision IS DISTINCT FROM :d OR contract IS DISTINCT FROM :c)"
                ),
                {"r": file.revision, "d": file.down_revision, "c": file.contract},
            )

    def claim_lock(self) -> None:
        """Record this session as the holder; only while it holds the migration lock."""
        # Any row left is stale (a holder killed before its clean-up): this session holds it.
        self.conn.execute(text(f"DELETE FROM {OPS_SCHEMA}.migration_lock_holder"))
        self.conn.execute(
            text(
                f"INSERT INTO {OPS_SCHEMA}.migration_lock_holder (pid, who) "
                "VALUES (pg_backend_pid(), :who)"
            ),
            {"who": self.who},
        )

    def release_lock(self) -> None:
        self.conn.execute(
            text(f"DELETE FROM {OPS_SCHEMA}.migration_lock_holder WHERE pid = pg_backend_pid()")
        )

    def forget_checksum(self, revision: str) -> None:
        self.conn.execute(
            text(f"DELETE FROM {OPS_SCHEMA}.migration_checksums WHERE revision = :r"),
            {"r": revision},
        )


def lock_holder(conn: Connection, pid: int, connected_at: datetime) -> Holder | None:
    """The record of session `pid`, if it wrote one; none before the first run."""
    exists = conn.execute(
        text("SELECT to_regclass(:t)"), {"t": f"{OPS_SCHEMA}.migration_lock_holder"}
    ).scalar()
    if not exists:
        return None
    row = conn.execute(
        text(
            f"SELECT who, since FROM {OPS_SCHEMA}.migration_lock_holder "
            # A row older than the session is a stale one of a reused pid.
            "WHERE pid = :pid AND since >= :connected_at"
        ),
        {"pid": pid, "connected_at": connected_at},
    ).first()
    return Holder(who=row.who, since=row.since) if row else None


def history(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` log entries, oldest first; none before the first run."""
    exists = conn.execute(
        text("SELECT to_regclass(:t)"), {"t": f"{OPS_SCHEMA}.migration_log"}
    ).scalar()
    if not exists:
        return []
    rows = conn.execute(
        text(
            "SELECT id, started_at, who, action, from_rev, to_rev, outcome, "
            f"duration_ms, detail FROM {OPS_SCHEMA}.migration_log "
            "ORDER BY id DESC LIMIT :limit"
        ),
        {"limit": limit},
    ).mappings()
    return [{**row, "started_at": row["started_at"].isoformat()} for row in rows][::-1]
