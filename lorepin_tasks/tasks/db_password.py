"""`invoke db.rotate-password`: a new password for the database's owner role (`lorepin`:
migrations, backups, the toolkit, the incident receiver, streaming replication).

Everything that holds it changes in one run, under the environment's lock (and, on a
server environment, its deploy lock, with an audit record):

1. the role itself, by its SCRAM verifier (made here: the server never sees the password);
2. the replica's `primary_conninfo` (ALTER SYSTEM and a reload: its WAL receiver
   reconnects with the new password, checked);
3. the environment's secret file `db_password` (written in place: the containers that
   mount it read the new value on their next connection), and its stored copy
   `secrets/<env>/db_password.age`, sealed again to the environment's recipients;
4. checked: the migrator connects with the file.

The new value is kept first in the secrets_dir (`.db_password.next`): a run cut short
(kill -9 included) is finished by running it again, and until then every task that would
use the password refuses.
"""

from __future__ import annotations

import re
import secrets as random_secrets
import time
from contextlib import ExitStack
from pathlib import Path

from invoke.context import Context

from lorepin_tasks.errors import LorePinError, Refused
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import db as plan
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import secret_store as store
from lorepin_tasks.runtime import docker, git, ops, replication, secrets
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session, literal
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    ENV_HELP,
    YES_HELP,
    locked,
    open_env,
    run_migrator,
    serving_image,
    task,
)

SECRET = "db_password"  # noqa: S105 (its name)
GENERATED = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


def _check(ctx: EnvContext, *, resumed: bool) -> bool:
    """Everything the rotation needs, before its first change; whether the environment
    has a replica to carry the new password to (streaming, unless a run cut short may
    have left it unable to connect)."""
    name = ctx.env.name
    secrets.check_directory(ctx)
    if not resumed:  # a run cut short writes it anew, whatever it holds now
        if why := secrets.why_unusable(ctx.env.secrets_dir / SECRET, SECRET):
            raise LorePinError(f"the secret {ctx.env.secrets_dir / SECRET} {why}: restore it")
        if not (ctx.env.secrets_dir / SECRET).exists():
            raise LorePinError(f"'{name}' has no database password to rotate: it was never started")
    if store.path(ctx.settings.root, name, SECRET).exists():
        secrets.recipients(ctx)  # the stored copy is sealed again: to whom, checked now
    if ctx.run.dry_run:
        return bool(ctx.env.replica)
    docker.ensure_owned(ctx)
    ops.refuse_failed_over(ctx)
    db = deploy_plan.container(ctx.env, compose.DB_SERVICE)
    found = docker.container(ctx, db)
    if resumed and found is not None and found.state != "running":  # stopped half-way
        ctx.run.say(f"==> {name}: starting {compose.DB_SERVICE} to finish the rotation")
        replication.start(ctx, db)
        replication.await_role(ctx, compose.DB_SERVICE, "primary")
    if ops.role(ctx, compose.DB_SERVICE) != "primary":
        raise LorePinError(
            f"the database of '{name}' is not running: the password is changed in it, "
            "so start it first"
        )
    if not ctx.env.replica:
        return False
    streams = resumed or replication.lag(ctx, compose.DB_SERVICE) is not None
    if ops.role(ctx, compose.REPLICA_SERVICE) != "replica" or not streams:
        raise Refused(
            f"the replica of '{name}' does not stream: it could not follow the new password; "
            f"bring it back first (`invoke db.replica --env {name}`)"
        )
    return True


def _new_password(ctx: EnvContext) -> tuple[str, bool]:
    """The new value, and whether a run was cut short: its value (kept in ROTATING), or a
    fresh one when that file is damaged (the role takes a password over the socket without
    the old one, so any new value finishes the rotation)."""
    pending = ctx.env.secrets_dir / secrets.ROTATING
    if not pending.exists() and not pending.is_symlink():
        return random_secrets.token_urlsafe(32), False
    if not secrets.why_unusable(pending, secrets.ROTATING) and pending.is_file():
        value = pending.read_text().strip()
        if GENERATED.fullmatch(value):  # only what a run made: never a planted value
            return value, True
    ctx.run.say(f"    {pending} is damaged: the rotation goes on with a fresh value")
    return random_secrets.token_urlsafe(32), True


def _keep_aside(ctx: EnvContext, pending: Path, password: str) -> None:
    """The new value in ROTATING before the role has it (a damaged one replaced)."""
    kept = pending.is_file() and not pending.is_symlink()
    if kept and pending.read_bytes().strip() == password.encode():
        return
    if not ctx.run.dry_run and (pending.exists() or pending.is_symlink()):
        try:
            pending.rmdir() if pending.is_dir() and not pending.is_symlink() else pending.unlink()
        except OSError as exc:
            raise LorePinError(f"cannot replace the damaged {pending}: {exc.strerror}") from None
    ctx.run.write(pending, password + "\n", mode=0o600)


def _session(ctx: EnvContext, who: str, service: str) -> Session:
    return Session(ctx.run, deploy_plan.psql(ctx.env, who, service=service), ctx.variables,
                   service)  # fmt: skip


def _set_on_role(ctx: EnvContext, session: Session | None, password: str) -> None:
    if session is None:  # a dry run: the statements, the verifier hidden
        ctx.run.say(plan.UNLOGGED)
        ctx.run.say(plan.set_password(plan.DB_USER, "SCRAM-SHA-256$4096:<salt>$<keys>"))
        return
    ops.set_passwords(session, {plan.DB_USER: password})


def _receiver(session: Session) -> tuple[str, str]:
    """The replica's WAL receiver: its process id and status ("" and "none": none)."""
    rows = session.query(plan.WAL_RECEIVER)
    return (rows[0][0], rows[0][1]) if rows and len(rows[0]) == 2 else ("", "none")


def _follow(ctx: EnvContext, who: str, password: str) -> None:
    """The replica's primary_conninfo with the new password, and its WAL receiver seen
    streaming again on a new connection (so with the new password)."""
    if ctx.run.dry_run:
        ctx.run.run(deploy_plan.psql(ctx.env, who, service=compose.REPLICA_SERVICE))
        ctx.run.say(plan.UNLOGGED)
        ctx.run.say("ALTER SYSTEM SET primary_conninfo = '... password=<new> ...'")
        ctx.run.say("SELECT pg_reload_conf()")
        return
    with _session(ctx, who, compose.REPLICA_SERVICE) as replica:
        replica.query(plan.UNLOGGED)
        before, _ = _receiver(replica)
        conninfo = plan.with_password(replica.scalar("SHOW primary_conninfo") or "", password)
        replica.query(f"ALTER SYSTEM SET primary_conninfo = {literal(conninfo)}")
        replica.query("SELECT pg_reload_conf()")
        deadline = time.monotonic() + ctx.settings.wait_timeout
        while (now := _receiver(replica))[0] in ("", before) or now[1] != "streaming":
            if time.monotonic() > deadline:
                raise LorePinError(
                    f"the replica of '{ctx.env.name}' does not stream again with the new "
                    f"password after {ctx.settings.wait_timeout} s: run `invoke "
                    f"db.rotate-password --env {ctx.env.name}` again to finish"
                )
            time.sleep(0.3)
    replication.await_streaming(ctx)


def _place(ctx: EnvContext, password: str) -> bool:
    """The secret file (in place: mounted files keep their inode) and its stored copy;
    whether there is one."""
    ctx.run.write(ctx.env.secrets_dir / SECRET, password + "\n", mode=0o644)
    stored = store.path(ctx.settings.root, ctx.env.name, SECRET).exists()
    if stored:
        secrets.seal(ctx, SECRET, password)
    return stored


@task(name="rotate-password", help={"env": ENV_HELP, "yes": YES_HELP, "dry_run": DRY_HELP})
def rotate_password(
    c: Context, env: str = "local", yes: bool = False, dry_run: bool = False
) -> None:
    """Give the database's owner role a new random password: the role, its replica's
    connection, the secret file and its stored copy change together (docs/security.md).
    A run cut short is finished by running it again."""
    ctx = open_env(c, env, dry_run=dry_run)
    name = ctx.env.name
    who = git.who_am_i(ctx.run, ctx.settings.root)
    with locked(ctx, "db.rotate-password"), ExitStack() as stack:
        password, resumed = _new_password(ctx)
        replica = _check(ctx, resumed=resumed)
        ctx.run.add_secret(password)
        if resumed:
            ctx.run.say(f"==> {name}: finishing a rotation that was cut short")
        else:
            confirm(
                f"Give the database owner of '{name}' a new password? The migrator, backups"
                f"{', the replica' if replica else ''} and the toolkit switch to it at once.",
                yes=yes or ctx.run.dry_run,
            )
        steps = ops.Steps(ctx)
        session: Session | None = None
        if ctx.env.is_server:
            session = stack.enter_context(ops.deploy_lock(ctx, who, "db.rotate-password"))
        elif not ctx.run.dry_run:
            session = stack.enter_context(_session(ctx, who, compose.DB_SERVICE))
        else:
            ctx.run.run(deploy_plan.psql(ctx.env, who))
        pending = ctx.env.secrets_dir / secrets.ROTATING
        with steps.step("the new password on the owner role"):
            _keep_aside(ctx, pending, password)
            _set_on_role(ctx, session, password)
        if replica:
            with steps.step(f"{compose.REPLICA_SERVICE} connects with it"):
                _follow(ctx, who, password)
        with steps.step("the secret file and its stored copy"):
            stored = _place(ctx, password)
        with steps.step("the migrator connects with it"):
            run_migrator(ctx if ctx.run.dry_run else serving_image(ctx), ["current"], capture=True)
        if ctx.run.dry_run:
            ctx.run.say("dry run: nothing was changed")
            return
        if ctx.env.is_server:
            trail = ops.open_trail(ctx, session, who)
            detail = {
                "secret": SECRET,
                "replica": replica,
                "stored_copy": stored,
                "resumed": resumed,
            }
            serving = ComposeBlueGreen(ctx).state().serving
            ops.record(trail, ctx, who, "rotate-password", serving, "succeeded", detail, steps)
        pending.unlink(missing_ok=True)
    ops.notify_team(ctx, f"{name}: the database owner's password was rotated")
    where = store.path(ctx.settings.root, name, SECRET).relative_to(ctx.settings.root)
    print(f"'{name}': the database owner has a new password"
          + (f"; commit {where}" if stored else ""))  # fmt: skip
