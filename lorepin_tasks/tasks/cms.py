"""The CMS's users and API tokens: `invoke cms.user.add`, `cms.token.create / list / revoke`.

Each runs in the environment's own database (a psql session in its database container),
checks every input before the first write, and records what it changed in the audit
trail (never a token's secret). A new token is printed once, on stdout alone, so a script
can take it: `TOKEN=$(invoke cms.token.create --user ci)`. docs/security.md.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from invoke.collection import Collection
from invoke.context import Context

from lorepin_cms import access
from lorepin_cms.models import ROLES
from lorepin_tasks.errors import ConfigError, LorePinError, NothingToDo, Refused
from lorepin_tasks.plans import cms_access as plan
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.runtime import git, ops
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.tasks._common import DRY_HELP, ENV_HELP, JSON_HELP, open_env, task

ROLE_HELP = f"one of {', '.join(ROLES)}"


def _require(value: str, flag: str) -> str:
    if not value:
        raise ConfigError(f"say which: --{flag}")
    return value


def _changing(ctx: EnvContext, action: str, statements: list[str]) -> bool:
    """True when the change may go ahead; a dry run shows the session and its SQL."""
    if ctx.run.dry_run:
        ctx.run.run(deploy_plan.psql(ctx.env, action), env=ctx.variables)
        for sql in statements:
            ctx.run.say(sql)
        ctx.run.say("dry run: nothing was changed")
        return False
    return True


def _checked(session: Session, ctx: EnvContext) -> None:
    if session.scalar(plan.TABLES) != "t":
        raise LorePinError(
            f"the database of '{ctx.env.name}' has no users or tokens: its schema is older "
            f"than revision 0008, which adds them (`invoke db.current --env {ctx.env.name}`)"
        )


def _change(
    ctx: EnvContext, session: Session, action: str, sql: str, detail: Mapping[str, str]
) -> None:
    """The change and its audit record, committed together: a run killed half-way leaves
    neither (never a token the trail does not know of)."""
    who = git.who_am_i(ctx.run, ctx.settings.root)
    ops.ensure_schema(session)
    trail = ops.open_trail(ctx, session, who)
    if trail is None:  # never: the session is open
        raise LorePinError(f"the audit trail of '{ctx.env.name}' cannot be opened")
    session.query("BEGIN")
    session.query(sql)
    ops.record(trail, ctx, who, action, None, "succeeded", detail, commit=True)


@task(
    name="add",
    help={"env": ENV_HELP, "name": "the user's name: a-z, 0-9, . _ -", "role": ROLE_HELP,
          "dry_run": DRY_HELP},
)  # fmt: skip
def user_add(
    c: Context, env: str = "local", name: str = "", role: str = "", dry_run: bool = False
) -> None:
    """Add a user of the CMS with a role (viewer, editor or admin)."""
    sql = plan.add_user_sql(_require(name, "name"), _require(role, "role"))
    ctx = open_env(c, env, dry_run=dry_run)
    if not _changing(ctx, "cms.user.add", [plan.user_sql(name), sql]):
        return
    with ops.database_session(ctx, "cms.user.add") as session:
        _checked(session, ctx)
        if session.query(plan.user_sql(name)):
            raise Refused(f"user {name!r} already exists in '{ctx.env.name}'")
        _change(ctx, session, "cms.user.add", sql, {"user": name, "role": role})
    ctx.run.say(f"added {role} {name} to '{ctx.env.name}'")


@task(
    name="create",
    help={
        "env": ENV_HELP,
        "user": "whose token it is",
        "role": f"{ROLE_HELP}; at most the user's (default: theirs)",
        "expires": f"lifetime: days or weeks, e.g. 30d, 12w (default {access.DEFAULT_DAYS}d, "
        f"at most {access.MAX_DAYS}d)",
        "json": JSON_HELP,
        "dry_run": DRY_HELP,
    },
)
def token_create(
    c: Context,
    env: str = "local",
    user: str = "",
    role: str = "",
    expires: str = f"{access.DEFAULT_DAYS}d",
    json_: bool = False,
    dry_run: bool = False,
) -> None:
    """Make an API token of a user. It is printed once, here; only its hash is kept."""
    lifetime = plan.days(expires)
    wanted = access.check_role(role) if role else ""
    access.check_name(_require(user, "user"))
    ctx = open_env(c, env, dry_run=dry_run)
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=lifetime)
    shown = plan.add_token_sql(user, wanted or "<the user's role>", "<a new key>",
                               "<the SHA-256 of a new secret>", until)  # fmt: skip
    if not _changing(ctx, "cms.token.create", [plan.user_sql(user), shown]):
        return
    with ops.database_session(ctx, "cms.token.create") as session:
        missing = f"no user {user!r} in '{ctx.env.name}' (`invoke cms.user.add`)"
        granted = plan.token_role(user, _row(session, ctx, plan.user_sql(user), missing)[0], wanted)
        token, key = access.new_token()
        sha = access.digest(access.secret_of(token))
        detail = {"user": user, "role": granted, "key": key, "expires": until.isoformat()}
        _change(ctx, session, "cms.token.create",
                plan.add_token_sql(user, granted, key, sha, until), detail)  # fmt: skip
    if json_:
        print(json.dumps({"token": token, "key": key, "user": user, "role": granted,
                          "expires": until.isoformat()}))  # fmt: skip
    else:
        print(token)
    print(
        f"token {key} of {user} ({granted}) in '{ctx.env.name}', expires {until:%Y-%m-%d}: "
        "keep it now, it is not shown again",
        file=sys.stderr,
    )


@task(name="list", help={"env": ENV_HELP, "json": JSON_HELP, "dry_run": DRY_HELP})
def token_list(c: Context, env: str = "local", json_: bool = False, dry_run: bool = False) -> None:
    """The environment's API tokens: key, user, role, dates and state (never a secret)."""
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.run.dry_run:
        ctx.run.run(deploy_plan.psql(ctx.env, "cms.token.list"), env=ctx.variables)
        ctx.run.say(plan.LIST_SQL)
        return
    with ops.database_session(ctx, "cms.token.list") as session:
        _checked(session, ctx)
        rows = plan.tokens(session.query(plan.LIST_SQL))
    print(json.dumps(rows, indent=2) if json_ else plan.table(rows), end="\n" if json_ else "")


@task(
    name="revoke",
    help={"env": ENV_HELP, "key": "the token's key: the 12 characters after `lp_`",
          "dry_run": DRY_HELP},
)  # fmt: skip
def token_revoke(c: Context, env: str = "local", key: str = "", dry_run: bool = False) -> None:
    """Revoke an API token at once: its next request is a 401. (A revoked token stays
    listed, for the record.)"""
    sql = plan.revoke_sql(_require(key, "key"))
    ctx = open_env(c, env, dry_run=dry_run)
    if not _changing(ctx, "cms.token.revoke", [plan.token_state_sql(key), sql]):
        return
    with ops.database_session(ctx, "cms.token.revoke") as session:
        missing = f"no token {key!r} in '{ctx.env.name}' (`invoke cms.token.list`)"
        if _row(session, ctx, plan.token_state_sql(key), missing)[0] == "t":
            raise NothingToDo(f"token {key} in '{ctx.env.name}' is already revoked")
        _change(ctx, session, "cms.token.revoke", sql, {"key": key})
    ctx.run.say(f"revoked token {key} in '{ctx.env.name}'")


def _row(session: Session, ctx: EnvContext, sql: str, missing: str) -> list[str]:
    """The first row `sql` finds (the CMS's tables checked first), or `missing` as the error."""
    _checked(session, ctx)
    found = session.query(sql)
    if not found:
        raise ConfigError(missing)
    return found[0]


user = Collection("user", user_add)
token = Collection("token", token_create, token_list, token_revoke)
ns = Collection("cms", user, token)
