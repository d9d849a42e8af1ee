"""The two databases of a server environment with a replica: starting one, waiting for a
role or for streaming, and cloning the replica afresh (after a restore, whose new
timeline it cannot follow)."""

from __future__ import annotations

import time

from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.runtime import docker, ops
from lorepin_tasks.runtime.environment import EnvContext

CAUGHT_UP = 16 * 1024 * 1024  # bytes behind at which the switch back pauses writes briefly


def start(ctx: EnvContext, container: str) -> None:
    docker_ = compose.docker(ctx.env)
    ctx.run.run([*docker_, "update", "--restart=unless-stopped", container], capture=True)
    ctx.run.run([*docker_, "start", container], capture=True)


def await_role(ctx: EnvContext, service: str, wanted: str) -> None:
    """Until a database service answers in the role wanted; one that exits or restarts
    meanwhile fails at once, with its log's reason."""
    if ctx.run.dry_run:
        return
    name = deploy_plan.container(ctx.env, service)
    first = docker.container(ctx, name)
    restarts = first.restarts if first else 0
    deadline = time.monotonic() + ctx.settings.wait_timeout
    while (now := ops.role(ctx, service)) != wanted:
        found = docker.container(ctx, name)
        if found is None or found.state != "running" or found.restarts != restarts:
            logs = ctx.run.run(
                [*compose.docker(ctx.env), "logs", "--tail", "20", name],
                env=ctx.engine, capture=True, check=False, quiet=True, mutates=False,
            )  # fmt: skip
            cause = docker.log_cause((logs.stdout + logs.stderr).splitlines())
            raise LorePinError(f"{service} of '{ctx.env.name}' did not start: {cause}")
        if time.monotonic() > deadline:
            raise LorePinError(
                f"{service} of '{ctx.env.name}' is {now}, not {wanted}, "
                f"after {ctx.settings.wait_timeout} s"
            )
        time.sleep(0.3)


def lag(ctx: EnvContext, primary: str) -> int | None:
    """Bytes the replica of `primary` has still to replay (None: it does not stream)."""
    answer = ops.db_value(
        ctx,
        primary,
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint "
        "FROM pg_stat_replication WHERE state = 'streaming'",
    )
    first = (answer or "").splitlines()[:1]
    return int(first[0]) if first and first[0].lstrip("-").isdigit() else None


def await_streaming(ctx: EnvContext, primary: str = compose.DB_SERVICE) -> None:
    """Until the replica of `primary` streams from it and is nearly caught up."""
    if ctx.run.dry_run:
        return
    other = compose.REPLICA_SERVICE if primary == compose.DB_SERVICE else compose.DB_SERVICE
    deadline = time.monotonic() + ctx.settings.wait_timeout
    while (behind := lag(ctx, primary)) is None or behind > CAUGHT_UP:
        for service in (primary, other):  # either stopped: it will not get better
            found = docker.container(ctx, deploy_plan.container(ctx.env, service))
            if found is None or found.state != "running":
                raise LorePinError(
                    f"{service} of '{ctx.env.name}' stopped while the replica was to catch "
                    "up; start it and run the command again"
                )
        if time.monotonic() > deadline:
            said = "does not stream" if behind is None else f"is {behind} bytes behind"
            raise LorePinError(
                f"the replica of {primary} in '{ctx.env.name}' {said} after "
                f"{ctx.settings.wait_timeout} s"
            )
        time.sleep(0.3)


def reclone(ctx: EnvContext) -> None:
    """The replica emptied and started: its entrypoint clones `db` again (pg_basebackup),
    then it streams. (Its old data holds nothing `db` lacks: it only followed.)"""
    standby = deploy_plan.container(ctx.env, compose.REPLICA_SERVICE)
    ctx.run.say(
        f"==> {ctx.env.name}: cloning {compose.REPLICA_SERVICE} from {compose.DB_SERVICE} again"
    )
    ctx.run.run([*compose.docker(ctx.env), "stop", "--time", "60", standby], capture=True)
    docker.run_oneoff(
        ops.as_deployed(ctx, compose.REPLICA_SERVICE),
        compose.REPLICA_SERVICE,
        ["bash", "-c", 'find "$PGDATA" -mindepth 1 -delete'],
        kind="reclone",
    )
    start(ctx, standby)
    await_role(ctx, compose.REPLICA_SERVICE, "replica")
    await_streaming(ctx)
