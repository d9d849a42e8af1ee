"""An environment's logical backups on disk: keys, the encrypted stream in and out, the
list. The dump flows from `pg_dump` through age encryption and SHA-256 into the file
(and back out through decryption into `pg_restore`) without ever sitting whole in
memory or in plain text on disk.

age (X25519) through `pyrage`: the format the standard `age` command reads, from a
well-kept binding, instead of encryption code of our own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyrage

from lorepin_tasks.errors import ConfigError, LorePinError, Refused
from lorepin_tasks.plans import backup as plan
from lorepin_tasks.runtime.environment import EnvContext


class Counter(io.RawIOBase):
    """Reads through, counting bytes (the dump's plain size, for the manifest)."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.bytes = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.source.read(-1 if size is None else size)
        self.bytes += len(data)
        return data


class Sealed(io.RawIOBase):
    """Writes through to a file, hashing and counting what it writes."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink = sink
        self.sha = hashlib.sha256()
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.sink.write(view)
        self.sha.update(view)
        self.bytes += len(view)
        return len(view)


class _Enough(Exception):
    """The first decrypted bytes arrived: the key fits."""


class _Probe(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raise _Enough


# -- keys ------------------------------------------------------------------------------


def identity_path(ctx: EnvContext) -> Path:
    return ctx.env.secrets_dir / plan.IDENTITY_FILE


def new_identity(path: Path) -> str:
    """Write a new age identity (the `age-keygen` file format, 0600); its public key."""
    identity = pyrage.x25519.Identity.generate()
    public = str(identity.to_public())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    text = f"# created: {created}\n# public key: {public}\n{identity}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    return public


def load_identity(ctx: EnvContext) -> pyrage.x25519.Identity:
    path = identity_path(ctx)
    try:
        text = path.read_text()
    except OSError:
        raise ConfigError(
            f"the backup key {path} of '{ctx.env.name}' is missing: restore it from where you "
            "keep its copy (without it no backup of this environment can be decrypted)"
        ) from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("AGE-SECRET-KEY-")]
    try:
        return pyrage.x25519.Identity.from_str(lines[0])
    except (IndexError, pyrage.IdentityError, ValueError):
        raise ConfigError(f"the backup key {path} is not an age identity: restore it") from None


def recipients(ctx: EnvContext) -> list[str]:
    """Who can decrypt this environment's new backups: its own key's public half and
    `backup.recipients` from invoke.yaml. With neither, the first backup makes the key
    (and says to keep a copy of it off this machine)."""
    path = identity_path(ctx)
    found = list(ctx.env.backup.recipients)
    if path.is_file():
        found.insert(0, str(load_identity(ctx).to_public()))
    elif not found and not ctx.run.dry_run:
        if ids(ctx):
            raise ConfigError(
                f"the backup key {path} of '{ctx.env.name}' is missing but its backups are "
                "encrypted to it: restore the key (a new one could not read them)"
            )
        found.append(new_identity(path))
        ctx.run.say(
            f"    created the backup key {path}: keep a copy off this machine "
            "(without it no backup of this environment can be decrypted)"
        )
    return list(dict.fromkeys(found))


# -- the encrypted stream -------------------------------------------------------------


def encrypt(source: IO[bytes], sink: IO[bytes], to: Sequence[str]) -> tuple[int, int, str]:
    """Encrypt `source` into `sink`: (plain bytes, encrypted bytes, SHA-256 of the latter)."""
    counter, sealed = Counter(source), Sealed(sink)
    keys = [pyrage.x25519.Recipient.from_str(r) for r in to]
    try:
        pyrage.encrypt_io(counter, sealed, keys)  # type: ignore[arg-type]
    except pyrage.EncryptError as exc:  # a write error at the last flush, wrapped
        found = re.search(r"\[Errno (\d+)\] (.+)", str(exc))
        raise (OSError(int(found[1]), found[2]) if found else OSError(str(exc))) from None
    return counter.bytes, sealed.bytes, sealed.sha.hexdigest()


def check_key(path: Path, identity: pyrage.x25519.Identity, id_: str, key: Path) -> None:
    """Decrypt the first bytes: the key is one of the backup's recipients."""
    try:
        with path.open("rb") as source:
            pyrage.decrypt_io(source, _Probe(), [identity])  # type: ignore[arg-type]
    except _Enough:
        return
    except pyrage.DecryptError:
        raise Refused(
            f"backup {id_} cannot be decrypted with {key}: that key is not one of its recipients"
        ) from None
    except OSError as exc:
        raise Refused(f"backup {id_} is corrupt: it does not decrypt ({exc})") from None


def decrypt(path: Path, sink: IO[bytes], identity: pyrage.x25519.Identity, id_: str) -> None:
    try:
        with path.open("rb") as source:
            pyrage.decrypt_io(source, sink, [identity])  # type: ignore[arg-type]
    except pyrage.DecryptError as exc:
        raise Refused(f"backup {id_} does not decrypt: {exc}") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sum(ctx: EnvContext, backup: plan.Backup) -> None:
    """The encrypted file is the one the manifest describes, byte for byte."""
    if backup.manifest is None:
        raise Refused(f"backup {backup.id} is unusable: {backup.problem}")
    found = sha256(plan.data_path(ctx.env, backup.id))
    if found != backup.manifest.get("sha256"):
        raise Refused(
            f"backup {backup.id} is corrupt: its SHA-256 does not match its manifest "
            "(restore another one; see `invoke backup.list`)"
        )


# -- the list ------------------------------------------------------------------------


def ids(ctx: EnvContext) -> set[str]:
    """The ids of the backups in the environment's directory (files only: no manifest read)."""
    directory = ctx.env.backups_dir
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the backups directory {directory} is a file, not a directory")
    if not directory.is_dir():
        return set()
    found = set()
    for path in directory.iterdir():
        name = path.name
        if name.endswith(plan.DATA_SUFFIX) or name.endswith(".json"):
            stem = name.removesuffix(plan.DATA_SUFFIX).removesuffix(".json")
            if plan.ID.fullmatch(stem):
                found.add(stem)
    return found


def listed(ctx: EnvContext) -> list[plan.Backup]:
    """Every backup in the environment's directory, newest first, each with its problem."""
    return [one(ctx, id_) for id_ in sorted(ids(ctx), reverse=True)]


def one(ctx: EnvContext, id_: str) -> plan.Backup:
    data = plan.data_path(ctx.env, id_)
    size = data.stat().st_size if data.is_file() else None
    manifest: Any = None
    try:
        manifest = json.loads(plan.manifest_path(ctx.env, id_).read_text())
    except FileNotFoundError:
        manifest = None
    except (OSError, ValueError):
        manifest = {}
    problem = plan.manifest_problem(id_, manifest, size)
    return plan.Backup(
        id=id_,
        manifest=manifest if isinstance(manifest, dict) and manifest else None,
        data_bytes=size,
        problem=problem,
    )


def find(ctx: EnvContext, id_: str) -> plan.Backup:
    backup = one(ctx, plan.check_id(id_))
    if backup.data_bytes is None and backup.manifest is None:
        raise LorePinError(
            f"'{ctx.env.name}' has no backup {id_} (see `invoke backup.list --env {ctx.env.name}`)"
        )
    return backup


def write_manifest(ctx: EnvContext, id_: str, manifest: dict[str, Any]) -> None:
    """Write (or rewrite) a manifest atomically: a reader sees the old one or the new one."""
    path = plan.manifest_path(ctx.env, id_)
    temporary = path.with_name(path.name + plan.PARTIAL_SUFFIX)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(manifest, out, indent=2, sort_keys=True)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    temporary.replace(path)


def leftovers(ctx: EnvContext) -> list[Path]:
    """Files of runs that died mid-backup (only ever removed under the environment's lock)."""
    directory = ctx.env.backups_dir
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(plan.PARTIAL_SUFFIX))


def writable(ctx: EnvContext) -> None:
    """The backups directory exists (or can be made, 0700) and takes a file: checked
    before anything changes, so a restore never stops the CMS for a backup it cannot keep."""
    directory = ctx.env.backups_dir
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"the backups directory {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        probe = directory / f".probe-{os.getpid()}{plan.PARTIAL_SUFFIX}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot write backups into {directory}: {exc.strerror or exc} "
            "(set backups_dir or LOREPIN_BACKUP_DIR to a writable directory)"
        ) from None
