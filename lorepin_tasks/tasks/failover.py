"""Database failover of a server environment with a replica: `db.replica`, `db.failover`.

The replica (invoke.yaml's `replica: synchronous|asynchronous`) is a PostgreSQL streaming
replica cloned from `db` on its first start. `db.failover` fences the old primary (it
never takes writes again: it is stopped, its restart policy cleared and a marker
written into its data directory that its entrypoint refuses to start with), promotes
the replica, and waits until the serving CMS takes writes through it: the CMS asks
both databases for the writable one (libpq's `target_session_attrs=read-write`), so it
is repointed without a restart. With a synchronous replica every commit the CMS
acknowledged is on the replica, so none is lost. See docs/disaster-recovery.md.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, NothingToDo, Refused
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as plan
from lorepin_tasks.runtime import docker, git, ops
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.runtime.trail import Trail
from lorepin_tasks.tasks._common import DRY_HELP, JSON_HELP, YES_HELP, locked, task
from lorepin_tasks.tasks.deploy import SERVER_ENV_HELP, server_env

DATA = compose.PGDATA
FENCE = f"{DATA}/lorepin-fenced"  # the old primary's entrypoint refuses to start with it
PROMOTE_TIMEOUT = 60.0

# What the primary knows of its replicas (empty on a replica or with none connected).
REPLICATION_SQL = (
    "SELECT application_name, state, sync_state, "
    "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint FROM pg_stat_replication"
)


def _open(c: Context, env: str, dry_run: bool) -> EnvContext:
    ctx = server_env(c, env, dry_run)
    if not ctx.env.replica:
        raise ConfigError(
            f"'{ctx.env.name}' has no replica to fail over to (invoke.yaml: "
            f"environments.{ctx.env.name}.replica: synchronous)"
        )
    return ctx


def replication(ctx: EnvContext) -> dict[str, object]:
    """Which database takes writes, and how the replica follows."""
    roles = {s: ops.role(ctx, s) for s in (compose.DB_SERVICE, compose.REPLICA_SERVICE)}
    streams = []
    if roles[compose.DB_SERVICE] == "primary":
        for line in (ops.db_value(ctx, compose.DB_SERVICE, REPLICATION_SQL) or "").splitlines():
            name, state, sync, lag = [*line.split("\t"), "", "", ""][:4]
            streams.append({"name": name, "state": state, "sync": sync, "lag_bytes": int(lag or 0)})
    return {"mode": ctx.env.replica, "roles": roles, "streams": streams}


@task(help={"env": SERVER_ENV_HELP, "json": JSON_HELP})
def replica(c: Context, env: str = "", json_: bool = False) -> None:
    """Show which database of the environment takes writes and how its replica follows."""
    ctx = _open(c, env, False)
    status = replication(ctx)
    if json_:
        print(json.dumps(status, indent=2))
        return
    roles = status["roles"]
    assert isinstance(roles, dict)
    print(", ".join(f"{service}: {role}" for service, role in roles.items()))
    for s in status["streams"]:  # type: ignore[attr-defined]
        print(f"streaming to {s['name']}: {s['state']}, {s['sync']}, {s['lag_bytes']} bytes behind")


@task(
    help={
        "env": SERVER_ENV_HELP,
        "force": "fail over even though the primary still answers (it is stopped first)",
        "yes": YES_HELP,
        "dry_run": DRY_HELP,
    }
)
def failover(
    c: Context, env: str = "", force: bool = False, yes: bool = False, dry_run: bool = False
) -> None:
    """Promote the replica when the primary is lost: fence the primary, promote, and wait
    until the CMS takes writes again; recorded in the trail and announced."""
    ctx = _open(c, env, dry_run)
    primary = plan.container(ctx.env, compose.DB_SERVICE)
    standby = plan.container(ctx.env, compose.REPLICA_SERVICE)
    docker_ = compose.docker(ctx.env)
    fence = [*docker_, "cp", "-", f"{primary}:{DATA}"]
    promote = [*docker_, "exec", "-u", "postgres", standby, "pg_ctl", "promote", "-D", DATA]
    status = replication(ctx)
    roles = status["roles"]
    assert isinstance(roles, dict)
    pending = ctx.env.state_dir / "failover.pending"  # a run promoted, did not record yet
    if roles[compose.REPLICA_SERVICE] == "primary":
        if not pending.is_file() or ctx.run.dry_run:
            raise NothingToDo(
                f"the replica of '{ctx.env.name}' already takes writes (failed over before)"
            )
        ctx.run.say("==> a failover was cut short after the promotion: finishing it")
    elif roles[compose.REPLICA_SERVICE] != "replica":
        raise LorePinError(
            f"the replica of '{ctx.env.name}' is not running: there is nothing to fail over to"
        )
    elif roles[compose.DB_SERVICE] == "primary" and not force:
        raise Refused(
            f"the primary of '{ctx.env.name}' still answers: a failover is for a lost "
            "primary (--force switches anyway: the primary is stopped first)"
        )
    if ctx.run.dry_run:
        for argv in (
            [*docker_, "update", "--restart=no", primary],
            [*docker_, "stop", "--time", "30", primary],
            fence,
            promote,
        ):
            ctx.run.run(argv)
        ctx.run.say("dry run: nothing was stopped or promoted")
        return
    confirm(
        f"Fail '{ctx.env.name}' over to its replica? The primary ({primary}) is fenced and "
        "must be rebuilt as a replica before the next deploy.",
        yes=yes,
    )
    who = git.who_am_i(ctx.run, ctx.settings.root)
    started = time.monotonic()
    steps = ops.Steps(ctx)
    finishing = pending.is_file() and roles[compose.REPLICA_SERVICE] == "primary"
    with locked(ctx, "db.failover"):
        if not finishing:
            _fence_and_promote(ctx, steps, primary, standby, fence, promote, pending, who)
        backend = ComposeBlueGreen(ctx)
        state = backend.state()
        if state.active and state.serving:
            with steps.step(f"waiting until {state.active} takes writes"):
                ops.wait_ready(ctx, backend, state.active, state.serving)
        seconds = round(time.monotonic() - started, 1)
        _record_failover(ctx, who, state.serving, seconds, steps, finishing)
        pending.unlink(missing_ok=True)
    ops.notify_team(ctx, f"{ctx.env.name}: failed over to {compose.REPLICA_SERVICE} in {seconds} s")
    print(
        f"'{ctx.env.name}' takes writes on {compose.REPLICA_SERVICE} ({seconds} s); "
        f"{compose.DB_SERVICE} is fenced: rebuild it as a replica before the next deploy "
        "(docs/disaster-recovery.md, scenario 6)"
    )


def _fence_and_promote(
    ctx: EnvContext,
    steps: ops.Steps,
    primary: str,
    standby: str,
    fence: list[str],
    promote: list[str],
    pending: Path,
    who: str,
) -> None:
    """The old primary can never take writes again, then the replica takes them. The
    pending file lets a second run finish a run killed after the promotion."""
    docker_ = compose.docker(ctx.env)
    with steps.step(f"fencing {primary}"):
        if docker.container(ctx, primary) is not None:
            ctx.run.run([*docker_, "update", "--restart=no", primary], capture=True)
            ctx.run.run([*docker_, "stop", "--time", "30", primary], capture=True)
            at = f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}"
            marker = f"failed over to {compose.REPLICA_SERVICE} at {at}\n"
            tar = docker.files_tar({Path(FENCE).name: marker})
            ctx.run.pipe(fence, env=ctx.engine, write=lambda sink: sink.write(tar))
    with steps.step(f"promoting {standby}"):
        ctx.run.write(pending, json.dumps({"who": who, "at": f"{datetime.now(UTC):%FT%TZ}"}))
        ctx.run.run(promote, capture=True)
        deadline = time.monotonic() + PROMOTE_TIMEOUT
        while ops.role(ctx, compose.REPLICA_SERVICE) != "primary":
            if time.monotonic() > deadline:
                raise LorePinError(f"{standby} was not promoted within {PROMOTE_TIMEOUT:.0f} s")
            time.sleep(0.2)


def _record_failover(
    ctx: EnvContext,
    who: str,
    version: str | None,
    seconds: float,
    steps: ops.Steps,
    finishing: bool,
) -> None:
    """The failover in the trail, which the promoted replica holds (it was replicated)."""
    argv = plan.psql(ctx.env, who, service=compose.REPLICA_SERVICE)
    with Session(ctx.run, argv, ctx.variables, "database", quiet=True) as session:
        Trail(session, ctx.env.state_dir / "audit.jsonl").append(
            plan.record(
                seq=0,
                at=datetime.now(UTC).isoformat(timespec="seconds"),
                who=who,
                action="failover",
                env=ctx.env.name,
                version=version,
                outcome="succeeded",
                detail={
                    "to": compose.REPLICA_SERVICE,
                    "seconds": seconds,
                    **({"finished_after_an_interrupted_run": True} if finishing else {}),
                },
                steps=steps.done,
            )
        )
