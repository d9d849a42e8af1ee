"""Logical backups of an environment's database, as data and commands. Pure: no I/O.

A backup is two files in the environment's backups directory:

- `<id>.dump.age`: `pg_dump -Fc` of the database, encrypted with age to the environment's
  recipients (the standard `age -d -i KEY` decrypts it; `pg_restore` restores it);
- `<id>.json`: its manifest (environment, version, schema revision, rows per table,
  sizes, SHA-256 of the encrypted file, recipients). Written last: a backup without a
  manifest is incomplete and never listed as good.

Ids sort by time and say the type, like pgBackRest's labels: `20261130-141503L`.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from lorepin_cms import db_roles
from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans.db import DB_NAME
from lorepin_tasks.plans.deploy import OPS, container
from lorepin_tasks.settings import AGE_RECIPIENT, BackupPolicy, Environment

ID = re.compile(r"^(?P<stamp>\d{8}-\d{6})(?P<n>\d{0,2})L$")
FORMAT = 1  # of the manifest
DATA_SUFFIX = ".dump.age"
PARTIAL_SUFFIX = ".partial"
IDENTITY_FILE = "backup.key"  # in the environment's secrets_dir
# Restoring replaces the CMS's data and the schema ledger that describes it; the rest of
# lorepin_ops (deploy history, the audit trail, migration log) is the environment's own
# record of what happened and is never rewound by a restore.
RESTORED_OPS_TABLES = ("migration_checksums",)
# Files the toolkit puts inside containers (their own /tmp, never this machine's).
IN_CONTAINER = "/tmp/lorepin"  # noqa: S108
PASSWORD_FILE = f"{IN_CONTAINER}-db-password"
TOC_FILE, LIST_FILE = f"{IN_CONTAINER}-restore.toc", f"{IN_CONTAINER}-restore.list"
HEAD_FILE, TAIL_FILE = f"{IN_CONTAINER}-restore-head.sql", f"{IN_CONTAINER}-restore-tail.sql"
REASON = re.compile(r"^[a-z0-9][a-z0-9.+-]{0,62}$")


def backup_id(now: datetime, taken: Iterable[str] = ()) -> str:
    """A new id for a backup started at `now` (UTC), unique among `taken`."""
    stamp = now.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    for n in ["", *(f"{i:02d}" for i in range(1, 100))]:
        candidate = f"{stamp}{n}L"
        if candidate not in set(taken):
            return candidate
    raise ConfigError(f"too many backups started at {stamp}")


def check_id(value: str) -> str:
    if not value:
        raise ConfigError("say which backup: --from ID (see `invoke backup.list`)")
    if not ID.fullmatch(value):
        raise ConfigError(
            f"invalid backup id {value!r}: like 20261130-141503L (invoke backup.list)"
        )
    return value


def check_reason(value: str) -> str:
    if not REASON.fullmatch(value):
        raise ConfigError(
            f"invalid backup reason {value!r}: lowercase letters, digits, '.', '+' and '-'"
        )
    return value


def data_path(env: Environment, id_: str) -> Path:
    return env.backups_dir / f"{id_}{DATA_SUFFIX}"


def manifest_path(env: Environment, id_: str) -> Path:
    return env.backups_dir / f"{id_}.json"


def started_at(id_: str) -> datetime:
    match = ID.fullmatch(id_)
    if not match:
        raise ConfigError(f"invalid backup id {id_!r}")
    return datetime.strptime(match["stamp"], "%Y%m%d-%H%M%S").replace(tzinfo=UTC)


# -- commands ------------------------------------------------------------------------


def db_exec(env: Environment, argv: Sequence[str], *, stdin: bool = False) -> list[str]:
    """A command in the database container, over the engine (a remote host works too)."""
    return [
        *compose.docker(env),
        "exec",
        *(["-i"] if stdin else []),
        container(env, compose.DB_SERVICE),
        *argv,
    ]


# The role pg_dump takes on (--role): the backup role (pg_read_all_data,
# lorepin_cms.db_roles), or none in a database whose migrator has not made it yet.
DUMP_ROLE_SQL = "SELECT rolname FROM pg_roles WHERE rolname = 'lorepin_backup'"


def dump(
    env: Environment, snapshot: str | None, *, role: str | None = "lorepin_backup"
) -> list[str]:
    """pg_dump in custom format to stdout, at the snapshot the row counts were read in,
    with the backup role's privileges (it reads everything and writes nothing).
    Without privileges: the roles' grants are the migrator's (lorepin_cms.db_roles), and a
    dump restores into any PostgreSQL, where those roles need not exist."""
    argv = ["pg_dump", "-Fc", "--no-privileges", "-U", "lorepin", "-d", "lorepin"]
    if role:
        argv.append(f"--role={role}")
    return db_exec(env, [*argv, f"--snapshot={snapshot}"] if snapshot else argv)


TABLES_SQL = (
    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"
)
# The schema revision, or no row before the first migration: the table is read through
# query_to_xml, so a database without it is not an error.
REVISION_SQL = (
    "SELECT (xpath('/row/v/text()', query_to_xml("
    "'SELECT version_num AS v FROM public.alembic_version LIMIT 1', false, true, '')))[1]::text "
    "WHERE to_regclass('public.alembic_version') IS NOT NULL"
)


def count_sql(tables: Sequence[str]) -> str:
    """One statement counting every table's rows (names as TABLES_SQL quoted them)."""
    if not tables:
        return "SELECT '', 0 WHERE false"
    # Names come from pg_class through format('%I.%I') (or a manifest checked against it).
    return " UNION ALL ".join(f"SELECT {_literal(t)}, count(*) FROM {t}" for t in tables)  # noqa: S608


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


RESTORE_HEAD = "\n".join(
    [
        # The transaction the whole restore runs in: the tail commits it only after the
        # backup's script ran to its end and the rows were checked.
        "BEGIN;",
        "SET LOCAL lock_timeout = '30s';",
        f"CREATE SCHEMA IF NOT EXISTS {OPS};",
        "DROP SCHEMA IF EXISTS public CASCADE;",
        "CREATE SCHEMA public AUTHORIZATION pg_database_owner;",
        "GRANT USAGE ON SCHEMA public TO PUBLIC;",
        *(f"DROP TABLE IF EXISTS {OPS}.{t};" for t in RESTORED_OPS_TABLES),
        "",
    ]
)


def restore_list(toc: str) -> str:
    """pg_restore's table of contents (`pg_restore -l`), keeping what a restore brings back:
    everything but lorepin_ops, except the schema ledger's tables, and no privileges (the
    database roles' grants are the migrator's, applied again by `restore_tail`)."""
    kept = []
    for line in toc.splitlines():
        if line.startswith(";") or not line.strip():
            kept.append(line)
            continue
        # "<id>; <oid> <oid> <TYPE...> <schema> <name> <owner>"
        padded = f" {line} "
        if " SCHEMA - public " in padded or " ACL " in padded:  # (and "DEFAULT ACL")
            continue  # the head recreates public; the tail grants
        if f" {OPS} " not in padded or any(f" {OPS} {t} " in padded for t in RESTORED_OPS_TABLES):
            kept.append(line)
    return "\n".join(kept) + "\n"


def restore_into_live(env: Environment) -> list[str]:
    """pg_restore of stdin as a script, applied with the head in one transaction: all or
    nothing (a failure leaves the live database as it was)."""
    # COMMIT is in the tail, sent only when pg_restore read the whole archive: a cut
    # stream ends psql inside the transaction, which PostgreSQL then rolls back.
    script = (
        "set -o pipefail; "
        f"{{ cat {HEAD_FILE} && pg_restore -L {LIST_FILE} -f - && cat {TAIL_FILE} || exit 1; }} "
        "| PGOPTIONS='-c client_min_messages=warning' "
        "psql -X -q -o /dev/null -v ON_ERROR_STOP=1 -U lorepin -d lorepin"
    )
    return db_exec(env, ["bash", "-c", script], stdin=True)


def restore_tail(manifest: Mapping[str, Any]) -> str:
    """Check the rows the restore brought back against the manifest, then commit."""
    tables = {
        name: rows
        for name, rows in (manifest.get("tables") or {}).items()
        if not name.startswith(f"{OPS}.") or name.split(".", 1)[1] in RESTORED_OPS_TABLES
    }
    checks = [  # names and counts passed manifest_problem's checks
        f"IF (SELECT count(*) FROM {name}) <> {int(rows)} THEN "  # noqa: S608
        f"RAISE EXCEPTION 'restore check: {name} has % rows, expected {int(rows)}', "
        f"(SELECT count(*) FROM {name}); END IF;"
        for name, rows in tables.items()
    ]
    # The roles' grants as the migrator keeps them (the restore recreated every table).
    grants = [g.replace("{database}", DB_NAME) + ";" for g in db_roles.GRANTS]
    return "\n".join([
        *grants, "DO $check$ BEGIN", *(checks or ["NULL;"]), "END $check$;", "COMMIT;", ""
    ])  # fmt: skip


def put_file(env: Environment, path: str) -> list[str]:
    """Write stdin to a file in the database container (a list or SQL for the restore)."""
    return db_exec(env, ["bash", "-c", f"cat > {path}"], stdin=True)


# -- the throwaway database a verification restores into ----------------------------


VERIFY_LABEL = "dev.lorepin.verify"
# A throwaway database's environment (its password goes in as a file, never a variable).
THROWAWAY_DB_ENV = {
    "POSTGRES_USER": "lorepin",
    "POSTGRES_DB": "lorepin",
    "POSTGRES_PASSWORD_FILE": PASSWORD_FILE,
}


def verify_names(env: Environment, id_: str, nonce: str) -> dict[str, str]:
    """Container and network names of a verification: DNS labels (<= 63 characters) for
    any project name and backup label, so the backup's id goes in as a short digest."""
    digest = hashlib.sha256(id_.encode()).hexdigest()[:8]
    base = f"{env.project}-verify-{digest}-{nonce}"
    return {"network": base, "db": f"{base}-db", "cms": f"{base}-cms"}


def labels(env: Environment, checkout: str, id_: str) -> list[str]:
    pairs = {
        # An image built by Compose carries its project's labels: a throwaway container
        # of it must not pass for one of that project's services.
        "com.docker.compose.project": "",
        "com.docker.compose.service": "",
        "dev.lorepin.env": env.name,
        "dev.lorepin.kind": env.kind,
        "dev.lorepin.checkout": checkout,
        VERIFY_LABEL: id_,
    }
    return [arg for k, v in pairs.items() for arg in ("--label", f"{k}={v}")]


# -- manifests -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Backup:
    id: str
    manifest: Mapping[str, Any] | None  # None: missing or unreadable
    data_bytes: int | None  # the encrypted file's size (None: missing)
    problem: str | None = None  # why it is not usable, for people

    @property
    def at(self) -> datetime:
        return started_at(self.id)

    @property
    def verified(self) -> bool:
        return bool(self.manifest and (self.manifest.get("verified") or {}).get("ok"))

    @property
    def failed(self) -> str | None:
        """Why its last verification failed (None: it did not, or it was not verified)."""
        verified = (self.manifest or {}).get("verified") or {}
        if verified.get("ok") is False:
            return str(verified.get("problem") or "no reason recorded")
        return None

    @property
    def good(self) -> bool:
        return self.problem is None and self.failed is None

    @property
    def pinned(self) -> bool:
        return bool(self.manifest and self.manifest.get("pinned"))


class Keepable(Protocol):
    """What retention looks at, logical or physical."""

    @property
    def id(self) -> str: ...
    @property
    def at(self) -> datetime: ...
    @property
    def good(self) -> bool: ...
    @property
    def verified(self) -> bool: ...
    @property
    def pinned(self) -> bool: ...


_NAME = r'(?:[a-z_][a-z0-9_$]*|"(?:[^"]|"")+")'
TABLE = re.compile(rf"^{_NAME}\.{_NAME}$")  # as format('%I.%I') writes it
MANIFEST_KEYS = ("format", "id", "environment", "sha256", "bytes", "tables", "recipients")


def manifest_problem(id_: str, manifest: Any, data_bytes: int | None) -> str | None:
    """Why a backup's manifest and file do not make a usable backup (None: they do)."""
    if manifest is None:
        return "no manifest: incomplete, or not made by the toolkit"
    if not isinstance(manifest, Mapping) or any(k not in manifest for k in MANIFEST_KEYS):
        return "its manifest is not a backup manifest"
    if manifest.get("format") != FORMAT:
        return f"its manifest has format {manifest.get('format')!r}, this toolkit reads {FORMAT}"
    if manifest.get("id") != id_:
        return f"its manifest describes {manifest.get('id')!r}"
    tables = manifest.get("tables")
    if not isinstance(tables, Mapping) or not all(
        isinstance(k, str) and TABLE.fullmatch(k) and type(v) is int and v >= 0
        for k, v in tables.items()
    ):
        return "its manifest's table counts are not table names and row counts"
    rows = manifest.get("rows")
    if rows is not None and (type(rows) is not int or rows < 0):
        return "its manifest's row total is not a count"
    recipients = manifest.get("recipients")
    if not isinstance(recipients, list) or not all(
        isinstance(r, str) and AGE_RECIPIENT.fullmatch(r) for r in recipients
    ):
        return "its manifest's recipients are not age public keys"
    if data_bytes is None:
        return "its data file is missing"
    if data_bytes != manifest.get("bytes"):
        return f"its data file has {data_bytes} bytes, the manifest says {manifest.get('bytes')}"
    return None


def manifest(
    *,
    id_: str,
    env: Environment,
    reason: str,
    who: str,
    started: datetime,
    finished: datetime,
    version: str | None,
    revision: str | None,
    tables: Mapping[str, int],
    dump_bytes: int,
    data_bytes: int,
    sha256: str,
    recipients: Sequence[str],
    server: str,
    pinned: bool,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "id": id_,
        "type": "logical",
        "environment": env.name,
        "project": env.project,
        "reason": reason,
        "who": who,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "seconds": round((finished - started).total_seconds(), 2),
        "version": version,
        "schema_revision": revision,
        "tables": dict(tables),
        "rows": sum(tables.values()),
        "dump_bytes": dump_bytes,
        "bytes": data_bytes,
        "sha256": sha256,
        "encryption": "age (X25519)",
        "recipients": list(recipients),
        "postgres": server,
        "pinned": pinned,
        "verified": None,
    }


# -- retention (grandfather-father-son) ----------------------------------------------


def retained(backups: Sequence[Keepable], policy: BackupPolicy) -> dict[str, str]:
    """The good backups a prune keeps, each with why (everything else may go).

    Kept: the newest `last`; the newest of each of the last `daily` days, `weekly` ISO
    weeks and `monthly` months that have one; the newest verified backup (a restore
    needs a backup known to restore); pinned ones (taken before a release's migration).
    """
    good = sorted((b for b in backups if b.good), key=lambda b: b.at, reverse=True)
    why: dict[str, str] = {}

    def keep(backup: Keepable, reason: str) -> None:
        why.setdefault(backup.id, reason)

    for backup in good[: policy.keep_last]:
        keep(backup, "newest")
    buckets: list[tuple[str, int, Any]] = [
        ("daily", policy.keep_daily, lambda d: d.date()),
        ("weekly", policy.keep_weekly, lambda d: d.isocalendar()[:2]),
        ("monthly", policy.keep_monthly, lambda d: (d.year, d.month)),
    ]
    for name, count, bucket in buckets:
        seen: list[Any] = []
        for backup in good:
            key = bucket(backup.at)
            if key in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(key)
            keep(backup, name)
    verified = next((b for b in good if b.verified), None)
    if verified is not None:
        keep(verified, "newest verified")
    for backup in good:
        if backup.pinned:
            keep(backup, "pinned")
    return why


# -- physical backups (pgBackRest) ------------------------------------------------------

STANZA = "lorepin"
PHYSICAL_TYPES = ("full", "diff", "incr")
LABEL = re.compile(r"^\d{8}-\d{6}F(?:_\d{8}-\d{6}[DI])?$")


# The volumes that hold each repository: repo1 beside the database, repo2 on the site.
VOLUMES = {1: "db-backup", 2: "backup-site"}


def is_label(value: str) -> bool:
    return bool(LABEL.fullmatch(value))


def pgbackrest(env: Environment, *args: str, on: str = compose.DB_SERVICE) -> list[str]:
    """pgBackRest as postgres in the database container (repo1, the WAL archive, restores)
    or, `on` the second site's repository host, for its own backups (repo2)."""
    return [
        *compose.docker(env),
        "exec",
        "-u",
        "postgres",
        container(env, on),
        "pgbackrest",
        f"--stanza={STANZA}",
        *args,
    ]


@dataclass(frozen=True, kw_only=True)
class Physical:
    label: str
    type: str  # full, diff, incr
    start: datetime
    stop: datetime
    bytes: int  # the database's size at the backup
    stored: int  # what the repository holds for it
    error: bool  # pgBackRest found a page checksum error
    repo: int = 1  # 1: beside the database; 2: the second site
    timeline: int = 1  # PostgreSQL's timeline it was taken on (a restore starts a new one)

    # What retention looks at (a full backup and the diff/incr ones that build on it
    # are kept or expired together).
    @property
    def id(self) -> str:
        return self.label

    @property
    def at(self) -> datetime:
        return self.stop

    @property
    def good(self) -> bool:
        return not self.error

    @property
    def verified(self) -> bool:
        return False

    @property
    def pinned(self) -> bool:
        return False


def physical(info: Any) -> tuple[list[Physical], str | None]:
    """The backups in `pgbackrest info --output=json`, newest first, and the stanza's
    status message when it is not ok."""
    if not isinstance(info, list) or not info:
        return [], "pgBackRest reported nothing"
    stanza = next((s for s in info if isinstance(s, dict) and s.get("name") == STANZA), None)
    if stanza is None:
        return [], f"no stanza {STANZA!r}"
    found = [
        Physical(
            label=str(b["label"]),
            type=str(b["type"]),
            start=datetime.fromtimestamp(int(b["timestamp"]["start"]), UTC),
            stop=datetime.fromtimestamp(int(b["timestamp"]["stop"]), UTC),
            bytes=int(b["info"]["size"]),
            stored=int(b["info"]["repository"]["delta"]),
            error=bool(b.get("error")),
            repo=int((b.get("database") or {}).get("repo-key") or 1),
            timeline=int(str((b.get("archive") or {}).get("start") or "1")[:8], 16),
        )
        for b in stanza.get("backup") or []
    ]
    status = stanza.get("status") or {}
    message = None if status.get("code") in (0, None) else str(status.get("message"))
    return sorted(found, key=lambda b: b.stop, reverse=True), message


def _when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ConfigError(
            f"invalid time {text!r}: like 2026-11-30T14:03:17Z (ISO 8601, with its zone)"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(f"the time {text!r} has no zone: add Z (UTC) or an offset like +01:00")
    return when


def when(text: str) -> datetime:
    """A time as an operator writes it (ISO 8601 with its zone), in UTC."""
    return _when(text).astimezone(UTC)


def target_time(text: str, now: datetime, backups: Sequence[Physical]) -> datetime:
    """A point-in-time restore's target: with its zone, in the past, after a backup ended."""
    when = _when(text)
    if when > now:
        raise ConfigError(f"{text} is in the future: a restore goes back, not forward")
    ended = [b.stop for b in backups]
    if not ended:
        raise ConfigError(
            "there is no physical backup to recover from yet (backup.create --type full)"
        )
    if when < min(ended):
        raise ConfigError(
            f"{text} is before the oldest backup ended ({min(ended):%Y-%m-%dT%H:%M:%SZ}): "
            "nothing can be recovered that early"
        )
    return when.astimezone(UTC)


LATEST = "latest"  # --to-time latest: the end of the archived WAL


def restore_args(
    *,
    to_time: datetime | None = None,
    label: str | None = None,
    repo: int = 1,
    latest: bool = False,
) -> list[str]:
    """pgBackRest restore over the stopped data directory (--delta keeps what matches),
    from one repository: 1 beside the database, 2 the second site. `latest`: the newest
    backup, then all the archived WAL (recovery to its end, on the newest timeline)."""
    where = [f"--repo={repo}", "--delta"]
    if latest:
        return [*where, "--type=default", "restore"]
    if to_time is not None:
        target = f"{to_time:%Y-%m-%d %H:%M:%S}+00"
        chosen = [f"--set={label}"] if label else []
        return [
            *where, *chosen, "--type=time", f"--target={target}", "--target-action=promote",
            "restore",
        ]  # fmt: skip
    if label is None:
        raise ValueError("a time or a label")
    return [*where, f"--set={label}", "--type=immediate", "--target-action=promote", "restore"]


# -- the second site (repo2): a pgBackRest repository host over TLS -----------------------

SITE = "backup-site"  # its Compose service (and the CN of its certificate)
TLS_DIR = "backup-tls"  # in the environment's secrets_dir
TLS_NODES = (compose.DB_SERVICE, SITE)  # each authenticates the other by its CN


def tls_files(secrets_dir: Path) -> list[Path]:
    d = secrets_dir / TLS_DIR
    return [
        d / "ca.crt",
        d / "ca.key",
        *(d / f"{n}.{x}" for n in TLS_NODES for x in ("crt", "key")),
    ]


def tls_commands(secrets_dir: Path, *, with_ca: bool) -> list[list[str]]:
    """A private CA (when there is none) and a certificate for each node, named by its
    Compose service (what the other one dials and checks)."""
    d = secrets_dir / TLS_DIR
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-sha256"]
    commands = []
    if with_ca:
        commands.append(
            ["openssl", "req", "-x509", *ec, "-days", "3650", "-subj", "/CN=lorepin-backup-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt")]
        )  # fmt: skip
    for node in TLS_NODES:
        commands.append(
            ["openssl", "req", "-x509", *ec, "-days", "825", "-subj", f"/CN={node}",
             "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
             "-addext", f"subjectAltName=DNS:{node}",
             "-addext", "extendedKeyUsage=serverAuth,clientAuth",
             "-keyout", str(d / f"{node}.key"), "-out", str(d / f"{node}.crt")]
        )  # fmt: skip
    return commands


def expirable(backups: Sequence[Physical], policy: BackupPolicy) -> dict[int, list[str]]:
    """Per repository, the full backups a prune expires (pgBackRest removes each with the
    diff and incr backups built on it, and the WAL only they needed): retention counts
    full backups; the newest full of a repository always stays."""
    going: dict[int, list[str]] = {}
    for repo in sorted({b.repo for b in backups}):
        fulls = [b for b in backups if b.repo == repo and b.type == "full"]
        kept = retained(fulls, policy)
        if fulls:
            kept.setdefault(max(fulls, key=lambda b: b.stop).label, "newest full")
        going[repo] = [b.label for b in fulls if b.label not in kept and b.good]
    return going


# Data directories the toolkit replaced but must not lose (a fenced primary's, a database's
# that could not start): copied here, whole, in repo1's volume, which the database service
# mounts. Removed only by a person (docs/disaster-recovery.md).
KEPT = "/var/lib/pgbackrest/kept"


def keep_aside(name: str) -> str:
    """Shell: the data directory copied to KEPT/NAME, complete or not at all (a copy cut
    short stays NAME.partial and the next one removes it); says where."""
    keep = f"{KEPT}/{name}"
    return (
        f"install -d -o postgres -g postgres -m 0700 {KEPT} && rm -rf {KEPT}/*.partial && "
        f'mkdir {keep}.partial && cp -a "$PGDATA/." {keep}.partial/ && '
        f'mv {keep}.partial {keep} && echo "kept {keep}"'
    )


def as_postgres(*argv: str) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]


def restore_oneoff(args: Sequence[str], *, keep: str | None = None) -> list[str]:
    """The restore, in a one-off container of the database service once its container has
    exited: a postmaster.pid left by a stop that was not clean is removed first (nothing
    runs on that data any more), then pgBackRest runs as postgres. `keep`: the data
    directory is copied aside first, under that name (no safety backup could be taken)."""
    restore = shlex.join(as_postgres("pgbackrest", f"--stanza={STANZA}", *args))
    # Kept: the directory is emptied (pgBackRest will not restore over one that is no
    # longer a cluster, e.g. without PG_VERSION).
    first = f'{keep_aside(keep)} && find "$PGDATA" -mindepth 1 -delete && ' if keep else ""
    return ["bash", "-c", f'{first}rm -f "$PGDATA/postmaster.pid" && exec {restore}']


def base_for(target: datetime, backups: Sequence[Physical], timeline: int) -> Physical | None:
    """The backup a point-in-time restore starts from: the newest good one that ended by
    the target on the database's current timeline. (One from an older timeline may hold
    changes past the point where the current one branched off: recovery could not go on
    from it. pgBackRest alone would pick it.)"""
    fitting = [b for b in backups if b.good and b.stop <= target and b.timeline == timeline]
    return max(fitting, key=lambda b: b.stop, default=None)


APPROVAL_TTL = timedelta(hours=24)  # an approval is for a restore now, not next month


def restore_target(from_: str, to_time: str) -> str:
    """What a restore approval names: one backup, or one point in time (in UTC)."""
    if from_ and to_time:
        raise ConfigError("say --from ID or --to-time TIME, not both")
    if to_time.strip().lower() == LATEST:
        return f"time {LATEST}"
    if to_time:
        return f"time {_when(to_time).astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
    return f"backup {from_ if is_label(from_) else check_id(from_)}"


def restore_approvers(
    records: Sequence[Mapping[str, Any]], target: str, requester: str, now: datetime
) -> list[str]:
    """Who approved this restore, by the deploy's rule (someone other than the one who
    runs it): approvals of the same target in the trail, newer than a day and than the
    environment's last restore (an approval is spent by the restore it was for)."""
    by: list[str] = []
    for r in records:
        detail = r.get("detail")
        detail = detail if isinstance(detail, Mapping) else {}
        if r.get("action") == "restore" and r.get("outcome") != "started":
            by = []
        elif r.get("action") == "restore-approval" and detail.get("target") == target:
            who = person(str(r.get("who", "")))
            try:
                at = datetime.fromisoformat(str(r.get("at")))
            except ValueError:
                continue
            fresh = at.tzinfo is not None and now - at <= APPROVAL_TTL
            if fresh and who and who != person(requester) and who not in by:
                by.append(who)
    return by


def person(who: str) -> str:
    """The person in a trail's `who` ("ann@example.org on host-1"), whichever host."""
    return who.split(" on ", 1)[0].strip().lower()


SCHEDULED = "scheduled-backup"  # the trail's action for a run of the backup schedule


def unrecorded(
    runs: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    action: str = SCHEDULED,
) -> list[Mapping[str, Any]]:
    """The runs of a log kept elsewhere (the schedule's on the second site; the swarm's
    autoscaler's), newer than the newest one the trail holds as `action`."""
    seen = [
        str((r.get("detail") or {}).get("run_at", "")) for r in records if r.get("action") == action
    ]
    newest = max(seen, default="")
    return [r for r in runs if isinstance(r.get("at"), str) and r["at"] > newest]
