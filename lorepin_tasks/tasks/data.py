"""Test data: `invoke data.generate --env E --pins N --users M [--seed S]` and
`invoke data.cleanup --env E [--older-than 14d]`.

Realistic, deterministic rows (lorepin_tasks/plans/testdata.py: Faker's people, titles
and stories in eight languages, pins near real towns, drafts and published) streamed
into the environment's database by COPY, users and pins in one transaction: a run cut
short (kill -9 included) leaves nothing. Every generated row is marked as test data.
Never in production.
"""

from __future__ import annotations

import json
import secrets as random_secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, NothingToDo, Refused
from lorepin_tasks.plans import anonymize as anonymize_plan
from lorepin_tasks.plans import backup as backup_plan
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import monitoring as monitoring_plan
from lorepin_tasks.plans import refresh as refresh_plan
from lorepin_tasks.plans import testdata as plan
from lorepin_tasks.runtime import backups, docker, git, ops
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.runtime.trail import Trail
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    ENV_HELP,
    JSON_HELP,
    YES_HELP,
    backup_database,
    locked,
    open_env,
    server_env,
    task,
)

BATCH = 20_000  # rows per write into psql's stdin
PROGRESS = 200_000  # rows between two progress lines
TABLES_SQL = (
    "SELECT to_regclass('public.pins') IS NOT NULL AND to_regclass('public.cms_users') IS NOT NULL"
)


@contextmanager
def _database(ctx: EnvContext, who: str) -> Iterator[Session]:
    """A session on the environment's database that takes writes (this checkout's,
    running: a one-line error naming how to start it otherwise)."""
    docker.ensure_owned(ctx)
    argv = deploy_plan.psql(ctx.env, who, service=ops.writable_database(ctx))
    with Session(ctx.run, argv, ctx.variables, "database", quiet=True) as session:
        yield session


def _show(ctx: EnvContext, who: str, statements: Iterable[str]) -> None:
    """A dry run: the session's command and what it would be given, in its transaction."""
    ctx.run.run(deploy_plan.psql(ctx.env, who), env=ctx.variables)
    for sql in ("BEGIN", *statements, "COMMIT"):
        ctx.run.say(sql)


def _begin(ctx: EnvContext, session: Session, who: str) -> Trail | None:
    """The change's transaction; on a server environment, the trail its record joins."""
    trail = None
    if ctx.env.is_server:
        ops.ensure_schema(session)
        trail = ops.open_trail(ctx, session, who)
    session.query("BEGIN")
    return trail


def _commit(ctx: EnvContext, session: Session, trail: Trail | None, who: str, action: str,
            detail: dict[str, object]) -> None:  # fmt: skip
    """The change, with its audit record where there is a trail, committed together."""
    ops.record(trail, ctx, who, action, None, "succeeded", detail, commit=True)
    if trail is None:
        session.query("COMMIT")


def _seed_rows(session: Session, seed: int) -> tuple[int, int]:
    row = session.query(plan.seed_rows_sql(seed))[0]
    return int(row[0]), int(row[1])


def _script(ctx: EnvContext, seed: int, pins: int, users: int) -> Iterator[bytes]:
    """psql's input: one transaction, the users' then the pins' COPY, inline."""
    pools = plan.pools(seed)
    yield b"\\set ON_ERROR_STOP on\nBEGIN;\n"
    parts: list[tuple[str, str, int, Iterable[str]]] = [
        ("users", plan.copy_users(), users, plan.user_rows(seed, users, pools)),
        ("pins", plan.copy_pins(), pins, plan.pin_rows(seed, pins, pools)),
    ]
    for what, copy, count, rows in parts:
        if not count:
            continue
        yield f"{copy};\n".encode()
        batch: list[str] = []
        done = 0
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH:
                yield "".join(batch).encode()
                done += len(batch)
                batch = []
                if done % PROGRESS == 0:
                    ctx.run.say(f"    {done:,} of {count:,} {what}")
        yield ("".join(batch) + "\\.\n").encode()
    yield b"COMMIT;\n"


@task(
    help={
        "env": ENV_HELP,
        "pins": f"pins to add (up to {plan.MAX_PINS:,})",
        "users": f"CMS users to add (up to {plan.MAX_USERS:,}), with roles",
        "seed": "the same seed gives the same data (default 1)",
        "dry_run": DRY_HELP,
    }
)
def generate(
    c: Context, env: str = "local", pins: str = "0", users: str = "0", seed: str = "1",
    dry_run: bool = False,
) -> None:  # fmt: skip
    """Add realistic, deterministic test data (Faker): users with roles, and pins near real
    towns with titles and stories in eight languages, tags, drafts and published; marked
    as test data (tags `test-data`, `test-data-<seed>`; user names ending `.td<seed>`).
    Never in production."""
    pins_, users_, seed_ = plan.counts(pins, users, seed)
    ctx = open_env(c, env, dry_run=dry_run)
    name = ctx.env.name
    if ctx.env.kind == "production":
        raise Refused(f"'{name}' is production: test data never goes there")
    who = git.who_am_i(ctx.run, ctx.settings.root)
    if ctx.run.dry_run:
        ctx.run.pipe(deploy_plan.psql(ctx.env, who), env=ctx.engine)
        copies = [f"{sql}; ({n:,} rows)" for sql, n in
                  ((plan.copy_users(), users_), (plan.copy_pins(), pins_)) if n]  # fmt: skip
        ctx.run.say(f"  < BEGIN; {' '.join(copies)} COMMIT;")
        return
    with locked(ctx, "data.generate"), _database(ctx, who) as session:
        if session.scalar(TABLES_SQL) != "t":
            raise LorePinError(
                f"the database of '{name}' has no pins or users table yet: migrate it "
                f"first (`invoke db.migrate --env {name}`)"
            )
        if _seed_rows(session, seed_) != (0, 0):
            raise Refused(
                f"'{name}' has test data of seed {seed_} already: choose another --seed, or "
                f"remove it first (`invoke data.cleanup --env {name}`)"
            )
        ctx.run.say(f"==> {name}: generating {users_:,} users and {pins_:,} pins (seed {seed_})")
        started = time.monotonic()

        def feed(sink: IO[bytes]) -> None:
            for chunk in _script(ctx, seed_, pins_, users_):
                sink.write(chunk)

        # psql reads the script, COPY data inline, from its stdin (the session's command).
        psql = deploy_plan.psql(ctx.env, who, service=ops.primary(ctx))
        done = ctx.run.pipe(psql, env=ctx.engine, write=feed, check=False)
        seconds = time.monotonic() - started
        written = _seed_rows(session, seed_)  # this run's rows only: other writes go on
    if written == (0, 0):
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else (
            f"psql stopped (exit {done.returncode})")  # fmt: skip
        raise LorePinError(f"no test data was written to '{name}' (one transaction): {why}")
    if written != (pins_, users_):
        raise LorePinError(
            f"'{name}' holds {written[0]:,} pins and {written[1]:,} users of seed {seed_}, not "
            f"the {pins_:,} and {users_:,} written: see them with the tag test-data-{seed_}"
        )
    rate = (pins_ + users_) / seconds if seconds else 0
    print(f"'{name}': added {users_:,} users and {pins_:,} pins in {seconds:.1f} s "
          f"({rate:,.0f} rows/s), seed {seed_}")  # fmt: skip


def _older_than(text: str) -> int:
    try:
        return monitoring_plan.since_seconds(text, "--older-than")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@task(
    help={
        "env": ENV_HELP,
        "older_than": "only test data made longer ago than this: 30m, 24h, 7d, 2w (default 14d)",
        "yes": YES_HELP,
        "dry_run": DRY_HELP,
    }
)
def cleanup(
    c: Context, env: str = "local", older_than: str = "14d", yes: bool = False,
    dry_run: bool = False,
) -> None:  # fmt: skip
    """Remove test data: pins tagged `test-data` and users named `*.td<seed>` (with their
    tokens) made longer ago than --older-than; never other content. Asks first."""
    count_sql, statements = plan.cleanup_sql(_older_than(older_than))
    ctx = open_env(c, env, dry_run=dry_run)
    name = ctx.env.name
    if ctx.env.kind == "production":
        raise Refused(f"'{name}' is production: it holds no test data to clean up")
    who = git.who_am_i(ctx.run, ctx.settings.root)
    if ctx.run.dry_run:
        _show(ctx, who, statements)
        return
    with locked(ctx, "data.cleanup"), _database(ctx, who) as session:
        if session.scalar(TABLES_SQL) != "t":
            raise NothingToDo(f"the database of '{name}' has no pins or users table yet")
        pins, users = (int(v) for v in session.query(count_sql)[0])
        if not pins and not users:
            raise NothingToDo(f"'{name}' has no test data older than {older_than}")
        confirm(
            f"Remove {pins:,} test pins and {users:,} test users (and their tokens) from "
            f"'{name}'? Content not marked as test data stays.",
            yes=yes,
        )
        trail = _begin(ctx, session, who)
        for sql in statements:
            session.query(sql)
        detail = {"pins": pins, "users": users, "older_than": older_than}
        _commit(ctx, session, trail, who, "data.cleanup", detail)
    print(f"'{name}': removed {pins:,} test pins and {users:,} test users")


@task(help={"env": "the environment (never production), required", "yes": YES_HELP,
            "dry_run": DRY_HELP})  # fmt: skip
def anonymize(c: Context, env: str = "", yes: bool = False, dry_run: bool = False) -> None:
    """Replace every personal value in an environment's database by the rules of
    staging/anonymize.yml (pseudonyms, salted hashes; API tokens removed), in one
    transaction that fails if any original value is left. A personal-looking column
    without a rule stops it first. A logical backup is taken first; asks first."""
    if not env:
        raise ConfigError("say which environment: --env staging (never production)")
    ctx = open_env(c, env, dry_run=dry_run)
    rules = anonymize_plan.load(ctx.settings.root / anonymize_plan.RULES_FILE)
    name = ctx.env.name
    if ctx.env.kind == "production":
        raise Refused(f"'{name}' is production: its data is the original, never anonymized")
    who = git.who_am_i(ctx.run, ctx.settings.root)
    if ctx.run.dry_run:
        statements = anonymize_plan.statements(rules)
        leaks = anonymize_plan.leaks_sql(rules)
        _show(ctx, who, [anonymize_plan.SALT.format(salt="<random>"), *statements, leaks])
        return
    with locked(ctx, "data.anonymize"), _database(ctx, who) as session:
        columns = [(r[0], r[1]) for r in session.query(anonymize_plan.COLUMNS_SQL)]
        if missing := anonymize_plan.unruled(rules, columns):
            raise ConfigError(
                f"{', '.join(missing[:5])} may identify a person and has no rule in "
                f"{anonymize_plan.RULES_FILE}: add one (`keep` if it identifies nobody)"
            )
        if wrong := anonymize_plan.unknown(rules, columns):
            raise ConfigError(
                f"{anonymize_plan.RULES_FILE} names {', '.join(wrong[:5])}, which the "
                f"database of '{name}' does not have: fix the rules"
            )
        confirm(
            f"Replace every personal value in '{name}' by its rule (irreversible; its API "
            "tokens are removed: nobody signs in with one until new ones are made)? A "
            "backup is taken first.",
            yes=yes,
        )
        backup_database(ctx, "before-anonymize")
        started = time.monotonic()
        trail = _begin(ctx, session, who)
        session.query(anonymize_plan.SALT.format(salt=random_secrets.token_hex(16)))
        for sql in anonymize_plan.statements(rules):
            session.query(sql, timeout=3600)
        if (left := session.scalar(anonymize_plan.leaks_sql(rules))) != "0":
            session.query("ROLLBACK")
            raise LorePinError(
                f"{left} original value(s) would be left in '{name}': nothing was changed"
            )
        seconds = round(time.monotonic() - started, 1)
        detail = {"rules": str(anonymize_plan.RULES_FILE), "seconds": seconds}
        _commit(ctx, session, trail, who, "data.anonymize", detail)
    print(f"'{name}': anonymized in {seconds} s; no original value is left")


def _values(ctx: EnvContext, who: str, table: str, column: str) -> set[str]:
    """A column's distinct values, as digests, from the environment's database."""
    with ops.database_session(ctx, who) as session:
        return {r[0] for r in session.query(refresh_plan.values_sql(table, column), timeout=600)}


def _source_revision(src: EnvContext) -> str | None:
    return ops.db_value(src, ops.primary(src), backup_plan.REVISION_SQL) or None


def _backup_of(src: EnvContext, id_: str) -> backup_plan.Backup | None:
    try:
        return backups.find(src, id_)
    except LorePinError:
        return None


def _refreshed_from(ctx: EnvContext, who: str) -> str | None:
    """The backup of the environment's latest refresh (its trail)."""
    done = [
        r for r in ops.trail_records(ctx, who) or []
        if r.get("action") == "staging-refresh" and r.get("outcome") == "refreshed"
    ]  # fmt: skip
    return str(done[-1]["detail"]["backup"]) if done else None


@task(
    help={
        "env": "the environment made from production's data (staging), required",
        "source": "the production environment it came from (default production)",
        "json": JSON_HELP,
    }
)
def validate(c: Context, env: str = "", source: str = "production", json_: bool = False) -> None:
    """Check an environment's data made from production's (read-only): no value of a
    personal column equal to any of production's, every constraint and index enforced,
    row counts those of the backup of its latest refresh (rows made there since left
    out), production's schema revision, and the CMS ready. Run it right after a refresh
    (`staging.refresh` runs the same checks before its swap)."""
    ctx = server_env(c, env, False, what="a validation looks at")
    name = ctx.env.name
    if ctx.env.kind == "production":
        raise Refused(f"'{name}' is production: its data is the source, not a copy")
    src = open_env(c, source, dry_run=False, settings=ctx.settings)
    if src.env.kind != "production":
        raise ConfigError(f"--source names a {src.env.kind} environment, not production")
    rules = anonymize_plan.load(ctx.settings.root / anonymize_plan.RULES_FILE)
    who = git.who_am_i(ctx.run, ctx.settings.root)
    ops.writable_database(ctx)
    try:
        ops.writable_database(src)  # its values are what must not be found here
    except LorePinError:
        raise LorePinError(
            f"'{source}' has no running database on this engine: the validation compares "
            f"'{name}' with its live values; start it first"
        ) from None
    checks: list[tuple[str, bool, str]] = []
    with ops.database_session(ctx, who) as session:
        revision = session.scalar(backup_plan.REVISION_SQL) or None
        columns = [(r[0], r[1]) for r in session.query(anonymize_plan.COLUMNS_SQL)]
        loose = [r[0] for r in session.query(refresh_plan.not_enforced_sql())]
    production = _source_revision(src)
    checks.append(("schema revision", revision == production,
                   f"{revision} ({source}: {production})"))  # fmt: skip
    enforced = f"not enforced: {', '.join(loose[:3])}" if loose else "all enforced"
    checks.append(("constraints and indexes", not loose, enforced))
    backup_id = _refreshed_from(ctx, who)
    if backup_id is None:
        checks.append(("row counts", False, f"no refresh of '{name}' is recorded to compare with"))
    elif (source_backup := _backup_of(src, backup_id)) is None:
        checks.append(("row counts", False, f"{backup_id}, the backup of the last refresh, is "
                       f"gone from '{source}': the counts cannot be compared"))  # fmt: skip
    else:
        manifest = dict(source_backup.manifest or {})
        expected = {t: n for t, n in refresh_plan.expected_counts(manifest, rules).items()
                    if rules.tables.get(t) != "truncate"}  # fmt: skip
        with ops.database_session(ctx, who) as session:
            sql = refresh_plan.counts_sql(list(expected), since=manifest.get("started_at"))
            found = {r[0]: int(r[1]) for r in session.query(sql, timeout=600)}
        wrong = refresh_plan.count_problems(expected, found)
        checks.append(("row counts", not wrong, wrong[0] if wrong else
                       f"{sum(found.values()):,} rows as in {backup_id}"))  # fmt: skip
    leaked: list[str] = []
    personal = refresh_plan.sensitive_columns(rules, columns)
    for table, column in personal:
        if same := _values(ctx, who, table, column) & _values(src, who, table, column):
            leaked.append(f"{table}.{column} ({len(same):,})")
    checks.append(("no production value", not leaked,
                   f"equal to {source}'s: {', '.join(leaked)}" if leaked else
                   f"{len(personal)} personal columns"))  # fmt: skip
    backend = ComposeBlueGreen(ctx)
    state = backend.state()
    code, _ = backend.probe(state.active, "/readyz") if state.active else (0, "")
    checks.append(("CMS ready", code == 200, f"/readyz {code or 'no answer'}"))
    failed = [c for c in checks if not c[1]]
    if json_:
        print(json.dumps({"env": name, "ok": not failed, "checks": [
            {"check": n, "ok": ok, "detail": d} for n, ok, d in checks]}, indent=2))  # fmt: skip
    else:
        for check, ok, detail in checks:
            print(f"{'ok  ' if ok else 'FAIL'} {check:<24} {detail}")
    if failed:
        raise LorePinError(f"'{name}' fails validation: {failed[0][0]}: {failed[0][2]}")


ns = Collection("data", generate, cleanup, anonymize, validate)
