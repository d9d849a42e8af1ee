"""The CI dashboard from its history: runs in order, a corrupt line skipped with a
warning, flaky tests found by revision, and a page with real (SVG) charts."""

from __future__ import annotations

import json

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import ci, ci_report


def run(name: str, outcome: str, seconds: float, revision: str = "a" * 40,
        coverage: float | None = 0.88, failures: tuple[str, ...] = (),
        passed: tuple[str, ...] = ("t::ok",)) -> str:  # fmt: skip
    return json.dumps({"run": name, "revision": revision, "at": "2026-12-01T10:00:00+00:00",
                       "outcome": outcome, "tests": 2, "failed": len(failures), "skipped": 0,
                       "seconds": seconds, "coverage": coverage, "failures": list(failures),
                       "passed": list(passed), "slowest": [["t::slow", 12.5]]})  # fmt: skip


def test_a_corrupt_line_is_skipped_with_a_warning_and_the_rest_kept() -> None:
    text = "\n".join([run("1", "passed", 60), "{torn", "", '["a list"]',
                      '{"run": "x", "outcome": "passed", "seconds": "slow"}',
                      run("2", "failed", 90, failures=("t::flaky",))])  # fmt: skip
    runs, warnings = ci_report.history(text)
    assert [r["run"] for r in runs] == ["1", "2"]
    assert warnings == [
        "history line 2 is not a run: skipped",
        "history line 4 is not a run: skipped",
        "history line 5 is not a run: skipped",
    ]


def test_a_test_that_failed_and_passed_on_the_same_revision_is_flaky() -> None:
    runs, _ = ci_report.history("\n".join([
        run("1", "failed", 60, failures=("t::flaky",), passed=("t::ok",)),
        run("2", "passed", 60, passed=("t::ok", "t::flaky")),
        run("3", "failed", 60, revision="b" * 40, failures=("t::broken",)),
        run("4", "passed", 60, revision="c" * 40, passed=("t::broken",)),  # fixed, not flaky
    ]))  # fmt: skip
    assert ci_report.flaky(runs) == [{"test": "t::flaky", "revisions": ["a" * 12]}]


def test_the_page_charts_every_run_and_lists_the_slowest_tests() -> None:
    runs, _ = ci_report.history("\n".join(
        [run("1", "passed", 60), run("2", "failed", 120, coverage=None), run("3", "passed", 90)]
    ))  # fmt: skip
    page = ci_report.page(runs, ["history line 9 is not a run: skipped"], "2026-12-01")
    assert page.count('<rect class="run passed"') == 2 and page.count('class="run failed"') == 1
    assert page.count('<circle class="point"') == 2  # the run without coverage is left out
    assert "3 runs, 2 passed, 1 failed" in page and "history line 9 is not a run" in page
    assert "<td>t::slow</td><td>12.5 s</td>" in page
    assert "<script" not in page


def test_a_run_is_recorded_from_the_reports() -> None:
    junit = ci.junit('<testsuite tests="2" failures="1" time="30">'
                     '<testcase classname="t" name="a" time="20"><failure message="m"/></testcase>'
                     '<testcase classname="t" name="b" time="10"/></testsuite>', "j")  # fmt: skip
    slowest = [("t.py::a", 20.0), ("t.py::b", 10.0)]
    line = ci_report.record(junit, 0.9, run="7", revision="f" * 40, at="now",
                            slowest=slowest, passed=["t.py::b"])  # fmt: skip
    assert (line["outcome"], line["failed"], line["failures"], line["passed"]) == (
        "failed",
        1,
        ["t.py::a"],
        ["t.py::b"],
    )
    assert ci_report.history(json.dumps(line))[0] == [line]


def test_each_nox_session_over_the_runs_from_nox_reports() -> None:
    report = json.dumps({"result": 1, "sessions": [
        {"name": "test", "result": "success", "duration": 2520.4},
        {"name": "lint", "result": "failed", "duration": 15.0}]})  # fmt: skip
    sessions = ci_report.nox_sessions(report, "nox.json")
    assert sessions == {"test": {"result": "success", "seconds": 2520.4},
                        "lint": {"result": "failed", "seconds": 15.0}}  # fmt: skip
    line = json.loads(run("1", "passed", 60))
    runs = [{**line, "sessions": sessions}, {**line, "run": "2", "sessions": {}}]
    table = ci_report.session_table(runs)
    assert '<td class="session success" style="background:#dff3e4">42.0</td><td></td>' in table
    assert '<td class="session failed" style="background:#fbe3e3">0.2</td>' in table
    for bad in ("[]", '{"sessions": [{"name": "x"}]}', "not json"):
        with pytest.raises(ConfigError, match=r"^nox\.json: not a nox report"):
            ci_report.nox_sessions(bad, "nox.json")


@pytest.mark.parametrize(
    "field",
    ['"outcome": 5', '"coverage": "abc"', '"slowest": "xyz"', '"slowest": [["a", "b"]]',
     '"failures": 5', '"failures": [["a"]]', '"seconds": NaN', '"sessions": 3', '"bench": []',
     '"bench": {"a": {"value": "x", "unit": "s"}}', '"bench": {"a": {"value": 1}}'],
)  # fmt: skip
def test_a_run_with_a_field_of_the_wrong_type_is_skipped(field: str) -> None:
    good = json.loads(run("1", "passed", 60))
    key = field.split(":")[0].strip('"')
    bad = json.dumps({k: v for k, v in good.items() if k != key})[:-1] + f", {field}}}"
    runs, warnings = ci_report.history(bad + "\n" + run("2", "passed", 30))
    assert [r["run"] for r in runs] == ["2"] and warnings == [
        "history line 1 is not a run: skipped"
    ]
    ci_report.page(runs, warnings, "now")  # and the page is made


def test_benchmark_figures_are_kept_per_run_and_charted_with_their_change() -> None:
    figures = ci_report.bench_figures(
        '{"bench": "logs", "name": "search", "value": 2.0, "unit": "s", "baseline": 1.5}\n'
        '{"bench": "dr", "name": "RTO", "value": 90, "unit": "s"}\n'
        '\n{"bench": "logs", "name": "search", "value": 1.8, "unit": "s", "baseline": 1.4}\n',
        "figures.jsonl",
    )
    assert figures == {"logs: search": {"value": 1.8, "unit": "s", "baseline": 1.4},
                       "dr: RTO": {"value": 90.0, "unit": "s"}}  # fmt: skip
    line = json.loads(run("1", "passed", 60))
    runs = [{**line, "bench": {"logs: search": {"value": 1.2, "unit": "s"}}},
            {**line, "run": "2"}, {**line, "run": "3", "bench": figures}]  # fmt: skip
    assert [r["run"] for r in ci_report.history("\n".join(map(json.dumps, runs)))[0]] == [
        "1", "2", "3"
    ]  # fmt: skip
    table = ci_report.bench_table(runs)
    assert "<th>logs: search</th>" in table and "<td>1.8 s</td><td>1.4</td><td>+50.0%</td>" in table
    assert "<th>dr: RTO</th>" in table and "<td>90 s</td><td>-</td><td>-</td>" in table
    assert ci_report.bench_table([line]).startswith('<p class="none">')


@pytest.mark.parametrize(
    "bad",
    ['{"bench": "x", "name": "y", "value": "fast", "unit": "s"}', '{"bench": "x"}', "[1]",
     '{"bench": "x", "name": "y", "value": NaN, "unit": "s"}', "torn {"],
)  # fmt: skip
def test_a_broken_figures_file_is_a_one_line_error(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^f\.jsonl:2: not a benchmark figure"):
        ci_report.bench_figures('{"bench": "a", "name": "b", "value": 1, "unit": "s"}\n' + bad,
                                "f.jsonl")  # fmt: skip
