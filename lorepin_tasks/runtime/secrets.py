"""An environment's secrets: files in its secrets_dir, mounted as Compose file secrets."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from lorepin_tasks.errors import ConfigError, LorePinError, Refused
from lorepin_tasks.plans import secret_store as store
from lorepin_tasks.plans.proxy import Monitoring
from lorepin_tasks.runtime import docker
from lorepin_tasks.runtime.environment import EnvContext

if TYPE_CHECKING:
    import pyrage

# Secrets each environment needs, as files in its secrets_dir.
ROLE_PASSWORDS = store.ROLE_PASSWORDS  # made anew when missing, in any environment
REQUIRED = ("db_password", *ROLE_PASSWORDS)
# In the secrets_dir: the new owner password of a `db.rotate-password` not finished yet.
ROTATING = ".db_password.next"


def refuse_unfinished_rotation(ctx: EnvContext) -> None:
    """A rotation of the owner's password cut short: the database may hold the new one
    and the secret file the old one, so nothing else may use either until it is done."""
    if (ctx.env.secrets_dir / ROTATING).exists():
        raise Refused(
            f"a rotation of the database password of '{ctx.env.name}' did not finish: "
            f"finish it first (`invoke db.rotate-password --env {ctx.env.name}`)"
        )


def check_directory(ctx: EnvContext) -> None:
    directory = ctx.env.secrets_dir
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the secrets directory {directory} is a file, not a directory")
    if directory.is_dir() and directory.stat().st_mode & 0o077:
        raise ConfigError(
            f"the secrets directory {directory} is open to other users "
            f"(mode {directory.stat().st_mode & 0o7777:o}): use a private one (chmod 700)"
        )


def why_unusable(path: Path, name: str) -> str | None:
    """What is wrong with a secret file that is there (None: nothing, or it is missing)."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        text = path.read_bytes().decode().strip()
    except IsADirectoryError:
        return "is a directory, not a file"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    except UnicodeDecodeError:
        return "does not hold text"
    if not text:
        return "is empty"
    if name in ROLE_PASSWORDS and "\n" in text:
        return "holds several lines, not one password"
    return None


def _refuse_unusable(ctx: EnvContext, names: Iterable[str] = REQUIRED) -> None:
    """A one-line error for the first secret that is there but unusable."""
    for name in names:
        path = ctx.env.secrets_dir / name
        if why := why_unusable(path, name):
            made = "a deploy" if ctx.env.is_server else "`invoke up`"
            fix = (f"delete it, and {made} makes a new one" if name in ROLE_PASSWORDS
                   else "restore it")  # fmt: skip
            raise ConfigError(f"the secret {path} {why}: {fix}")


def _missing(ctx: EnvContext) -> list[str]:
    return [n for n in REQUIRED if not (ctx.env.secrets_dir / n).exists()]


def require(ctx: EnvContext, given: Iterable[str] = (), made: Iterable[str] = ()) -> None:
    """Every secret is there and usable (tasks that never create one), or `given`
    (decrypted from the repository, to be placed), or may be missing because the task
    `made` it later (but, when there, usable)."""
    check_directory(ctx)
    refuse_unfinished_rotation(ctx)
    given = set(given)
    _refuse_unusable(ctx, [n for n in REQUIRED if n not in given])
    missing = [n for n in _missing(ctx) if n not in given and n not in set(made)]
    if missing and set(missing) <= set(ROLE_PASSWORDS):
        raise ConfigError(
            f"the secret {ctx.env.secrets_dir / missing[0]} of '{ctx.env.name}' is missing: "
            f"{'a deploy' if ctx.env.is_server else '`invoke up`'} makes it, with its "
            "database role"
        )
    if missing:
        raise ConfigError(
            f"the secret {ctx.env.secrets_dir / missing[0]} of '{ctx.env.name}' is missing: "
            f"restore it, or for a new environment make one (`invoke secrets.set --env "
            f"{ctx.env.name} --name {missing[0]} --generate`)"
        )


def ensure(ctx: EnvContext) -> None:
    """Create missing secrets of throwaway environments; demand them of long-lived ones.

    Files are 0644 inside a 0700 directory: the container's non-root user can read its
    bind-mounted copy, nobody else on the host can reach it. A directory that is open to
    others, or a secret that is empty, is refused. Never invents a password over data that
    was initialised with a lost one.
    """
    directory = ctx.env.secrets_dir
    check_directory(ctx)
    refuse_unfinished_rotation(ctx)
    _refuse_unusable(ctx)
    missing = _missing(ctx)
    if not missing:
        return
    if not ctx.env.generates_secrets:
        raise ConfigError(
            f"environment '{ctx.env.name}' is missing secret(s) {', '.join(missing)} in {directory}"
        )
    if set(missing) <= set(ROLE_PASSWORDS):  # a new value of these is safe: made below
        ensure_role_passwords(ctx)
        return
    existing = [v.name for v in _volumes_if_engine(ctx)]
    if existing:
        raise ConfigError(
            f"the data of '{ctx.env.name}' ({', '.join(existing)}) exists but its secret "
            f"{directory / missing[0]} is missing: restore the file, or delete the data with "
            f"`{ctx.hint('down', '--volumes')}`"
        )
    import secrets as random_secrets

    for name in missing:
        path = directory / name
        if ctx.run.dry_run:
            ctx.run.say(f"# would create random secret {path}")
            continue
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        ctx.run.write(path, random_secrets.token_urlsafe(32) + "\n", mode=0o644)
        ctx.run.say(f"created random secret {path}")


def ensure_role_passwords(ctx: EnvContext) -> None:
    """The database roles' passwords (ROLE_PASSWORDS): made (random) when missing, in any
    environment; the next migrator run gives them to the roles before a client uses them."""
    import secrets as random_secrets

    check_directory(ctx)
    _refuse_unusable(ctx, ROLE_PASSWORDS)
    for name in ROLE_PASSWORDS:
        path = ctx.env.secrets_dir / name
        if path.exists():
            continue
        if ctx.run.dry_run:
            ctx.run.say(f"# would create random secret {path}")
            continue
        ctx.env.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        ctx.run.write(path, random_secrets.token_urlsafe(32) + "\n", mode=0o644)
        ctx.run.say(f"created random secret {path} (a database role's)")


def _volumes_if_engine(ctx: EnvContext) -> list[docker.Volume]:
    # A dry run works offline: with no engine answering there is no data to protect (and
    # `up` then fails on its own with the engine's message).
    try:
        return docker.volumes(ctx)
    except LorePinError:
        if ctx.run.dry_run:
            return []
        raise


# The file (in secrets_dir) of pgBackRest's repository encryption passphrase.
BACKUP_PASSPHRASE = "backup_cipher"  # noqa: S105 (a file name)


def ensure_backup_passphrase(ctx: EnvContext) -> None:
    """The passphrase of a server environment's backup repository: made with the
    repository, demanded once the repository exists (it cannot be read without it)."""
    path = ctx.env.secrets_dir / BACKUP_PASSPHRASE
    check_directory(ctx)
    if path.is_file():
        if not path.read_text().strip():
            raise ConfigError(f"the secret {path} is empty: restore it")
        return
    if any(v.name.endswith("_db-backup") for v in _volumes_if_engine(ctx)):
        raise ConfigError(
            f"the backup repository of '{ctx.env.name}' exists but its passphrase {path} is "
            "missing: restore the file (the repository cannot be read without it)"
        )
    if ctx.run.dry_run:
        ctx.run.say(f"# would create the backup repository passphrase {path}")
        return
    import secrets as random_secrets

    ctx.env.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ctx.run.write(path, random_secrets.token_urlsafe(48) + "\n", mode=0o644)
    ctx.run.say(
        f"created the backup repository passphrase {path}: keep a copy off this machine "
        "(without it no physical backup of this environment can be read)"
    )


def ensure_backup_tls(ctx: EnvContext) -> None:
    """The private CA and certificates the database and the second site's repository host
    authenticate each other with (made once; a missing one is issued again by the CA)."""
    from lorepin_tasks.plans import backup as backup_plan

    files = backup_plan.tls_files(ctx.env.secrets_dir)
    if all(f.is_file() for f in files):
        return
    directory = files[0].parent
    with_ca = not (files[0].is_file() and files[1].is_file())
    if ctx.run.dry_run:
        ctx.run.say(f"# would create the backup sites' TLS certificates in {directory}")
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ctx.run.say(f"==> {ctx.env.name}: creating the backup sites' TLS certificates ({directory})")
    for argv in backup_plan.tls_commands(ctx.env.secrets_dir, with_ca=with_ca):
        ctx.run.run(argv, capture=True)
    for f in files:
        f.chmod(0o644)  # read through the mount by the containers' entrypoint; dir is 0700


BACKUP_WEBHOOK = "backup_webhook"
ALERT_WEBHOOK = "alert_webhook"


def ensure_backup_webhook(ctx: EnvContext) -> None:
    """The webhook the second site's backup schedule reports to (LOREPIN_BACKUP_WEBHOOK_URL,
    or the release one)."""
    ensure_webhook(ctx, BACKUP_WEBHOOK, ctx.settings.backup_webhook_url, "backup schedule")


def ensure_alert_webhook(ctx: EnvContext) -> None:
    """The webhook the incident receiver passes alerts on to (LOREPIN_ALERT_WEBHOOK_URL, or
    the backup or release one)."""
    ensure_webhook(ctx, ALERT_WEBHOOK, ctx.settings.alert_webhook_url, "incident receiver")


def ensure_webhook(ctx: EnvContext, name: str, url: str | None, whose: str) -> None:
    """A webhook URL as a file secret of the environment: written when `url` is set and
    differs, else the file as it is (empty: its service reports to its own log only)."""
    path = ctx.env.secrets_dir / name
    url = url or ""
    if url:
        ctx.run.add_secret(url)
    if path.is_file() and (not url or path.read_text().strip() == url):
        return
    if ctx.run.dry_run:
        ctx.run.say(f"# would write the {whose}'s webhook into {path}")
        return
    check_directory(ctx)
    ctx.env.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ctx.run.write(path, url + "\n" if url else "", mode=0o644)


MONITORING_PASSWORD = "monitoring_password"  # noqa: S105 (a file name: the `monitor` user's)
MONITORING_HASH = "monitoring_password.bcrypt"  # its bcrypt hash, what the proxy is given


def ensure_monitoring_password(ctx: EnvContext, hash_password: Callable[[str], str]) -> None:
    """The monitoring's password (made once, random; a person may replace the file) and
    its bcrypt hash (made again whenever the password file is newer)."""
    path, hashed = ctx.env.secrets_dir / MONITORING_PASSWORD, ctx.env.secrets_dir / MONITORING_HASH
    check_directory(ctx)
    if ctx.run.dry_run:
        ctx.run.say(f"# would make sure of the monitoring password {path} and its hash")
        return
    ctx.env.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.is_file() or not path.read_text().strip():
        import secrets as random_secrets

        ctx.run.write(path, random_secrets.token_urlsafe(18) + "\n", mode=0o600)
        ctx.run.say(f"created the monitoring password (user monitor) in {path}")
    password = path.read_text().strip()
    ctx.run.add_secret(password)
    if hashed.is_file() and hashed.stat().st_mtime >= path.stat().st_mtime:
        return
    ctx.run.write(hashed, hash_password(password) + "\n", mode=0o600)


def monitoring_access(ctx: EnvContext) -> Monitoring | None:
    """What the proxy needs for /monitoring/: None until `invoke monitor.up` made it."""
    hashed = ctx.env.secrets_dir / MONITORING_HASH
    if not hashed.is_file() or not hashed.read_text().strip():
        return None
    return Monitoring(allow=ctx.env.monitoring_allow, password_hash=hashed.read_text().strip())


# -- the repository's encrypted secrets (plans/secret_store.py) --------------------------


def recipients(ctx: EnvContext) -> list[object]:
    import pyrage

    if not ctx.env.secrets_recipients:
        raise ConfigError(
            f"environment '{ctx.env.name}' has no secrets.recipients in invoke.yaml: add the "
            "public key of everyone who deploys it (`invoke secrets.keygen` prints yours)"
        )
    keys: list[object] = []
    for r in dict.fromkeys(ctx.env.secrets_recipients):  # each once
        try:
            keys.append(pyrage.x25519.Recipient.from_str(r))
        except pyrage.RecipientError:
            raise ConfigError(f"environment '{ctx.env.name}': secrets.recipients has {r[:12]}..., "
                              "which is not an age public key (a typo? its checksum fails)"
                              ) from None  # fmt: skip
    return keys


def seal(ctx: EnvContext, secret: str, value: str) -> None:
    """Encrypt to the environment's recipients and replace the file in one rename."""
    import pyrage

    path = store.path(ctx.settings.root, ctx.env.name, secret)
    sealed = pyrage.encrypt((value + "\n").encode(), recipients(ctx), armored=True)  # type: ignore[arg-type]
    if ctx.run.dry_run:
        ctx.run.say(f"# would write {path.relative_to(ctx.settings.root)} (encrypted)")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}{store.PART}")  # git ignores it; lint passes it over
    try:
        with part.open("wb") as file:
            file.write(sealed)
            file.flush()
            os.fsync(file.fileno())
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path.relative_to(ctx.settings.root)}: {exc.strerror}"
                          ) from None  # fmt: skip


def identity(ctx: EnvContext) -> pyrage.x25519.Identity:
    """The deployer's age identity (LOREPIN_AGE_IDENTITY), or a one-line error."""
    import pyrage

    path = ctx.settings.age_identity
    try:
        if not path.is_file():  # a directory, a device (/dev/zero would never end)
            raise FileNotFoundError if not path.exists() else IsADirectoryError
        with path.open("rb") as file:
            text = file.read(64 * 1024).decode()
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        return pyrage.x25519.Identity.from_str(lines[0])
    except FileNotFoundError:
        raise ConfigError(
            f"no age identity at {path}: make one with `invoke secrets.keygen` (and have its "
            "public key added to the recipients), or point LOREPIN_AGE_IDENTITY at yours"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the age identity {path}: {exc}") from None
    except (IndexError, ValueError, pyrage.IdentityError):
        raise ConfigError(f"{path} is not an age identity (AGE-SECRET-KEY-1...)") from None


def decrypt(ctx: EnvContext, name: str, key: pyrage.x25519.Identity) -> str:
    """One stored secret's value (checked: text, one line, not empty)."""
    import pyrage

    path = store.path(ctx.settings.root, ctx.env.name, name)
    where = path.relative_to(ctx.settings.root)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ConfigError(f"{where} is not a file (a link or a directory): store it again")
    try:
        value = pyrage.decrypt(path.read_bytes(), [key]).decode().strip()
    except FileNotFoundError:
        raise ConfigError(f"no secret {where}: store it with `invoke secrets.set`") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
    except pyrage.DecryptError:
        raise ConfigError(
            f"cannot decrypt {where} with {ctx.settings.age_identity}: it is not encrypted to "
            "this key (a holder adds your public key to secrets.recipients and runs "
            f"`invoke secrets.rotate --env {ctx.env.name}`), or the file is damaged"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} does not hold text") from None
    if not value or "\n" in value:
        raise ConfigError(f"{where} holds {'nothing' if not value else 'several lines'}")
    ctx.run.add_secret(value)
    return value


def decrypt_stored(ctx: EnvContext) -> dict[str, str]:
    """Every stored secret of the environment, decrypted in memory (nothing written): a
    deploy checks them all before its first change. None stored: nothing asked."""
    refuse_unfinished_rotation(ctx)
    names = store.stored(ctx.settings.root, ctx.env.name)
    if not names:
        return {}
    check_directory(ctx)
    key = identity(ctx)
    values = {n: decrypt(ctx, n, key) for n in names}
    for n, value in values.items():
        if store.NAMES[n] == "kept" and placed(ctx, n) not in (None, value):
            raise Refused(
                f"secrets/{ctx.env.name}/{n}.age differs from {ctx.env.secrets_dir / n}, the "
                "value the environment's data was made with: changing it would lock the "
                "service out of its data; store the value in place (`invoke secrets.set`) instead"
            )
    return values


def placed(ctx: EnvContext, name: str) -> str | None:
    """The value in the environment's secrets_dir (None: no such file); any bytes."""
    placed = ctx.env.secrets_dir / name
    return placed.read_bytes().strip().decode(errors="replace") if placed.is_file() else None


def place_stored(ctx: EnvContext, values: dict[str, str]) -> None:
    """Write the decrypted secrets into the environment's secrets_dir (where they differ)."""
    if not values:
        return
    check_directory(ctx)
    if not ctx.run.dry_run:
        ctx.env.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for n, value in values.items():
        if placed(ctx, n) == value:
            continue
        mode = 0o600 if n == MONITORING_PASSWORD else 0o644
        ctx.run.write(ctx.env.secrets_dir / n, value + "\n", mode=mode)
        ctx.run.say(f"placed {n} from secrets/{ctx.env.name}/{n}.age")
