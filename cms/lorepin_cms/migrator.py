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
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from lorepin_cms.config import ROOT, database_url

LOCK_KEY = (0x4C50, 0x4D49)  # "LP", "MI": the migration lock of this database
OPS_SCHEMA = "lorepin_ops"
LOCK_NOT_AVAILABLE = "55P03"

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
"""


class MigrationError(Exception):
    """A run that did not complete; the message says where the database was left."""

    exit_code = 1


class LockBusy(MigrationError):
    exit_code = 3


class ChecksumMismatch(MigrationError):
    exit_code = 4


@dataclass(frozen=True, kw_only=True)
class Options:
    who: str
    lock_wait: float = 60.0
    lock_timeout: str = "5s"
    statement_timeout: str = "15min"
    retries: int = 3
    accept_changed: tuple[str, ...] = ()


def default_who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def alembic_config(migrations_dir: Path) -> AlembicConfig:
    cfg = AlembicConfig(str(ROOT / "alembic.ini") if (ROOT / "alembic.ini").exists() else None)
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.attributes["configure_logging"] = False
    return cfg


def file_checksum(script: Script) -> str:
    return hashlib.sha256(Path(script.path).read_bytes()).hexdigest()


class Migrator:
    def __init__(
        self,
        url: URL | str,
        options: Options,
        *,
        migrations_dir: Path = ROOT / "migrations",
        out: TextIO = sys.stdout,
    ) -> None:
        self.options = options
        self.migrations_dir = migrations_dir
        self.script = ScriptDirectory(str(migrations_dir))
        self.out = out
        self.engine: Engine = create_engine(
            url,
            connect_args={
                "connect_timeout": 10,
                "application_name": f"lorepin-migrate {options.who}"[:63],
            },
        )

    def say(self, message: str) -> None:
        print(message, file=self.out, flush=True)

    # -- state -----------------------------------------------------------------------

    def current(self, conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    def log(self, conn: Connection, action: str, outcome: str, **fields: Any) -> None:
        conn.execute(
            text(
                f"INSERT INTO {OPS_SCHEMA}.migration_log "
                "(who, action, from_rev, to_rev, outcome, duration_ms, detail) "
                "VALUES (:who, :action, :from_rev, :to_rev, :outcome, :duration_ms, :detail)"
            ),
            {
                "who": self.options.who,
                "action": action,
                "outcome": outcome,
                "from_rev": fields.get("from_rev"),
                "to_rev": fields.get("to_rev"),
                "duration_ms": fields.get("duration_ms"),
                "detail": fields.get("detail"),
            },
        )

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
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

    # -- the lock --------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[Connection]:
        """Hold the migration lock on a dedicated autocommit connection."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            started = time.monotonic()
            reported = False
            while not conn.execute(
                text("SELECT pg_try_advisory_lock(:a, :b)"), dict(zip("ab", LOCK_KEY, strict=True))
            ).scalar():
                holder = self.lock_holder(conn)
                if time.monotonic() - started >= self.options.lock_wait:
                    self._try_log_busy(conn, holder)
                    raise LockBusy(
                        f"another migration holds the lock ({holder}); "
                        f"gave up after {self.options.lock_wait:.0f} s"
                    )
                if not reported:
                    self.say(f"waiting for the migration lock held by {holder}")
                    reported = True
                time.sleep(0.5)
            try:
                conn.execute(text(OPS_DDL))
                yield conn
            finally:
                conn.execute(
                    text("SELECT pg_advisory_unlock(:a, :b)"),
                    dict(zip("ab", LOCK_KEY, strict=True)),
                )

    def lock_holder(self, conn: Connection) -> str:
        row = conn.execute(
            text(
                "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                "AND l.classid = :a AND l.objid = :b AND l.granted LIMIT 1"
            ),
            dict(zip("ab", LOCK_KEY, strict=True)),
        ).first()
        if row is None:
            return "unknown holder"
        since = f"{row.backend_start:%Y-%m-%d %H:%M:%S%z}"
        return f"pid {row.pid}, '{row.application_name}', since {since}"

    def _try_log_busy(self, conn: Connection, holder: str) -> None:
        # On a brand-new database the holder may still be creating the log table.
        with suppress(DBAPIError):
            self.log(conn, "upgrade", "lock-busy", detail=f"lock held by {holder}")

    # -- checksums -------------------------------------------------------------------

    def applied_scripts(self, current: str | None) -> list[Script]:
        if current is None:
            return []
        return list(self.script.iterate_revisions(current, "base"))

    def verify_checksums(self, ops: Connection, current: str | None) -> None:
        stored: dict[str, str] = dict(
            ops.execute(
                text(f"SELECT revision, sha256 FROM {OPS_SCHEMA}.migration_checksums")
            ).all()
        )
        changed = []
        for script in self.applied_scripts(current):
            actual = file_checksum(script)
            known = stored.get(script.revision)
            if known is None:
                self.record_checksum(ops, script)  # applied before checksums were kept
            elif known != actual:
                if script.revision in self.options.accept_changed:
                    self.record_checksum(ops, script)
                    self.log(
                        ops,
                        "accept-changed",
                        "accepted",
                        to_rev=script.revision,
                        detail=f"sha256 {known[:12]} -> {actual[:12]} ({Path(script.path).name})",
                    )
                    self.say(f"accepted the changed file of applied revision {script.revision}")
                else:
                    changed.append((script, known, actual))
        if changed:
            script, known, actual = changed[0]
            others = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            self.log(
                ops,
                "upgrade",
                "refused",
                from_rev=current,
                detail="changed applied revision(s): "
                + ", ".join(s.revision for s, _, _ in changed),
            )
            raise ChecksumMismatch(
                f"revision {script.revision} ({Path(script.path).name}) changed after it was "
                f"applied (sha256 {known[:12]} -> {actual[:12]}){others}: restore the file, "
                f"or accept the change with --accept-changed {script.revision}"
            )

    def record_checksum(self, ops: Connection, script: Script) -> None:
        ops.execute(
            text(
                f"INSERT INTO {OPS_SCHEMA}.migration_checksums "
                "(revision, filename, sha256, recorded_by) "
                "VALUES (:r, :f, :s, :w) ON CONFLICT (revision) DO UPDATE SET "
                "filename = excluded.filename, sha256 = excluded.sha256, "
                "recorded_at = now(), recorded_by = excluded.recorded_by"
            ),
            {
                "r": script.revision,
                "f": Path(script.path).name,
                "s": file_checksum(script),
                "w": self.options.who,
            },
        )

    # -- applying --------------------------------------------------------------------

    def _resolve(self, target: str) -> str | None:
        try:
            if target == "base":
                return None
            revision = self.script.get_revision(target)
        except Exception as exc:  # alembic raises several types for unknown/ambiguous ids
            raise MigrationError(f"unknown revision {target!r}: {exc}") from None
        if revision is None:
            raise MigrationError(f"unknown revision {target!r}")
        return revision.revision

    def _step(self, direction: str, revision: str) -> None:
        """Apply one revision in its own transaction, retrying lock timeouts."""
        cfg = alembic_config(self.migrations_dir)
        attempt = 0
        while True:
            attempt += 1
            with self.engine.connect() as conn:
                conn.execute(
                    text("SELECT set_config('lock_timeout', :v, false)"),
                    {"v": self.options.lock_timeout},
                )
                conn.execute(
                    text("SELECT set_config('statement_timeout', :v, false)"),
                    {"v": self.options.statement_timeout},
                )
                conn.commit()
                cfg.attributes["connection"] = conn
                try:
                    if direction == "upgrade":
                        command.upgrade(cfg, revision)
                    else:
                        command.downgrade(cfg, revision)
                    conn.commit()
                    return
                except DBAPIError as exc:
                    conn.rollback()
                    code = getattr(exc.orig, "sqlstate", None)
                    if code == LOCK_NOT_AVAILABLE and attempt <= self.options.retries:
                        self.say(
                            f"  lock timeout ({self.options.lock_timeout}); "
                            f"retry {attempt}/{self.options.retries}"
                        )
                        time.sleep(min(2.0 * attempt, 10.0))
                        continue
                    raise

    def upgrade(self, target: str = "head") -> str | None:
        return self._run("upgrade", target)

    def downgrade(self, target: str) -> str | None:
        return self._run("downgrade", target)

    def _run(self, direction: str, target: str) -> str | None:
        if len(self.script.get_heads()) > 1 and target == "head":
            raise MigrationError(
                f"the history has {len(self.script.get_heads())} heads "
                f"({', '.join(self.script.get_heads())}): merge them with `alembic merge`"
            )
        wanted = self._resolve(target)
        with self.locked() as ops:
            current = self.current(ops)
            self.verify_checksums(ops, current)
            if direction == "upgrade":
                steps: list[str | None] = self._upgrade_steps(current, wanted, target)
            else:
                steps = self._downgrade_steps(current, wanted)
            if not steps:
                self.log(ops, direction, "nothing-to-do", from_rev=current, to_rev=current)
                self.say(f"database already at {current or 'base'}; nothing to do")
                return current
            self.say(
                f"{direction}: {current or 'base'} -> {wanted or 'base'} "
                f"({len(steps)} revision{'s' if len(steps) != 1 else ''}), by {self.options.who}"
            )
            for step in steps:
                before = self.current(ops)
                started = time.monotonic()
                try:
                    self._step(direction, step or "base")
                except Exception as exc:
                    ms = int((time.monotonic() - started) * 1000)
                    reason = _one_line(exc)
                    failing = step if direction == "upgrade" else before
                    self.log(
                        ops,
                        direction,
                        "failed",
                        from_rev=before,
                        to_rev=step,
                        duration_ms=ms,
                        detail=reason,
                    )
                    raise MigrationError(
                        f"revision {failing} failed: {reason}; "
                        f"the database is left at {self.current(ops) or 'base'}"
                    ) from exc
                ms = int((time.monotonic() - started) * 1000)
                after = self.current(ops)
                if direction == "upgrade":
                    self.record_checksum(ops, self.script.get_revision(step))  # type: ignore[arg-type]
                else:
                    ops.execute(
                        text(f"DELETE FROM {OPS_SCHEMA}.migration_checksums WHERE revision = :r"),
                        {"r": before},
                    )
                self.log(ops, direction, "ok", from_rev=before, to_rev=after, duration_ms=ms)
                title = self._title(step if direction == "upgrade" else before)
                self.say(f"  {before or 'base'} -> {after or 'base'}  {title}  ({ms} ms)")
            final = self.current(ops)
            self.say(f"database at {final or 'base'}")
            return final

    def _title(self, revision: str | None) -> str:
        script = self.script.get_revision(revision) if revision else None
        return script.doc.strip().splitlines()[0] if script and script.doc else ""

    def _upgrade_steps(
        self, current: str | None, wanted: str | None, target: str
    ) -> list[str | None]:
        if wanted == current:
            return []
        try:
            scripts = list(self.script.iterate_revisions(wanted or "base", current))
        except Exception:  # alembic: the target is not above the current revision
            raise MigrationError(
                f"{target} is not ahead of the database ({current}); use downgrade to go back"
            ) from None
        return [s.revision for s in reversed(scripts)]

    def _downgrade_steps(self, current: str | None, wanted: str | None) -> list[str | None]:
        if current is None:
            return []
        applied = [s.revision for s in self.script.iterate_revisions(current, "base")]
        if wanted is not None and wanted not in applied:
            raise MigrationError(f"{wanted} is not below the database's revision {current}")
        steps: list[str | None] = []
        for script in self.script.iterate_revisions(current, wanted or "base"):
            if script.revision == wanted:
                break
            down = script.down_revision
            if not (down is None or isinstance(down, str)):
                raise MigrationError(f"cannot step down through merge revision {script.revision}")
            steps.append(down)
        return steps


def _one_line(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lorepin_cms.migrator", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--who", default=None, help="who runs this (for the log)")
    parser.add_argument(
        "--lock-wait", type=float, default=60.0, help="seconds to wait for the lock"
    )
    parser.add_argument("--lock-timeout", default="5s")
    parser.add_argument("--statement-timeout", default="15min")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--migrations-dir", type=Path, default=ROOT / "migrations")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("upgrade")
    up.add_argument("--to", default="head")
    up.add_argument("--accept-changed", action="append", default=[])
    down = sub.add_parser("downgrade")
    down.add_argument("--to", required=True)
    sub.add_parser("current")
    hist = sub.add_parser("history")
    hist.add_argument("--limit", type=int, default=50)
    args = parser.parse_args(argv)

    options = Options(
        who=args.who or default_who(),
        lock_wait=args.lock_wait,
        lock_timeout=args.lock_timeout,
        statement_timeout=args.statement_timeout,
        retries=args.retries,
        accept_changed=tuple(getattr(args, "accept_changed", ())),
    )
    migrator = Migrator(database_url(), options, migrations_dir=args.migrations_dir)
    try:
        if args.action == "upgrade":
            migrator.upgrade(args.to)
        elif args.action == "downgrade":
            migrator.downgrade(args.to)
        elif args.action == "current":
            with migrator.engine.connect() as conn:
                current = migrator.current(conn)
            heads = migrator.script.get_heads()
            print(json.dumps({"current": current, "heads": heads, "at_head": current in heads}))
        else:
            print(json.dumps(migrator.history(args.limit)))
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except DBAPIError as exc:
        print(f"error: database unreachable or failing: {_one_line(exc)}", file=sys.stderr)
        return 1
    finally:
        migrator.engine.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
