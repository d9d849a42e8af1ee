"""`invoke staging.refresh [--env staging] [--from-backup ID] [--yes] [--dry-run]`:
staging's data becomes production's, anonymized (docs/staging-data.md).

The newest verified logical backup of production is restored into a throwaway
PostgreSQL beside production, anonymized there by staging/anonymize.yml and checked (row
counts against the backup, constraints and indexes enforced, no source value left), then
copied into staging's database beside the data it serves. The swap is one transaction of
a moment: writes pause, reads go on, staging's own users and tokens move across. The CMS
must answer ready on the new data, or the swap is undone. A run cut short at any point
leaves staging serving what it served.
"""

from __future__ import annotations

import hashlib
import secrets as random_secrets
import shutil
import time
from contextlib import suppress
from typing import IO, Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, Refused
from lorepin_tasks.plans import anonymize as anonymize_plan
from lorepin_tasks.plans import backup as backup_plan
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import refresh as plan
from lorepin_tasks.runtime import backups, docker, git, lock, ops, throwaway
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.runtime.throwaway import Throwaway
from lorepin_tasks.tasks._common import DRY_HELP, YES_HELP, locked, open_env, server_env, task
from lorepin_tasks.tasks.backup import VERIFY_TIMEOUT, start_copy, usable

ARCHIVE = "/tmp/lorepin-refresh.dump"  # noqa: S108 (in the database containers: theirs alone)
PSQL_LOAD = (
    "PGOPTIONS='-c client_min_messages=warning' psql -X -q -o /dev/null -U lorepin -d lorepin"
)
PSQL = ["psql", "-U", "lorepin", "-d", "lorepin", "-qtAX", "-F", "\t", "-v", "ON_ERROR_STOP=1"]


def _names(ctx: EnvContext, id_: str) -> dict[str, str]:
    digest = hashlib.sha256(id_.encode()).hexdigest()[:8]
    base = f"{ctx.env.project}-refresh-{digest}-{random_secrets.token_hex(3)}"
    return {"network": base, "db": f"{base}-db"}


def _source(c: Context, ctx: EnvContext, source: str, dry_run: bool) -> EnvContext:
    src = open_env(c, source, dry_run=dry_run, settings=ctx.settings)
    if src.env.kind != "production":
        raise ConfigError(f"--source names a {src.env.kind} environment: a refresh copies a "
                          "production environment's data")  # fmt: skip
    return src


def _anonymized_copy(
    ctx: EnvContext, src: EnvContext, backup: backup_plan.Backup, identity: Any,
    rules: anonymize_plan.Rules, who: str,
) -> dict[str, Any]:  # fmt: skip
    """Staging's INCOMING schema, made from the backup in one pass of its rows: the tables
    the rules rewrite go through a throwaway beside production (restored, anonymized,
    checked, copied), the others straight from the backup; indexes and constraints built
    once, then every count and constraint checked. What was found. The throwaway is
    removed however it ends."""
    manifest = dict(backup.manifest or {})
    images = manifest.get("images") or {}
    image = images.get("postgres") or f"{src.settings.image_prefix}/postgres:{src.env.image_tag}"
    t = Throwaway(src, backup.id, _names(src, backup.id), random_secrets.token_urlsafe(24))
    src.run.add_secret(t.password)
    # Any copy a refresh from this source left is dead: live ones hold the source's lock.
    throwaway.remove_left(src, f"{src.env.project}-refresh-")
    expected = plan.expected_counts(manifest, rules)
    through = plan.rewritten(rules)
    in_copy = [*compose.docker(src.env), "exec", "-i", t.names["db"]]
    live_db = [*compose.docker(ctx.env), "exec", "-i", _db(ctx)]

    def archive(sink: IO[bytes]) -> None:
        backups.decrypt(backup_plan.data_path(src.env, backup.id), sink, identity, backup.id)

    def run_in(where: list[str], script: str, run: EnvContext) -> str:
        return run.run.run([*where, "bash", "-c", script], env=run.engine, capture=True).stdout

    def put(where: list[str], path: str, text: str, run: EnvContext) -> None:
        run.run.pipe([*where, "sh", "-c", f"cat > {path}"], env=run.engine,
                     write=lambda sink: sink.write(text.encode()))  # fmt: skip

    found: dict[str, Any] = {}
    try:
        started = time.monotonic()
        src.run.say(f"==> {ctx.env.name}: restoring {backup.id} of '{src.env.name}' beside it "
                    f"({', '.join(through) or 'no table'} to anonymize)")  # fmt: skip
        start_copy(src, t, image, time.monotonic() + VERIFY_TIMEOUT)
        src.run.pipe([*in_copy, "sh", "-c", f"cat > {ARCHIVE}"], env=src.engine, write=archive)
        entries = plan.toc(run_in(in_copy, f"pg_restore -l {ARCHIVE}", src))
        if not any(e.kind == "TABLE DATA" for e in entries):
            raise Refused(f"backup {backup.id} holds no pg_dump archive")
        put(in_copy, f"{ARCHIVE}.list", plan.throwaway_list(entries, rules), src)
        run_in(in_copy, f"pg_restore -U lorepin -d lorepin --no-owner --no-privileges "
               f"--exit-on-error -L {ARCHIVE}.list {ARCHIVE}", src)  # fmt: skip
        found["restore_seconds"] = round(time.monotonic() - started, 1)
        argv = [*in_copy, *PSQL]
        with Session(src.run, argv, src.engine, "throwaway database", quiet=True) as s:
            counted = {r[0]: int(r[1]) for r in s.query(plan.counts_sql(through))}
            if wrong := plan.count_problems({k: expected[k] for k in through}, counted):
                raise LorePinError(f"backup {backup.id} does not match its manifest ({wrong[0]})")
            src.run.say(f"==> {ctx.env.name}: anonymizing the copy")
            started = time.monotonic()
            s.query("BEGIN")
            s.query(anonymize_plan.SALT.format(salt=random_secrets.token_hex(16)))
            for sql in anonymize_plan.statements(rules):
                s.query(sql, timeout=3600)
            if (left := s.scalar(anonymize_plan.leaks_sql(rules))) != "0":
                raise LorePinError(f"{left} original value(s) would be left by the rules")
            s.query("COMMIT")
            sequences = "".join(r[0] + "\n" for r in s.query(plan.SEQUENCES_SQL))
            found["anonymize_seconds"] = round(time.monotonic() - started, 1)
        src.run.say(f"==> {ctx.env.name}: loading it into staging's database, beside the live "
                    "data")  # fmt: skip
        started = time.monotonic()
        pre, rows, post = plan.incoming_lists(entries, rules)
        put(in_copy, f"{ARCHIVE}.pre", pre, src)
        put(in_copy, f"{ARCHIVE}.post", post, src)
        ddl = {part: plan.into_incoming(run_in(in_copy, f"pg_restore --no-owner --no-privileges "
                                                f"-L {ARCHIVE}.{part} -f - {ARCHIVE}", src))
               for part in ("pre", "post")}  # fmt: skip
        load = f"{PSQL_LOAD} -v ON_ERROR_STOP=1"
        with ops.database_session(ctx, who) as live:
            live.query(plan.CLEAR_INCOMING)
            live.query(f"CREATE SCHEMA {plan.INCOMING}")
        ctx.run.pipe([*live_db, "bash", "-c", load], env=ctx.engine,
                     write=lambda sink: sink.write(ddl["pre"].encode()))  # fmt: skip
        put(live_db, f"{ARCHIVE}.rows", rows, ctx)
        put(live_db, f"{ARCHIVE}.awk", plan.ROWS_INTO_INCOMING, ctx)
        remapped = f"set -o pipefail; awk -f {ARCHIVE}.awk | {load}"
        from_backup = (
            f"set -o pipefail; pg_restore -L {ARCHIVE}.rows -f - | awk -f {ARCHIVE}.awk | {load}"
        )
        anonymized = ["pg_dump", "--data-only", "-U", "lorepin", "-d", "lorepin",
                      *(f"--table=public.{table}" for table in through)]  # fmt: skip
        try:
            # The rules leave these rows as they are: straight from the backup.
            ctx.run.pipe([*live_db, "bash", "-c", from_backup], env=ctx.engine, write=archive)
            found["rows_seconds"] = round(time.monotonic() - started, 1)
            if through:  # the anonymized ones, from the throwaway

                def rewritten_rows(sink: IO[bytes]) -> None:
                    def relay(out: IO[bytes]) -> None:
                        shutil.copyfileobj(out, sink, 1 << 20)

                    src.run.pipe([*in_copy, *anonymized], env=src.engine, read=relay)

                ctx.run.pipe([*live_db, "bash", "-c", remapped], env=ctx.engine,
                             write=rewritten_rows)  # fmt: skip
        finally:
            ctx.run.run([*live_db, "rm", "-f", f"{ARCHIVE}.rows", f"{ARCHIVE}.awk"],
                        env=ctx.engine, capture=True, check=False, quiet=True)  # fmt: skip
        finish = sequences + ddl["post"]
        ctx.run.pipe([*live_db, "bash", "-c", load], env=ctx.engine,
                     write=lambda sink: sink.write(finish.encode()))  # fmt: skip
        with ops.database_session(ctx, who) as live:  # what the swap would bring: checked
            counted = {r[0]: int(r[1]) for r in live.query(plan.counts_sql(
                list(expected), schema=plan.INCOMING), timeout=600)}  # fmt: skip
            problems = plan.count_problems(expected, counted)
            problems += [f"not enforced: {r[0]}" for r in live.query(
                plan.not_enforced_sql(plan.INCOMING))]  # fmt: skip
            found["extensions"] = [r[0] for r in live.query(plan.EXTENSIONS_SQL)]
        if problems:
            raise LorePinError(f"the copy in '{ctx.env.name}' fails its checks: {problems[0]}")
        found["rows"] = sum(counted.values())
        found["copy_seconds"] = round(time.monotonic() - started, 1)
    finally:
        t.remove()
    return found


def _db(ctx: EnvContext) -> str:
    return deploy_plan.container(ctx.env, ops.writable_database(ctx))


def _swap(ctx: EnvContext, who: str, extensions: list[str]) -> tuple[float, int]:
    """The swap's transaction: how long writes paused (s) and the writes it turned away."""
    with ops.database_session(ctx, who) as s:
        started = time.monotonic()
        s.query("BEGIN")
        try:
            for sql in plan.swap_sql(extensions):
                s.query(sql)
        except LorePinError as exc:
            raise LorePinError(
                f"the swap could not take the tables of '{ctx.env.name}' within "
                f"{plan.SWAP_LOCK_TIMEOUT} (a client's long transaction?) or was refused: "
                f"nothing was swapped, it serves its previous data; try again ({exc})"
            ) from None
        refused = int(s.scalar(plan.END_WAITING_WRITERS) or 0)
        s.query("COMMIT")
        return time.monotonic() - started, refused


def _ready(ctx: EnvContext, version: str) -> str | None:
    """None when the serving CMS answers ready on the new data, or why not."""
    backend = ComposeBlueGreen(ctx)
    state = backend.state()
    try:
        ops.wait_ready(ctx, backend, state.active or "", version)
    except LorePinError as exc:
        return str(exc)
    return None


@task(
    help={
        "env": "the staging environment (default staging)",
        "from_backup": "the production backup to take (default: the newest verified one)",
        "source": "the production environment whose backups it takes (default production)",
        "yes": YES_HELP,
        "dry_run": DRY_HELP,
    }
)
def refresh(
    c: Context, env: str = "staging", from_backup: str = "", source: str = "production",
    yes: bool = False, dry_run: bool = False,
) -> None:  # fmt: skip
    """Replace staging's data with production's, anonymized: the newest verified backup,
    restored beside production, anonymized by staging/anonymize.yml and checked, then
    swapped in with a pause of writes of a moment. Staging's users holding live tokens
    (and their tokens) stay. Asks first."""
    if from_backup:
        backup_plan.check_id(from_backup)
    ctx = server_env(c, env, dry_run, what="a refresh goes to")
    name = ctx.env.name
    if ctx.env.kind != "staging":
        raise Refused(f"'{name}' is a {ctx.env.kind} environment: a refresh replaces only a "
                      "staging environment's data")  # fmt: skip
    src = _source(c, ctx, source, dry_run)
    rules = anonymize_plan.load(ctx.settings.root / anonymize_plan.RULES_FILE)
    try:
        chosen = plan.source_backup(backups.listed(src), from_backup or None)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    backup, identity = usable(src, chosen.id)
    manifest = dict(backup.manifest or {})
    who = git.who_am_i(ctx.run, ctx.settings.root)
    if ctx.run.dry_run:
        ctx.run.say(f"from {backup.id} of '{src.env.name}' ({manifest.get('rows')} rows):")
        ctx.run.pipe([*compose.docker(src.env), "exec", "-i", "<throwaway>", "sh", "-c",
                      f"cat > {ARCHIVE}"], env=src.engine)  # fmt: skip
        ctx.run.say(
            f"  throwaway: pg_restore -L <definitions, sequences and the rows of "
            f"{', '.join(plan.rewritten(rules))}> {ARCHIVE}"
        )
        for sql in ("BEGIN", *anonymize_plan.statements(rules), "COMMIT"):
            ctx.run.say(f"  throwaway: {sql}")
        ctx.run.say(f"  {name}: CREATE SCHEMA {plan.INCOMING}; the backup's definitions renamed "
                    f"into it; the rows of the other tables straight from the backup "
                    f"(pg_restore -L <rows> -f - | awk | psql); the anonymized rows (pg_dump "
                    f"--data-only in the throwaway | awk | psql); sequences; indexes and "
                    f"constraints; counts and constraints checked")  # fmt: skip
        for sql in ("BEGIN", *plan.swap_sql(["<extensions>"]), plan.END_WAITING_WRITERS,
                    "COMMIT", plan.DROP_BEFORE):  # fmt: skip
            ctx.run.say(f"  {name}: {sql}")
        return
    docker.ensure_owned(ctx)
    version, _ = throwaway.serving(ctx)
    if not version:
        raise Refused(f"'{name}' serves no release: deploy one first")
    with ops.database_session(ctx, who) as s:
        live_revision = s.scalar(backup_plan.REVISION_SQL) or None
        columns = [(r[0], r[1]) for r in s.query(anonymize_plan.COLUMNS_SQL)]
    if live_revision != manifest.get("schema_revision"):
        raise Refused(
            f"backup {backup.id} is at schema revision {manifest.get('schema_revision')}, "
            f"'{name}' at {live_revision}: deploy production's release to '{name}' first, or "
            "take a backup of production at the same revision"
        )
    if missing := anonymize_plan.unruled(rules, columns):  # the copy has the same columns
        raise ConfigError(f"{', '.join(missing[:5])} may identify a person and has no rule in "
                          f"{anonymize_plan.RULES_FILE}: add one")  # fmt: skip
    if wrong := anonymize_plan.unknown(rules, columns):
        raise ConfigError(f"{anonymize_plan.RULES_FILE} names {', '.join(wrong[:5])}, which "
                          f"'{name}' does not have: fix the rules")  # fmt: skip
    confirm(
        f"Replace the data of '{name}' with backup {backup.id} of '{src.env.name}' "
        f"({manifest.get('rows')} rows), anonymized? Staging serves throughout; writes pause "
        "for a moment at the swap, and what was written in staging is gone (its users "
        "holding live tokens stay).",
        yes=yes,
    )
    started = time.monotonic()
    rules_file = ctx.settings.root / anonymize_plan.RULES_FILE
    digest = hashlib.sha256(rules_file.read_bytes()).hexdigest()[:16]
    with locked(ctx, "staging.refresh"), ops.deploy_lock(ctx, who, f"refresh {backup.id}") as held:
        trail = ops.open_trail(ctx, held, who)
        detail: dict[str, Any] = {"backup": backup.id, "source": src.env.name, "rules": digest}
        ops.record(trail, ctx, who, "staging-refresh", version, "started", detail)
        outcome, swapped = "failed", False
        try:
            with lock.held(src.env.state_dir / "refresh.lock",
                           what=f"a refresh from '{src.env.name}'", who=who,
                           action=f"staging.refresh --env {name}"):  # fmt: skip
                found = _anonymized_copy(ctx, src, backup, identity, rules, who)
            ops.notify_team(ctx, f"{name}: writes pause for a moment: refresh from {backup.id}")
            pause, refused = _swap(ctx, who, found["extensions"])
            swapped = True
            detail.update(found, pause_ms=round(pause * 1000), writes_refused=refused)
            if why := _ready(ctx, version):
                with ops.database_session(ctx, who) as s:
                    s.query("BEGIN")
                    for sql in plan.swap_back_sql(found["extensions"]):
                        s.query(sql)
                    s.query("COMMIT")
                raise LorePinError(f"the CMS is not ready on the refreshed data, so '{name}' "
                                   f"serves its previous data again: {why}")  # fmt: skip
            with ops.database_session(ctx, who) as s:
                s.query(plan.DROP_BEFORE, timeout=600)
            outcome = "refreshed"
        except LorePinError as exc:
            detail["error"] = ctx.run.redact(str(exc))[:300]
            raise
        finally:
            if not swapped:  # the copy beside the live data goes (the next run would too)
                with suppress(LorePinError), ops.database_session(ctx, who) as s:
                    s.query(plan.CLEAR_INCOMING, timeout=600)
            detail["seconds"] = round(time.monotonic() - started, 1)
            detail.pop("extensions", None)
            ops.record(trail, ctx, who, "staging-refresh", version, outcome, detail)
            ops.notify_team(ctx, f"{name}: refresh from {backup.id} {outcome} "
                                 f"({detail['seconds']} s)")  # fmt: skip
    print(
        f"'{name}': refreshed from {backup.id} of '{src.env.name}' ({found['rows']:,} rows, "
        f"anonymized) in {detail['seconds']} s; writes paused {detail['pause_ms']} ms"
    )


ns = Collection("staging", refresh)
