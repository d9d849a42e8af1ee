"""The database's performance report (`invoke db.report`) and its maintenance
(`invoke db.maintain`), as SQL and as data. Pure: the rows come in.

Sources: `pg_stat_statements` (the statements by total and by mean time), the statistics
views (sequential scans on large tables, unused indexes, dead rows, cache hits,
connections) and the catalogs (duplicate indexes). An index candidate is a column the
slow statements filter a large, sequentially scanned table by, with no index leading
with it: the report names the index that would serve it (docs/database-performance.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Tables under this many rows are read whole faster than through an index.
LARGE_TABLE = 10_000
SCANS = 10  # sequential scans of a large table from which they are a pattern
DEAD_RATIO = 0.10  # dead rows over live + dead above which a table wants VACUUM
DEAD_MIN = 1_000  # ... when it has at least this many (a small table vacuums in no time)
TOP = 10
# `table.column <op> $n` as SQLAlchemy writes its filters; pg_stat_statements replaces
# the constants with $n.
PREDICATE = re.compile(
    r"\b(?P<table>[a-z_][a-z0-9_]*)\.(?P<column>[a-z_][a-z0-9_]*)\s*"
    r"(?:=|<=|>=|<|>|(?:NOT\s+)?I?LIKE|IN\s*\(|= ANY\s*\()\s*\(?\$\d+",
    re.IGNORECASE,
)
COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)
FROM = re.compile(r"\b(?:FROM|JOIN)\s+(?:[a-z_][a-z0-9_]*\.)?([a-z_][a-z0-9_]*)", re.IGNORECASE)
BARE = re.compile(
    r"(?<![.\w])(?P<column>[a-z_][a-z0-9_]*)\s*(?:=|<=|>=|<|>|(?:NOT\s+)?I?LIKE)\s*\$\d+",
    re.IGNORECASE,
)

# Each query returns one row: one JSON document (jsonb: its text has no line breaks,
# which psql would split into rows).
SQL = {
    "statements": """
SELECT coalesce(jsonb_agg(t), '[]') FROM (
  SELECT queryid::text AS id, calls, round(total_exec_time::numeric, 1) AS total_ms,
         round(mean_exec_time::numeric, 2) AS mean_ms, rows,
         left(regexp_replace(query, '\\s+', ' ', 'g'), 500) AS query
  FROM pg_stat_statements
  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND query !~* '^\\s*(BEGIN|COMMIT|ROLLBACK|SET|SHOW|DEALLOCATE)\\b'
  ORDER BY total_exec_time DESC LIMIT 200) t""",
    "tables": """
SELECT coalesce(jsonb_agg(t), '[]') FROM (
  SELECT schemaname AS schema, relname AS table, seq_scan, seq_tup_read,
         coalesce(idx_scan, 0) AS idx_scan, n_live_tup AS live_rows, n_dead_tup AS dead_rows,
         last_autovacuum, last_vacuum, pg_total_relation_size(relid) AS bytes
  FROM pg_stat_user_tables ORDER BY relname) t""",
    "indexes": """
SELECT coalesce(jsonb_agg(t), '[]') FROM (
  SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index,
         s.idx_scan AS scans, i.indisunique AS is_unique, i.indisprimary AS is_primary,
         pg_relation_size(s.indexrelid) AS bytes,
         (SELECT array_agg(a.attname ORDER BY k.n) FROM unnest(i.indkey) WITH ORDINALITY k(att, n)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.att) AS columns,
         i.indkey::text || ' ' || coalesce(pg_get_expr(i.indexprs, i.indrelid), '') || ' '
           || coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS shape,
         i.indisvalid AS valid
  FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
  ORDER BY s.relname, s.indexrelname) t""",
    "database": """
SELECT jsonb_build_object(
  'cache_hit_ratio', (SELECT round(blks_hit::numeric / nullif(blks_hit + blks_read, 0), 4)
                      FROM pg_stat_database WHERE datname = current_database()),
  'size_bytes', pg_database_size(current_database()),
  'connections', (SELECT coalesce(jsonb_agg(c), '[]') FROM (
      SELECT coalesce(state, 'background') AS state, count(*) AS count,
             round(extract(epoch FROM max(now() - coalesce(state_change, backend_start)))
                   ::numeric, 1) AS oldest_s,
             coalesce(application_name, '') AS application
      FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
      GROUP BY 1, 4 ORDER BY 1, 4) c),
  'max_connections', current_setting('max_connections')::int,
  'statements_tracked', (SELECT count(*) > 0 FROM pg_extension
                         WHERE extname = 'pg_stat_statements'))""",
}


def loaded(rows: Sequence[Sequence[str]]) -> Any:
    """The one JSON document of psql's one-row, one-column answer."""
    return json.loads(rows[0][0]) if rows and rows[0] and rows[0][0] else None


def clean(query: str) -> str:
    """A statement without its comments (the request ids) and extra spaces."""
    return " ".join(COMMENT.sub("", query).split())


def predicates(query: str) -> list[tuple[str, str]]:
    """(table, column) pairs a statement filters by: `table.column <op> $n`, or a bare
    `column <op> $n` of a statement that reads one table."""
    found = [(m["table"], m["column"]) for m in PREDICATE.finditer(query)]
    tables = FROM.findall(query)
    if not found and len(tables) == 1 and (where := query.upper().find(" WHERE ")) >= 0:
        found = [(tables[0], m["column"]) for m in BARE.finditer(query[where:])]
    return list(dict.fromkeys(found))


def candidates(
    statements: Sequence[Mapping[str, Any]],
    tables: Sequence[Mapping[str, Any]],
    indexes: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """An index per (table, column) that slow statements filter a large, mostly
    sequentially scanned table by, where no index leads with that column."""
    by_name = {t["table"]: t for t in tables}
    leading = {(i["table"], (i.get("columns") or [None])[0]) for i in indexes if i.get("valid")}
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for s in sorted(statements, key=lambda s: -float(s["mean_ms"])):
        for table, column in predicates(s["query"]):
            t = by_name.get(table)
            if t is None or (table, column) in leading or (table, column) in found:
                continue
            if not large_and_scanned(t):
                continue
            found[(table, column)] = {
                "table": table,
                "column": column,
                "index": f"CREATE INDEX CONCURRENTLY ix_{table}_{column} ON {table} ({column})",
                "why": f"{t['seq_scan']} sequential scans read {t['seq_tup_read']} rows of "
                f"{t['live_rows']}; statement {s['id']} filters by {column} "
                f"({s['calls']} calls, mean {s['mean_ms']} ms)",
                "statement": s["id"],
            }
    return list(found.values())


def duplicates(indexes: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Indexes with the same table, columns, expressions and predicate as another."""
    groups: dict[tuple[str, str], list[str]] = {}
    for i in indexes:
        groups.setdefault((i["table"], i["shape"]), []).append(i["index"])
    return [{"table": t, "indexes": sorted(names)} for (t, _), names in groups.items()
            if len(names) > 1]  # fmt: skip


def dead_ratio(table: Mapping[str, Any]) -> float:
    dead = int(table["dead_rows"])
    return dead / (int(table["live_rows"]) + dead) if dead >= DEAD_MIN else 0.0


def large_and_scanned(table: Mapping[str, Any]) -> bool:
    """Large, and read whole (sequential scans) again and again, whatever its indexes
    serve besides: the statements that scan it want an index."""
    return int(table["live_rows"]) >= LARGE_TABLE and int(table["seq_scan"]) >= SCANS


def unused(index: Mapping[str, Any]) -> bool:
    return int(index["scans"]) == 0 and not index["is_unique"] and not index["is_primary"]


def report(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The report from the four documents of SQL."""
    statements = [{**s, "query": clean(s["query"])} for s in raw["statements"] or []]
    tables, indexes, database = raw["tables"] or [], raw["indexes"] or [], raw["database"] or {}
    dead = [
        {**t, "dead_ratio": round(dead_ratio(t), 3)} for t in tables if dead_ratio(t) > DEAD_RATIO
    ]
    return {
        "statements_tracked": bool(database.get("statements_tracked")),
        "top_total": statements[:TOP],
        "top_mean": sorted(statements, key=lambda s: -float(s["mean_ms"]))[:TOP],
        "index_candidates": candidates(statements, tables, indexes),
        "sequential_scans": [t for t in tables if large_and_scanned(t)],
        "unused_indexes": [i for i in indexes if unused(i)],
        "duplicate_indexes": duplicates(indexes),
        "invalid_indexes": [i for i in indexes if not i.get("valid")],
        "bloat": dead,
        "cache_hit_ratio": database.get("cache_hit_ratio"),
        "connections": database.get("connections") or [],
        "max_connections": database.get("max_connections"),
        "size_bytes": database.get("size_bytes"),
    }


def maintenance(rep: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(statement, why) for what the report says wants care: VACUUM (ANALYZE) for tables
    with many dead rows, REINDEX CONCURRENTLY for invalid indexes (a failed concurrent
    build leaves one)."""
    steps = [
        (f'VACUUM (ANALYZE) "{t["schema"]}"."{t["table"]}"',
         f"{t['dead_rows']} dead rows ({t['dead_ratio']:.0%})")
        for t in rep["bloat"]
    ]  # fmt: skip
    steps += [
        (f'REINDEX INDEX CONCURRENTLY "{i["schema"]}"."{i["index"]}"', "invalid (a failed build)")
        for i in rep["invalid_indexes"]
    ]
    return steps
