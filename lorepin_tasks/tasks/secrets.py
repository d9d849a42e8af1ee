"""Secrets at rest in the repository: `invoke secrets.keygen / set / get / list / rotate`.
Each secret is `secrets/<env>/<NAME>.age`, age-encrypted to the environment's recipients
(invoke.yaml's `secrets.recipients`); `invoke deploy` decrypts them with the deployer's
identity into the environment's secrets_dir. A plain file under secrets/ fails
`nox -s lint`. docs/security.md."""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sys

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, Refused
from lorepin_tasks.plans import secret_store as store
from lorepin_tasks.runtime import secrets as env_secrets
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.settings import user_path
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    load_settings,
    open_env,
    task,
)

MAX_VALUE = 4096  # characters: passwords, keys and URLs are far shorter
ENV = "the environment whose secrets these are (see invoke.yaml), required"
NAME = f"the secret: {', '.join(store.NAMES)}"


def _env(c: Context, env: str, dry_run: bool = False) -> EnvContext:
    if not env:
        raise ConfigError("say which environment: --env staging (see invoke.yaml)")
    return open_env(c, env, dry_run=dry_run)


def _value(generate: bool) -> str:
    """The new value: random, typed (not echoed), or piped in; never a flag (the process
    list and the shell history would keep it)."""
    if generate:
        import secrets as random_secrets

        return random_secrets.token_urlsafe(32)
    try:
        if sys.stdin.isatty():
            text = getpass.getpass("value: ")
        else:
            data = sys.stdin.buffer.read(4 * MAX_VALUE + 1)  # UTF-8: up to 4 bytes each
            if len(data) > 4 * MAX_VALUE:
                raise ConfigError(f"a secret is at most {MAX_VALUE} characters")
            text = data.decode("utf-8")
    except (EOFError, UnicodeDecodeError):
        raise ConfigError(
            "a secret is one line of UTF-8 text (pipe it in, or --generate)"
        ) from None
    value = text.strip()
    if len(value) > MAX_VALUE:
        raise ConfigError(f"a secret is at most {MAX_VALUE} characters (a password or a URL)")
    if not value or any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ConfigError("a secret is one line of text, not empty, without control characters "
                          "(pipe it in, or --generate)")  # fmt: skip
    return value


@task(
    help={
        "out": "where to write it (default: $LOREPIN_AGE_IDENTITY, else ~/.config/lorepin/age.key)",
        "dry_run": DRY_HELP,
    }
)
def keygen(c: Context, out: str = "", dry_run: bool = False) -> None:
    """Make your age identity (0600) and print its public key, for an environment's
    secrets.recipients. An existing identity is never replaced."""
    import pyrage

    path = user_path(out, "--out") if out else load_settings(c).age_identity
    if path.exists() or path.is_symlink():
        raise Refused(f"{path} exists: an identity is never replaced (it may be the only key)")
    key = pyrage.x25519.Identity.generate()
    if dry_run:
        print(f"# would write a new age identity to {path} (0600) and print its public key")
        return
    part = path.with_name(f".{path.name}.{os.getpid()}{store.PART}")
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"cannot write the identity {path}: {path.parent} is not a directory")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(f"# public key: {key.to_public()}\n{key}\n")
            file.flush()
            os.fsync(file.fileno())
        os.link(part, path)  # whole or not at all, and never over another file
    except FileExistsError:
        raise Refused(f"{path} exists: an identity is never replaced") from None
    except OSError as exc:
        raise ConfigError(f"cannot write the identity {path}: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):  # no part to remove where none could be made
            part.unlink(missing_ok=True)
    print(f"wrote {path}; add this public key to secrets.recipients in invoke.yaml:")
    print(key.to_public())


@task(
    name="set",
    help={
        "env": ENV,
        "name": NAME,
        "generate": "a new random value instead of one typed or piped in",
        "dry_run": DRY_HELP,
    },
)
def set_(c: Context, env: str = "", name: str = "", generate: bool = False,
         dry_run: bool = False) -> None:  # fmt: skip
    """Store a secret, encrypted to the environment's recipients: the value is typed (not
    echoed) or piped in, e.g. `printf %s "$URL" | invoke secrets.set --env staging --name
    alert_webhook`. Commit the file; `invoke deploy` places it."""
    ctx = _env(c, env, dry_run)
    secret = store.name(name)
    env_secrets.recipients(ctx)  # before asking for the value
    env_secrets.seal(ctx, secret, _value(generate))
    where = store.path(ctx.settings.root, ctx.env.name, secret).relative_to(ctx.settings.root)
    if not dry_run:
        print(f"stored {where} for {len(set(ctx.env.secrets_recipients))} recipient(s): commit it")


@task(help={"env": ENV, "name": NAME})
def get(c: Context, env: str = "", name: str = "") -> None:
    """Print a stored secret's value (decrypted with your identity)."""
    ctx = _env(c, env)
    value = env_secrets.decrypt(ctx, store.name(name), env_secrets.identity(ctx))
    print(value)


@task(name="list", help={"env": ENV, "json": JSON_HELP})
def list_(c: Context, env: str = "", json_: bool = False) -> None:
    """The environment's stored secrets and, for each, whether the value in its
    secrets_dir is the same, differs, or is missing (values are never shown)."""
    ctx = _env(c, env)
    env_secrets.check_directory(ctx)
    names = store.stored(ctx.settings.root, ctx.env.name)
    rows = []
    key = env_secrets.identity(ctx) if names else None
    for n in names:
        assert key is not None
        value = env_secrets.decrypt(ctx, n, key)
        placed = env_secrets.placed(ctx, n)
        state = "missing" if placed is None else "same" if placed == value else "differs"
        rows.append({"name": n, "file": f"{store.STORE}/{ctx.env.name}/{n}{store.SUFFIX}",
                     "in_secrets_dir": state})  # fmt: skip
    if json_:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"no secret stored for '{ctx.env.name}' (`invoke secrets.set`)")
    for r in rows:
        print(f"{r['name']:<20} {r['file']:<40} in {ctx.env.secrets_dir}: {r['in_secrets_dir']}")


@task(help={"env": ENV, "dry_run": DRY_HELP})
def rotate(c: Context, env: str = "", dry_run: bool = False) -> None:
    """Encrypt every stored secret of the environment again, to its recipients as they
    are now (after someone joins or leaves). Values stay; decrypted and checked first."""
    ctx = _env(c, env, dry_run)
    env_secrets.recipients(ctx)
    names = store.stored(ctx.settings.root, ctx.env.name)
    if not names:
        print(f"no secret stored for '{ctx.env.name}'")
        return
    key = env_secrets.identity(ctx)
    values = {n: env_secrets.decrypt(ctx, n, key) for n in names}  # all, before any write
    if str(key.to_public()) not in ctx.env.secrets_recipients:
        print(f"warning: your key ({ctx.settings.age_identity}) is not among the recipients: "
              "after this you cannot decrypt these secrets", file=sys.stderr)  # fmt: skip
    for n, value in values.items():
        env_secrets.seal(ctx, n, value)
    if not dry_run:
        print(f"{len(values)} secret(s) of '{ctx.env.name}' encrypted again to "
              f"{len(set(ctx.env.secrets_recipients))} recipient(s): commit them")  # fmt: skip


ns = Collection("secrets", keygen, set_, get, list_, rotate)
