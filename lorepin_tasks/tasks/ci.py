"""What CI does with its results: `invoke ci.summary` (the job summary: figures, coverage,
failing tests) and `invoke ci.notify` (the failing tests to the team's webhook). The
workflows call them (.github/workflows/ci.yml), and so can anyone, the same way.
docs/ci-cd.md."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import ci as plan
from lorepin_tasks.plans import ci_report as report_plan
from lorepin_tasks.runtime.notify import notify as post
from lorepin_tasks.tasks._common import load_settings, task

JUNIT_HELP = "the tests' JUnit XML report (default: nox -s test's, build/test/junit.xml)"
WEBHOOK = "LOREPIN_CI_WEBHOOK_URL"


def _read(path: str, what: str, hint: str = "did the tests run?") -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path} ({hint})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None


def _reports(junit: str, coverage: str) -> tuple[plan.Results, float | None]:
    """The tests' results and the line coverage ('' for no coverage report)."""
    results = plan.junit(_read(junit, "JUnit report"), junit)
    rate = plan.coverage(_read(coverage, "coverage report"), coverage) if coverage else None
    return results, rate


@task(
    help={
        "junit": JUNIT_HELP,
        "coverage": "the coverage XML report (default: build/test/coverage.xml; '' for none)",
        "out": "append to this file (e.g. $GITHUB_STEP_SUMMARY) instead of printing",
        "dry_run": "print the summary; write no file",
    }
)
def summary(
    c: Context,
    junit: str = "build/test/junit.xml",
    coverage: str = "build/test/coverage.xml",
    out: str = "",
    dry_run: bool = False,
) -> None:
    """The run's summary in Markdown: tests passed, failed, skipped, time, coverage, and
    the failing tests with the first line of each."""
    results, rate = _reports(junit, coverage)
    text = plan.summary(results, rate)
    if not out or dry_run:
        print(text, end="")
        if out:
            print(f"(not written to {out}: a dry run)")
        return
    try:
        with open(out, "a", encoding="utf-8") as summary_file:
            summary_file.write(text)
    except OSError as exc:
        raise ConfigError(f"cannot write the summary to {out}: {exc.strerror}") from None


@task(
    help={
        "junit": JUNIT_HELP,
        "run_url": "the link to the run, shown in the message",
        "dry_run": "print the message; send nothing",
    }
)
def notify(c: Context, junit: str = "build/test/junit.xml", run_url: str = "",
           dry_run: bool = False) -> None:  # fmt: skip
    """Tell the team's Slack-compatible webhook (LOREPIN_CI_WEBHOOK_URL) which tests
    failed, with the first line of each and the link to the run. No webhook: nothing is
    sent, and it says so."""
    text = plan.message(plan.junit(_read(junit, "JUnit report"), junit), run_url or None)
    url = os.environ.get(WEBHOOK)
    if dry_run or not url:
        print(text)
        print(f"(not sent: {'a dry run' if dry_run else f'no {WEBHOOK} set'})")
        return
    if not post(url, text, say=print):
        raise LorePinError("the CI webhook did not take the message (see the warning above)")
    print(f"sent to the CI webhook: {text.splitlines()[0]}")


HISTORY = "build/ci/history.jsonl"


@task(
    help={
        "junit": JUNIT_HELP,
        "coverage": "the coverage XML report (default: build/test/coverage.xml; '' for none)",
        "history": f"the history to append to (default: {HISTORY})",
        "run": "the run's name (default: $GITHUB_RUN_ID, else the time)",
        "nox_report": "nox's JSON report of the run (nox --report FILE): each session's "
        "result and time",
        "bench": "the benchmarks' figures (nox -s bench writes build/bench/figures.jsonl)",
        "dry_run": "print the line; append nothing",
    }
)
def record(
    c: Context,
    junit: str = "build/test/junit.xml",
    coverage: str = "build/test/coverage.xml",
    history: str = HISTORY,
    run: str = "",
    nox_report: str = "",
    bench: str = "",
    dry_run: bool = False,
) -> None:
    """Append this run (outcome, counts, time, coverage, failing and slowest tests, the
    benchmarks' figures) to the CI history, one JSON line, for `invoke ci.report`."""
    settings = load_settings(c)
    results, rate = _reports(junit, coverage)
    sessions = (
        report_plan.nox_sessions(_read(nox_report, "nox report"), nox_report) if nox_report else {}
    )
    figures = (
        report_plan.bench_figures(_read(bench, "benchmark figures", "did nox -s bench run?"), bench)
        if bench else {}
    )  # fmt: skip
    now = datetime.now(UTC).isoformat(timespec="seconds")
    from lorepin_tasks.runtime import git

    revision = git.repo(settings.root).head.commit.hexsha
    slowest = sorted(((k.test, k.seconds) for k in results.cases), key=lambda t: -t[1])
    line = report_plan.record(
        results, rate, run=run or os.environ.get("GITHUB_RUN_ID") or now, revision=revision,
        at=now, slowest=slowest, passed=[k.test for k in results.cases if k.status == "passed"],
        sessions=sessions, bench=figures,
    )  # fmt: skip
    text = json.dumps(line, separators=(",", ":"))
    if dry_run:
        print(text)
        return
    try:
        Path(history).parent.mkdir(parents=True, exist_ok=True)
        with open(history, "a", encoding="utf-8") as file:
            file.write(text + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot append to the history {history}: {exc.strerror}") from None
    print(f"run {line['run']} ({line['outcome']}, {line['tests']} tests) added to {history}")


@task(
    help={
        "history": f"the history (default: {HISTORY})",
        "out": "the page (default: build/ci/dashboard.html)",
        "dry_run": "read the history and say what the page would show; write nothing",
    }
)
def report(
    c: Context, history: str = HISTORY, out: str = "build/ci/dashboard.html",
    dry_run: bool = False,
) -> None:  # fmt: skip
    """The CI dashboard, one static HTML page: outcome and duration per run, coverage over
    time, recent runs, the slowest tests, the flaky ones and the benchmarks' trends."""
    text = _read(history, "CI history", "`invoke ci.record` adds runs")
    runs, warnings = report_plan.history(text)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not runs:
        raise ConfigError(f"{history} holds no run (`invoke ci.record` adds one)")
    page = report_plan.page(runs, warnings, datetime.now(UTC).isoformat(timespec="seconds"))
    if dry_run:
        print(f"{len(runs)} runs; the page would be written to {out}")
        return
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {out}: {exc.strerror}") from None
    print(f"{out}: {len(runs)} runs ({len(report_plan.flaky(runs))} flaky tests)")


ns = Collection("ci", summary, notify, record, report)
