"""`invoke ci.notify` and `invoke ci.summary` as CI runs them: the failing tests reach a
webhook (a stand-in of the team's Slack-compatible one on 127.0.0.1: a third-party
service), the summary lands in the file given; bad reports are one line and exit 2."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import invoke
from tests.unit.test_ci_plan import JUNIT


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A webhook on 127.0.0.1 that keeps what it is sent; its URL and the messages."""
    received: list[dict[str, str]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/services/T0/B0/x", received
    finally:
        server.shutdown()
        server.server_close()


def test_the_failing_tests_reach_the_webhook_with_the_run(
    tmp_path: Path, webhook: tuple[str, list[dict[str, str]]]
) -> None:
    url, received = webhook
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    run = "https://github.example/lorepin/actions/runs/42"
    done = invoke("ci.notify", "--junit", str(report), "--run-url", run,
                  env={"LOREPIN_CI_WEBHOOK_URL": url})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [m["text"].splitlines()[:2] for m in received] == [
        [f"CI failed: {run}", "2 of 5 tests failed:"]
    ]
    assert "test_bad[x|y] (failure): AssertionError: assert 2 == 3" in received[0]["text"]
    assert url not in done.stdout + done.stderr  # the webhook's URL is a secret


def test_without_a_webhook_nothing_is_sent_and_it_says_so(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    done = invoke("ci.notify", "--junit", str(report), env={"LOREPIN_CI_WEBHOOK_URL": ""})
    assert done.returncode == 0 and "(not sent: no LOREPIN_CI_WEBHOOK_URL set)" in done.stdout


def test_a_webhook_that_refuses_is_exit_1(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    done = invoke("ci.notify", "--junit", str(report),
                  env={"LOREPIN_CI_WEBHOOK_URL": "http://127.0.0.1:9/nothing-listens"})  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "error: the CI webhook did not take the message (see the warning above)"
    )


def test_the_summary_is_appended_to_the_file_given(tmp_path: Path) -> None:
    report, coverage, out = tmp_path / "junit.xml", tmp_path / "coverage.xml", tmp_path / "sum.md"
    report.write_text(JUNIT)
    coverage.write_text('<coverage line-rate="0.9"/>')
    out.write_text("earlier step\n")
    done = invoke("ci.summary", "--junit", str(report), "--coverage", str(coverage),
                  "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("earlier step\n### Tests FAILED\n")
    assert "| 90.0% |" in out.read_text()


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "error: no JUnit report at {path} (did the tests run?)"),
        ("<html>", "error: {path}: not JUnit XML (no element found"),
        (b"\xff\xfe", "error: cannot read the JUnit report {path}:"),
    ],
)
def test_a_missing_or_broken_report_is_one_line_and_exit_2(
    tmp_path: Path, content: str | bytes | None, error: str
) -> None:
    path = tmp_path / "junit.xml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    for task in ("ci.notify", "ci.summary"):
        done = invoke(task, "--junit", str(path), env={"LOREPIN_CI_WEBHOOK_URL": ""})
        assert done.returncode == 2, done.stdout
        assert done.stderr.startswith(error.format(path=path)), done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_the_dashboard_of_three_runs_one_failed_opens_in_a_browser(tmp_path: Path) -> None:
    """Three runs recorded by `ci.record` (the second failed, a corrupt line between),
    rendered by `ci.report`, opened in headless Chromium: a bar per run in its colour, the
    coverage line, the flaky test, a benchmark's trend (measured in runs 1 and 3); the
    screenshot kept."""
    from tests.browser import chromium, need_browser, screenshots

    need_browser()
    from selenium.webdriver.common.by import By

    passing = tmp_path / "pass.xml"
    passing.write_text('<testsuite tests="2" failures="0" time="600">'
                       '<testcase classname="tests.e2e.test_b" name="test_flaky" time="300"/>'
                       '<testcase classname="tests.e2e.test_b" name="test_slow" time="299"/>'
                       "</testsuite>")  # fmt: skip
    history, out = tmp_path / "history.jsonl", tmp_path / "dashboard.html"
    coverage, nox = tmp_path / "coverage.xml", tmp_path / "nox.json"
    coverage.write_text('<coverage line-rate="0.88"/>')
    nox.write_text('{"sessions": [{"name": "test", "result": "success", "duration": 2400}]}')
    for n, report in enumerate([passing, None, passing], 1):
        if report is None:
            report = tmp_path / "fail.xml"
            report.write_text(JUNIT.replace("test_bad[x|y]", "test_flaky").replace(
                "tests.unit.test_a", "tests.e2e.test_b"))  # fmt: skip
            with history.open("a") as torn:
                torn.write("{torn line\n")
        figures = []
        if n != 2:  # what bench/common.py's `figure` writes
            figures = ["--bench", str(tmp_path / f"figures-{n}.jsonl")]
            Path(figures[1]).write_text(json.dumps(
                {"bench": "cms", "name": "req/s at 64 clients (baseline: 16)",
                 "value": 200.0 + 20 * n, "unit": "req/s", "baseline": 190.0}) + "\n")  # fmt: skip
        done = invoke("ci.record", "--junit", str(report), "--coverage", str(coverage),
                      "--history", str(history), "--run", f"run-{n}",
                      "--nox-report", str(nox), *figures)  # fmt: skip
        assert done.returncode == 0, done.stderr
    done = invoke("ci.report", "--history", str(history), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "warning: history line 2 is not a run: skipped" in done.stderr
    with chromium(tmp_path / "chromium") as driver:
        driver.get(out.as_uri())
        bars = driver.find_elements(By.CSS_SELECTOR, "#runs svg rect")
        assert [b.get_attribute("class") for b in bars] == [
            "run passed",
            "run failed",
            "run passed",
        ]
        assert len(driver.find_elements(By.CSS_SELECTOR, "#coverage svg circle")) == 3
        minutes = driver.find_elements(By.CSS_SELECTOR, "#sessions td.session")
        assert [m.text for m in minutes] == ["40.0", "40.0", "40.0"]
        flaky = driver.find_element(By.ID, "flaky").text
        assert "tests/e2e/test_b.py::test_flaky" in flaky
        figure = driver.find_element(By.CSS_SELECTOR, "#bench tr.figure")
        cells = [c.text for c in figure.find_elements(By.CSS_SELECTOR, "th, td")]
        name = "cms: req/s at 64 clients (baseline: 16)"
        assert cells[:1] + cells[2:] == [name, "260 req/s", "190", "+18.2%"]  # 1: the chart
        trend = figure.find_element(By.CSS_SELECTOR, "svg path").get_attribute("d") or ""
        assert (trend.count("M"), trend.count("L")) == (1, 1)  # run 2 measured nothing
        assert len(figure.find_elements(By.CSS_SELECTOR, "svg circle")) == 2
        assert driver.save_screenshot(str(screenshots(tmp_path) / "ci-dashboard.png"))


@pytest.mark.parametrize(
    "url", ["https://hooks.example/services/T0/B0/SECRET TOKEN", "http://127.0.0.1:9/x\r\nX: y"]
)
def test_a_malformed_webhook_url_is_never_printed(tmp_path: Path, url: str) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(JUNIT)
    done = invoke("ci.notify", "--junit", str(report), env={"LOREPIN_CI_WEBHOOK_URL": url})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "SECRET" not in done.stdout + done.stderr and "X: y" not in done.stdout + done.stderr
