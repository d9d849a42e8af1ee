"""What every operation on a server environment shares: its deploy lock (in its own
database), its audit trail, the steps of a run, the team's webhook, a colour's readiness,
and the guard against a database that was failed over."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from lorepin_tasks.errors import Busy, LorePinError, Refused
from lorepin_tasks.plans import backup as backup_plan
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import db as db_plan
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.runtime import docker
from lorepin_tasks.runtime.bluegreen import Backend
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.executor import Result
from lorepin_tasks.runtime.notify import notify
from lorepin_tasks.runtime.pg import Session, literal
from lorepin_tasks.runtime.trail import Trail, carry_over, mirrored


def _step(name: str, started: float, *, ok: bool) -> deploy_plan.Step:
    return deploy_plan.Step(name=name, seconds=time.monotonic() - started, ok=ok)


class Steps:
    """Each step's name, duration and outcome, for the record; progress for the person."""

    def __init__(self, ctx: EnvContext) -> None:
        self.ctx = ctx
        self.done: list[deploy_plan.Step] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.ctx.run.say(f"==> {self.ctx.env.name}: {name}")
        started = time.monotonic()
        try:
            yield
        except BaseException:
            self.done.append(_step(name, started, ok=False))
            raise
        self.done.append(_step(name, started, ok=True))


def db_value(ctx: EnvContext, service: str, sql: str) -> str | None:
    """What one query answers in a database container (tab-separated rows), or None when
    it does not answer."""
    answer = ctx.run.run(
        [*compose.docker(ctx.env), "exec", deploy_plan.container(ctx.env, service),
         "psql", "-U", "lorepin", "-d", "lorepin", "-qtAX", "-F", "\t", "-c", sql],
        env=ctx.engine, capture=True, check=False, mutates=False, quiet=True, timeout=15,
    )  # fmt: skip
    return answer.stdout.strip() if answer.ok else None


def role(ctx: EnvContext, service: str) -> str:
    """A database service's role: primary (takes writes), replica (in recovery) or down."""
    found = docker.container(ctx, deploy_plan.container(ctx.env, service))
    if found is None or found.state != "running":
        return "down"
    answer = db_value(ctx, service, "SELECT pg_is_in_recovery()")
    return {"f": "primary", "t": "replica"}.get(answer or "", "down")


def failed_over(ctx: EnvContext) -> bool:
    """Whether the environment's replica takes writes (`db.failover` promoted it; until
    `db.rejoin` has switched back, `db` is fenced or following it)."""
    return bool(ctx.env.replica) and role(ctx, compose.REPLICA_SERVICE) == "primary"


def primary(ctx: EnvContext) -> str:
    """The database service that takes writes: `db`, or its promoted replica."""
    return compose.REPLICA_SERVICE if failed_over(ctx) else compose.DB_SERVICE


def refuse_failed_over(ctx: EnvContext) -> None:
    """After `db.failover` the primary is fenced and the replica takes writes: nothing may
    start or use the old primary until it is rebuilt (checked before anything changes)."""
    if failed_over(ctx):
        raise Refused(
            f"'{ctx.env.name}' was failed over: {compose.REPLICA_SERVICE} takes writes and "
            f"{compose.DB_SERVICE} is fenced; bring it back first "
            f"(`invoke db.rejoin --env {ctx.env.name}`, docs/disaster-recovery.md, scenario 6)"
        )


def as_deployed(ctx: EnvContext, service: str = compose.DB_SERVICE) -> EnvContext:
    """The environment as its database was deployed: a one-off of a database service runs
    that service's own image (a server environment's is its first release's), never one
    Compose would build from the checkout."""
    found = docker.container(ctx, deploy_plan.container(ctx.env, service))
    if ctx.run.dry_run and found is None:
        return ctx
    image = found.image if found else ""
    tag = image.rpartition(":")[2]
    if not image.startswith(f"{ctx.settings.image_prefix}/postgres:") or not tag:
        raise LorePinError(f"the database of '{ctx.env.name}' runs {image!r}, not a release image")
    return replace(ctx, env=replace(ctx.env, image_tag=tag))


@contextmanager
def deploy_lock(ctx: EnvContext, who: str, action: str) -> Iterator[Session | None]:
    """The environment's deploy lock: a session advisory lock in its own database, held by
    a psql session that ends with this process (so it frees itself, even after kill -9)."""
    if ctx.run.dry_run:
        yield None
        return
    refuse_failed_over(ctx)
    with Session(ctx.run, deploy_plan.psql(ctx.env, who), ctx.variables, "database") as session:
        ensure_schema(session)
        if session.scalar(deploy_plan.lock_sql()) != "t":
            holder = session.query(deploy_plan.holder_sql())
            who_, act, since = holder[0] if holder and len(holder[0]) == 3 else ("?", "", "?")
            raise Busy(
                f"'{ctx.env.name}' is locked by {who_}"
                f"{f' ({act})' if act else ''} since {since} UTC; try again when it is done "
                f"(`invoke deploy.lock --env {ctx.env.name}`)"
            )
        session.query(deploy_plan.claim_sql(literal(who), literal(action)))
        try:
            yield session
        finally:
            session.query(deploy_plan.release_sql())


def wait_ready(ctx: EnvContext, backend: Backend, colour: str, version: str) -> None:
    """Poll the colour's /readyz directly until it answers 200 (the CMS judges the schema)."""
    if ctx.run.dry_run:
        return
    # invoke.yaml's deploy.ready_timeout (60 s unless said otherwise)
    deadline = time.monotonic() + (ctx.env.deploy.ready_timeout if ctx.env.deploy else 60)
    code, body = 0, ""
    while time.monotonic() < deadline:
        code, body = backend.probe(colour, "/readyz")
        if code == 200:
            return
        if code == 503 and "schema mismatch" in body:
            break  # it will not get better by waiting
        if code == 0:
            backend.running(colour, version)  # exited meanwhile: say why, now
        time.sleep(0.1)
    reason = body
    with suppress(ValueError, AttributeError):
        reason = json.loads(body).get("reason") or body
    raise LorePinError(
        f"{version} on {colour} is not ready (answer {code or 'none'}: {str(reason)[:200]})"
    )


def open_trail(ctx: EnvContext, session: Session | None, who: str) -> Trail | None:
    """The trail, with a run that died without an outcome (kill -9) recorded as such."""
    if session is None:
        return None
    trail = Trail(session, ctx.env.state_dir / "audit.jsonl")
    records = trail.records()
    # A point-in-time restore (even one cut short) rewinds the database: what it lost of
    # the trail, this machine's copy still has, sealed; the chain goes on from there.
    mine = mirrored(trail.mirror)
    if len(mine) > len(records) and [(r.get("seq"), r.get("hash")) for r in records] == [
        (r.get("seq"), r.get("hash")) for r in mine[: len(records)]
    ]:
        carry_over(session, mine)
        records = trail.records()
    last = records[-1] if records else None
    if last and last.get("outcome") == "started":
        record(
            trail,
            ctx,
            who,
            str(last.get("action")),
            last.get("version"),
            "interrupted",
            {"reason": f"record {last.get('seq')} ended without an outcome (its run was killed)"},
        )
    record_scheduled(ctx, trail)
    return trail


def controldata(ctx: EnvContext, service: str) -> dict[str, str]:
    """pg_controldata of a stopped database service's data directory (a one-off of it)."""
    said = docker.run_oneoff(
        as_deployed(ctx, compose.DB_SERVICE),
        service,
        backup_plan.as_postgres("pg_controldata", "-D", compose.PGDATA),
        kind="controldata",
        capture=True,
    )
    return {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in said.splitlines())}


SCHEDULE_LOG = "/var/lib/pgbackrest/lorepin-schedule.jsonl"  # on the second site's volume
SCHEDULED = backup_plan.SCHEDULED


def schedule_runs(ctx: EnvContext, last: int = 500) -> list[dict[str, Any]] | None:
    """The backup schedule's latest runs, from the second site's run log; [] before the
    first run; None when the site cannot be read."""
    site = deploy_plan.container(ctx.env, backup_plan.SITE)
    answer = ctx.run.run(
        [*compose.docker(ctx.env), "exec", site, "tail", "-n", str(last), SCHEDULE_LOG],
        env=ctx.engine, capture=True, check=False, mutates=False, quiet=True, timeout=15,
    )  # fmt: skip
    if not answer.ok:
        return [] if "No such file" in answer.stderr else None
    runs = []
    for line in answer.stdout.splitlines():
        with suppress(ValueError):
            run = json.loads(line)
            if isinstance(run, dict) and isinstance(run.get("at"), str):
                runs.append(run)
    return runs


def record_scheduled(ctx: EnvContext, trail: Trail | None) -> int:
    """The schedule's runs the trail does not hold yet, appended (who: the schedule);
    how many. The second site runs them; whoever next writes the trail records them."""
    if trail is None or not ctx.env.is_server:
        return 0
    runs = schedule_runs(ctx)
    if not runs:
        return 0
    new = backup_plan.unrecorded(runs, trail.records())
    for run in new:
        record(
            trail,
            ctx,
            f"schedule ({backup_plan.SITE})",
            SCHEDULED,
            None,
            "succeeded" if run.get("outcome") == "ok" else "failed",
            {
                "run_at": run["at"],
                "type": run.get("type"),
                "repo": 2,
                "seconds": run.get("seconds"),
                "message": run.get("message") or None,
            },
        )
    return len(new)


def record(
    trail: Trail | None,
    ctx: EnvContext,
    who: str,
    action: str,
    version: str | None,
    outcome: str,
    detail: Mapping[str, Any],
    steps: Steps | None = None,
    *,
    commit: bool = False,
) -> None:
    if trail is None:
        return
    trail.append(
        deploy_plan.record(
            seq=0,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
            who=who,
            action=action,
            env=ctx.env.name,
            version=version,
            outcome=outcome,
            detail={k: v for k, v in detail.items() if v is not None},
            steps=steps.done if steps else (),
        ),
        commit=commit,
    )


PGBACKREST_LOCKED = ("unable to acquire lock", "another pgBackRest process")


def pgbackrest(ctx: EnvContext, argv: list[str], **run: Any) -> Result:
    """A pgBackRest command that waits (up to wait_timeout) while another one holds the
    stanza's lock (the schedule's backup, say) rather than failing on it."""
    deadline = time.monotonic() + ctx.settings.wait_timeout
    while True:
        done = ctx.run.run(argv, env=ctx.engine, capture_stderr=True, check=False, **run)
        locked = any(m in done.stderr for m in PGBACKREST_LOCKED)
        if done.ok or ctx.run.dry_run or not locked or time.monotonic() > deadline:
            return done
        ctx.run.say("    another pgBackRest command is running (the schedule's?): waiting")
        time.sleep(2)


def notify_team(ctx: EnvContext, text: str) -> None:
    if ctx.run.dry_run:
        return
    if ctx.settings.webhook_url:
        ctx.run.add_secret(ctx.settings.webhook_url)
    notify(ctx.settings.webhook_url, f"LorePin CMS: {text}", say=ctx.run.say)


def writable_database(ctx: EnvContext) -> str:
    """The database service that takes writes (after a failover: the promoted replica),
    running; a one-line error naming how to start it otherwise."""
    service = primary(ctx)
    if not any(c.service == service and c.state == "running" for c in docker.containers(ctx)):
        how = (
            f"deploy it first (`invoke deploy --env {ctx.env.name} --version X.Y.Z`)"
            if ctx.env.is_server
            else f"start it first (`invoke up --env {ctx.env.name}`)"
        )
        raise LorePinError(f"'{ctx.env.name}' has no running database: {how}")
    return service


def database_session(ctx: EnvContext, who: str) -> Session:
    """A psql session, as `who`, on the database that takes writes (running)."""
    argv = deploy_plan.psql(ctx.env, who, service=writable_database(ctx))
    return Session(ctx.run, argv, ctx.variables, "database", quiet=True)


def database_running(ctx: EnvContext) -> bool:
    """The environment's first database service runs."""
    return any(
        c.service == compose.DB_SERVICE and c.state == "running" for c in docker.services(ctx)
    )


def trail_records(ctx: EnvContext, who: str) -> list[dict[str, Any]] | None:
    """The trail in the environment's database; None (said why) when it cannot be read:
    a dry run (the command is shown), or a database that is not running."""
    if ctx.run.dry_run:
        ctx.run.run(deploy_plan.psql(ctx.env, who), env=ctx.variables)
        ctx.run.say("dry run: the trail was not read")
        return None
    # After a failover the trail is read where it went: the promoted replica.
    service = primary(ctx)
    if service == compose.DB_SERVICE and not database_running(ctx):
        ctx.run.say(f"the database of '{ctx.env.name}' is not running")
        return None
    argv = deploy_plan.psql(ctx.env, who, service=service)
    with Session(ctx.run, argv, ctx.variables, "database", quiet=True) as session:
        ensure_schema(session)
        trail = Trail(session, ctx.env.state_dir / "audit.jsonl")
        # The backup schedule's latest runs go in first, unless a deploy (or another
        # writer of the trail) holds the lock: it records them itself. (The session's end
        # frees the lock.)
        if service == compose.DB_SERVICE and session.scalar(deploy_plan.lock_sql()) == "t":
            record_scheduled(ctx, trail)
        return trail.records()


def passwords_in_files(ctx: EnvContext) -> dict[str, str]:
    """Each login role's password, as its secret file holds it now (those there)."""
    found = {}
    for role, secret in db_plan.LOGIN_ROLES.items():
        path = ctx.env.secrets_dir / secret
        if path.is_file() and (value := path.read_text().strip()):
            ctx.run.add_secret(value)
            found[role] = value
    return found


def set_passwords(session: Session, passwords: Mapping[str, str]) -> None:
    """Give login roles their passwords, as SCRAM verifiers made here (the server never
    sees a password), with nothing of it in the server's log; roles that do not exist
    (a database from before them) are passed over."""
    existing = {row[0] for row in session.query(db_plan.EXISTING_LOGIN_ROLES)}
    session.query(db_plan.UNLOGGED)
    for role, password in passwords.items():
        if role in existing:
            verifier = db_plan.scram_verifier(password, os.urandom(16))
            session.query(db_plan.set_password(role, verifier))


def ensure_schema(session: Session) -> None:
    """The toolkit's schema in the environment's database, made only when missing."""
    if session.scalar(deploy_plan.ddl_needed_sql()) == "t":
        session.query(deploy_plan.DDL)


def schema_changes(ctx: EnvContext, since: str, until: str) -> list[dict[str, Any]]:
    """The migrator's runs from `since` to `until` (ISO times), oldest first: its migration
    log in the environment's database (none under a dry run, or before the first one)."""
    if ctx.run.dry_run or not database_running(ctx):
        return []
    columns = "started_at, who, action, from_rev, to_rev, outcome, duration_ms, detail"
    after, before = literal(since), literal(until)
    window = f"started_at >= {after}::timestamptz AND started_at < {before}::timestamptz"
    sql = f"SELECT row_to_json(m) FROM (SELECT {columns} FROM lorepin_ops.migration_log WHERE {window} ORDER BY id) m"  # noqa: S608, E501 (a literal)
    argv = deploy_plan.psql(ctx.env, "audit", service=primary(ctx))
    with Session(ctx.run, argv, ctx.variables, "database", quiet=True) as session:
        if session.scalar("SELECT to_regclass('lorepin_ops.migration_log') IS NOT NULL") != "t":
            return []
        return [json.loads(row[0]) for row in session.query(sql) if row and row[0]]
