"""Database tasks: `db.migrate`, `db.downgrade`, `db.current`, `db.history`, `db.revision`,
`db.sql`, `db.check` (and, from their own modules, `db.report`, `db.maintain`,
`db.rotate-password` and the replica's `db.replica`, `db.failover`, `db.rejoin`).

Config (invoke.yaml, `lorepin:`): `environments.<name>.backup_before_migrate` (default
true for staging and production) takes a `pg_dump -Fc` into the environment's backups
directory (~/.local/state/lorepin/<project>/backups, or LOREPIN_BACKUP_DIR) before any
revision is applied or reverted; `db.lock_wait` (seconds, default 60) bounds the wait
for another migration run.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, last_line
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import db as plan
from lorepin_tasks.runtime import docker
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.settings import whole_number
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    ENV_HELP,
    JSON_HELP,
    YES_HELP,
    backup_database,
    locked,
    open_env,
    require_base_image,
    require_db,
    run_migrator,
    serving_image,
    task,
    with_revision,
)
from lorepin_tasks.tasks.db_password import rotate_password
from lorepin_tasks.tasks.db_performance import maintain, report
from lorepin_tasks.tasks.failover import failover, rejoin, replica


def _migrator_json(ctx: EnvContext, action: list[str]) -> Any:
    lines = run_migrator(ctx, action, capture=True).strip().splitlines()
    return docker.decode(lines[-1] if lines else "", "the migrator's answer")


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
    action = plan.upgrade_action(to, accept_changed or ())
    ctx = open_env(c, env, dry_run=dry_run)
    with locked(ctx, "db.migrate"):
        require_db(ctx, changes=True)
        if backup or ctx.env.backup_before_migrate:
            backup_database(ctx, f"before-migrate-to-{to}")
        run_migrator(ctx, action)


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "to": "revision to go back to (or base)",
        "yes": YES_HELP,
    }
)
def downgrade(
    c: Context, to: str = "", env: str = "local", yes: bool = False, dry_run: bool = False
) -> None:
    """Revert migrations down to a revision (asks first; backs up where policy says so)."""
    action = plan.downgrade_action(to)
    ctx = open_env(c, env, dry_run=dry_run)
    with locked(ctx, "db.downgrade"):
        require_db(ctx, changes=True)
        if not ctx.run.dry_run:
            confirm(
                f"Downgrade the schema of '{ctx.env.name}' to {to}? Data in the columns and "
                "tables it drops is lost.",
                yes=yes,
            )
        if ctx.env.backup_before_migrate:
            backup_database(ctx, f"before-downgrade-to-{to}")
        run_migrator(ctx, action)


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP, "json": JSON_HELP})
def current(c: Context, env: str = "local", json_: bool = False, dry_run: bool = False) -> None:
    """Show the environment's schema revision and whether it is at the code's head."""
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.run.dry_run:
        run_migrator(ctx, ["current"])
        return
    require_db(ctx, changes=False)
    state = _migrator_json(serving_image(ctx), ["current"])
    if not isinstance(state, dict) or "current" not in state:
        raise LorePinError(f"the migrator answered {str(state)[:80]!r} instead of a state")
    if json_:
        print(json.dumps(state))
        return
    mark = "at head" if state.get("at_head") else f"BEHIND head {', '.join(state['heads'])}"
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
    c: Context, env: str = "local", limit: str = "20", json_: bool = False, dry_run: bool = False
) -> None:
    """Show the environment's migration log beside Alembic's revision history."""
    count = whole_number(limit, "--limit", low=1, high=100_000)
    ctx = open_env(c, env, dry_run=dry_run)
    action = ["history", "--limit", str(count)]
    if ctx.run.dry_run:
        run_migrator(ctx, action)
        return
    require_db(ctx, changes=False)
    log = _migrator_json(serving_image(ctx), action)
    if not isinstance(log, list):
        raise LorePinError(f"the migrator answered {str(log)[:80]!r} instead of a log")
    if json_:
        print(json.dumps(log, indent=2))
        return
    print(f"migration log of '{ctx.env.name}' (newest last):")
    print(
        f"  {'WHEN (UTC)':<20} {'ACTION':<15} {'FROM':<6} {'TO':<6} {'OUTCOME':<14} {'MS':>6}  WHO"
    )
    for row in log:
        ms = row.get("duration_ms")
        print(
            f"  {str(row.get('started_at'))[:19]:<20} {row.get('action', '?'):<15} "
            f"{row.get('from_rev') or '-':<6} {row.get('to_rev') or '-':<6} "
            f"{row.get('outcome', '?'):<14} {'' if ms is None else ms:>6}  {row.get('who')}"
        )
        if row.get("detail") and row.get("outcome") not in ("ok", "nothing-to-do"):
            print(f"      {row['detail']}")
    print("revisions (alembic history):")
    ctx.run.run(plan.alembic(ctx.settings.root, "history"), check=False, quiet=True)


def _local_db_env(ctx: EnvContext) -> dict[str, str]:
    """How the host reaches the environment's database (published port, password file)."""
    address = docker.published(ctx, compose.DB_SERVICE, compose.DB_PORT)
    if not address:
        raise LorePinError(
            f"the database of '{ctx.env.name}' publishes no port to the host; "
            "--autogenerate needs one (the local environment has it)"
        )
    return {
        "LOREPIN_DB_HOST": "127.0.0.1",
        "LOREPIN_DB_PORT": address.rpartition(":")[2],
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
        raise ConfigError("a revision needs a message: -m 'add pin source'")
    ctx = open_env(c, env, dry_run=dry_run)
    args = ["revision", "-m", message.strip()] + (["--autogenerate"] if autogenerate else [])
    extra: dict[str, str] = {}
    if autogenerate:
        require_db(ctx, changes=False)
        extra = {} if ctx.run.dry_run else _local_db_env(ctx)
    ctx.run.run(plan.alembic(ctx.settings.root, *args), env=extra)


@task(
    help={
        "from_": "revision to start from (default: the one before --to)",
        "to": "revision to end at (default: head)",
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
    }
)
def sql(
    c: Context, from_: str = "", to: str = "head", env: str = "local", dry_run: bool = False
) -> None:
    """Print the SQL of an upgrade without touching any database (for review or a DBA)."""
    span = (
        f"{plan.revision(from_, 'from revision')}:{plan.revision(to)}"
        if from_
        else plan.revision(to)
    )
    ctx = open_env(c, env, dry_run=dry_run)
    result = ctx.run.run(  # offline: it only reads the revisions, so dry runs run it too
        plan.alembic(ctx.settings.root, "upgrade", span, "--sql"),
        env={"LOREPIN_DB_HOST": "offline"},
        capture=True,
        check=False,
        mutates=False,
        quiet=True,
    )
    if not result.ok:
        cause = re.sub(r"^(FAILED: |ERROR \[[\w.]+\] )", "", last_line(result.stderr))
        raise ConfigError(f"no SQL for {span}: {cause}")
    if "-- Running upgrade" not in result.stdout:  # e.g. --to base, or --from above --to
        raise ConfigError(f"no revision to upgrade in {span}: db.sql shows upgrades, oldest first")
    print(result.stdout, end="")


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP})
def check(c: Context, env: str = "local", dry_run: bool = False) -> None:
    """Prove the history safe: one head, lint, up/down/up on a throwaway PostgreSQL, models."""
    ctx = with_revision(open_env(c, env, dry_run=dry_run))
    require_base_image(ctx.settings)
    image = f"{ctx.settings.image_prefix}/postgres:{ctx.env.image_tag}"
    ctx.run.say(f"==> building {image} for a throwaway database")
    ctx.run.run(compose.build(ctx.env, [compose.DB_SERVICE]), env=ctx.variables, no_input=True)
    if ctx.run.dry_run:
        ctx.run.say("dry run: would start a throwaway PostgreSQL and run the checks")
        return
    if not docker.images(ctx.run, compose.docker(ctx.env), [image]):
        raise LorePinError(f"building {image} produced no image; see the build output above")
    # testcontainers reads these when imported: no Ryuk (it needs a registry), and every
    # connection over loopback even inside a container.
    for key, value in (
        ("TESTCONTAINERS_RYUK_DISABLED", "true"),
        ("TESTCONTAINERS_CONNECTION_MODE", "docker_host"),
        ("TC_HOST", "127.0.0.1"),
    ):
        os.environ.setdefault(key, value)
    import secrets as random_secrets
    import tempfile

    from testcontainers.community.postgres import PostgresContainer

    from lorepin_cms.models import Base
    from lorepin_tasks.runtime.migration_check import run_checks

    ctx.run.say("==> starting a throwaway PostgreSQL (removed afterwards)")
    # The image carries the Compose project label of its build; the throwaway database
    # must not look like a container of that project.
    throwaway = PostgresContainer(
        image,
        username="check",
        password=random_secrets.token_urlsafe(16),
        dbname="check",
        driver="psycopg",
    ).with_kwargs(labels={"com.docker.compose.project": "", "com.docker.compose.service": ""})
    with (
        throwaway as pg,
        tempfile.TemporaryDirectory() as work,
    ):
        report = run_checks(
            ctx.run,
            ctx.settings.root / "migrations",
            Base.metadata,
            pg.get_connection_url(),
            Path(work),
        )
    for what in report.checked:
        ctx.run.say(f"checked: {what}")
    for finding in report.findings:
        print(finding)
    if not report.ok:
        raise LorePinError(f"db.check failed: {sum(f.error for f in report.findings)} problem(s)")
    print("db.check passed")


ns = Collection(
    "db", migrate, downgrade, current, history, revision, sql, check, replica, failover, rejoin,
    report, maintain, rotate_password,
)  # fmt: skip
