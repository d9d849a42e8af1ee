"""What every task starts from: resolved settings, the environment, the executor.

`task` wraps `invoke.task` so a `LorePinError` ends the program with its one-line
message and exit code, never a traceback.
"""

from __future__ import annotations

import functools
import secrets as random_secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task
from invoke.tasks import task as invoke_task

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.runtime.executor import Executor, Result
from lorepin_tasks.runtime.git import Revision, describe
from lorepin_tasks.settings import Environment, Settings

F = TypeVar("F", bound=Callable[..., Any])

# Secrets each environment needs, as files in its secrets_dir.
REQUIRED_SECRETS = ("db_password",)


def task(*args: Any, **kwargs: Any) -> Callable[[F], Task[F]]:
    def decorate(body: F) -> Task[F]:
        @functools.wraps(body)
        def run(c: Context, *a: Any, **kw: Any) -> Any:
            try:
                return body(c, *a, **kw)
            except LorePinError as exc:
                raise Exit(f"error: {exc}", code=exc.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("interrupted", code=130) from None

        return invoke_task(*args, **kwargs)(run)  # type: ignore[no-any-return]

    return decorate


@dataclass(frozen=True, kw_only=True)
class EnvContext:
    settings: Settings
    env: Environment
    run: Executor
    revision: Revision
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. a feature's labels

    @property
    def variables(self) -> dict[str, str]:
        return {**compose.variables(self.settings, self.env, self.revision), **self.extra}


def load_settings(c: Context) -> Settings:
    raw = c.config.get("lorepin", {})
    return settings_mod.load(dict(raw) if raw else {})


def executor(c: Context, dry_run: bool) -> Executor:
    """The executor, dry when the task's --dry-run or Invoke's own --dry asks for it."""
    return Executor(dry_run=dry_run or bool(c.config.run.dry))


def open_env(c: Context, env_name: str, *, dry_run: bool) -> EnvContext:
    settings = load_settings(c)
    env = settings_mod.with_overrides(settings.environment(env_name))
    return EnvContext(
        settings=settings, env=env, run=executor(c, dry_run), revision=describe(settings.root)
    )


def require_base_image(ctx: EnvContext) -> None:
    if not ctx.settings.base_image:
        raise ConfigError("no base image configured or recorded: run scripts/bootstrap.sh first")


def ensure_secrets(ctx: EnvContext) -> None:
    """Create missing secrets of throwaway environments; demand them of long-lived ones.

    Files are 0644 inside a 0700 directory: the container's non-root user can read its
    bind-mounted copy, nobody else on the host can reach it.
    """
    directory = ctx.env.secrets_dir
    missing = [name for name in REQUIRED_SECRETS if not (directory / name).is_file()]
    if not missing:
        return
    if not ctx.env.generates_secrets:
        raise ConfigError(
            f"environment '{ctx.env.name}' is missing secret(s) {', '.join(missing)} in {directory}"
        )
    # check=False: with no engine answering there is no data to protect (and `up` then
    # fails on its own with the engine's message), so a dry run still works offline.
    existing = ctx.run.run(
        compose.volumes(ctx.env),
        env=ctx.variables,
        capture=True,
        mutates=False,
        quiet=True,
        check=False,
    ).stdout.split()
    if existing:
        # A new password would lock us out of the data initialised with the lost one.
        raise ConfigError(
            f"the data of '{ctx.env.name}' ({', '.join(existing)}) exists but its secret "
            f"{directory / missing[0]} is missing: restore the file, or delete the data with "
            f"`invoke down --env {ctx.env.name} --volumes`"
        )
    for name in missing:
        path = directory / name
        if ctx.run.dry_run:
            ctx.run.say(f"# would create random secret {path}")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        path.write_text(random_secrets.token_urlsafe(32) + "\n")
        path.chmod(0o644)
        ctx.run.say(f"created random secret {path}")


def run_oneoff(ctx: EnvContext, service: str, command: list[str], *, capture: bool = False) -> str:
    """Run `command` in a one-off container of `service`; its stdout, or a LorePinError.

    The container is named, kept until its exit code has been read, then removed:
    `compose run` exits 0 whatever the command did (Compose 2.40 on engine 20.10).
    """
    name = f"{ctx.env.project}-{service}-run-{uuid.uuid4().hex[:8]}"

    def quietly(argv: list[str]) -> Result:
        return ctx.run.run(argv, env=ctx.variables, capture=True, check=False, quiet=True)

    try:
        result = ctx.run.run(
            compose.run(ctx.env, service, command, name=name),
            env=ctx.variables,
            capture=capture,
            capture_stderr=True,
            check=False,
            quiet=capture,
        )
        if ctx.run.dry_run:
            return ""
        code = quietly(compose.exit_code(ctx.env, name)).stdout.strip()
    finally:
        quietly(compose.remove(ctx.env, name))
    if code != "0" or not result.ok:
        cause = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ""
        raise LorePinError(
            f"{cause.removeprefix('error: ') or f'{service} exited with code {code}'} "
            f"(env '{ctx.env.name}')"
        )
    return result.stdout
