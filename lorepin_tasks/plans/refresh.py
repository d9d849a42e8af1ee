"""Staging's data from production's (`invoke staging.refresh`) and the checks of the
result (`invoke data.validate`). Pure: names, manifests and rules in, SQL and choices out.

The production backup is restored into a throwaway PostgreSQL next to production, never
into staging's cluster: its real values never reach staging's WAL archive, replica or
backups. Anonymized there, its `public` schema is renamed INCOMING and copied into
staging's database beside the live one, while staging serves on. The swap is one short
transaction: the live `public` becomes BEFORE, INCOMING becomes `public`, staging's own
users and tokens move across, the grants are applied again. BEFORE is dropped once the
CMS answers ready on the new data, or renamed back if it does not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lorepin_cms import db_roles
from lorepin_tasks.plans import anonymize as anonymize_plan
from lorepin_tasks.plans.backup import Backup
from lorepin_tasks.plans.db import DB_NAME

INCOMING = "lorepin_refresh"  # the anonymized copy, beside the live schema until the swap
BEFORE = "lorepin_before_refresh"  # the live schema just swapped out (dropped once ready)
SWAP_LOCK_TIMEOUT = "5s"  # the longest the swap waits for a client's transaction
# What the swap renames must be nothing else's: an extension living in `public`
# (pg_stat_statements) moves back to the new `public`.
EXTENSIONS_SQL = (
    "SELECT e.extname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
    "WHERE n.nspname = 'public' ORDER BY 1"
)


def not_enforced_sql(schema: str = "public") -> str:
    """A constraint or an index of `schema` not enforced (a restore that left one NOT VALID,
    an index build that failed): each one named."""
    return (
        "SELECT c.conrelid::regclass || ' ' || c.conname FROM pg_constraint c "  # noqa: S608
        "JOIN pg_namespace n ON n.oid = c.connamespace "
        f"WHERE n.nspname = '{schema}' AND NOT c.convalidated "
        "UNION ALL SELECT i.indexrelid::regclass::text FROM pg_index i "
        "JOIN pg_class r ON r.oid = i.indrelid JOIN pg_namespace n ON n.oid = r.relnamespace "
        f"WHERE n.nspname = '{schema}' AND NOT (i.indisvalid AND i.indisready) ORDER BY 1"
    )


def source_backup(found: Sequence[Backup], wanted: str | None) -> Backup:
    """The backup a refresh takes: `wanted`, or the newest one whose verification passed.
    A backup that failed (or never had) a verification is refused: an unverified copy of
    production is not what staging is tested against."""
    if wanted:
        match = next((b for b in found if b.id == wanted), None)
        if match is None:
            raise ValueError(f"production has no logical backup {wanted} (`invoke backup.list "
                             "--env production`)")  # fmt: skip
        if match.problem:
            raise ValueError(f"backup {wanted} is unusable: {match.problem}")
        if not match.verified:
            state = f"failed its verification ({match.failed})" if match.failed else (
                "is not verified")  # fmt: skip
            raise ValueError(f"backup {wanted} {state}: `invoke backup.verify --env production "
                             f"--id {wanted}` first")  # fmt: skip
        return match
    good = [b for b in found if b.good and b.verified]
    if not good:
        raise ValueError(
            "production has no verified logical backup: take one and verify it first "
            "(`invoke backup.create --env production` then `invoke backup.verify --env "
            "production`)"
        )
    return good[0]  # listed newest first


def public_counts(manifest: Mapping[str, Any]) -> dict[str, int]:
    """The backup's row count of each of the CMS's tables (the ops schema stays staging's)."""
    out = {}
    for name, rows in (manifest.get("tables") or {}).items():
        schema, _, table = name.rpartition(".")
        if schema in ("", "public") and table != "alembic_version":
            out[table.strip('"')] = int(rows)
    return out


def expected_counts(manifest: Mapping[str, Any], rules: anonymize_plan.Rules) -> dict[str, int]:
    """What the anonymized copy holds: the backup's rows, none of a truncated table."""
    return {
        table: 0 if rules.tables.get(table) == "truncate" else rows
        for table, rows in public_counts(manifest).items()
    }


def count_problems(expected: Mapping[str, int], found: Mapping[str, int]) -> list[str]:
    return [
        f"{table} has {found.get(table, 'no')} rows, the source {rows}"
        for table, rows in expected.items()
        if found.get(table) != rows
    ]


def counts_sql(tables: Sequence[str], *, since: str | None = None, schema: str = "public") -> str:
    """Rows per table; with `since` (the source backup's time), only those the source
    could hold: staging's own since (its users holding tokens, its test data, its
    activity and pins made after) are left out of the comparison."""
    parts = []
    for table in tables:
        where = ""
        if since is not None:
            where = _SINCE.get(table, "").format(since=since.replace("'", "''"))
        parts.append(f"SELECT '{table}', count(*) FROM {schema}.{table}{where}")  # noqa: S608
    return " UNION ALL ".join(parts) or "SELECT '', 0 WHERE false"


_SINCE = {
    "pins": " WHERE created_at <= '{since}' AND NOT tags @> ARRAY['test-data']",
    "activity": " WHERE at <= '{since}'",
    "cms_users": (
        " WHERE name !~ '\\.td[0-9]+$' AND NOT EXISTS "
        "(SELECT 1 FROM public.api_tokens a WHERE a.user_id = cms_users.id)"
    ),
}


def sensitive_columns(
    rules: anonymize_plan.Rules, columns: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Columns whose values must never equal production's: every one a rule rewrites, and
    the personal-looking ones of a truncated table (staging's own tokens)."""
    out = []
    for table, column in columns:
        rule = rules.tables.get(table)
        rewritten = isinstance(rule, dict) and rule.get(column) not in (None, "keep", "null")
        personal = any(p.fullmatch(column) for p in rules.sensitive)
        if rewritten or (rule == "truncate" and personal):
            out.append((table, column))
    return out


def values_sql(table: str, column: str) -> str:
    """A column's distinct values, as digests (names come from the rules, checked)."""
    return (
        f"SELECT DISTINCT md5({column}::text) FROM public.{table} "  # noqa: S608
        f"WHERE {column} IS NOT NULL"
    )


CLEAR_INCOMING = f"DROP SCHEMA IF EXISTS {INCOMING} CASCADE"  # a run cut short left it


# -- one pass of the data: what goes through the throwaway and what goes straight in ----
#
# Only the tables the rules rewrite go through the throwaway beside production (restored,
# anonymized, then copied); a truncated table's rows go nowhere; every other table (the
# rules leave its values as they are: pins) is loaded into staging straight from the
# backup. The definitions come from the backup too, renamed into INCOMING; indexes and
# constraints are built once, in staging, after the rows.

_MULTI = ("TABLE DATA", "SEQUENCE SET", "SEQUENCE OWNED BY", "FK CONSTRAINT", "DEFAULT ACL",
          "INDEX ATTACH")  # fmt: skip
PRE_DATA = frozenset({"TABLE", "SEQUENCE", "SEQUENCE OWNED BY", "DEFAULT", "TYPE", "DOMAIN",
                      "FUNCTION", "VIEW", "COMMENT", "COLLATION"})  # fmt: skip
POST_DATA = frozenset({"CONSTRAINT", "FK CONSTRAINT", "INDEX", "INDEX ATTACH", "TRIGGER", "RULE",
                       "POLICY", "STATISTICS"})  # fmt: skip


@dataclass(frozen=True)
class Entry:
    line: str
    kind: str
    schema: str
    name: str


def toc(listing: str) -> list[Entry]:
    """`pg_restore -l`'s entries ("<id>; <oid> <oid> <TYPE...> <schema> <name> ...")."""
    entries = []
    for line in listing.splitlines():
        if line.startswith(";") or not line.strip():
            continue
        words = line.split(" ")[3:]
        kind = next((m for m in _MULTI if " ".join(words).startswith(m + " ")), words[0])
        rest = words[len(kind.split()) :]
        if len(rest) >= 2:
            entries.append(Entry(line, kind, rest[0], rest[1]))
    return entries


def rewritten(rules: anonymize_plan.Rules) -> list[str]:
    """Tables whose rows go through the throwaway: a rule rewrites a column of theirs."""
    return [t for t, rule in rules.tables.items()
            if isinstance(rule, dict) and any(v != "keep" for v in rule.values())]  # fmt: skip


def throwaway_list(entries: Sequence[Entry], rules: anonymize_plan.Rules) -> str:
    """What the throwaway restores: the CMS's definitions (no index, no constraint: built
    in staging), every sequence's value, and the rows of the tables the rules rewrite."""
    through = set(rewritten(rules))
    return _list(e for e in entries if e.schema == "public" and (
        e.kind in PRE_DATA or e.kind == "SEQUENCE SET"
        or (e.kind == "TABLE DATA" and e.name in through)))  # fmt: skip


def incoming_lists(entries: Sequence[Entry], rules: anonymize_plan.Rules
                   ) -> tuple[str, str, str]:  # fmt: skip
    """What staging takes from the backup itself: the definitions, the rows of the tables
    the rules leave as they are, then indexes and constraints."""
    through = set(rewritten(rules))
    gone = {t for t, rule in rules.tables.items() if rule == "truncate"}
    public = [e for e in entries if e.schema == "public"]
    return (
        _list(e for e in public if e.kind in PRE_DATA),
        _list(e for e in public if e.kind == "TABLE DATA" and e.name not in through | gone),
        _list(e for e in public if e.kind in POST_DATA),
    )


def _list(entries: Iterable[Entry]) -> str:
    return "".join(f"{e.line}\n" for e in entries)


_PUBLIC = re.compile(r"(?<![\w\".$])public\.")


def into_incoming(ddl: str) -> str:
    """Definitions of `public` as pg_restore writes them (every name qualified), made
    those of INCOMING."""
    return _PUBLIC.sub(f"{INCOMING}.", ddl)


# Rows as pg_restore or pg_dump write them, into INCOMING: only the COPY lines and the
# statements between them are renamed, never a row (awk in the database container).
ROWS_INTO_INCOMING = f"""BEGIN {{ rows = 0 }}
rows {{ print; if ($0 == "\\\\.") rows = 0; next }}
/^COPY public\\./ {{ sub(/^COPY public\\./, "COPY {INCOMING}."); rows = 1; print; next }}
{{ gsub(/'public\\./, "'{INCOMING}."); print }}
"""

# In the throwaway: each sequence's value, as statements setting INCOMING's.
SEQUENCES_SQL = (
    "SELECT format('SELECT pg_catalog.setval(%L, %s, %s);', "  # noqa: S608 (constants)
    f"'{INCOMING}.' || quote_ident(sequencename), coalesce(last_value, start_value), "
    "(last_value IS NOT NULL)::text) FROM pg_sequences WHERE schemaname = 'public' ORDER BY 1"
)


def swap_sql(extensions: Sequence[str]) -> list[str]:
    """The swap, in the caller's transaction: staging's `public` out, INCOMING in, the
    extensions and grants with it, staging's users holding live tokens (and the tokens)
    carried across under their names."""
    kept = (
        f"{BEFORE}.cms_users u WHERE EXISTS (SELECT 1 FROM {BEFORE}.api_tokens t "  # noqa: S608
        "WHERE t.user_id = u.id AND t.revoked_at IS NULL AND t.expires_at > now())"
    )
    return [
        f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'",
        f"DROP SCHEMA IF EXISTS {BEFORE} CASCADE",
        LOCK_WRITES,
        f"ALTER SCHEMA public RENAME TO {BEFORE}",
        f"ALTER SCHEMA {INCOMING} RENAME TO public",
        *(f"ALTER EXTENSION {e} SET SCHEMA public" for e in extensions),
        "ALTER SCHEMA public OWNER TO pg_database_owner",
        "GRANT USAGE ON SCHEMA public TO PUBLIC",
        *(g.replace("{database}", DB_NAME) for g in db_roles.GRANTS),
        # A pseudonym equal to one of staging's names fails the swap (unique), never merges.
        f"INSERT INTO public.cms_users (name, role, created_at) "  # noqa: S608
        f"SELECT u.name, u.role, u.created_at FROM {kept}",
        "INSERT INTO public.api_tokens (key, secret_sha256, user_id, role, created_at, "  # noqa: S608
        "expires_at) SELECT t.key, t.secret_sha256, n.id, t.role, t.created_at, t.expires_at "
        f"FROM {BEFORE}.api_tokens t JOIN {BEFORE}.cms_users o ON o.id = t.user_id "
        "JOIN public.cms_users n ON n.name = o.name "
        "WHERE t.revoked_at IS NULL AND t.expires_at > now()",
    ]


# The write pause: writers finish (up to the lock timeout), new ones wait; readers go on.
LOCK_WRITES = """DO $$ DECLARE t record; BEGIN
  FOR t IN SELECT format('%I.%I', schemaname, tablename) AS n FROM pg_tables
           WHERE schemaname = 'public' ORDER BY 1 LOOP
    EXECUTE 'LOCK TABLE ' || t.n || ' IN EXCLUSIVE MODE';
  END LOOP;
END $$"""
# A write that waited through the swap was parsed against the old tables: its session is
# ended, so the client sees an error (and tries again on the new data) instead of a write
# that lands in the schema about to be dropped. Run last in the swap's transaction.
END_WAITING_WRITERS = (
    "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l "  # noqa: S608
    "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
    f"WHERE n.nspname = '{BEFORE}' AND NOT l.granted AND l.pid <> pg_backend_pid()"
)


def swap_back_sql(extensions: Sequence[str]) -> list[str]:
    """The swap undone (the CMS was not ready on the new data): the previous data serves."""
    return [
        f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'",
        f"ALTER SCHEMA public RENAME TO {INCOMING}",
        f"ALTER SCHEMA {BEFORE} RENAME TO public",
        *(f"ALTER EXTENSION {e} SET SCHEMA public" for e in extensions),
        f"DROP SCHEMA {INCOMING} CASCADE",
    ]


DROP_BEFORE = f"DROP SCHEMA IF EXISTS {BEFORE} CASCADE"
