"""`invoke e2e`'s verdict from pytest's JUnit report: a failure, an error or a skipped
test is no green run."""

from __future__ import annotations

from pathlib import Path

from lorepin_tasks.tasks.e2e import _counts

REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest"
errors="{errors}" failures="{failures}" skipped="{skipped}" tests="8" time="3.1"></testsuite>
</testsuites>"""


def test_failures_errors_and_skips_all_count_against_the_run(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    for errors, failures, skipped, bad in ((0, 0, 0, 0), (1, 0, 0, 1), (0, 2, 0, 2),
                                           (0, 0, 1, 1), (1, 1, 1, 3)):  # fmt: skip
        report.write_text(REPORT.format(errors=errors, failures=failures, skipped=skipped))
        assert _counts(str(report)) == (8, bad)
