"""CI's results read from pytest's JUnit XML and coverage.py's XML: figures, the job
summary, the team's message; anything else is a one-line refusal."""

from __future__ import annotations

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import ci

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="1" skipped="1" tests="5"
 time="125.5">
<testcase classname="tests.unit.test_a" name="test_ok" time="0.1"/>
<testcase classname="tests.unit.test_a" name="test_bad[x|y]" time="0.2">
  <failure message="AssertionError: assert 2 == 3&#10;second line">trace</failure>
</testcase>
<testcase classname="tests.e2e.test_b" name="test_setup" time="0.1">
  <error message="failed on setup with &quot;boom&quot;">trace</error>
</testcase>
<testcase classname="tests.unit.test_a" name="test_skipped"><skipped message="no"/></testcase>
<testcase classname="tests.unit.test_a" name="test_ok2" time="0.1"/>
</testsuite></testsuites>"""


def test_the_figures_and_each_failure_with_its_first_line() -> None:
    results = ci.junit(JUNIT, "junit.xml")
    assert (results.tests, results.passed, results.failed, results.errors, results.skipped) == (
        5, 2, 1, 1, 1,
    )  # fmt: skip
    assert results.failures == (
        ci.Failure(
            "tests/unit/test_a.py::test_bad[x|y]", "failure", "AssertionError: assert 2 == 3"
        ),
        ci.Failure("tests/e2e/test_b.py::test_setup", "error", 'failed on setup with "boom"'),
    )


def test_the_summary_is_a_markdown_table_with_the_failures() -> None:
    text = ci.summary(ci.junit(JUNIT, "junit.xml"), 0.8812)
    assert text.startswith("### Tests FAILED\n")
    assert "| 5 | 2 | 1 | 1 | 1 | 2.1 min | 88.1% |" in text
    assert "| tests/unit/test_a.py::test_bad[x\\|y] | AssertionError: assert 2 == 3 |" in text


def test_the_message_names_the_failures_and_the_run() -> None:
    text = ci.message(ci.junit(JUNIT, "junit.xml"), "https://ci.example/run/7")
    assert text.splitlines() == [
        "CI failed: https://ci.example/run/7",
        "2 of 5 tests failed:",
        "- tests/unit/test_a.py::test_bad[x|y] (failure): AssertionError: assert 2 == 3",
        '- tests/e2e/test_b.py::test_setup (error): failed on setup with "boom"',
    ]
    green = ci.junit('<testsuite tests="3" failures="0" errors="0" skipped="0" time="1"/>', "j")
    assert ci.message(green, None) == "CI failed\nno test failed (3 ran): another step did"


def test_many_failures_are_counted_past_the_ones_shown() -> None:
    cases = "".join(f'<testcase classname="t" name="n{i}"><failure message="m"/></testcase>'
                    for i in range(25))  # fmt: skip
    text = ci.message(
        ci.junit(f'<testsuite tests="25" failures="25">{cases}</testsuite>', "j"), None
    )
    assert text.splitlines()[-1] == "... and 5 more"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "junit.xml: not JUnit XML (no element found"),
        ("<html><body>502</body></html>", "junit.xml: not JUnit XML (no <testsuite>)"),
        ('<testsuite tests="many"/>', "junit.xml: not JUnit XML (could not convert"),
        ("<testsuite", "junit.xml: not JUnit XML (unclosed token"),
    ],
)
def test_a_file_that_is_not_junit_is_a_one_line_refusal(text: str, error: str) -> None:
    with pytest.raises(ConfigError) as refused:
        ci.junit(text, "junit.xml")
    assert str(refused.value).startswith(error) and "\n" not in str(refused.value)


def test_coverage_is_the_line_rate_or_a_refusal() -> None:
    assert ci.coverage('<coverage line-rate="0.875" branch-rate="0.5"/>', "c.xml") == 0.875
    for bad in ("<coverage/>", "not xml", '<coverage line-rate="high"/>'):
        with pytest.raises(ConfigError, match=r"c\.xml: not a Cobertura coverage report"):
            ci.coverage(bad, "c.xml")


def test_the_counts_are_the_testcases_when_the_suite_does_not_say() -> None:
    go = '<testsuite><testcase name="TestA"><failure message="nope"/></testcase>' \
         '<testcase name="TestB"/></testsuite>'  # fmt: skip
    results = ci.junit(go, "go.xml")
    assert (results.tests, results.failed, results.passed) == (2, 1, 1)
    inner = go.replace("<testsuite>", '<testsuite tests="2">', 1)
    nested = f"<testsuites><testsuite>{inner}</testsuite></testsuites>"
    assert ci.junit(nested, "n.xml").failed == 1
    assert ci.summary(results, None).startswith("### Tests FAILED")


@pytest.mark.parametrize(
    "suite", ['<testsuite tests="-5"/>', '<testsuite time="nan"/>', '<testsuite time="inf"/>']
)
def test_numbers_no_report_has_are_refused(suite: str) -> None:
    with pytest.raises(ConfigError, match="not JUnit XML"):
        ci.junit(suite, "j.xml")


@pytest.mark.parametrize("rate", ["7", "nan", "-0.1"])
def test_a_coverage_outside_0_to_1_is_refused(rate: str) -> None:
    with pytest.raises(ConfigError, match="not a Cobertura coverage report"):
        ci.coverage(f'<coverage line-rate="{rate}"/>', "c.xml")


def test_names_and_messages_cannot_break_the_table_or_inject_html() -> None:
    case = ('<testsuite tests="1" failures="1"><testcase classname="t" name="a`b&#10;c|d">'
            '<failure message="&lt;script&gt;alert(1)&lt;/script&gt; &lt;!channel&gt;"/>'
            "</testcase></testsuite>")  # fmt: skip
    results = ci.junit(case, "j")
    row = ci.summary(results, None).splitlines()[-1]
    assert row == "| t.py::a\\`b c\\|d | &lt;script&gt;alert(1)&lt;/script&gt; &lt;!channel&gt; |"
    assert "&lt;!channel&gt;" in ci.message(results, None)  # Slack's escaping: no ping
