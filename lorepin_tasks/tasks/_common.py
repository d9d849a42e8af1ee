"""What every task starts from: the task decorator, resolved settings, the environment.

`task` wraps `invoke.task` so a `LorePinError` ends the program with its one-line
message and exit code (the README's table), never a traceback. `bring_up` is the one way
an environment is started, shared by `up` and `feature.up`.
"""

from __future__ import annotations

import functools
import os
import re
import secrets as random_secrets
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from lorepin_cms import access
from lorepin_cms.exit_codes import ExitCode
from lorepin_tasks import settings as settings_mod
from lorepin_tasks.errors import ConfigError, LorePinError, last_line
from lorepin_tasks.plans import cms_access, compose
from lorepin_tasks.plans import db as db_plan
from lorepin_tasks.runtime import build_inputs, docker, git, http, lock, ops, secrets
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.settings import Settings, whole_number

F = TypeVar("F", bound=Callable[..., Any])

ENV_HELP = "environment name (see invoke.yaml; default: local)"
DRY_HELP = "print the exact commands and change nothing"
JSON_HELP = "print machine-readable JSON"
SERVER_ENV_HELP = "the server environment, required: staging or production (see invoke.yaml)"
MONITORED_ENV_HELP = "the environment, required: staging, production or local (see invoke.yaml)"
YES_HELP = "do not ask for confirmation"
LOGS_HELP = {
    "service": "the service whose logs to show (default: all)",
    "follow": "keep streaming new lines",
    "tail": "lines per service to show first (or 'all')",
}


def task(*args: Any, **kwargs: Any) -> Callable[[F], Task[F]]:
    def decorate(body: F) -> Task[F]:
        @functools.wraps(body)
        def run(c: Context, *a: Any, **kw: Any) -> Any:
            try:
                return body(c, *a, **kw)
            except LorePinError as exc:
                raise Exit(f"error: {exc}", code=int(exc.exit_code)) from None
            except KeyboardInterrupt:
                raise Exit("interrupted", code=int(ExitCode.INTERRUPTED)) from None
            except BrokenPipeError:  # `invoke logs.search ... | head`: the reader has enough
                # Python would complain once more flushing stdout at exit: point it nowhere.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise Exit(code=int(ExitCode.OK)) from None

        return invoke_task(*args, **kwargs)(run)  # type: ignore[no-any-return]

    return decorate


def load_settings(c: Context) -> Settings:
    """invoke.yaml's `lorepin:` tree, resolved once: the only place config is read."""
    return settings_mod.load(c.config.get("lorepin", {}))


def executor(c: Context, dry_run: bool) -> Executor:
    """The executor, dry when the task's --dry-run or Invoke's own --dry asks for it."""
    return Executor(dry_run=dry_run or bool(c.config.run.dry))


# What works on an environment with `backend: swarm` (docs/production-swarm.md); every
# other task drives Compose on one engine, and refuses it.
SWARM_TASKS = "deploy, rollback, scale, deploy.history and db.report (the lab: swarm.lab.*)"


def open_env(
    c: Context,
    env_name: str,
    *,
    dry_run: bool,
    settings: Settings | None = None,
    swarm: bool = False,
) -> EnvContext:
    """The environment's context; `swarm`: the task also drives a `backend: swarm` one."""
    settings = settings or load_settings(c)
    environment = settings.environment(env_name)
    if environment.swarm is not None and not swarm:
        raise ConfigError(
            f"'{env_name}' runs on Docker Swarm (backend: swarm), and this task drives "
            f"Compose on one engine: on Swarm, use {SWARM_TASKS}"
        )
    return EnvContext(settings=settings, env=environment, run=executor(c, dry_run))


def _named_env(
    c: Context,
    env: str,
    dry_run: bool,
    *,
    server_only: bool,
    choices: str,
    refusal: str,
    swarm: bool = False,
) -> EnvContext:
    """An environment named on the command line (no default): a server one, or (not
    `server_only`) one that can be monitored."""
    if not env:
        raise ConfigError(f"say which environment: {choices}")
    ctx = open_env(c, env, dry_run=dry_run, swarm=swarm)
    if not (ctx.env.is_server if server_only else ctx.env.monitorable):
        raise ConfigError(f"'{ctx.env.name}' is a {ctx.env.kind} environment{refusal}")
    return ctx


def server_env(
    c: Context, env: str, dry_run: bool, *, what: str = "deploys go to", swarm: bool = False
) -> EnvContext:
    """A server environment, named on the command line (there is no default one)."""
    return _named_env(
        c, env, dry_run, server_only=True, choices="--env staging or --env production",
        refusal=f", started with `invoke up`: {what} server environments (staging, production)",
        swarm=swarm,
    )  # fmt: skip


def monitored_env(c: Context, env: str, dry_run: bool, *, what: str) -> EnvContext:
    """A server environment, or `local` on request: what monitoring, incidents and error
    tracking serve (a feature environment lives for days and is not watched)."""
    return _named_env(
        c, env, dry_run, server_only=False,
        choices="--env staging, --env production or --env local",
        refusal=f": {what} server environments (staging, production) and local",
    )  # fmt: skip


@contextmanager
def locked(ctx: EnvContext, action: str) -> Iterator[None]:
    """One change at a time per environment (a dry run changes nothing: no lock)."""
    if ctx.run.dry_run:
        yield
        return
    with lock.held(
        ctx.env.lock_file,
        what=f"environment '{ctx.env.name}' ({ctx.env.project})",
        who=git.who_am_i(ctx.run, ctx.settings.root),
        action=action,
    ):
        yield


def with_revision(ctx: EnvContext) -> EnvContext:
    """The context with the checkout's revision: what builds stamp into images."""
    return replace(ctx, revision=git.describe(ctx.run, ctx.settings.root))


def require_base_image(settings: Settings) -> None:
    if not settings.base_image:
        raise ConfigError("no base image configured or recorded: run scripts/bootstrap.sh first")


def build_stale(
    ctx: EnvContext,
    model: docker.Model,
    *,
    only: list[str] | None = None,
    no_cache: bool = False,
    force: bool = True,
) -> list[str]:
    """Build the images whose inputs changed (all of `only`, when given, unless not
    `force`: then those of `only` whose inputs changed); what was built.

    The outcome is checked: every image must then exist and carry its new inputs label
    (Compose 2.40 on engine 20.10 can exit 0 without building).
    """
    buildable = {n: s for n, s in model.services.items() if s.build and s.image}
    names = [n for n in buildable if only is None or n in only]
    base = ctx.settings.base_image or ""
    refs = [str(buildable[n].image) for n in names]
    found = docker.images(ctx.run, compose.docker(ctx.env), [*refs, base])
    base_id = found[base].id if base in found else base
    wanted = {n: build_inputs.digest(buildable[n].build or {}, base_id) for n in names}
    stale = [
        n
        for n in names
        if (only is not None and force)
        or (image := found.get(str(buildable[n].image))) is None
        or image.labels.get(compose.BUILD_INPUTS_LABEL) != wanted[n]
    ]
    if not stale:
        ctx.run.say(f"==> {ctx.env.name}: images up to date ({', '.join(names)})")
        return []
    built = replace(ctx, build_inputs=wanted)
    ctx.run.say(f"==> {ctx.env.name}: building {', '.join(stale)} (project {ctx.env.project})")
    ctx.run.run(
        compose.build(ctx.env, stale, no_cache=no_cache),
        env=built.variables,
        no_input=True,
        progress=True,
    )
    if ctx.run.dry_run:
        return stale
    after = docker.images(ctx.run, compose.docker(ctx.env), refs)
    for n in stale:
        image = after.get(str(buildable[n].image))
        if image is None or image.labels.get(compose.BUILD_INPUTS_LABEL) != wanted[n]:
            raise LorePinError(
                f"building {n} did not produce {buildable[n].image}; see the build output above"
            )
    return stale


def start(ctx: EnvContext, argv: list[str], expected: docker.Model) -> list[docker.Container]:
    """Run a `compose up` of `expected`'s services and judge it by their containers, not
    by its exit code; the containers as they ended (none in a dry run)."""
    ctx.run.say(f"==> {ctx.env.name}: starting {', '.join(expected.names())}")
    result = ctx.run.run(
        argv, env=ctx.variables, check=False, capture_stderr=True, no_input=True, progress=True
    )
    if ctx.run.dry_run:
        return []
    cause = (
        "" if result.ok else last_line(result.stderr).removeprefix("Error response from daemon: ")
    )
    found = docker.check_started(ctx, expected, cause)
    if cause:  # Compose said no although every container looks right
        raise LorePinError(f"Compose could not start '{ctx.env.name}': {ctx.run.redact(cause)}")
    return found


def bring_up(ctx: EnvContext, started: float) -> list[docker.Container]:
    """Build what changed, start every service, migrate, wait until ready: the one way up.

    Returns the containers as they ended (none in a dry run).
    """
    model = docker.model(ctx)
    build_stale(ctx, model)
    found = start(ctx, compose.up(ctx.env, wait_timeout=ctx.settings.wait_timeout), model)
    if ctx.run.dry_run:
        return []
    url = docker.published_url(ctx, found)
    http.wait_ready(
        f"{url}/readyz",
        timeout=max(1.0, ctx.settings.wait_timeout - (time.monotonic() - started)),
        say=ctx.run.say,
        hint=ctx.hint("logs", "--service", compose.HTTP_SERVICE),
    )
    return found


def show_logs(ctx: EnvContext, service: str, *, follow: bool, tail: str) -> None:
    """The logs of every service of an environment, or of one (checked against its model)."""
    if tail != "all":
        tail = str(whole_number(tail, "--tail (a number or 'all')", low=0, high=10_000_000))
    chosen = docker.model(ctx).check([service] if service else [], ctx.env.name)
    if not ctx.run.dry_run and not docker.containers(ctx):
        raise LorePinError(f"'{ctx.env.name}' has no containers: start it with `{ctx.hint('up')}`")
    ctx.run.run(
        compose.logs(ctx.env, chosen, follow=follow, tail=tail), env=ctx.variables, quiet=True
    )


def backup_database(ctx: EnvContext, label: str) -> None:
    """A logical backup of the environment's database before a schema change: encrypted,
    with its manifest, listed and restorable like any other (`invoke backup.list`)."""
    from lorepin_tasks.tasks.backup import create_logical  # the backup area builds on this one

    create_logical(ctx, re.sub(r"[^a-z0-9.+-]+", "-", label.lower()).strip("-")[:63])


def require_db(ctx: EnvContext, *, changes: bool) -> None:
    """The database must run (and, for a step that `changes` it, be this checkout's), and
    its secret must be there: checked before the migrator starts."""
    if ctx.run.dry_run:
        return
    if changes:
        docker.ensure_owned(ctx)
    secrets.require(ctx)
    running = any(
        c.service == compose.DB_SERVICE and c.state == "running" for c in docker.services(ctx)
    )
    if not running:
        ops.refuse_failed_over(ctx)
        start = (
            f"invoke deploy --env {ctx.env.name} --version X.Y.Z"
            if ctx.env.is_server
            else ctx.hint("up")
        )
        raise LorePinError(
            f"the database of '{ctx.env.name}' is not running: start it with `{start}`"
        )


def serving_image(ctx: EnvContext) -> EnvContext:
    """A server environment's migrator runs the image of the release it serves (its
    images are tagged by version, never by the environment's name)."""
    if not ctx.env.is_server:
        return ctx
    serving = ComposeBlueGreen(ctx).state().serving
    if serving is None:
        raise LorePinError(
            f"'{ctx.env.name}' serves no release yet (`invoke deploy --env {ctx.env.name}`)"
        )
    return replace(ctx, env=replace(ctx.env, image_tag=serving))


def run_migrator(ctx: EnvContext, action: list[str], *, capture: bool = False) -> str:
    """Run the migrator in the environment; its stdout, or its error with its exit code."""
    command = db_plan.migrator(
        action, who=git.who_am_i(ctx.run, ctx.settings.root), lock_wait=ctx.settings.lock_wait
    )
    return docker.run_oneoff(ctx, "migrate", command, kind=db_plan.ONEOFF, capture=capture)


def run_token(ctx: EnvContext, who: str, purpose: str) -> tuple[str, str]:
    """An editor's token for one run of a suite against the environment, its user marked
    as test data (`data.cleanup` removes it), recorded in the trail; (token, key)."""
    user = f"{purpose}-{random_secrets.token_hex(4)}.td0"
    token, key = access.new_token()
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    sha = access.digest(access.secret_of(token))
    with ops.database_session(ctx, who) as session:
        ops.ensure_schema(session)
        trail = ops.open_trail(ctx, session, who)
        session.query("BEGIN")
        session.query(cms_access.add_user_sql(user, "editor"))
        session.query(cms_access.add_token_sql(user, "editor", key, sha, until))
        detail = {"user": user, "role": "editor", "key": key, "for": purpose}
        ops.record(trail, ctx, who, "cms.token.create", None, "succeeded", detail, commit=True)
    return token, key


def revoke_token(ctx: EnvContext, who: str, key: str) -> None:
    with ops.database_session(ctx, who) as session:
        session.query(cms_access.revoke_sql(key))


def ready_version(ctx: EnvContext) -> str:
    """The release a server environment serves, its CMS answering ready (a suite or a
    load test against anything else measures nothing)."""
    backend = ComposeBlueGreen(ctx)
    state = backend.state()
    if not state.serving or not state.active:
        raise LorePinError(f"'{ctx.env.name}' serves no release: deploy one first")
    code, _ = backend.probe(state.active, "/readyz")
    if code != 200:
        raise LorePinError(
            f"'{ctx.env.name}' {state.serving} is not ready (/readyz {code or 'no answer'}): "
            f"see `invoke logs --env {ctx.env.name}`"
        )
    return state.serving
