"""What CI's results say, as data and as text: a JUnit XML report (pytest's) and a
Cobertura coverage report (coverage.py's), read into figures, a job summary in Markdown
(`invoke ci.summary`) and the message that tells the team which tests failed
(`invoke ci.notify`). Pure: the files' text comes in. docs/ci-cd.md."""

from __future__ import annotations

import html
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from lorepin_tasks.errors import ConfigError

SHOWN = 20  # failing tests named in a message; the rest are counted


@dataclass(frozen=True)
class Failure:
    test: str  # "tests/unit/test_x.py::test_y"
    kind: str  # failure or error
    first_line: str


@dataclass(frozen=True)
class Case:
    test: str
    seconds: float
    status: str  # passed, failure, error or skipped


@dataclass(frozen=True)
class Results:
    tests: int
    failed: int
    errors: int
    skipped: int
    seconds: float
    failures: tuple[Failure, ...] = field(default=())
    cases: tuple[Case, ...] = field(default=())

    @property
    def passed(self) -> int:
        return self.tests - self.failed - self.errors - self.skipped


def junit(text: str, where: str) -> Results:
    """The figures and failures of a JUnit XML report; a one-line error for anything else."""
    try:
        root = ET.fromstring(text)  # noqa: S314 (as above)
    except ET.ParseError as exc:
        raise ConfigError(f"{where}: not JUnit XML ({exc})") from None
    # The outermost suites only: a suite's figures include those of suites inside it.
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in ("testsuite", "testsuites") or not suites:
        raise ConfigError(f"{where}: not JUnit XML (no <testsuite>)")
    failures, cases = [], []
    for case in root.iter("testcase"):
        module = case.get("classname", "").replace(".", "/")
        name = f"{module}.py::{case.get('name', '?')}" if module else case.get("name", "?")
        status = "passed"
        for kind in ("failure", "error", "skipped"):
            found = case.find(kind)
            if found is not None:
                status = kind
                if kind != "skipped":
                    message = (found.get("message") or found.text or "").strip()
                    failures.append(Failure(name, kind, message.splitlines()[0] if message else ""))
                break
        try:
            cases.append(Case(name, number(case.get("time") or 0), status))
        except ValueError as exc:
            raise ConfigError(f"{where}: not JUnit XML ({exc})") from None
    try:
        figures = [[number(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped", "time")]
                   for s in suites]  # fmt: skip
    except ValueError as exc:
        raise ConfigError(f"{where}: not JUnit XML ({exc})") from None
    said = [sum(f[i] for f in figures) for i in range(5)]
    if cases:  # the testcases themselves, when there are any: suites may not say
        tests = len(cases)
        counted = [sum(1 for k in cases if k.status == s) for s in ("failure", "error", "skipped")]
        said = [tests, *counted, said[4] or sum(k.seconds for k in cases)]
    return Results(
        tests=int(said[0]), failed=int(said[1]), errors=int(said[2]), skipped=int(said[3]),
        seconds=float(said[4]), failures=tuple(failures), cases=tuple(cases),
    )  # fmt: skip


def number(text: object) -> float:
    """A count or a time of a report: finite and not negative."""
    value = float(str(text))
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{text!r} is not a count or a time")
    return value


def coverage(text: str, where: str) -> float:
    """The line coverage (0 to 1) of a Cobertura XML report."""
    try:
        rate = float(ET.fromstring(text).get("line-rate") or "x")  # noqa: S314 (as above)
    except (ET.ParseError, ValueError):
        rate = math.nan
    if not 0 <= rate <= 1:
        raise ConfigError(f"{where}: not a Cobertura coverage report (coverage xml)")
    return rate


def summary(results: Results, line_rate: float | None) -> str:
    """The job summary, in GitHub's Markdown."""
    verdict = "passed" if not (results.failed or results.errors) else "FAILED"
    lines = [
        f"### Tests {verdict}",
        "",
        "| tests | passed | failed | errors | skipped | time | coverage |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {results.tests} | {results.passed} | {results.failed} | {results.errors} "
        f"| {results.skipped} | {results.seconds / 60:.1f} min "
        f"| {'-' if line_rate is None else f'{line_rate:.1%}'} |",
    ]
    if results.failures:
        lines += ["", "| failing test | first line |", "| --- | --- |"]
        lines += [f"| {cell(f.test)} | {cell(f.first_line[:200])} |"
                  for f in results.failures[:SHOWN]]  # fmt: skip
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """Text for a Markdown table's cell: one line, no HTML, no code span or column break."""
    flat = html.escape(" ".join(text.split()), quote=False)
    return flat.replace("|", "\\|").replace("`", "\\`")


def slack(text: str) -> str:
    """Text for a Slack-compatible message: &, < and > escaped (no <!channel> pings)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def message(results: Results, run_url: str | None, what: str = "CI") -> str:
    """The team's message about a failed run: which tests failed and how (the first
    line of each), with the link to the run when known."""
    head = f"{what} failed" + (f": {slack(run_url)}" if run_url else "")
    if not results.failures:
        return f"{head}\nno test failed ({results.tests} ran): another step did"
    shown = [f"- {slack(f.test)} ({f.kind}): {slack(f.first_line[:200])}"
             for f in results.failures[:SHOWN]]  # fmt: skip
    more = len(results.failures) - SHOWN
    tail = [f"... and {more} more"] if more > 0 else []
    return "\n".join([f"{head}\n{len(results.failures)} of {results.tests} tests failed:",
                      *shown, *tail])  # fmt: skip
