"""What `monitor.up` says when promtool or amtool refuses the configuration."""

from __future__ import annotations

import json

import pytest

from lorepin_tasks.plans.monitoring import error_groups, query_problems, since_seconds
from lorepin_tasks.tasks.monitor import why
from tests.conftest import ROOT

PROMTOOL = """Checking monitoring/prometheus.yml
  SUCCESS: 2 rule files found

Checking monitoring/rules/alerts.yml
  FAILED:
     monitoring/rules/alerts.yml: 101:15: group "lorepin-database", rule 1, "DatabaseDown": \
could not parse expression: 1:10: parse error: unexpected <op:==>
"""


def test_the_reason_is_the_checkers_failure_line_with_what_it_announces() -> None:
    assert why(PROMTOOL) == (
        'FAILED: monitoring/rules/alerts.yml: 101:15: group "lorepin-database", rule 1, '
        '"DatabaseDown": could not parse expression: 1:10: parse error: unexpected <op:==>'
    )


def test_a_one_line_failure_is_kept_whole_and_silence_is_said() -> None:
    amtool = "Checking 'monitoring/alertmanager.yml'  FAILED: yaml: line 3: mapping values\n"
    assert (
        why(amtool)
        == "Checking 'monitoring/alertmanager.yml'  FAILED: yaml: line 3: mapping values"
    )
    assert why("") == "no reason given"


def test_the_projects_postgres_queries_are_sound() -> None:
    assert query_problems((ROOT / "monitoring" / "postgres-queries.yml").read_text()) == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: [", "line 1: not YAML"),
        ("[]", "not a mapping of query names to queries"),
        ("q: {metrics: [{n: {usage: GAUGE}}]}", "q: needs a `query`"),
        ("q: {query: SELECT 1 AS n}", "q: needs `metrics`"),
        ("q: {query: SELECT 1 AS n, metrics: [{n: {usage: GAUGES}}]}", "q.n: usage must be one"),
    ],
)
def test_a_broken_queries_file_is_named_before_it_reaches_the_exporter(
    text: str, problem: str
) -> None:
    assert query_problems(text)[0].startswith(problem)


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("24h", 86400), ("7d", 604800),
                                               ("2w", 1209600)])  # fmt: skip
def test_look_backs_as_people_write_them(text: str, seconds: int) -> None:
    assert since_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "0d", "1y", "-1h", "7 d", "1h;", "99999d"])
def test_other_look_backs_are_refused_in_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="--since must look like 30m, 24h, 7d or 2w"):
        since_seconds(text)


def event(fingerprint: str, at: str, route: str = "/api/pins", request_id: str = "r") -> str:
    fields = {"event": "unhandled_error", "time": at, "fingerprint": fingerprint,
              "type": "KeyError", "category": "server", "route": route, "method": "GET",
              "request_id": request_id, "frames": ["app.py:10:list_pins"]}  # fmt: skip
    return json.dumps(fields)


def test_unhandled_errors_are_grouped_by_fingerprint_most_frequent_first() -> None:
    lines = [
        'INFO:     10.0.0.2:5000 - "GET /api/pins HTTP/1.1" 500 Internal Server Error',
        event("bbb", "2026-12-01T10:00:05.000+00:00", request_id="r1"),
        event("aaa", "2026-12-01T09:00:00.000+00:00"),
        event("bbb", "2026-12-01T10:00:01.000+00:00", route="/api/pins/{pin_id}"),
        event("bbb", "2026-12-01T10:00:09.000+00:00", request_id="r3"),
        '{"event": "unhandled_error", broken',
    ]
    first, second = error_groups(lines)
    assert (first["fingerprint"], first["count"], second["fingerprint"]) == ("bbb", 3, "aaa")
    assert first["first"] == "2026-12-01T10:00:01.000+00:00"
    assert first["last"] == "2026-12-01T10:00:09.000+00:00"
    assert first["routes"] == ["GET /api/pins", "GET /api/pins/{pin_id}"]
    assert first["request_ids"] == ["r1", "r", "r3"]
