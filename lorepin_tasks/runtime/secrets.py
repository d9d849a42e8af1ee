"""An environment's secrets: files in its secrets_dir, mounted as Compose file secrets."""

from __future__ import annotations

import secrets as random_secrets

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.runtime import docker
from lorepin_tasks.runtime.environment import EnvContext

# Secrets each environment needs, as files in its secrets_dir.
REQUIRED = ("db_password",)


def ensure(ctx: EnvContext) -> None:
    """Create missing secrets of throwaway environments; demand them of long-lived ones.

    Files are 0644 inside a 0700 directory: the container's non-root user can read its
    bind-mounted copy, nobody else on the host can reach it. Never invents a password over
    data that was initialised with a lost one.
    """
    directory = ctx.env.secrets_dir
    missing = [name for name in REQUIRED if not (directory / name).is_file()]
    if not missing:
        return
    if not ctx.env.generates_secrets:
        raise ConfigError(
            f"environment '{ctx.env.name}' is missing secret(s) {', '.join(missing)} in {directory}"
        )
    existing = [v.name for v in _volumes_if_engine(ctx)]
    if existing:
        raise ConfigError(
            f"the data of '{ctx.env.name}' ({', '.join(existing)}) exists but its secret "
            f"{directory / missing[0]} is missing: restore the file, or delete the data with "
            f"`{ctx.hint('down', '--volumes')}`"
        )
    for name in missing:
        path = directory / name
        if ctx.run.dry_run:
            ctx.run.say(f"# would create random secret {path}")
            continue
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        ctx.run.write(path, random_secrets.token_urlsafe(32) + "\n", mode=0o644)
        ctx.run.say(f"created random secret {path}")


def _volumes_if_engine(ctx: EnvContext) -> list[docker.Volume]:
    # A dry run works offline: with no engine answering there is no data to protect (and
    # `up` then fails on its own with the engine's message).
    try:
        return docker.volumes(ctx)
    except LorePinError:
        if ctx.run.dry_run:
            return []
        raise
