"""Database tasks: `db.migrate`, `db.downgrade`, `db.current`, `db.history`, `db.revision`,
`db.sql`, `db.check`.

Config (invoke.yaml, `lorepin:`): `environments.<name>.backup_before_migrate` (default
true for staging and production) takes a `pg_dump -Fc` into .lorepin/backups/<env>/ before
any revision is applied or reverted; `db.lock_wait` (seconds, default 60) bounds the wait
for another migration run.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.context import EnvContext, open_env, require_base_image, run_oneoff, task
from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import db as plan
from lorepin_tasks.runtime.git import who_am_i
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.stack import DRY_HELP, ENV_HELP, published, services

DEFAULT_LOCK_WAIT = 60.0


def _lock_wait(c: Context) -> float:
    return float(c.config.get("lorepin", {}).get("db", {}).get("lock_wait", DEFAULT_LOCK_WAIT))


def _require_db(ctx: EnvContext) -> None:
    if ctx.run.dry_run:
        return
    running = any(
        r.get("Service") == compose.DB_SERVICE and r.get("State") == "running"
        for r in services(ctx)
    )
    if not running:
        raise LorePinError(
            f"the database of '{ctx.env.name}' is not running: start it with "
            f"`invoke up --env {ctx.env.name}`"
        )


def _backup(ctx: EnvContext, label: str) -> None:
    path = plan.backup_path(ctx.settings.root, ctx.env, datetime.now(UTC), label)
    ctx.run.say(f"==> {ctx.env.name}: backing up the database before the schema changes")
    ctx.run.run(plan.dump(ctx.env), env=ctx.variables, stdout_to=path)
    if not ctx.run.dry_run:
        size = path.stat().st_size
        if size == 0:
            raise LorePinError(f"the backup {path} is empty; nothing was migrated")
        ctx.run.say(f"    backup: {path} ({size / 1024:.0f} KiB)")


def _migrator(c: Context, ctx: EnvContext, action: list[str], *, capture: bool = False) -> str:
    """Run the migrator in the environment; its stdout, or a LorePinError with its cause."""
    command = plan.migrator(action, who=who_am_i(ctx.settings.root), lock_wait=_lock_wait(c))
    return run_oneoff(ctx, "migrate", command, capture=capture)


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "to": "target revision (default: head)",
        "accept_changed": "accept the edited file of this applied revision (logged)",
        "backup": "take a pg_dump first even if the environment's policy does not",
    },
    iterable=["accept_changed"],
)
def migrate(
    c: Context,
    env: str = "local",
    to: str = "head",
    accept_changed: list[str] | None = None,
    backup: bool = False,
    dry_run: bool = False,
) -> None:
    """Apply migrations up to a revision: locked, logged, one transaction per revision."""
    ctx = open_env(c, env, dry_run=dry_run)
    action = plan.upgrade_action(to, accept_changed or ())
    _require_db(ctx)
    if backup or ctx.env.backup_before_migrate:
        _backup(ctx, f"before-migrate-to-{to}")
    _migrator(c, ctx, action)


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "to": "revision to go back to (or base)",
        "yes": "do not ask for confirmation",
    }
)
def downgrade(
    c: Context, to: str = "", env: str = "local", yes: bool = False, dry_run: bool = False
) -> None:
    """Revert migrations down to a revision (asks first; backs up where policy says so)."""
    if not to:
        raise LorePinError("say which revision to go back to: --to REV (see `invoke db.history`)")
    ctx = open_env(c, env, dry_run=dry_run)
    action = plan.downgrade_action(to)
    _require_db(ctx)
    if not ctx.run.dry_run:
        confirm(
            f"Downgrade the schema of '{ctx.env.name}' to {to}? Data in the columns and "
            "tables it drops is lost.",
            yes=yes,
        )
    if ctx.env.backup_before_migrate:
        _backup(ctx, f"before-downgrade-to-{to}")
    _migrator(c, ctx, action)


def _migrator_json(c: Context, ctx: EnvContext, action: list[str]) -> object:
    return json.loads(_migrator(c, ctx, action, capture=True).strip().splitlines()[-1])


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP, "json": "print machine-readable JSON"})
def current(c: Context, env: str = "local", json_: bool = False, dry_run: bool = False) -> None:
    """Show the environment's schema revision and whether it is at the code's head."""
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.run.dry_run:
        _migrator(c, ctx, ["current"])
        return
    _require_db(ctx)
    state = _migrator_json(c, ctx, ["current"])
    if json_:
        print(json.dumps(state))
        return
    assert isinstance(state, dict)
    mark = "at head" if state["at_head"] else f"BEHIND head {', '.join(state['heads'])}"
    print(f"{ctx.env.name}: schema at {state['current'] or 'base'} ({mark})")


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "limit": "how many log entries",
        "json": "print the migration log as JSON",
    }
)
def history(
    c: Context, env: str = "local", limit: int = 20, json_: bool = False, dry_run: bool = False
) -> None:
    """Show the environment's migration log beside Alembic's revision history."""
    ctx = open_env(c, env, dry_run=dry_run)
    action = ["history", "--limit", str(limit)]
    if ctx.run.dry_run:
        _migrator(c, ctx, action)
        return
    _require_db(ctx)
    log = _migrator_json(c, ctx, action)
    assert isinstance(log, list)
    if json_:
        print(json.dumps(log, indent=2))
        return
    print(f"migration log of '{ctx.env.name}' (newest last):")
    print(
        f"  {'WHEN (UTC)':<20} {'WHO':<28} {'ACTION':<15} {'FROM':<6} {'TO':<6} {'OUTCOME':<14} MS"
    )
    for row in log:
        print(
            f"  {row['started_at'][:19]:<20} {str(row['who'])[:28]:<28} {row['action']:<15} "
            f"{row['from_rev'] or '-':<6} {row['to_rev'] or '-':<6} {row['outcome']:<14} "
            f"{row['duration_ms'] if row['duration_ms'] is not None else ''}"
        )
        if row.get("detail") and row["outcome"] not in ("ok", "nothing-to-do"):
            print(f"      {row['detail']}")
    print("revisions (alembic history):")
    ctx.run.run(plan.alembic(ctx.settings.root, "history"), check=False, quiet=True)


def _local_db_env(ctx: EnvContext) -> dict[str, str]:
    """How the host reaches the environment's database (published port, password file)."""
    address = published(ctx, compose.DB_SERVICE, compose.DB_PORT) or ""
    return {
        "LOREPIN_DB_HOST": "127.0.0.1",
        "LOREPIN_DB_PORT": address.rpartition(":")[2] or "5432",
        "LOREPIN_DB_PASSWORD_FILE": str(ctx.env.secrets_dir / "db_password"),
    }


@task(
    help={
        "message": "what the revision does (its title)",
        "env": ENV_HELP,
        "autogenerate": "draft it from the difference between the models and the "
        "environment's database",
        "dry_run": DRY_HELP,
    }
)
def revision(
    c: Context,
    message: str = "",
    autogenerate: bool = False,
    env: str = "local",
    dry_run: bool = False,
) -> None:
    """Create a new revision file in migrations/versions (review it before committing)."""
    if not message.strip():
        raise LorePinError("a revision needs a message: -m 'add pin source'")
    ctx = open_env(c, env, dry_run=dry_run)
    args = ["revision", "-m", message.strip()] + (["--autogenerate"] if autogenerate else [])
    extra = _local_db_env(ctx) if autogenerate else {}
    if autogenerate:
        _require_db(ctx)
    ctx.run.run(plan.alembic(ctx.settings.root, *args), env=extra)


@task(
    help={
        "from_": "revision to start from (default: the one before --to)",
        "to": "revision to end at (default: head)",
        "dry_run": DRY_HELP,
    }
)
def sql(c: Context, from_: str = "", to: str = "head", dry_run: bool = False) -> None:
    """Print the SQL of an upgrade without touching any database (for review or a DBA)."""
    span = (
        f"{plan.revision(from_, 'from revision')}:{plan.revision(to)}"
        if from_
        else plan.revision(to)
    )
    ctx = open_env(c, "local", dry_run=dry_run)
    ctx.run.run(
        plan.alembic(ctx.settings.root, "upgrade", span, "--sql"),
        env={"LOREPIN_DB_HOST": "offline"},
        quiet=True,
    )


@task(help={"dry_run": DRY_HELP})
def check(c: Context, dry_run: bool = False) -> None:
    """Prove the history safe: one head, lint, up/down/up on a throwaway PostgreSQL, models."""
    # No Ryuk (it needs a registry); connect over loopback even inside a container.
    for key, value in (
        ("TESTCONTAINERS_RYUK_DISABLED", "true"),
        ("TESTCONTAINERS_CONNECTION_MODE", "docker_host"),
        ("TC_HOST", "127.0.0.1"),
    ):
        os.environ.setdefault(key, value)
    from testcontainers.community.postgres import PostgresContainer

    from lorepin_cms.models import Base
    from lorepin_tasks.migration_check import run_checks

    ctx = open_env(c, "local", dry_run=dry_run)
    require_base_image(ctx)
    image = f"{ctx.settings.image_prefix}/postgres:{ctx.env.image_tag}"
    ctx.run.say(f"==> building {image} for a throwaway database")
    ctx.run.run(compose.build(ctx.env, [compose.DB_SERVICE]), env=ctx.variables)
    if ctx.run.dry_run:
        ctx.run.say("dry run: would start a throwaway PostgreSQL and run the checks")
        return
    ctx.run.say("==> starting a throwaway PostgreSQL (removed afterwards)")
    with (
        PostgresContainer(
            image,
            username="check",
            password=secrets.token_urlsafe(16),
            dbname="check",
            driver="psycopg",
        ) as pg,
        tempfile.TemporaryDirectory() as work,
    ):
        report = run_checks(
            ctx.settings.root / "migrations", Base.metadata, pg.get_connection_url(), Path(work)
        )
    for what in report.checked:
        ctx.run.say(f"checked: {what}")
    for finding in report.findings:
        print(finding)
    if not report.ok:
        raise LorePinError(f"db.check failed: {sum(f.error for f in report.findings)} problem(s)")
    print("db.check passed")


ns = Collection("db", migrate, downgrade, current, history, revision, sql, check)
ns.configure({"lorepin": {"db": {"lock_wait": DEFAULT_LOCK_WAIT}}})
