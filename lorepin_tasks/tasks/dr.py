"""`invoke dr.drill`: a disaster-recovery drill that measures what a lost database costs.

On a scratch copy of a server environment (never the live one): its database (the same
image, the live data copied in) with a pgBackRest repository of its own and WAL
archiving as configured, and a CMS of the serving version. A writer commits a marker row
every second; then the database container and its data volume are destroyed, and the
database is recovered from the repository alone, to the latest point its WAL archive
holds. Measured: RTO (destroyed -> the CMS answers /readyz) and RPO (the last marker
written -> the last one recovered). Writes dist/dr/<date>-<env>.json and .md and fails
when the objectives in invoke.yaml (`backup.rto`, `backup.rpo`) are missed.
"""

from __future__ import annotations

import json
import secrets as random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import backup as plan
from lorepin_tasks.plans import compose
from lorepin_tasks.runtime import docker, ops, throwaway
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.secrets import BACKUP_PASSPHRASE
from lorepin_tasks.runtime.throwaway import Throwaway
from lorepin_tasks.settings import whole_number
from lorepin_tasks.tasks._common import DRY_HELP, JSON_HELP, locked, open_env, task

ARCHIVE_TIMEOUT = "60"
CIPHER_FILE = "lorepin-backup-cipher"  # beside the password file in the scratch's /tmp


def _names(ctx: EnvContext, nonce: str) -> dict[str, str]:
    base = f"{ctx.env.project}-drill-{nonce}"
    return {
        "network": base,
        "db": f"{base}-db",
        "cms": f"{base}-cms",
        "data": f"{base}-data",
        "repo": f"{base}-repo",
    }


def _db(t: Throwaway, image: str, command: list[str]) -> None:
    t.start(
        "db",
        image,
        {
            **plan.THROWAWAY_DB_ENV,
            "LOREPIN_BACKUP_CIPHER_FILE": str(Path(plan.PASSWORD_FILE).parent / CIPHER_FILE),
        },
        args=[
            "-v",
            f"{t.names['data']}:/var/lib/postgresql/data",
            "-v",
            f"{t.names['repo']}:/var/lib/pgbackrest",
        ],
        command=command,
        files={
            Path(plan.PASSWORD_FILE).name: t.password,
            CIPHER_FILE: (t.ctx.env.secrets_dir / BACKUP_PASSPHRASE).read_text().strip(),
        },
    )


def _postgres(archive_timeout: str) -> list[str]:
    return [
        "postgres",
        "-c",
        "wal_level=replica",
        "-c",
        "archive_mode=on",
        "-c",
        "archive_command=pgbackrest --stanza=lorepin archive-push %p",
        "-c",
        f"archive_timeout={archive_timeout}",
    ]


def _in_db(t: Throwaway, *argv: str, check: bool = True) -> Any:
    return t.docker("exec", "-u", "postgres", t.names["db"], *argv, check=check, quiet=True)


def drill(ctx: EnvContext, seconds: int) -> dict[str, Any]:
    """Run the drill; its report (the caller writes it)."""
    live = throwaway.db_container(ctx)
    version, colours = throwaway.serving(ctx)
    cms_image = throwaway.image_id(ctx, colours[0]) if colours else None
    if not cms_image:
        raise LorePinError(f"'{ctx.env.name}' serves nothing: deploy a release before a drill")
    if not (ctx.env.secrets_dir / BACKUP_PASSPHRASE).is_file():
        raise ConfigError(
            f"'{ctx.env.name}' has no backup passphrase ({BACKUP_PASSPHRASE}): deploy it first"
        )
    t = Throwaway(ctx, "drill", _names(ctx, random.token_hex(3)), random.token_urlsafe(24))
    t.volumes = [t.names["data"], t.names["repo"]]
    ctx.run.add_secret(t.password)
    timeout = float(ctx.settings.wait_timeout)
    report: dict[str, Any] = {"environment": ctx.env.name, "version": version}
    try:
        ctx.run.say(f"==> {ctx.env.name}: a scratch copy (network {t.names['network']})")
        t.create_network()
        labels = plan.labels(ctx.env, ctx.settings.checkout.id, t.backup)
        for volume in (t.names["data"], t.names["repo"]):
            t.docker("volume", "create", *labels, volume, quiet=True)
        _db(t, live.image_id, _postgres(ARCHIVE_TIMEOUT))
        throwaway.wait_for(time.monotonic() + timeout, "drill's database", t.takes_writes)
        ctx.run.say("==> copying the live data in (pg_dump | pg_restore)")
        role = ops.db_value(ctx, compose.DB_SERVICE, plan.DUMP_ROLE_SQL) or None
        dump = plan.dump(ctx.env, None, role=role)
        restore = [
            *compose.docker(ctx.env), "exec", "-i", t.names["db"], "pg_restore", "-U",
            "lorepin", "-d", "lorepin", "--no-owner", "--no-privileges", "--exit-on-error",
        ]  # fmt: skip
        ctx.run.pipe(
            dump,
            env=ctx.engine,
            read=lambda out: ctx.run.pipe(
                restore, env=ctx.engine, write=lambda sink: _copy(out, sink)
            ),
        )
        _in_db(t, "pgbackrest", f"--stanza={plan.STANZA}", "stanza-create")
        ctx.run.say("==> a full backup of the scratch copy")
        _in_db(t, "pgbackrest", f"--stanza={plan.STANZA}", "--type=full", "backup")
        t.start(
            "cms",
            cms_image,
            {
                "LOREPIN_DB_HOST": t.names["db"],
                "LOREPIN_DB_USER": "lorepin",
                "LOREPIN_DB_NAME": "lorepin",
                "LOREPIN_DB_PASSWORD_FILE": plan.PASSWORD_FILE,
            },
        )
        throwaway.wait_for(time.monotonic() + timeout, "drill's CMS", t.cms_ready)

        ctx.run.say(f"==> writing a marker every second for {seconds} s")
        last_written = _write_markers(ctx, t, seconds)

        ctx.run.say("==> destroying the database: its container and its data volume")
        destroyed = time.monotonic()
        destroyed_at = datetime.now(UTC)
        t.docker("rm", "-f", "-v", t.names["db"], quiet=True)
        t.docker("volume", "rm", t.names["data"], quiet=True)
        t.docker("volume", "create", *labels, t.names["data"], quiet=True)

        ctx.run.say("==> recovering from the repository alone, to the latest point")
        restore_cmd = [
            "bash", "-c",
            'chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA" && '
            "setpriv --reuid=postgres --regid=postgres --init-groups pgbackrest "
            f"--stanza={plan.STANZA} restore && exec docker-entrypoint.sh "
            + " ".join(f"'{a}'" for a in _postgres(ARCHIVE_TIMEOUT)),
        ]  # fmt: skip
        _db(t, live.image_id, restore_cmd)
        throwaway.wait_for(time.monotonic() + timeout, "recovered database", t.takes_writes)
        recovered = time.monotonic()
        throwaway.wait_for(time.monotonic() + timeout, "CMS after the recovery", t.cms_ready)
        ready = time.monotonic()
        answer = _in_db(
            t, "psql", "-qtAX", "-U", "lorepin", "-d", "lorepin", "-c",
            "SELECT coalesce(max(n), 0), coalesce(extract(epoch FROM max(at)), 0) FROM dr_marks",
            check=False,
        )  # fmt: skip
        got = answer.stdout.strip().split("|") if answer.ok else ["0", "0"]
        last_n, last_at = int(got[0]), float(got[1])
        written_n, written_at, first_at = last_written
        lost_since = last_at if last_n else first_at  # nothing recovered: all of it is lost
        report.update(
            destroyed_at=destroyed_at.isoformat(timespec="seconds"),
            markers_written=written_n,
            markers_recovered=last_n,
            rto_seconds=round(ready - destroyed, 1),
            database_back_seconds=round(recovered - destroyed, 1),
            rpo_seconds=round(max(0.0, written_at - lost_since), 1),
            archive_timeout=int(ARCHIVE_TIMEOUT),
        )
        return report
    finally:
        t.remove()


def _copy(source: Any, sink: Any) -> None:
    while chunk := source.read(1 << 20):
        sink.write(chunk)


def _write_markers(ctx: EnvContext, t: Throwaway, seconds: int) -> tuple[int, float, float]:
    """Commit one marker a second; (the last n, its commit time, the first's; epochs)."""
    argv = [
        *compose.docker(ctx.env), "exec", "-i", t.names["db"], "psql", "-U", "lorepin",
        "-d", "lorepin", "-qtAX", "-F", "\t", "-v", "ON_ERROR_STOP=1",
    ]  # fmt: skip
    with Session(ctx.run, argv, ctx.engine, "scratch database", quiet=True) as s:
        s.query("CREATE TABLE dr_marks (n int PRIMARY KEY, at timestamptz NOT NULL)")
        n, at, first = 0, 0.0, time.time()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            n += 1
            at = float(
                s.scalar(
                    f"INSERT INTO dr_marks VALUES ({int(n)}, clock_timestamp()) "  # noqa: S608
                    "RETURNING extract(epoch FROM at)"
                )
                or 0
            )
            time.sleep(1)
    return n, at, first


@task(
    help={
        "env": "the server environment whose recovery is drilled (staging or production)",
        "seconds": "how long markers are written before the database is destroyed (default "
        "75: past one archive_timeout, so the RPO is measured, not guessed)",
        "json": JSON_HELP,
        "dry_run": DRY_HELP,
    }
)
def drill_(
    c: Context, env: str = "", seconds: str = "75", json_: bool = False, dry_run: bool = False
) -> None:
    """Destroy the database of a scratch copy of the environment under writes, recover it
    from its repository alone, and measure RTO and RPO against the objectives."""
    if not env:
        raise ConfigError("say which environment: --env staging or --env production")
    duration = whole_number(seconds, "--seconds", low=5, high=3600)
    ctx = open_env(c, env, dry_run=dry_run)
    if not ctx.env.is_server:
        raise ConfigError(f"dr.drill is for server environments; '{env}' is {ctx.env.kind}")
    docker.ensure_owned(ctx)
    objectives = {"rto_seconds": ctx.env.backup.rto, "rpo_seconds": ctx.env.backup.rpo}
    if dry_run:
        ctx.run.say(
            f"+ a scratch copy of '{env}' ({ctx.env.project}-drill-*: network, database with "
            f"its own pgBackRest repository, CMS), markers for {duration} s, destroy the "
            f"database and its volume, pgbackrest restore, measure against {objectives}"
        )
        return
    with locked(ctx, "dr.drill"):
        report = drill(ctx, duration)
    report["objectives"] = objectives
    missed = [k for k, limit in objectives.items() if report[k] > limit]
    report["passed"] = not missed
    written = _write_report(ctx, report)
    if json_:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"{env}: RTO {report['rto_seconds']} s (objective {objectives['rto_seconds']} s), "
            f"RPO {report['rpo_seconds']} s (objective {objectives['rpo_seconds']} s): "
            f"{'passed' if not missed else 'FAILED'}; report {written}"
        )
    if missed:
        raise LorePinError(
            f"the drill missed its objective(s): {', '.join(missed)} (report {written})"
        )


def _write_report(ctx: EnvContext, report: dict[str, Any]) -> Path:
    directory = ctx.settings.root / "dist" / "dr"
    stem = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{ctx.env.name}"
    ctx.run.write(directory / f"{stem}.json", json.dumps(report, indent=2) + "\n")
    md = [
        f"# Recovery test report: {ctx.env.name}, {report['destroyed_at']}",
        "",
        "A scratch copy of the environment (its database image and data, a pgBackRest",
        "repository of its own, the CMS of the serving version) lost its database",
        "container and data volume under a write load of one marker a second, and was",
        "recovered from the repository alone, to the latest point its WAL archive held.",
        "",
        "| measure | value | objective |",
        "| --- | --- | --- |",
        f"| RTO (destroyed -> CMS ready) | {report['rto_seconds']} s | "
        f"{report['objectives']['rto_seconds']} s |",
        f"| RPO (last marker written -> last recovered) | {report['rpo_seconds']} s | "
        f"{report['objectives']['rpo_seconds']} s |",
        f"| database back (destroyed -> takes writes) | {report['database_back_seconds']} s | |",
        f"| markers written / recovered | {report['markers_written']} / "
        f"{report['markers_recovered']} | |",
        f"| archive_timeout | {report['archive_timeout']} s | |",
        "",
        f"Outcome: **{'passed' if report['passed'] else 'FAILED'}**. Version served: "
        f"{report['version']}.",
        "",
    ]
    ctx.run.write(directory / f"{stem}.md", "\n".join(md))
    return directory / f"{stem}.md"


ns = Collection("dr")
ns.add_task(drill_, name="drill")
