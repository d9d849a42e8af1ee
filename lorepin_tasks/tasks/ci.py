"""What CI does with its results: `invoke ci.summary` (the job summary: figures, coverage,
failing tests) and `invoke ci.notify` (the failing tests to the team's webhook). The
workflows call them (.github/workflows/ci.yml), and so can anyone, the same way.
docs/ci-cd.md."""

from __future__ import annotations

import os
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import ci as plan
from lorepin_tasks.runtime.notify import notify as post
from lorepin_tasks.tasks._common import task

JUNIT_HELP = "the tests' JUnit XML report (default: nox -s test's, build/test/junit.xml)"
WEBHOOK = "LOREPIN_CI_WEBHOOK_URL"


def _read(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no {what} at {path} (did the tests run?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None


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
    results = plan.junit(_read(junit, "JUnit report"), junit)
    rate = plan.coverage(_read(coverage, "coverage report"), coverage) if coverage else None
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


ns = Collection("ci", summary, notify)
