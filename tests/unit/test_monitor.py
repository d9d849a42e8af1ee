"""What `monitor.up` says when promtool or amtool refuses the configuration."""

from __future__ import annotations

from lorepin_tasks.tasks.monitor import why

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
