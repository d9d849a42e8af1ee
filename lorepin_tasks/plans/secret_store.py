"""Secrets at rest in the repository, like SOPS or Kamal's secrets: each an age-encrypted
file `secrets/<env>/<NAME>.age` (ASCII-armoured, so a diff shows a change), encrypted to
the environment's recipients (invoke.yaml's `secrets.recipients`), decrypted only by a
deployer's identity into the environment's secrets_dir when it is deployed. Pure: the
names, the paths, and what makes a file under secrets/ wrong. docs/security.md."""

from __future__ import annotations

import re
from pathlib import Path

from lorepin_tasks.errors import ConfigError

STORE = "secrets"
SUFFIX = ".age"
ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
BINARY = b"age-encryption.org/v1\n"
README = "README.md"  # the one plain file the store may hold

# The secrets the toolkit places in an environment's secrets_dir, and what a new value
# means for each. `kept`: the value the data was made with; a stored one that differs
# from the one in place is refused (it would lock the service out of its own data).
NAMES = {
    "db_password": "kept",  # the database was initialised with it
    "cms_db_password": "replaced",  # the migrator sets it on the role (every deploy)
    "monitor_db_password": "replaced",  # likewise, the metrics exporter's role
    "backup_cipher": "kept",  # the physical backup repository is encrypted with it
    "backup_webhook": "replaced",
    "alert_webhook": "replaced",
    "monitoring_password": "replaced",
}
# The passwords of the database roles besides the owner (lorepin_cms.db_roles): the
# CMS's and the metrics exporter's. Every migrator run sets them on the roles, before any
# client starts with them, so a missing one is made anew in any environment.
ROLE_PASSWORDS = ("cms_db_password", "monitor_db_password")
ENV = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


def name(text: str) -> str:
    """A secret's name, or a one-line error naming the ones there are."""
    if text not in NAMES:
        known = ", ".join(NAMES)
        raise ConfigError(f"unknown secret {text!r} (the toolkit's secrets: {known})")
    return text


def path(root: Path, env: str, secret: str) -> Path:
    return root / STORE / env / f"{name(secret)}{SUFFIX}"


def stored(root: Path, env: str) -> list[str]:
    """The names of the environment's stored secrets (a file of another name is left to
    `problems`)."""
    directory = root / STORE / env
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob(f"*{SUFFIX}")
                  if p.stem in NAMES and p.is_file() and not p.is_symlink())  # fmt: skip


ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
BASE64 = re.compile(rb"^[A-Za-z0-9+/=]{1,64}$")
PART = ".part"  # a write in progress (or one killed): `.<NAME>.age.part`, never committed


def encrypted(data: bytes) -> bool:
    """A whole age file: binary (its header), or armoured from its first line to its
    last, with nothing but base64 between."""
    if data.startswith(BINARY):
        return True
    lines = data.strip().splitlines()
    return (len(lines) >= 3 and lines[0] == ARMOR and lines[-1] == ARMOR_END
            and all(BASE64.match(ln) for ln in lines[1:-1]))  # fmt: skip


def problems(root: Path) -> list[str]:
    """What is wrong under secrets/: a file that is not age-encrypted (a plain secret about
    to be committed), or a name the toolkit would not place."""
    store = root / STORE
    found = []
    for file in sorted(store.rglob("*")) if store.is_dir() else []:
        where = file.relative_to(root)
        if file.is_symlink():
            found.append(f"{where}: a symbolic link: store the file itself")
            continue
        if file.is_dir() or file == store / README or file.name.endswith(PART):
            continue  # a .part is a write in progress (git ignores it)
        if not encrypted(file.read_bytes()):
            found.append(f"{where}: not age-encrypted: a plain-text secret must not be committed "
                         "(store it with `invoke secrets.set`)")  # fmt: skip
            continue
        parts = file.relative_to(store).parts
        if len(parts) != 2 or not ENV.match(parts[0]) or file.suffix != SUFFIX:
            found.append(f"{where}: not secrets/<env>/<NAME>.age")
        elif file.stem not in NAMES:
            found.append(f"{where}: unknown secret {file.stem!r} ({', '.join(NAMES)})")
    return found
