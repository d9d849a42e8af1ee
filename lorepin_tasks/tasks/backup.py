"""Logical backups of an environment's database: `backup.key`, `backup.create`,
`backup.list`, `backup.verify`, `backup.restore`, `backup.prune`.

A backup is `pg_dump -Fc` encrypted with age to the environment's recipients, with a
JSON manifest (rows per table, schema revision, SHA-256) beside it in the environment's
backups directory. Verification restores it into a throwaway PostgreSQL and starts the
CMS of the backup's version against it. A restore stops the CMS, takes a safety backup,
and replaces the data in one transaction that checks the rows before it commits.

Config (invoke.yaml, `lorepin.environments.<name>.backup`): `recipients` (age public keys
that can also decrypt), `keep` (`last`, `daily`, `weekly`, `monthly`: what `backup.prune`
keeps). The environment's key is `backup.key` in its secrets_dir. See docs/backups.md.
"""

from __future__ import annotations

import json
import os
import secrets as random
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, NothingToDo, Refused, last_line
from lorepin_tasks.plans import backup as plan
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.runtime import backups, docker, git, ops, replication, throwaway
from lorepin_tasks.runtime import secrets as secrets_mod
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.runtime.throwaway import Throwaway
from lorepin_tasks.runtime.trail import Trail, carry_over, mirrored
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    ENV_HELP,
    JSON_HELP,
    YES_HELP,
    locked,
    open_env,
    task,
)

VERIFY_TIMEOUT = 120.0  # seconds the throwaway database and CMS have to come up


def _open(c: Context, env: str, dry_run: bool, *, owned: bool = True) -> EnvContext:
    """The environment, and (unless the caller checks its input first and then calls
    `_owned`) a refusal when its project belongs to another checkout."""
    ctx = open_env(c, env or "local", dry_run=dry_run)
    if owned:
        _owned(ctx)
    return ctx


def _owned(ctx: EnvContext) -> None:
    docker.ensure_owned(ctx)


def _who(ctx: EnvContext) -> str:
    return git.who_am_i(ctx.run, ctx.settings.root)


# -- create ----------------------------------------------------------------------------


def create_logical(ctx: EnvContext, reason: str, *, pin: bool = False) -> dict[str, Any]:
    """Take a logical backup (the caller holds the environment's lock); its manifest.

    Row counts and the schema revision are read in the same snapshot pg_dump dumps, so
    the manifest describes exactly what the file holds.
    """
    plan.check_reason(reason)
    directory = ctx.env.backups_dir
    if not ctx.run.dry_run:
        backups.writable(ctx)
    db = throwaway.db_container(ctx) if not ctx.run.dry_run else None
    version, cms = throwaway.serving(ctx) if not ctx.run.dry_run else (None, [])
    to = backups.recipients(ctx)  # may make the environment's key: after the checks
    started = datetime.now(UTC)
    id_ = plan.backup_id(started, backups.ids(ctx))
    ctx.run.say(f"==> {ctx.env.name}: backing up the database ({reason}) as {id_}")
    if ctx.run.dry_run:
        ctx.run.pipe(plan.dump(ctx.env, None), env=ctx.engine)
        ctx.run.say(f"  | age -r {' -r '.join(to) or 'RECIPIENT'} > {plan.data_path(ctx.env, id_)}")
        return {"id": id_}
    for leftover in backups.leftovers(ctx):  # a run killed mid-backup (we hold the lock)
        ctx.run.say(f"    removing {leftover.name}, left by a backup that did not finish")
        leftover.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    final = plan.data_path(ctx.env, id_)
    partial = final.with_name(final.name + plan.PARTIAL_SUFFIX)
    who = _who(ctx)
    with Session(ctx.run, deploy_plan.psql(ctx.env, who), ctx.engine, "database", quiet=True) as s:
        role = s.scalar(plan.DUMP_ROLE_SQL)
        s.query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = s.scalar("SELECT pg_export_snapshot()")
        tables = [row[0] for row in s.query(plan.TABLES_SQL)]
        counts = {row[0]: int(row[1]) for row in s.query(plan.count_sql(tables))}
        revision = s.scalar(plan.REVISION_SQL) or None
        server = s.scalar("SHOW server_version") or ""
        sizes: dict[str, Any] = {}

        def into_file(source: IO[bytes]) -> None:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as sink:
                plain, stored, digest = backups.encrypt(source, sink, to)
                sink.flush()
                os.fsync(sink.fileno())
            sizes.update(plain=plain, stored=stored, sha256=digest)

        try:
            dump = plan.dump(ctx.env, snapshot, role=role)
            ctx.run.pipe(dump, env=ctx.engine, read=into_file)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise LorePinError(
                f"cannot write the backup into {directory}: {exc.strerror or exc}; "
                "nothing was kept (free space there and try again)"
            ) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        s.query("COMMIT")
    if not sizes.get("plain"):
        partial.unlink(missing_ok=True)
        raise LorePinError(f"pg_dump of '{ctx.env.name}' produced nothing; no backup was kept")
    partial.replace(final)
    images = {
        "postgres": db.image_id if db else None,
        "cms": throwaway.image_id(ctx, cms[0]) if cms else None,
    }
    manifest = plan.manifest(
        id_=id_,
        env=ctx.env,
        reason=reason,
        who=who,
        started=started,
        finished=datetime.now(UTC),
        version=version,
        revision=revision,
        tables=counts,
        dump_bytes=sizes["plain"],
        data_bytes=sizes["stored"],
        sha256=sizes["sha256"],
        recipients=to,
        server=server,
        pinned=pin,
    )
    manifest["images"] = images
    backups.write_manifest(ctx, id_, manifest)
    ctx.run.say(
        f"    {id_}: {manifest['rows']} rows in {len(counts)} tables, "
        f"{sizes['stored'] / 1e6:.1f} MB encrypted, {manifest['seconds']:.1f} s"
    )
    return manifest


@task(
    help={
        "env": ENV_HELP,
        "type": "logical (pg_dump, age; default), or full, diff, incr (pgBackRest; server "
        "environments)",
        "reason": "why, recorded in the manifest (default: manual)",
        "pin": "keep it through every prune",
        "repo": "physical only: 1 (beside the database, default) or 2 (the second site)",
        "json": JSON_HELP,
        "dry_run": DRY_HELP,
    }
)
def create(
    c: Context,
    env: str = "",
    type: str = "logical",
    reason: str = "manual",
    pin: bool = False,
    repo: str = "1",
    json_: bool = False,
    dry_run: bool = False,
) -> None:
    """Back up the environment's database: logical (pg_dump, age) or physical (pgBackRest
    full, diff or incr, with the WAL archive that allows point-in-time recovery)."""
    if type not in ("logical", *plan.PHYSICAL_TYPES):
        raise ConfigError(f"unknown backup type {type!r}: logical, full, diff or incr")
    plan.check_reason(reason)
    repo_n = _repo(repo)
    if type == "logical" and repo_n != 1:
        raise ConfigError("--repo is for physical backups (--type full, diff or incr)")
    ctx = _open(c, env, dry_run, owned=False)
    if type != "logical" and not ctx.env.is_server:
        raise ConfigError(
            f"physical backups ({type}) are for server environments, where WAL is archived: "
            f"use --type logical for '{ctx.env.name}'"
        )
    _owned(ctx)
    with locked(ctx, "backup.create"):
        if type == "logical":
            manifest = create_logical(ctx, reason, pin=pin)
        else:
            made = create_physical(ctx, type, repo=repo_n)
            manifest = {"id": made.label, **_physical_row(made)} if made else {}
    if json_ and not dry_run:
        print(json.dumps(manifest, indent=2, sort_keys=True))
    elif not dry_run:
        print(manifest["id"])


# -- physical (pgBackRest) ---------------------------------------------------------------


def physical_list(
    ctx: EnvContext, repo: int | None = None, *, db_down: bool = False
) -> list[plan.Physical]:
    """The environment's pgBackRest backups (of one repository), newest first. With the
    database stopped: repo2 read by the second site, repo1 by a one-off of the database."""
    only = [f"--repo={repo}"] if repo else []
    if db_down and repo == 1:
        said = docker.run_oneoff(
            ops.as_deployed(ctx),
            compose.DB_SERVICE,
            plan.as_postgres(
                "pgbackrest", f"--stanza={plan.STANZA}", *only, "--output=json", "info"
            ),
            kind="pgbackrest-info",
            capture=True,
        )
        return _physical(said)
    where = {"on": plan.SITE} if db_down else {}
    try:
        answer = ctx.run.run(
            plan.pgbackrest(ctx.env, *only, "--output=json", "info", **where),
            env=ctx.engine,
            capture=True,
            check=False,
            mutates=False,
            quiet=True,
            timeout=60,
        )
    except LorePinError:
        raise LorePinError(
            f"pgBackRest did not answer within 60 s for '{ctx.env.name}'"
            + (f" ({why})" if (why := _site_down(ctx)) else "")
        ) from None
    if not answer.ok:
        why = answer.stderr.strip().splitlines()[-1] if answer.stderr.strip() else "no answer"
        raise LorePinError(
            f"pgBackRest cannot read the repository of '{ctx.env.name}': {ctx.run.redact(why)}"
        )
    return _physical(answer.stdout)


def _physical(info: str) -> list[plan.Physical]:
    try:
        found, _ = plan.physical(json.loads(info or "[]"))
    except (ValueError, KeyError, TypeError):
        raise LorePinError("pgBackRest's info is not what this toolkit reads") from None
    return found


def _repo(value: str) -> int:
    if str(value).strip() not in ("1", "2"):
        raise ConfigError(
            f"invalid --repo {value!r}: 1 (beside the database) or 2 (the second site)"
        )
    return int(value)


def _site_down(ctx: EnvContext) -> str | None:
    """Why the second site cannot take part (None: it runs)."""
    name = deploy_plan.container(ctx.env, plan.SITE)
    found = docker.container(ctx, name)
    if found is not None and found.state == "running":
        return None
    return (
        f"the second site ({name}) of '{ctx.env.name}' is not running, and WAL archiving "
        f"and repo2 wait for it: start it (`docker start {name}`)"
    )


def create_physical(ctx: EnvContext, kind: str, *, repo: int = 1) -> plan.Physical | None:
    """A pgBackRest backup of the running database (the caller holds the lock): into repo1
    from the database's host, or into repo2 by the second site's repository host. Waits
    for a backup already running (the schedule's) rather than failing on its lock."""
    if not ctx.run.dry_run:
        throwaway.db_container(ctx)
        if repo == 2 and (why := _site_down(ctx)):
            raise LorePinError(why)
    where = "the second site" if repo == 2 else "beside the database"
    ctx.run.say(f"==> {ctx.env.name}: {kind} backup with pgBackRest, {where} (repo{repo})")
    before = {b.label for b in physical_list(ctx, repo)} if not ctx.run.dry_run else set()
    command = (
        plan.pgbackrest(ctx.env, f"--type={kind}", "backup", on=plan.SITE)
        if repo == 2
        else plan.pgbackrest(ctx.env, "--repo=1", f"--type={kind}", "backup")
    )
    if not ctx.run.dry_run:
        # A database promoted moments ago (a rejoin, a restore) writes its new timeline
        # into pg_control only at its next checkpoint, and pgBackRest refuses a backup
        # until then ("WAL timeline 3 does not match pg_control timeline 2").
        ops.db_value(ctx, ops.primary(ctx), "CHECKPOINT")
    done = ops.pgbackrest(ctx, command)
    if not done.ok and not ctx.run.dry_run:
        errors = [ln.strip() for ln in done.stderr.splitlines() if "ERROR" in ln]
        why = (errors[0] if errors else last_line(done.stderr)) or f"exit code {done.returncode}"
        hint = _site_down(ctx)
        raise LorePinError(f"pgBackRest: {why}" + (f" ({hint})" if hint else ""))
    if ctx.run.dry_run:
        return None
    new = [b for b in physical_list(ctx, repo) if b.label not in before]
    if not new:
        raise LorePinError("pgBackRest ended without a new backup; see its messages above")
    made = new[0]
    ctx.run.say(
        f"    {made.label}: {made.type}, {made.stored / 1e6:.1f} MB stored, "
        f"{(made.stop - made.start).total_seconds():.0f} s"
    )
    return made


def _physical_row(b: plan.Physical) -> dict[str, Any]:
    return {
        "type": b.type,
        "repo": b.repo,
        "status": "unusable" if b.error else "ok",
        "started_at": b.start.isoformat(timespec="seconds"),
        "finished_at": b.stop.isoformat(timespec="seconds"),
        "bytes": b.stored,
        "database_bytes": b.bytes,
    }


@task(help={"env": ENV_HELP})
def key(c: Context, env: str = "") -> None:
    """Create the environment's backup key (age) if it has none; print its public key."""
    ctx = open_env(c, env or "local", dry_run=False)
    path = backups.identity_path(ctx)
    if path.exists():
        have = backups.load_identity(ctx).to_public()
        raise NothingToDo(f"'{ctx.env.name}' has a backup key already ({path}); public: {have}")
    public = backups.new_identity(path)
    ctx.run.say(f"created {path}: keep a copy off this machine, or no backup can be decrypted")
    print(public)


# -- list ------------------------------------------------------------------------------


def _database_up(ctx: EnvContext) -> bool:
    try:
        throwaway.db_container(ctx)
    except LorePinError:
        return False
    return True


def _row(b: plan.Backup) -> dict[str, Any]:
    m = b.manifest or {}
    verified = m.get("verified") or {}
    return {
        "id": b.id,
        "type": "logical",
        "finished_at": m.get("finished_at"),
        "status": "ok" if b.good else "unusable",
        "problem": b.problem or (f"failed verification: {b.failed}" if b.failed else None),
        "reason": m.get("reason"),
        "version": m.get("version"),
        "schema_revision": m.get("schema_revision"),
        "rows": m.get("rows"),
        "bytes": b.data_bytes,
        "pinned": bool(m.get("pinned")),
        "verified": verified.get("ok") if verified else None,
        "verified_at": verified.get("at"),
    }


@task(name="list", help={"env": ENV_HELP, "json": JSON_HELP})
def list_(c: Context, env: str = "", json_: bool = False) -> None:
    """List the environment's backups, newest first: status, version, rows, verified."""
    ctx = open_env(c, env or "local", dry_run=False)
    rows = [_row(b) for b in backups.listed(ctx)]
    physical: list[plan.Physical] = []
    down = None
    if ctx.env.is_server:
        try:
            throwaway.db_container(ctx)  # pgBackRest runs beside the database
        except LorePinError as exc:
            down = str(exc)
            ctx.run.say(f"warning: the physical backups are not listed: {down}")
    if ctx.env.is_server and down is None:
        for repo in (1, 2):
            try:
                why = _site_down(ctx) if repo == 2 else None
                if why:
                    raise LorePinError(why)
                physical += physical_list(ctx, repo)
            except LorePinError as exc:  # what can be listed still is
                ctx.run.say(f"warning: repo{repo}'s backups are not listed: {exc}")
    if physical:
        rows += [
            {
                "id": b.label,
                **_physical_row(b),
                "problem": "a page checksum error" if b.error else None,
                "reason": f"physical {b.type}, repo{b.repo}",
                "version": None,
                "schema_revision": None,
                "rows": None,
                "pinned": False,
                "verified": None,
                "verified_at": None,
            }
            for b in physical
        ]
        rows.sort(key=lambda r: str(r.get("finished_at") or r["id"]), reverse=True)
    if json_:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(f"'{ctx.env.name}' has no backups yet (`invoke backup.create --env {ctx.env.name}`)")
        return
    head = ("ID", "STATUS", "VERSION", "REVISION", "ROWS", "MB", "VERIFIED", "REASON")
    print("{:19} {:9} {:10} {:9} {:>8} {:>8}  {:8}  {}".format(*head))
    for r in rows:
        verified = {True: "yes", False: "FAILED", None: "-"}[r["verified"]]
        size = f"{r['bytes'] / 1e6:.1f}" if r["bytes"] is not None else "-"
        print(
            f"{r['id']:19} {r['status']:9} {r['version'] or '-'!s:10} "
            f"{r['schema_revision'] or '-'!s:9} {r['rows'] if r['rows'] is not None else '-'!s:>8} "
            f"{size:>8}  {verified:8}  {r['reason'] or r['problem']}"
            + (" (pinned)" if r["pinned"] else "")
        )


# -- verify ----------------------------------------------------------------------------


def usable(ctx: EnvContext, id_: str, *, verifying: bool = False) -> tuple[plan.Backup, Any]:
    """A backup that can be restored: of this environment, manifest, checksum, a key that
    decrypts it, and (to restore it) no failed verification."""
    backup = backups.find(ctx, id_)
    if backup.problem:
        raise Refused(f"backup {backup.id} is unusable: {backup.problem}")
    of = (backup.manifest or {}).get("environment")
    if of != ctx.env.name:
        raise Refused(f"backup {backup.id} is of '{of}', not '{ctx.env.name}'")
    if backup.failed and not verifying:
        raise Refused(
            f"backup {backup.id} failed its verification ({backup.failed}): verify it again "
            f"(`invoke backup.verify --env {ctx.env.name} --id {backup.id}`) or pick another"
        )
    try:
        backups.check_sum(ctx, backup)
        identity = backups.load_identity(ctx)
        backups.check_key(
            plan.data_path(ctx.env, backup.id), identity, backup.id, backups.identity_path(ctx)
        )
    except Refused as exc:
        if verifying:  # a verification that failed is recorded: list and prune see it
            _record_verification(ctx, backup, str(exc))
        raise
    return backup, identity


def _record_verification(ctx: EnvContext, backup: plan.Backup, problem: str) -> None:
    manifest = dict(backup.manifest or {})
    manifest["verified"] = {
        "ok": False,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "problem": problem,
    }
    backups.write_manifest(ctx, backup.id, manifest)


def _newest(ctx: EnvContext) -> str:
    found = [b for b in backups.listed(ctx) if b.good]
    if not found:
        raise LorePinError(f"'{ctx.env.name}' has no usable backup to verify")
    return found[0].id


def _sql(t: Throwaway, sql: str) -> list[str]:
    answer = t.docker(
        "exec",
        t.names["db"],
        "psql",
        "-qtAX",
        "-U",
        "lorepin",
        "-d",
        "lorepin",
        "-c",
        sql,
        quiet=True,
    )
    return [line for line in answer.stdout.splitlines() if line]


def start_copy(ctx: EnvContext, t: Throwaway, image: str, deadline: float) -> None:
    """A throwaway PostgreSQL of `image` on a network of its own, answering (the caller
    removes it, however it ends)."""
    t.create_network()
    t.start("db", image, dict(plan.THROWAWAY_DB_ENV))
    ready = ["exec", t.names["db"], "pg_isready", "-q", "-h", "127.0.0.1", "-U", "lorepin",
             "-d", "lorepin"]  # fmt: skip
    throwaway.wait_for(
        deadline, "throwaway database", lambda: t.docker(*ready, check=False, quiet=True).ok
    )


def restore_copy(
    ctx: EnvContext, t: Throwaway, backup: plan.Backup, identity: Any, image: str, deadline: float
) -> None:
    """A throwaway PostgreSQL of `image` with the backup restored into it (the caller
    removes it, however it ends)."""
    start_copy(ctx, t, image, deadline)
    # The roles' grants stay out: the scratch copy's owner is all there is.
    restore = ["pg_restore", "-U", "lorepin", "-d", "lorepin", "--exit-on-error", "--no-owner",
               "--no-privileges"]  # fmt: skip
    ctx.run.pipe(
        [*compose.docker(ctx.env), "exec", "-i", t.names["db"], *restore],
        env=ctx.engine,
        write=lambda sink: backups.decrypt(
            plan.data_path(ctx.env, backup.id), sink, identity, backup.id
        ),
    )


def rows_against(t: Throwaway, manifest: Mapping[str, Any]) -> tuple[int, str | None]:
    """The rows of the copy's tables, and the first table whose count is not the manifest's."""
    tables = dict(manifest.get("tables") or {})
    found = {
        name: int(rows)
        for name, _, rows in (row.rpartition("|") for row in _sql(t, plan.count_sql(list(tables))))
    }
    wrong = {k: (found.get(k), v) for k, v in tables.items() if found.get(k) != v}
    if not wrong:
        return sum(found.values()), None
    name, (got, want) = next(iter(wrong.items()))
    return sum(found.values()), f"{name} has {got} rows, the manifest says {want}"


def verify_one(ctx: EnvContext, id_: str) -> dict[str, Any]:
    """Restore a backup into a throwaway PostgreSQL, compare it with its manifest, start
    the CMS of its version against it; the checks (recorded in the manifest)."""
    backup, identity = usable(ctx, id_, verifying=True)
    manifest = dict(backup.manifest or {})
    images = manifest.get("images") or {}
    started = time.monotonic()
    t = Throwaway(
        ctx,
        backup.id,
        plan.verify_names(ctx.env, backup.id, random.token_hex(3)),
        random.token_urlsafe(24),
    )
    ctx.run.add_secret(t.password)
    db_image = images.get("postgres") or f"{ctx.settings.image_prefix}/postgres:{ctx.env.image_tag}"
    checks: dict[str, Any] = {"checksum": True, "decrypts": True}
    problems: list[str] = []
    ctx.run.say(f"==> {ctx.env.name}: verifying {backup.id} in a throwaway database")
    try:
        deadline = time.monotonic() + VERIFY_TIMEOUT
        restore_copy(ctx, t, backup, identity, db_image, deadline)
        checks["restored"] = True
        revision = (_sql(t, plan.REVISION_SQL) or [""])[0] or None
        checks["schema_revision"] = revision
        if revision != manifest.get("schema_revision"):
            problems.append(
                f"schema revision {revision}, manifest {manifest.get('schema_revision')}"
            )
        checks["rows"], wrong = rows_against(t, manifest)
        if wrong:
            problems.append(wrong)
        checks["cms_ready"] = _cms_ready(ctx, t, images.get("cms"), deadline)
        if checks["cms_ready"] is False:
            problems.append("the CMS of the backup's version is not ready against it")
    except LorePinError as exc:
        problems.append(str(exc))
    finally:
        t.remove()
    seconds = round(time.monotonic() - started, 1)
    verified = {
        "ok": not problems,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": seconds,
        "checks": checks,
        "problem": problems[0] if problems else None,
    }
    manifest["verified"] = verified
    backups.write_manifest(ctx, backup.id, manifest)
    return verified


def _cms_ready(ctx: EnvContext, t: Throwaway, image: str | None, deadline: float) -> bool | None:
    """The CMS's /readyz against the restored copy (None: its image is not on this engine)."""
    if not image or not t.docker("image", "inspect", image, check=False, quiet=True).ok:
        ctx.run.say(
            "    (the CMS image of the backup's version is not on this engine: not started)"
        )
        return None
    t.start(
        "cms",
        image,
        {
            "LOREPIN_DB_HOST": t.names["db"],
            "LOREPIN_DB_USER": "lorepin",
            "LOREPIN_DB_NAME": "lorepin",
            "LOREPIN_DB_PASSWORD_FILE": plan.PASSWORD_FILE,
        },
    )
    with suppress(LorePinError):
        throwaway.wait_for(deadline, "throwaway CMS", t.cms_ready)
        return True
    return False


def verify_physical(ctx: EnvContext, label: str) -> dict[str, Any]:
    """A physical backup proved where its repository is: pgBackRest's verify of the
    repository (repo1 beside the database, repo2 on the second site), then the set
    restored into a throwaway database (that repository's volume mounted read-only),
    recovered to its end, its schema revision read, and the serving CMS started on it."""
    db = throwaway.db_container(ctx)
    repo = {b.label: b.repo for b in physical_list(ctx)}.get(label)
    if repo is None:
        raise LorePinError(
            f"'{ctx.env.name}' has no physical backup {label} "
            f"(see `invoke backup.list --env {ctx.env.name}`)"
        )
    if repo == 2 and (why := _site_down(ctx)):
        raise LorePinError(why)
    started = time.monotonic()
    checks: dict[str, Any] = {"repo": repo}
    problems: list[str] = []
    ctx.run.say(f"==> {ctx.env.name}: pgBackRest verify of repo{repo}")
    done = ctx.run.run(
        plan.pgbackrest(
            ctx.env, f"--repo={repo}", "verify", on=plan.SITE if repo == 2 else compose.DB_SERVICE
        ),
        env=ctx.engine,
        check=False,
        capture=True,
    )
    checks["repository"] = done.ok
    if not done.ok:
        problems.append(f"pgBackRest verify: {last_line(done.stderr) or done.returncode}")
    password = (ctx.env.secrets_dir / "db_password").read_text().strip()
    cipher = (ctx.env.secrets_dir / secrets_mod.BACKUP_PASSPHRASE).read_text().strip()
    t = Throwaway(
        ctx, label, plan.verify_names(ctx.env, label.lower(), random.token_hex(3)), password
    )
    restore = shlex.join(
        ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "pgbackrest",
         f"--stanza={plan.STANZA}", "--repo=1", f"--set={label}", "--type=immediate",
         "--target-action=promote", "restore"]
    )  # fmt: skip
    _, version_cms = throwaway.serving(ctx)
    cms_image = throwaway.image_id(ctx, version_cms[0]) if version_cms else None
    ctx.run.say(f"==> {ctx.env.name}: restoring {label} into a throwaway database")
    try:
        t.create_network()
        t.start(
            "db",
            db.image_id,
            {"LOREPIN_BACKUP_CIPHER_FILE": f"{Path(plan.PASSWORD_FILE).parent}/lorepin-cipher"},
            # The repository, read-only, as the throwaway's own repo1 (both sites use
            # one passphrase): repo2 is restored where it is kept, as the site would.
            args=["-v", f"{ctx.env.project}_{plan.VOLUMES[repo]}:/var/lib/pgbackrest:ro"],
            command=["bash", "-c",
                     f'chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA" && {restore} '
                     "&& exec docker-entrypoint.sh postgres"],
            files={Path(plan.PASSWORD_FILE).name: password, "lorepin-cipher": cipher},
        )  # fmt: skip
        deadline = time.monotonic() + VERIFY_TIMEOUT

        try:
            throwaway.wait_for(deadline, "throwaway restored database", t.takes_writes)
            checks["restored"] = True
            checks["schema_revision"] = (_sql(t, plan.REVISION_SQL) or [""])[0] or None
            checks["cms_ready"] = _cms_ready(ctx, t, cms_image, deadline)
            if checks["cms_ready"] is False:
                problems.append("the serving CMS is not ready against it")
        except LorePinError as exc:
            checks["restored"] = False
            problems.append(str(exc))
    finally:
        t.remove()
    return {
        "ok": not problems,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "checks": checks,
        "problem": problems[0] if problems else None,
    }


@task(
    help={
        "id": "the backup to verify: a logical id (default: the newest usable one) or a "
        "physical label (of either repository)",
        "env": ENV_HELP,
        "json": JSON_HELP,
        "dry_run": DRY_HELP,
    },
)
def verify(
    c: Context, id: str = "", env: str = "", json_: bool = False, dry_run: bool = False
) -> None:
    """Prove a backup restores: checksum, key, a real restore into a throwaway PostgreSQL,
    rows and schema against its manifest, and the CMS ready on it."""
    if id and not plan.is_label(id):
        plan.check_id(id)
    ctx = _open(c, env, dry_run, owned=False)
    if id and plan.is_label(id) and not ctx.env.is_server:
        raise ConfigError(f"'{ctx.env.name}' has no physical backups")
    _owned(ctx)
    if id and plan.is_label(id):  # a physical backup, of repo1 or repo2
        if dry_run:
            ctx.run.say(
                f"+ pgbackrest verify; restore {id} into a throwaway database, start the CMS"
            )
            return
        with locked(ctx, "backup.verify"):
            result = verify_physical(ctx, id)
        _say_verified(id, result, json_)
        return
    id_ = plan.check_id(id) if id else _newest(ctx)
    if dry_run:
        usable(ctx, id_, verifying=True)
        ctx.run.say(f"+ restore {id_} into a throwaway database, compare, start the CMS")
        return
    with locked(ctx, "backup.verify"):
        result = verify_one(ctx, id_)
    _say_verified(id_, result, json_)


def _say_verified(id_: str, result: dict[str, Any], json_: bool) -> None:
    if json_:
        print(json.dumps({"id": id_, **result}, indent=2))
    if not result["ok"]:
        raise LorePinError(f"backup {id_} failed verification: {result['problem']}")
    if not json_:
        checks = result["checks"]
        cms = {True: "ready", None: "not started (image absent)", False: "not ready"}[
            checks.get("cms_ready")
        ]
        rows = f"{checks['rows']} rows, " if "rows" in checks else ""
        print(
            f"{id_}: restores ({rows}revision {checks['schema_revision']}), "
            f"CMS {cms}, {result['seconds']} s"
        )


# -- restore ---------------------------------------------------------------------------


def _live_revision(ctx: EnvContext) -> str | None:
    answer = ctx.run.run(
        plan.db_exec(
            ctx.env, ["psql", "-qtAX", "-U", "lorepin", "-d", "lorepin", "-c", plan.REVISION_SQL]
        ),
        env=ctx.engine,
        capture=True,
        mutates=False,
        quiet=True,
    )
    return answer.stdout.strip() or None


def _put(ctx: EnvContext, path: str, text: str) -> None:
    ctx.run.pipe(
        plan.put_file(ctx.env, path), env=ctx.engine, write=lambda s: s.write(text.encode())
    )


def _restore_data(ctx: EnvContext, backup: plan.Backup, identity: Any) -> None:
    """Replace the live data with the backup's in one transaction (all or nothing)."""
    data = plan.data_path(ctx.env, backup.id)
    ctx.run.pipe(
        plan.db_exec(ctx.env, ["bash", "-c", f"pg_restore -l > {plan.TOC_FILE}"], stdin=True),
        env=ctx.engine,
        write=lambda sink: backups.decrypt(data, sink, identity, backup.id),
    )
    toc_text = ctx.run.run(
        plan.db_exec(ctx.env, ["cat", plan.TOC_FILE]),
        env=ctx.engine,
        capture=True,
        quiet=True,
    ).stdout
    if "Selected TOC Entries" not in toc_text and not ctx.run.dry_run:
        raise Refused(f"backup {backup.id} holds no pg_dump archive")
    for path, text in (
        (plan.LIST_FILE, plan.restore_list(toc_text)),
        (plan.HEAD_FILE, plan.RESTORE_HEAD),
        (plan.TAIL_FILE, plan.restore_tail(dict(backup.manifest or {}))),
    ):
        _put(ctx, path, text)
    done = ctx.run.pipe(
        plan.restore_into_live(ctx.env),
        env=ctx.engine,
        write=lambda sink: backups.decrypt(data, sink, identity, backup.id),
        check=False,
    )
    if not done.ok:  # the transaction rolled back: the live data is as it was
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        check = next((ln for ln in lines if "restore check:" in ln), None)
        if check:
            raise Refused(
                f"backup {backup.id} does not match its manifest "
                f"({check.partition('restore check: ')[2]}); nothing was changed"
            )
        error = next((ln for ln in lines if ln.startswith(("ERROR", "psql:", "pg_restore:"))), "")
        why = ctx.run.redact(error or "no message")
        raise LorePinError(f"restoring {backup.id} failed, nothing was changed: {why}")


@task(
    help={
        "env": ENV_HELP,
        "from": "the backup to restore: a logical id or a physical label (`invoke backup.list`)",
        "to_time": "point-in-time recovery: the database as it was then, like "
        "2026-11-30T14:03:17Z, or `latest` (all the archived WAL) (server environments)",
        "repo": "physical restores: the repository to restore from, 1 (default) or 2 (the "
        "second site)",
        "schema_change": "restore a backup whose schema revision differs from the live one",
        "break_glass": "why a restore of an environment that needs approvals goes ahead "
        "(recorded and announced)",
        "no_safety_backup": "physical restores of a database that cannot start: no safety "
        "backup (its data directory is copied aside instead)",
        "yes": YES_HELP,
        "dry_run": DRY_HELP,
    }
)
def restore(
    c: Context,
    env: str = "",
    from_: str = "",
    to_time: str = "",
    repo: str = "1",
    schema_change: bool = False,
    break_glass: str = "",
    no_safety_backup: bool = False,
    yes: bool = False,
    dry_run: bool = False,
) -> None:
    """Put a backup back: stop the CMS, take a safety backup, replace the data in one
    checked transaction, start the CMS, record it. Or, on a server environment, a
    physical backup or a point in time (--to-time) with pgBackRest."""
    target = plan.restore_target(from_, to_time)
    if len(break_glass.strip().splitlines()) > 1:
        raise ConfigError("say the --break-glass reason in one line (it is recorded and sent)")
    physical_ = bool(to_time) or plan.is_label(from_)
    id_ = from_ if physical_ else plan.check_id(from_)
    ctx = _open(c, env, dry_run, owned=False)
    if physical_ and not ctx.env.is_server:
        raise ConfigError(
            f"physical restores are for server environments; '{ctx.env.name}' has logical "
            "backups only (--from ID)"
        )
    if no_safety_backup and not physical_:
        raise ConfigError(
            "--no-safety-backup is for physical restores (--to-time or a pgBackRest label) "
            "of a database that cannot start"
        )
    # A logical backup is checked first (files here: its manifest, checksum and key).
    backup, identity = (None, None) if physical_ else usable(ctx, id_)
    _owned(ctx)
    if not break_glass.strip():
        _check_approved(ctx, target)
    if backup is None:  # physical
        _restore_physical(
            ctx,
            from_,
            to_time,
            repo=_repo(repo),
            yes=yes,
            reason=break_glass.strip() or None,
            no_safety_backup=no_safety_backup,
        )
        return
    manifest = dict(backup.manifest or {})
    throwaway.db_container(ctx)
    live = _live_revision(ctx)
    if live != manifest.get("schema_revision") and not schema_change:
        raise Refused(
            f"backup {id_} is at schema revision {manifest.get('schema_revision')}, "
            f"'{ctx.env.name}' at {live}: deploy the release of that schema first, or pass "
            "--schema-change"
        )
    version, writers = throwaway.serving(ctx)
    if not dry_run:
        backups.writable(ctx)  # the safety backup must have somewhere to go
    confirm(
        f"Replace the data of '{ctx.env.name}' with backup {id_} "
        f"(taken {manifest.get('started_at')}, {manifest.get('rows')} rows)? The CMS stops "
        "until it is done; a safety backup is taken first.",
        yes=yes or dry_run,
    )
    who = _who(ctx)
    reason = break_glass.strip() or None
    with ExitStack() as stack:
        stack.enter_context(locked(ctx, "backup.restore"))
        session = (
            stack.enter_context(ops.deploy_lock(ctx, who, f"restore {id_}"))
            if ctx.env.is_server
            else None
        )
        trail = ops.open_trail(ctx, session, who)
        ops.record(
            trail, ctx, who, "restore", version, "started", {"backup": id_, "break_glass": reason}
        )
        started = time.monotonic()
        outcome, safety = "failed", None
        try:
            with _writes_stopped(ctx, writers):
                safety = create_logical(ctx, f"before-restore-{id_.lower()}")["id"]
                ctx.run.say(f"==> {ctx.env.name}: restoring {id_}")
                _restore_data(ctx, backup, identity)
                outcome = "restored"
        finally:
            seconds = round(time.monotonic() - started, 1)
            ops.record(
                trail,
                ctx,
                who,
                "restore",
                version,
                outcome,
                {"backup": id_, "safety_backup": safety, "seconds": seconds, "break_glass": reason},
            )
            ops.notify_team(
                ctx, f"{ctx.env.name}: restore of {id_} {outcome} ({seconds} s, before: {safety})"
            )
        _ready_after(ctx, writers, version)
    if not dry_run:
        print(f"{ctx.env.name}: restored {id_} in {seconds} s; the data before it is {safety}")


def _check_approved(ctx: EnvContext, target: str) -> None:
    """A restore of an environment whose deploys need approvals needs as many, from
    others than the one restoring (`backup.approve`), or a --break-glass reason."""
    needed = ctx.env.deploy.approvals if ctx.env.deploy else 0
    if not needed:
        return
    who = _person(ctx)
    if not _database_up(ctx):
        raise Refused(
            f"restoring '{ctx.env.name}' needs {needed} approval(s), kept in its database's "
            "trail, which is not running: say why it cannot wait with --break-glass REASON "
            "(recorded and announced)"
        )
    with _ops_session(ctx, who) as session:
        records = Trail(session, ctx.env.state_dir / "audit.jsonl").records()
    by = plan.restore_approvers(records, target, who, datetime.now(UTC))
    if len(by) < needed:
        how = target.replace("backup ", "--from ").replace("time ", "--to-time ")
        raise Refused(
            f"restoring '{ctx.env.name}' to {target} has {len(by)} of the {needed} "
            f"approval(s) it needs, like a deploy (`invoke backup.approve --env "
            f"{ctx.env.name} {how}` by someone else), or say why it cannot wait with "
            "--break-glass REASON (recorded and announced)"
        )
    ctx.run.say(f"approved by {', '.join(by)}")


def _ops_session(ctx: EnvContext, who: str) -> Session:
    """A session on the environment's database (its caller has seen it run)."""
    return Session(ctx.run, deploy_plan.psql(ctx.env, who), ctx.variables, "database", quiet=True)


@task(
    help={
        "env": ENV_HELP,
        "from": "the backup the restore will put back (as `backup.restore --from`)",
        "to_time": "or the point in time it will go back to (as `backup.restore --to-time`)",
        "dry_run": DRY_HELP,
    }
)
def approve(
    c: Context, env: str = "", from_: str = "", to_time: str = "", dry_run: bool = False
) -> None:
    """Approve a restore of an environment that needs approvals (its deploy.approvals):
    recorded in its trail; the restore, run by someone else within a day, counts it."""
    target = plan.restore_target(from_, to_time)
    ctx = _open(c, env, dry_run)
    if not (ctx.env.deploy and ctx.env.deploy.approvals):
        raise NothingToDo(f"restores of '{ctx.env.name}' need no approval")
    who = _person(ctx)
    throwaway.db_container(ctx)  # the trail the approval goes into is in it
    if to_time or plan.is_label(from_):  # only what a restore could reach is approved
        found = physical_list(ctx)
        if to_time:
            plan.target_time(to_time, datetime.now(UTC), found)
        elif from_ not in {b.label for b in found}:
            raise LorePinError(
                f"'{ctx.env.name}' has no physical backup {from_} "
                f"(see `invoke backup.list --env {ctx.env.name}`)"
            )
    elif from_ not in backups.ids(ctx):
        raise LorePinError(
            f"'{ctx.env.name}' has no backup {from_} (see `invoke backup.list --env "
            f"{ctx.env.name}`)"
        )
    with _ops_session(ctx, who) as session:
        records = Trail(session, ctx.env.state_dir / "audit.jsonl").records()
    if plan.person(who) in plan.restore_approvers(records, target, "", datetime.now(UTC)):
        raise NothingToDo(f"you approved restoring '{ctx.env.name}' to {target} already")
    if ctx.run.dry_run:
        ctx.run.say(f"dry run: {who}'s approval of restoring {target} was not recorded")
        return
    with ops.deploy_lock(ctx, who, f"approve restore {target}") as session:
        ops.record(
            ops.open_trail(ctx, session, who), ctx, who, "restore-approval", None, "approved",
            {"target": target},
        )  # fmt: skip
    print(
        f"{ctx.env.name}: restore to {target} approved by {who} (it counts for a restore "
        "run by someone else within a day)"
    )


def _person(ctx: EnvContext) -> str:
    """Who acts, for an approval: a person (git's user.email), not a machine's account."""
    who = _who(ctx)
    if "@" not in plan.person(who):
        raise ConfigError(
            "approvals are given and counted by person: set your git identity first "
            "(`git config user.email you@example.org`)"
        )
    return who


@contextmanager
def _writes_stopped(
    ctx: EnvContext, writers: list[str], restart: Callable[[], bool] = lambda: True
) -> Iterator[None]:
    """The CMS containers stopped for the block and started again after it, however it
    ends (unless `restart` says the database cannot take them)."""
    if writers:
        ctx.run.say(f"==> {ctx.env.name}: stopping the CMS ({', '.join(writers)})")
        ctx.run.run([*compose.docker(ctx.env), "stop", *writers], env=ctx.engine, capture=True)
    try:
        yield
    finally:
        if writers and restart():
            ctx.run.say(f"==> {ctx.env.name}: starting the CMS")
            ctx.run.run(
                [*compose.docker(ctx.env), "start", *writers],
                env=ctx.engine,
                check=False,
                capture=True,
            )


def _db_down(ctx: EnvContext, no_safety_backup: bool) -> bool:
    """Whether the database container exists but does not run (it cannot start: scenario
    3). Such a restore takes no safety backup: it needs --no-safety-backup, and keeps the
    data directory aside instead."""
    found = docker.container(ctx, deploy_plan.container(ctx.env, compose.DB_SERVICE))
    if found is None:
        raise LorePinError(
            f"'{ctx.env.name}' has no database container: a restore needs the one its "
            "deploy made (its volumes); `invoke deploy` first"
        )
    down = not _answers(ctx, found.state == "running")
    if down:
        ops.refuse_failed_over(ctx)
    if down and not no_safety_backup:
        raise Refused(
            f"the database of '{ctx.env.name}' is not running, so no safety backup can be "
            "taken first; if it cannot start, --no-safety-backup restores anyway (its data "
            f"directory is copied aside first, into {plan.KEPT})"
        )
    if not down and no_safety_backup:
        raise ConfigError(
            f"--no-safety-backup is for a database that cannot start; that of "
            f"'{ctx.env.name}' runs: a safety backup is taken"
        )
    if not down and not ctx.run.dry_run:
        throwaway.db_container(ctx)
    return down


def _answers(ctx: EnvContext, running: bool, patience: float = 10.0) -> bool:
    """Whether the database answers a query (a running container gets some seconds: it may
    be starting; one that restarts in a loop never answers)."""
    deadline = time.monotonic() + (patience if running else 0)
    while True:
        if ops.db_value(ctx, compose.DB_SERVICE, "SELECT 1") == "1":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _restore_physical(
    ctx: EnvContext,
    label: str,
    to_time: str,
    *,
    repo: int,
    yes: bool,
    reason: str | None,
    no_safety_backup: bool = False,
) -> None:
    """The whole cluster back to a physical backup or a point in time: CMS stopped, a
    safety backup, the database stopped, pgBackRest restore, recovery, the CMS back. The
    audit trail is carried over: a restore never rewinds the environment's record. A
    database that cannot start is restored too (--no-safety-backup): its data directory
    is kept aside instead of backed up."""
    if not ctx.env.is_server:
        raise ConfigError(
            f"physical restores are for server environments; '{ctx.env.name}' has logical "
            "backups only (--from ID)"
        )
    # A dry run checks all of it too (reads only): it says what the real run would do.
    down = _db_down(ctx, no_safety_backup)
    if repo == 2 and (why := _site_down(ctx)):
        raise LorePinError(why)
    found = physical_list(ctx, repo, db_down=down)
    now = datetime.now(UTC)
    latest = to_time.strip().lower() == plan.LATEST
    unread = down and repo == 1 and ctx.run.dry_run  # a one-off container would read it
    if unread:
        ctx.run.say("dry run: repo1 is read by that one-off container when the restore runs")
    elif not any(b.good for b in found):
        other = " (the schedule's backups are in repo2: --repo 2)" if repo == 1 else ""
        raise LorePinError(
            f"'{ctx.env.name}' has no physical backup in repo{repo} to restore from{other}"
        )
    target = None
    if to_time and not latest:
        target = plan.when(to_time) if unread else plan.target_time(to_time, now, found)
    if label and not unread and label not in {b.label for b in found}:
        raise LorePinError(
            f"'{ctx.env.name}' has no physical backup {label} in repo{repo} "
            f"(see `invoke backup.list --env {ctx.env.name}`)"
        )
    what = f"{target:%Y-%m-%dT%H:%M:%SZ}" if target else label or "the latest archived point"
    base = None
    if target:
        timeline = _down_timeline(ctx, found) if down else _timeline(ctx)
        base = plan.base_for(target, found, timeline)
        if base is None and not unread:
            raise Refused(
                f"no backup in repo{repo} ended by {what} on the database's current timeline "
                f"({timeline}: it was restored since); pick a later time after a new backup "
                f"(`invoke backup.create --env {ctx.env.name} --type full`) or a backup (--from)"
            )
    version, writers = throwaway.serving(ctx)
    before = (
        "the database's data directory is copied aside first"
        if down
        else "Everything written after it is set aside in a safety backup"
    )
    confirm(
        f"Put the whole database of '{ctx.env.name}' back to {what}? {before}; the CMS "
        "and the database stop until it is done.",
        yes=yes or ctx.run.dry_run,
    )
    who = _who(ctx)
    detail: dict[str, Any] = {
        "backup": label or None,
        "to_time": what if target else plan.LATEST if latest else None,
        "repo": repo,
    }
    detail["break_glass"] = reason
    db = deploy_plan.container(ctx.env, compose.DB_SERVICE)
    stamp = f"{now:%Y%m%dT%H%M%SZ}-before-restore"
    with locked(ctx, "backup.restore"):
        kept: list[dict[str, Any]] = mirrored(ctx.env.state_dir / "audit.jsonl")
        if not down:  # the trail is in the database: it says a restore began
            with ops.deploy_lock(ctx, who, f"restore {what}") as session:
                trail = ops.open_trail(ctx, session, who)
                ops.record(trail, ctx, who, "restore", version, "started", detail)
                kept = trail.records() if trail else []
        started = time.monotonic()
        outcome, safety, aside = "failed", None, None
        try:
            with _writes_stopped(ctx, writers, restart=lambda: _database_up(ctx)):
                if not down:
                    made = create_physical(ctx, "incr", repo=repo)
                    safety = made.label if made else None
                ctx.run.say(f"==> {ctx.env.name}: restoring {what} (the database stops)")
                ctx.run.run(
                    [*compose.docker(ctx.env), "stop", "--time", "60", db],
                    env=ctx.engine,
                    capture=True,
                )
                restore_args = plan.restore_args(
                    to_time=target,
                    label=base.label if base else label or None,
                    repo=repo,
                    latest=latest,
                )
                _stopped(ctx, db)
                said = docker.run_oneoff(
                    ops.as_deployed(ctx),
                    compose.DB_SERVICE,
                    plan.restore_oneoff(restore_args, keep=stamp if down else None),
                    kind="pgbackrest",
                    capture=down,
                )
                if down:
                    aside = said.strip().splitlines()[0].removeprefix("kept ") if said else None
                    ctx.run.say(f"    the data directory before it is kept in {aside}")
                ctx.run.run([*compose.docker(ctx.env), "start", db], env=ctx.engine, capture=True)
                _wait_promoted(ctx, db)
                _forget_recovery_target(ctx)
                _passwords_as_now(ctx, who)
                if ctx.env.replica and not ctx.run.dry_run:
                    replication.reclone(ctx)  # it cannot follow the new timeline
                outcome = "restored"
        finally:
            seconds = round(time.monotonic() - started, 1)
            if outcome != "restored" and safety and not ctx.run.dry_run:
                ctx.run.say(
                    f"    the data before it is backup {safety} (repo{repo}): "
                    f"`invoke backup.restore --env {ctx.env.name} --from {safety} --repo {repo}`"
                )
            detail.update(safety_backup=safety, seconds=seconds, base=base.label if base else None)
            detail["kept_aside"] = aside
            try:
                _record_after(ctx, who, version, outcome, detail, kept)
            except LorePinError as exc:  # never hides why the restore itself failed
                ctx.run.say(f"warning: the restore is not recorded in the trail: {exc}")
            ops.notify_team(
                ctx,
                f"{ctx.env.name}: restore to {what} {outcome} ({seconds} s, before: "
                f"{safety or aside})",
            )
        _ready_after(ctx, writers, version)
        # pgBackRest advises a new backup after a point-in-time recovery: the next one has
        # a base on the new timeline. The CMS serves meanwhile.
        if not ctx.run.dry_run:
            try:
                create_physical(ctx, "full", repo=repo)
            except LorePinError as exc:
                ctx.run.say(f"warning: no full backup after the restore: {exc}")
    if not ctx.run.dry_run:
        print(
            f"{ctx.env.name}: restored to {what} in {seconds} s; the data before it is "
            f"{safety or aside}"
        )


RECOVERY_SETTINGS = (
    "recovery_target", "recovery_target_time", "recovery_target_action", "recovery_target_name",
    "recovery_target_xid", "recovery_target_lsn", "recovery_target_inclusive",
    "recovery_target_timeline",
)  # fmt: skip


def _forget_recovery_target(ctx: EnvContext) -> None:
    """pgBackRest writes the restore's target into postgresql.auto.conf; once promoted, it
    is removed: a replica cloned from this database later would stop at it and promote
    itself (two primaries). Its restore_command stays (it reads the archive)."""
    resets = [a for name in RECOVERY_SETTINGS for a in ("-c", f"ALTER SYSTEM RESET {name}")]
    ctx.run.run(
        plan.db_exec(ctx.env, ["psql", "-qtAX", "-U", "lorepin", "-d", "postgres", *resets]),
        env=ctx.engine,
        capture=True,
    )


def _down_timeline(ctx: EnvContext, found: list[plan.Physical]) -> int:
    """The timeline of a database that does not run: its control file's, or (when that
    cannot be read either) the newest backup's."""
    if not ctx.run.dry_run:
        with suppress(LorePinError, ValueError, KeyError):
            control = ops.controldata(ctx, compose.DB_SERVICE)
            return int(control["Latest checkpoint's TimeLineID"])
    return max((b.timeline for b in found), default=1)


def _stopped(ctx: EnvContext, db: str) -> None:
    """The database container has exited (its data may be written by the restore)."""
    found = docker.container(ctx, db)
    if not ctx.run.dry_run and (found is None or found.state == "running"):
        raise LorePinError(f"the database of '{ctx.env.name}' did not stop; nothing was restored")


def _timeline(ctx: EnvContext) -> int:
    answer = ctx.run.run(
        plan.db_exec(ctx.env, ["psql", "-qtAX", "-U", "lorepin", "-d", "postgres", "-c",
                               "SELECT timeline_id FROM pg_control_checkpoint()"]),
        env=ctx.engine, capture=True, quiet=True, mutates=False,
    ).stdout.strip()  # fmt: skip
    return int(answer) if answer.isdigit() else 1


# What the readiness probes themselves make a starting database log: not why it failed.
PROBING = ("the database system is starting up", "the database system is shutting down")


def _passwords_as_now(ctx: EnvContext, who: str) -> None:
    """The login roles came back as the backup had them: a password rotated since would
    lock out its clients (the replica's clone first), so each takes its file's again."""
    if ctx.run.dry_run:
        return
    with _ops_session(ctx, who) as session:
        ops.set_passwords(session, ops.passwords_in_files(ctx))


def _wait_promoted(ctx: EnvContext, db: str) -> None:
    """The restored database recovered to its target and takes writes again (a database
    that restarts in a loop fails at once, with its log's reason)."""
    if ctx.run.dry_run:
        return
    first = docker.container(ctx, db)
    restarts = first.restarts if first else 0
    deadline = time.monotonic() + ctx.settings.wait_timeout
    probe = plan.db_exec(
        ctx.env,
        ["psql", "-qtAX", "-U", "lorepin", "-d", "postgres", "-c", "SELECT pg_is_in_recovery()"],
    )
    while time.monotonic() < deadline:
        answer = ctx.run.run(
            probe, env=ctx.engine, capture=True, check=False, quiet=True, mutates=False
        )
        if answer.ok and answer.stdout.strip() == "f":
            return
        now = docker.container(ctx, db)
        if now is None or now.state != "running" or now.restarts != restarts:
            logs = ctx.run.run(
                [*compose.docker(ctx.env), "logs", "--tail", "20", db],
                env=ctx.engine,
                capture=True,
                check=False,
                quiet=True,
                mutates=False,
            )
            lines = (logs.stdout + logs.stderr).splitlines()
            cause = docker.log_cause([ln for ln in lines if not any(n in ln for n in PROBING)])
            raise LorePinError(f"the restored database did not start: {cause}")
        time.sleep(1)
    raise LorePinError(
        f"the restored database did not finish its recovery within {ctx.settings.wait_timeout} s"
    )


def _record_after(
    ctx: EnvContext,
    who: str,
    version: str | None,
    outcome: str,
    detail: dict[str, Any],
    kept: list[dict[str, Any]],
) -> None:
    """The outcome in the trail, after the records the restore rewound were put back."""
    if ctx.run.dry_run or not _database_up(ctx):
        return
    with ops.deploy_lock(ctx, who, "restore (recording)") as session:
        if session is None:
            return
        carried = carry_over(session, kept)
        trail = Trail(session, ctx.env.state_dir / "audit.jsonl")
        ops.record(
            trail, ctx, who, "restore", version, outcome, {**detail, "carried_over": carried}
        )


def _ready_after(ctx: EnvContext, writers: list[str], version: str | None) -> None:
    if not writers or ctx.run.dry_run:
        return
    if ctx.env.is_server:
        backend = ComposeBlueGreen(ctx)
        state = backend.state()
        if state.active and version:
            ops.wait_ready(ctx, backend, state.active, version)
        return
    from lorepin_tasks.runtime import http

    http.wait_ready(
        f"{docker.published_url(ctx)}/readyz",
        timeout=float(ctx.settings.wait_timeout),
        say=ctx.run.say,
        hint=ctx.hint("logs", "--service", compose.HTTP_SERVICE),
    )


# -- prune -----------------------------------------------------------------------------


@task(help={"env": ENV_HELP, "yes": YES_HELP, "dry_run": DRY_HELP})
def prune(c: Context, env: str = "", yes: bool = False, dry_run: bool = False) -> None:
    """Remove the backups the retention policy (backup.keep) no longer keeps: logical ones
    (never the newest verified nor a pinned one) and, on server environments, physical
    full backups with what builds on them (never a repository's newest full)."""
    ctx = _open(c, env, dry_run)
    with locked(ctx, "backup.prune"):
        found = backups.listed(ctx)
        kept = plan.retained(found, ctx.env.backup)
        going = [b for b in found if b.good and b.id not in kept]
        for b in found:
            print(
                f"{'keep' if b.id in kept else ('remove' if b.good else 'unusable')} {b.id}"
                f"{f' ({kept[b.id]})' if b.id in kept else ''}"
            )
        physical = []
        if ctx.env.is_server and _database_up(ctx):
            physical = physical_list(ctx, 1) + ([] if _site_down(ctx) else physical_list(ctx, 2))
        expiring = plan.expirable(physical, ctx.env.backup)
        for full in (f for f in physical if f.type == "full"):
            verdict = "expire" if full.label in expiring.get(full.repo, []) else "keep"
            print(f"{verdict} {full.label} (physical, repo{full.repo}, with what builds on it)")
        count = len(going) + sum(len(v) for v in expiring.values())
        if not count:
            raise NothingToDo(f"'{ctx.env.name}': every backup is kept by the policy")
        if not dry_run:
            confirm(f"Remove {count} backup(s) of '{ctx.env.name}'?", yes=yes)
        for b in going:
            for path in (plan.data_path(ctx.env, b.id), plan.manifest_path(ctx.env, b.id)):
                if dry_run:
                    ctx.run.say(f"+ rm {path}")
                else:
                    path.unlink(missing_ok=True)
        for repo, labels in expiring.items():
            for label in labels:
                on = plan.SITE if repo == 2 else compose.DB_SERVICE
                ctx.run.run(
                    plan.pgbackrest(ctx.env, f"--repo={repo}", f"--set={label}", "expire", on=on),
                    env=ctx.engine,
                    capture=True,
                )


def _every(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@task(help={"env": "the server environment (staging or production)", "json": JSON_HELP})
def schedule(c: Context, env: str = "", json_: bool = False) -> None:
    """Show the environment's backup schedule (invoke.yaml's backup.schedule, run on its
    second site) and its latest runs, good or bad."""
    ctx = _open(c, env, False, owned=False)
    if not ctx.env.is_server:
        raise ConfigError(
            f"scheduled backups run on server environments; '{ctx.env.name}' is {ctx.env.kind}"
        )
    _owned(ctx)
    runs = ops.schedule_runs(ctx, last=50)
    if why := _site_down(ctx):
        raise LorePinError(why)
    if runs is None:
        raise LorePinError(f"cannot read the schedule's runs on {plan.SITE}")
    every = {kind: seconds for kind, seconds in ctx.env.backup.schedule}
    if json_:
        print(json.dumps({"schedule": every, "runs": runs}, indent=2))
        return
    plan_ = ", ".join(f"{kind} every {_every(seconds)}" for kind, seconds in every.items())
    print(f"{ctx.env.name}: {plan_ or 'no schedule'} (on {plan.SITE}, into repo2)")
    if not runs:
        print("no scheduled run yet")
    for r in runs[-10:]:
        print(
            f"{r.get('at')}  {r.get('type'):5} {r.get('outcome'):7} {r.get('seconds')} s"
            f"{'  ' + str(r.get('message')) if r.get('message') else ''}"
        )
    if runs and runs[-1].get("outcome") != "ok":
        raise LorePinError(
            f"the last scheduled backup of '{ctx.env.name}' failed: {runs[-1].get('message')}"
        )


ns = Collection("backup", create, key, list_, verify, restore, approve, prune, schedule)
