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
import shlex
import time
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from invoke.context import Context

from lorepin_tasks.errors import Busy, ConfigError, LorePinError, NothingToDo, Refused
from lorepin_tasks.plans import backup as backup_plan
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as plan
from lorepin_tasks.runtime import docker, git, ops
from lorepin_tasks.runtime import replication as replication_
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.runtime.trail import Trail
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    SERVER_ENV_HELP,
    YES_HELP,
    locked,
    server_env,
    task,
)
from lorepin_tasks.tasks.backup import create_physical

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
    primary = plan.container(ctx.env, compose.DB_SERVICE)
    if roles[compose.DB_SERVICE] == "down" and _fenced(ctx, primary):
        roles[compose.DB_SERVICE] = "fenced"  # failed over: `db.rejoin` brings it back
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
        f"{compose.DB_SERVICE} is fenced: bring it back before the next deploy "
        f"(`invoke db.rejoin --env {ctx.env.name}`)"
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


# -- rejoin ----------------------------------------------------------------------------


def _fenced(ctx: EnvContext, container: str) -> bool:
    """Whether a (stopped) database container carries the failover's fence marker."""
    found = ctx.run.run(
        [*compose.docker(ctx.env), "cp", f"{container}:{FENCE}", "-"],
        env=ctx.engine, capture=True, check=False, quiet=True, mutates=False,
    )  # fmt: skip
    return found.ok


def rebuild_script(stamp: str) -> list[str]:
    """In a one-off of `db` (its data and repo1's volumes): the fenced data kept aside,
    then the data directory cloned from the promoted replica as a replica of it.
    `resume`: a run killed after the copy, whose marker is gone."""
    clone = shlex.join(
        backup_plan.as_postgres(
            "pg_basebackup", "-h", compose.REPLICA_SERVICE, "-U", "lorepin", "-D", DATA,
            "-X", "stream", "-R", "-c", "fast",
        )
    )  # fmt: skip
    script = f"""set -euo pipefail
if [ -e {FENCE} ]; then
  {backup_plan.keep_aside(f"{stamp}-fenced")}
elif [ "${{1:-}}" != resume ]; then
  echo "error: the data of {compose.DB_SERVICE} is not fenced: it was not failed over" >&2
  exit 6
fi
find "$PGDATA" -mindepth 1 -delete
PGPASSWORD=$(cat /run/secrets/db_password) {clone}
"""
    return ["bash", "-c", script, "rebuild"]


@dataclass(frozen=True)
class RejoinPlan:
    """What a rejoin has left to do, from what both databases say now (and, for a run cut
    short, the phase its pending file names)."""

    db_role: str
    replica_role: str
    rebuild: bool  # db's data directory is replaced by a clone of db-replica
    resume: bool  # ... though it is no longer fenced (a run cut short wiped the marker)
    follow: bool  # wait until db streams from db-replica
    switch: bool  # db-replica stops, db is promoted
    phase: str  # the pending file's phase ("" without one)


def _rejoin_plan(ctx: EnvContext, pending: Path) -> RejoinPlan:
    try:
        return _judge(ctx, pending)
    except NothingToDo:
        if not ctx.run.dry_run:
            pending.unlink(missing_ok=True)  # a stale one: nothing was left to do
        raise


def _judge(ctx: EnvContext, pending: Path) -> RejoinPlan:
    name = ctx.env.name
    if (ctx.env.state_dir / "failover.pending").is_file():
        raise Refused(
            f"a failover of '{name}' was cut short: finish it first "
            f"(`invoke db.failover --env {name}`)"
        )
    phase = ""
    with suppress(OSError, ValueError, AttributeError):
        phase = str(json.loads(pending.read_text()).get("phase", ""))
    roles = replication(ctx)["roles"]
    assert isinstance(roles, dict)
    db_role, replica_role = roles[compose.DB_SERVICE], roles[compose.REPLICA_SERVICE]
    primary = plan.container(ctx.env, compose.DB_SERVICE)
    standby = plan.container(ctx.env, compose.REPLICA_SERVICE)
    if db_role == "primary" and replica_role == "primary":
        raise LorePinError(
            f"both databases of '{name}' take writes: stop the one the CMS does not use "
            "and see docs/disaster-recovery.md, scenario 6"
        )
    # Only a run that switched writes back has something left here (db-replica to start
    # and wait for, the record): a pending file of an earlier phase is stale.
    if db_role == "primary" and phase != "switched":
        also = "" if replica_role == "replica" else f" (start {standby}: it is {replica_role})"
        raise NothingToDo(f"'{name}' was not failed over: {compose.DB_SERVICE} takes writes{also}")
    found = docker.container(ctx, primary)
    starting = db_role == "down" and found is not None and found.state == "running"
    rebuild = db_role == "fenced" or (db_role == "down" and not starting)
    if rebuild and db_role == "down" and phase not in ("rebuilding", "rebuilt"):
        raise Refused(
            f"{compose.DB_SERVICE} of '{name}' is stopped but was not failed over: start it "
            f"(`docker start {primary}`)"
        )
    if (rebuild or starting) and replica_role != "primary":
        raise LorePinError(
            f"{compose.REPLICA_SERVICE} of '{name}' is {replica_role}: it holds the data to "
            f"rebuild {compose.DB_SERVICE} from; start it first (`docker start {standby}`)"
        )
    if db_role == "replica" and replica_role == "replica":
        raise LorePinError(
            f"both databases of '{name}' are replicas: promote the one with the newest data "
            "(docs/disaster-recovery.md, scenario 6)"
        )
    busy = docker.read(ctx.run, compose.oneoff_running(ctx.env, "rejoin"), env=ctx.engine)
    if busy.stdout.split():
        raise Busy(
            f"a rebuild of {compose.DB_SERVICE} of '{name}' is still running (container "
            f"{busy.stdout.split()[0]}): run `invoke db.rejoin` again when it has ended"
        )
    follow = rebuild or starting
    return RejoinPlan(
        db_role=db_role,
        replica_role=replica_role,
        rebuild=rebuild,
        resume=rebuild and db_role != "fenced",
        follow=follow,
        switch=follow or db_role == "replica",
        phase=phase,
    )


@task(
    help={
        "env": SERVER_ENV_HELP,
        "yes": YES_HELP,
        "dry_run": DRY_HELP,
    }
)
def rejoin(c: Context, env: str = "", yes: bool = False, dry_run: bool = False) -> None:
    """After a failover: rebuild the fenced primary as a replica of the promoted one, then
    switch writes back to it in a short pause; the replica follows it again."""
    ctx = _open(c, env, dry_run)
    name = ctx.env.name
    pending = ctx.env.state_dir / "rejoin.pending"  # a run began: what it did so far
    primary = plan.container(ctx.env, compose.DB_SERVICE)
    standby = plan.container(ctx.env, compose.REPLICA_SERVICE)
    _rejoin_plan(ctx, pending)
    deployed = ops.as_deployed(ctx, compose.REPLICA_SERVICE)
    confirm(
        f"Rebuild {compose.DB_SERVICE} of '{name}' from {compose.REPLICA_SERVICE} and switch "
        "writes back to it? Writes pause for a few seconds during the switch; the fenced "
        f"data is kept in repo1's volume ({backup_plan.KEPT}).",
        yes=yes or ctx.run.dry_run,
    )
    who = git.who_am_i(ctx.run, ctx.settings.root)
    started = time.monotonic()
    steps = ops.Steps(ctx)
    with locked(ctx, "db.rejoin"):
        # Judged again under the lock: another run may have done it while this one asked.
        todo = _rejoin_plan(ctx, pending)
        detail: dict[str, object] = {}
        with suppress(OSError, ValueError, AttributeError):
            detail.update(json.loads(pending.read_text()).get("detail", {}))

        def mark(phase: str) -> None:
            if not ctx.run.dry_run:
                state = {"who": who, "phase": phase, "detail": detail}
                ctx.run.write(pending, json.dumps(state))

        mark(todo.phase or "began")
        if todo.rebuild:
            found = docker.container(ctx, primary)
            if found is not None and found.state == "running":  # never under a live database
                raise LorePinError(f"{primary} runs: it is not rebuilt under a live database")
            stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
            with steps.step(f"rebuilding {compose.DB_SERVICE} from {compose.REPLICA_SERVICE}"):
                mark("rebuilding")
                said = docker.run_oneoff(
                    deployed,
                    compose.DB_SERVICE,
                    [*rebuild_script(stamp), *(["resume"] if todo.resume else [])],
                    kind="rejoin",
                    capture=True,
                )
                if said.strip():
                    detail["kept"] = said.strip().removeprefix("kept ")
                mark("rebuilt")
                replication_.start(ctx, primary)
        if todo.follow:
            with steps.step(f"waiting until {compose.DB_SERVICE} follows"):
                replication_.await_role(ctx, compose.DB_SERVICE, "replica")
        if todo.switch:
            with steps.step(f"switching writes back to {compose.DB_SERVICE}"):
                paused = _switch_back(ctx, primary, standby, todo.replica_role == "primary")
                detail["paused_at"] = time.time() - (time.monotonic() - paused)
                mark("switched")
        with steps.step(f"{compose.REPLICA_SERVICE} follows {compose.DB_SERVICE} again"):
            if ops.role(ctx, compose.REPLICA_SERVICE) == "down" or ctx.run.dry_run:
                replication_.start(ctx, standby)
            replication_.await_role(ctx, compose.REPLICA_SERVICE, "replica")
            replication_.await_streaming(ctx)
        if ctx.run.dry_run:
            ctx.run.say("dry run: nothing was rebuilt or switched")
            return
        paused_at = detail.pop("paused_at", None)
        if isinstance(paused_at, float):
            detail["write_pause_seconds"] = round(time.time() - paused_at, 1)
        seconds = round(time.monotonic() - started, 1)
        detail["seconds"] = seconds
        if todo.phase:
            detail["finished_after_an_interrupted_run"] = True
        backend = ComposeBlueGreen(ctx)
        with ops.deploy_lock(ctx, who, "db.rejoin") as session:
            trail = ops.open_trail(ctx, session, who)
            ops.record(
                trail, ctx, who, "rejoin", backend.state().serving, "succeeded", detail, steps
            )
        pending.unlink(missing_ok=True)
    ops.notify_team(ctx, f"{name}: {compose.DB_SERVICE} takes writes again ({seconds} s)")
    # A base backup on the new timeline: a point-in-time restore to after now needs one.
    try:
        create_physical(ctx, "full", repo=1)
    except LorePinError as exc:
        ctx.run.say(f"warning: no full backup after the rejoin: {exc}")
    pause = detail.get("write_pause_seconds")
    print(
        f"'{name}': {compose.DB_SERVICE} takes writes again and {compose.REPLICA_SERVICE} "
        f"follows it ({seconds} s, writes paused {pause} s)"
        + (f"; the fenced data is kept in {detail['kept']}" if detail.get("kept") else "")
    )


def _switch_back(ctx: EnvContext, primary: str, standby: str, running: bool) -> float:
    """The promoted replica stops cleanly (its last WAL reaches `db`, which is checked),
    is marked to come back as a replica, and `db` is promoted. Until the promotion, any
    failure starts the replica again as the primary: writes never stay stopped. Returns
    when writes paused."""
    docker_ = compose.docker(ctx.env)
    if running:
        replication_.await_streaming(ctx, compose.REPLICA_SERVICE)
    paused = time.monotonic()
    ctx.run.run([*docker_, "stop", "--time", "60", standby], capture=True)
    signal = [*docker_, "cp", "-", f"{standby}:{DATA}"]
    promote = [*docker_, "exec", "-u", "postgres", primary, "pg_ctl", "promote", "-D", DATA]
    if ctx.run.dry_run:
        ctx.run.run(signal)
        ctx.run.run(promote)
        return paused
    try:
        control = ops.controldata(ctx, compose.REPLICA_SERVICE)
        if control.get("Database cluster state") != "shut down":
            raise LorePinError(
                f"{compose.REPLICA_SERVICE} did not shut down cleanly "
                f"({control.get('Database cluster state', 'unknown')}): it is started again "
                "as the primary; run `invoke db.rejoin` again"
            )
        checkpoint = control.get("Latest checkpoint location", "")
        _await_replayed(ctx, checkpoint)
        tar = docker.files_tar({"standby.signal": ""})
        ctx.run.pipe(signal, env=ctx.engine, write=lambda sink: sink.write(tar))
    except BaseException:
        if ops.role(ctx, compose.REPLICA_SERVICE) == "down":
            ctx.run.run([*docker_, "start", standby], capture=True, check=False)
        raise
    ctx.run.run(promote, capture=True)
    replication_.await_role(ctx, compose.DB_SERVICE, "primary")
    return paused


def _await_replayed(ctx: EnvContext, checkpoint: str) -> None:
    """Until `db` has replayed the promoted replica's shutdown checkpoint: everything it
    wrote (a short wait: the shutdown sent it all)."""
    if not checkpoint or "/" not in checkpoint:
        raise LorePinError(f"no checkpoint location in the replica's control data: {checkpoint!r}")
    sql = f"SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '{checkpoint}') >= 0"
    deadline = time.monotonic() + 30
    while ops.db_value(ctx, compose.DB_SERVICE, sql) != "t":
        if time.monotonic() > deadline:
            raise LorePinError(
                f"{compose.DB_SERVICE} did not receive all that {compose.REPLICA_SERVICE} wrote "
                f"(up to {checkpoint}): {compose.REPLICA_SERVICE} is started again as the primary"
            )
        time.sleep(0.2)
