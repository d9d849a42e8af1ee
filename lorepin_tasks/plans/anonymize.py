"""Anonymization rules as data (staging/anonymize.yml) and the SQL that applies them
inside the database. Pure: rules and the database's columns in, statements out.

The statements run in one transaction: the source values of every rewritten column are
kept in a temporary table first, and the run fails if any of them is still present
afterwards (a rule that did nothing, a pseudonym equal to a real name). The salt is a
random value of the run, given to the session and kept nowhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lorepin_tasks.errors import ConfigError

RULES_FILE = Path("staging/anonymize.yml")
SALT = "SET LOCAL lorepin.salt = '{salt}'"  # random per run, kept nowhere
COLUMN_STRATEGIES = ("keep", "null", "hash", "hash_uuid", "pseudonym", "email")
NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
HASHED = "encode(sha256(convert_to(current_setting('lorepin.salt') || {col}::text, 'UTF8')), 'hex')"
EXPRESSIONS = {
    "null": "NULL",
    "hash": HASHED,
    "hash_uuid": f"substr({HASHED}, 1, 32)::uuid",
    "pseudonym": f"'user-' || substr({HASHED}, 1, 16)",
    "email": f"'user-' || substr({HASHED}, 1, 16) || '@example.invalid'",
}
# The columns of the CMS's tables (an extension's views, such as pg_stat_statements in
# `public`, hold no rows of the CMS's own).
COLUMNS_SQL = (
    "SELECT c.relname, a.attname FROM pg_attribute a "
    "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND a.attnum > 0 "
    "AND NOT a.attisdropped AND c.relname <> 'alembic_version' ORDER BY 1, 2"
)


@dataclass(frozen=True)
class Rules:
    tables: dict[str, str | dict[str, str]]  # table -> "truncate" | {column: strategy}
    sensitive: list[re.Pattern[str]]


def load(path: Path) -> Rules:
    """The rules file, checked: known strategies, plain names, valid patterns."""
    where = path.name
    try:
        raw: Any = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no anonymization rules at {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{where} cannot be read: {str(exc).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tables"), dict):
        raise ConfigError(f"{where}: a `tables:` mapping is required")
    tables: dict[str, str | dict[str, str]] = {}
    for table, rule in raw["tables"].items():
        if not isinstance(table, str) or not NAME.fullmatch(table):
            raise ConfigError(f"{where}: {table!r} is not a table name")
        if rule == "truncate":
            tables[table] = "truncate"
            continue
        if not isinstance(rule, dict):
            raise ConfigError(f"{where}: {table}: `truncate` or a mapping of columns")
        for column, strategy in rule.items():
            if not isinstance(column, str) or not NAME.fullmatch(column):
                raise ConfigError(f"{where}: {table}: {column!r} is not a column name")
            if strategy not in COLUMN_STRATEGIES:
                raise ConfigError(
                    f"{where}: {table}.{column}: unknown strategy {strategy!r} "
                    f"(one of {', '.join(COLUMN_STRATEGIES)})"
                )
        tables[table] = dict(rule)
    patterns = raw.get("sensitive") or []
    if not isinstance(patterns, list) or not patterns:
        raise ConfigError(f"{where}: `sensitive:` must list the patterns of personal columns")
    try:
        sensitive = [re.compile(str(p)) for p in patterns]
    except re.error as exc:
        raise ConfigError(f"{where}: a `sensitive` pattern does not compile: {exc}") from None
    return Rules(tables, sensitive)


def unruled(rules: Rules, columns: list[tuple[str, str]]) -> list[str]:
    """`table.column` of every sensitive-looking column with no rule (its table not
    truncated): each one fails the run."""
    missing = []
    for table, column in columns:
        rule = rules.tables.get(table)
        if rule == "truncate" or (isinstance(rule, dict) and column in rule):
            continue
        if any(p.fullmatch(column) for p in rules.sensitive):
            missing.append(f"{table}.{column}")
    return missing


def unknown(rules: Rules, columns: list[tuple[str, str]]) -> list[str]:
    """Rules naming a table or column the database does not have (a typo, or a schema
    that moved on): each one fails the run too."""
    have = set(columns)
    tables = {t for t, _ in columns}
    wrong = [t for t in rules.tables if t not in tables]
    for table, rule in rules.tables.items():
        if isinstance(rule, dict) and table in tables:
            wrong += [f"{table}.{c}" for c in rule if (table, c) not in have]
    return wrong


def statements(rules: Rules) -> list[str]:
    """The run, in its transaction (the caller has BEGUN and SET lorepin.salt): keep the
    source values, rewrite, then a query whose answer must be 0."""
    out = ["CREATE TEMPORARY TABLE lorepin_source (tbl text, col text, val text) ON COMMIT DROP"]
    rewrites: list[tuple[str, str, str]] = []
    for table, rule in rules.tables.items():
        if isinstance(rule, str):  # truncate
            out.append(f"TRUNCATE public.{table}")
            continue
        for column, strategy in rule.items():
            if strategy != "keep":
                rewrites.append((table, column, strategy))
    for table, column, _ in rewrites:
        out.append(
            f"INSERT INTO lorepin_source SELECT '{table}', '{column}', {column}::text "  # noqa: S608
            f"FROM public.{table} WHERE {column} IS NOT NULL"
        )
    by_table: dict[str, list[str]] = {}
    for table, column, strategy in rewrites:
        by_table.setdefault(table, []).append(
            f"{column} = {EXPRESSIONS[strategy].format(col=column)}"
        )
    for table, sets in by_table.items():
        out.append(f"UPDATE public.{table} SET {', '.join(sets)}")  # noqa: S608 (checked names)
    return out


def leaks_sql(rules: Rules) -> str:
    """How many source values of a rewritten column are still in it (must be 0)."""
    parts = ["SELECT 0"]
    for table, rule in rules.tables.items():
        if not isinstance(rule, dict):
            continue
        for column, strategy in rule.items():
            if strategy in ("keep", "null"):
                continue
            parts.append(
                f"SELECT count(*) FROM public.{table} t JOIN lorepin_source s "  # noqa: S608
                f"ON s.tbl = '{table}' AND s.col = '{column}' AND s.val = t.{column}::text"
            )
    return f"SELECT sum(n) FROM ({' UNION ALL '.join(parts)}) AS leaks(n)"  # noqa: S608
