"""The database report's judgement (lorepin_tasks.plans.db_report): which index a slow
statement wants, which indexes are dead weight, what db.maintain does."""

from __future__ import annotations

from typing import Any

from lorepin_tasks.plans import db_report as plan

SLOW: dict[str, Any] = {"id": "42", "calls": 30, "total_ms": 900.0, "mean_ms": 30.0, "rows": 30,
        "query": "SELECT count(*) FROM pins WHERE pins.place_name = $1 "
                 "/* request_id='req-1' */"}  # fmt: skip
FAST: dict[str, Any] = {"id": "7", "calls": 900, "total_ms": 90.0, "mean_ms": 0.1, "rows": 900,
        "query": "SELECT pins.id FROM pins WHERE pins.id = $1"}  # fmt: skip


def table(name: str, live: int, seq: int, idx: int, dead: int = 0) -> dict[str, Any]:
    return {"schema": "public", "table": name, "seq_scan": seq, "seq_tup_read": seq * live,
            "idx_scan": idx, "live_rows": live, "dead_rows": dead}  # fmt: skip


def index(name: str, table: str, columns: list[str], scans: int = 5, **more: Any) -> dict[str, Any]:
    return {"schema": "public", "table": table, "index": name, "scans": scans, "columns": columns,
            "is_unique": False, "is_primary": False, "valid": True, "bytes": 8192,
            "shape": " ".join(columns), **more}  # fmt: skip


def raw(**over: Any) -> dict[str, Any]:
    return {
        "statements": [SLOW, FAST],
        "tables": [table("pins", 50_000, 40, 900), table("tags", 200, 500, 0)],
        "indexes": [index("pins_pkey", "pins", ["id"], is_primary=True, is_unique=True)],
        "database": {"cache_hit_ratio": 0.99, "connections": [], "max_connections": 100,
                     "size_bytes": 1, "statements_tracked": True},
        **over,
    }  # fmt: skip


def test_predicates_are_read_from_the_statement_without_its_comments() -> None:
    assert plan.clean(SLOW["query"]) == "SELECT count(*) FROM pins WHERE pins.place_name = $1"
    query = "SELECT * FROM pins WHERE pins.a >= $1 AND pins.b ILIKE $2 AND pins.c IN ($3, $4)"
    assert plan.predicates(query) == [("pins", "a"), ("pins", "b"), ("pins", "c")]
    bare = "SELECT count(*) FROM pins WHERE place_name = $1 AND status <> 'x'"
    assert plan.predicates(bare) == [("pins", "place_name")]  # one table: its columns
    joined = "SELECT * FROM pins JOIN tags ON tags.pin = pins.id WHERE name = $1"
    assert plan.predicates(joined) == []  # whose column? not guessed


def test_a_slow_filter_on_a_large_scanned_table_gets_an_index_a_small_one_does_not() -> None:
    rep = plan.report(raw())
    assert [(c["table"], c["column"], c["index"]) for c in rep["index_candidates"]] == [
        ("pins", "place_name", "CREATE INDEX CONCURRENTLY ix_pins_place_name ON pins (place_name)")
    ]
    assert rep["top_total"][0]["id"] == "42" and rep["top_mean"][0]["id"] == "42"
    assert "request_id" not in rep["top_total"][0]["query"]
    pkey = index("pins_pkey", "pins", ["id"], is_primary=True, is_unique=True)
    led = raw(indexes=[pkey, index("ix_pins_place", "pins", ["place_name", "id"])])
    assert plan.report(led)["index_candidates"] == []  # an index leads with it already
    rarely = raw(tables=[table("pins", 50_000, 2, 900)])
    assert plan.report(rarely)["index_candidates"] == []  # mostly read through indexes


def test_unused_duplicate_and_invalid_indexes_and_dead_rows_are_named() -> None:
    rep = plan.report(raw(
        tables=[table("pins", 50_000, 40, 900, dead=25_000)],
        indexes=[index("a", "pins", ["title"], scans=0), index("b", "pins", ["title"]),
                 index("u", "pins", ["slug"], scans=0, is_unique=True),
                 index("broken", "pins", ["tags"], valid=False)],
    ))  # fmt: skip
    assert [i["index"] for i in rep["unused_indexes"]] == ["a"]  # not the unique one
    assert rep["duplicate_indexes"] == [{"table": "pins", "indexes": ["a", "b"]}]
    assert [i["index"] for i in rep["invalid_indexes"]] == ["broken"]
    assert rep["bloat"][0]["dead_ratio"] == 0.333
    assert plan.maintenance(rep) == [
        ('VACUUM (ANALYZE) "public"."pins"', "25000 dead rows (33%)"),
        ('REINDEX INDEX CONCURRENTLY "public"."broken"', "invalid (a failed build)"),
    ]
    assert plan.maintenance(plan.report(raw())) == []
    small = raw(tables=[table("tags", 3, 0, 0, dead=3)])  # all dead, but three rows
    assert plan.report(small)["bloat"] == []


def test_psql_s_one_json_document_is_read_and_nothing_is_none() -> None:
    assert plan.loaded([['{"a": 1}']]) == {"a": 1}
    assert plan.loaded([]) is None


def test_db_maintain_takes_the_migrator_s_own_lock() -> None:
    from lorepin_cms.migrator.runner import LOCK_KEY
    from lorepin_tasks.tasks.db_performance import LOCK_KEY as MAINTAIN

    assert MAINTAIN == LOCK_KEY
