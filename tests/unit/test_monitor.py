"""What `monitor.up` says when promtool or amtool refuses the configuration."""

from __future__ import annotations

import pytest

from lorepin_tasks.plans.monitoring import query_problems
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
