"""Runs a plan against a database: the migration lock, bounded sessions, one transaction
per revision, retries of lock timeouts, and the ledger entries of every outcome."""

from __future__ import annotations

import getpass
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from lorepin_cms.config import ROOT
from lorepin_cms.migrator import ledger, planning, roles
from lorepin_cms.migrator.errors import ChecksumMismatch, LockBusy, MigrationError
from lorepin_cms.migrator.ledger import Ledger
from lorepin_cms.migrator.planning import Direction, Step

LOCK_KEY = (0x4C50, 0x4D49)  # "LP", "MI": the migration lock of this database
LOCK_ARGS = dict(zip("ab", LOCK_KEY, strict=True))
LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, kw_only=True)
class Options:
    who: str
    lock_wait: float = 60.0
    lock_timeout: str = "5s"
    statement_timeout: str = "15min"
    retries: int = 3
    accept_changed: tuple[str, ...] = ()
    # The CMS role's password (roles.py): given, every run that holds the lock keeps the
    # roles and grants; None (a test database, `db.check`): the owner alone.
    cms_password: str | None = None
    monitor_password: str | None = None  # the metrics exporter's role (roles.py)


def default_who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def alembic_config(migrations_dir: Path) -> AlembicConfig:
    cfg = AlembicConfig(str(ROOT / "alembic.ini") if (ROOT / "alembic.ini").exists() else None)
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.attributes["configure_logging"] = False
    return cfg


def one_line(exc: BaseException) -> str:
    message = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return message[0] if message else type(exc).__name__


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

    def history(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return ledger.history(conn, limit)

    # -- the lock --------------------------------------------------------------------

    @contextmanager
    def locked(self, action: Direction = "upgrade") -> Iterator[Connection]:
        """Hold the migration lock on a dedicated autocommit connection; `action` is what a
        run that gives up waiting logs."""
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            started = time.monotonic()
            reported = False
            while not conn.execute(text("SELECT pg_try_advisory_lock(:a, :b)"), LOCK_ARGS).scalar():
                holder = self.lock_holder(conn)
                if time.monotonic() - started >= self.options.lock_wait:
                    self._try_log_busy(conn, action, holder)
                    raise LockBusy(
                        f"another migration holds the lock ({holder}); "
                        f"gave up after {self.options.lock_wait:.0f} s: try again when it is done"
                    )
                if not reported:
                    self.say(f"waiting for the migration lock held by {holder}")
                    reported = True
                time.sleep(0.5)
            records = Ledger(conn, self.options.who)
            try:
                records.create()
                records.claim_lock()
                yield conn
            finally:
                with suppress(DBAPIError):  # a broken connection has lost the lock anyway
                    records.release_lock()
                conn.execute(text("SELECT pg_advisory_unlock(:a, :b)"), LOCK_ARGS)

    def lock_holder(self, conn: Connection) -> str:
        row = conn.execute(
            text(
                "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l "
                "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
                # An advisory lock is per database: the same key elsewhere is another lock.
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND l.classid = :a AND l.objid = :b AND l.objsubid = 2 AND l.granted LIMIT 1"
            ),
            LOCK_ARGS,
        ).first()
        if row is None:
            return "unknown holder"
        # Until the holder has written its record (or when it is not a migrator), the
        # session's application_name names it, cut at 63 bytes.
        record = ledger.lock_holder(conn, row.pid, row.backend_start)
        who, since = (
            (record.who, record.since) if record else (row.application_name, row.backend_start)
        )
        return f"pid {row.pid}, '{who}', since {since:%Y-%m-%d %H:%M:%S%z}"

    def _try_log_busy(self, conn: Connection, action: Direction, holder: str) -> None:
        # On a brand-new database the holder may still be creating the log table.
        with suppress(DBAPIError):
            Ledger(conn, self.options.who).log(action, "lock-busy", detail=f"lock held by {holder}")

    # -- checksums -------------------------------------------------------------------

    def verify_checksums(self, records: Ledger, action: Direction, current: str | None) -> None:
        files = [
            ledger.revision_file(found) for found in planning.applied_scripts(self.script, current)
        ]
        review = planning.review_checksums(files, records.checksums(), self.options.accept_changed)
        for file in review.record:  # applied before checksums were kept
            records.record_checksum(file)
        records.describe(files)
        for changed in review.accept:
            records.record_checksum(changed.file)
            records.log(
                "accept-changed",
                "accepted",
                to_rev=changed.file.revision,
                detail=f"{changed.describe()} ({changed.file.filename})",
            )
            self.say(f"accepted the changed file of applied revision {changed.file.revision}")
        if review.refuse:
            first = review.refuse[0]
            more = len(review.refuse) - 1
            others = f" (and {more} more)" if more else ""
            records.log(
                action,
                "refused",
                from_rev=current,
                detail="changed applied revision(s): "
                + ", ".join(c.file.revision for c in review.refuse),
            )
            raise ChecksumMismatch(
                f"revision {first.file.revision} ({first.file.filename}) changed after it "
                f"was applied ({first.describe()}){others}: restore the file, or accept the "
                f"change with `invoke db.migrate --accept-changed {first.file.revision}`"
            )

    # -- applying --------------------------------------------------------------------

    def _step(self, step: Step) -> None:
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
                    if step.direction == "upgrade":
                        command.upgrade(cfg, step.alembic_target)
                    else:
                        command.downgrade(cfg, step.alembic_target)
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

    def _run(self, direction: Direction, target_name: str) -> str | None:
        target = planning.resolve(self.script, target_name)  # before connecting: fail fast
        with self.locked(direction) as conn:
            records = Ledger(conn, self.options.who)
            current = self.current(conn)
            self.verify_checksums(records, direction, current)
            plan = planning.plan(direction, self.script, current, target)
            held = planning.held_back(self.script, plan, current)
            if not plan.steps:
                records.log(direction, "nothing-to-do", from_rev=current, to_rev=current)
                self.say(f"database already at {current or 'base'}; nothing to do{held}")
                self.keep_roles()
                return current
            count = len(plan.steps)
            self.say(
                f"{direction}: {current or 'base'} -> {plan.steps[-1].to_rev or 'base'} "
                f"({count} revision{'s' if count != 1 else ''}), by {self.options.who}"
            )
            for step in plan.steps:
                self._apply(records, step)
            final = self.current(conn)
            self.say(f"database at {final or 'base'}{held}")
            self.keep_roles()
            return final

    def keep_roles(self) -> None:
        """The least-privilege roles and grants (lorepin_cms.db_roles), when the CMS's
        password is given."""
        if self.options.cms_password is None:
            return
        try:
            with self.engine.begin() as conn:
                roles.apply(conn, self.options.cms_password, self.options.monitor_password)
        except DBAPIError as exc:  # nothing of it was kept: one transaction
            raise MigrationError(
                f"the database roles were not kept ({one_line(exc)}); the migrations are "
                "applied: run it again when the session in the way is gone"
            ) from None
        monitor = " (the metrics)" if self.options.monitor_password is not None else ""
        self.say(f"roles in place: {roles.CMS_ROLE} (the CMS), {roles.REPORT_ROLE}, "
                 f"{roles.MONITOR_ROLE}{monitor}")  # fmt: skip

    def _apply(self, records: Ledger, step: Step) -> None:
        before = self.current(records.conn)
        started = time.monotonic()
        try:
            self._step(step)
        except Exception as exc:
            ms = int((time.monotonic() - started) * 1000)
            reason = one_line(exc)
            records.log(
                step.direction,
                "failed",
                from_rev=before,
                to_rev=step.to_rev,
                duration_ms=ms,
                detail=reason,
            )
            raise MigrationError(
                f"revision {step.revision} failed: {reason}; "
                f"the database is left at {self.current(records.conn) or 'base'}"
            ) from exc
        ms = int((time.monotonic() - started) * 1000)
        after = self.current(records.conn)
        if step.direction == "upgrade":
            found = self.script.get_revision(step.revision)
            assert found is not None  # the plan only holds revisions of this directory
            records.record_checksum(ledger.revision_file(found))
        else:
            records.forget_checksum(step.revision)
        records.log(step.direction, "ok", from_rev=before, to_rev=after, duration_ms=ms)
        self.say(f"  {before or 'base'} -> {after or 'base'}  {step.title}  ({ms} ms)")
