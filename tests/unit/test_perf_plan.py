"""`invoke perf`'s reports: locust's CSV read per endpoint, the previous version found by
semver, and regressions named by endpoint beyond the policy's thresholds (not noise)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import perf as plan
from lorepin_tasks.settings import PerfPolicy

HEAD = ("Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Average Content Size,Requests/s,Failures/s,"
        "50%,66%,75%,80%,90%,95%,98%,99%,99.9%,99.99%,100%")  # fmt: skip


def row(name: str, requests: int, failures: int, p50: str, p95: str, p99: str, rps: str) -> str:
    return (f"GET,{name},{requests},{failures},{p50},10,1,99,500,{rps},0,{p50},1,1,1,1,{p95},"
            f"1,{p99},1,1,99")  # fmt: skip


CSV = "\n".join([
    HEAD,
    row("list", 1000, 0, "12", "40", "80", "16.5"),
    row("read", 800, 2, "8", "30", "60", "13.2"),
    row("filter", 0, 0, "N/A", "N/A", "N/A", "0"),
    ",Aggregated,1800,2,10,10,1,99,500,29.7,0,10,1,1,1,1,35,1,70,1,1,99",
])  # fmt: skip


def report(version: str = "1.1.0", csv: str = CSV) -> dict[str, Any]:
    return plan.report(csv, env="staging", version=version, at="x", seconds=60, count=20)


def test_locusts_csv_becomes_a_report_per_endpoint_and_in_all() -> None:
    got = report()
    assert got["endpoints"]["list"] == {"requests": 1000, "failures": 0, "p50_ms": 12.0,
                                        "p95_ms": 40.0, "p99_ms": 80.0, "rps": 16.5}  # fmt: skip
    assert got["endpoints"]["filter"]["p95_ms"] == 0.0  # N/A: nothing measured
    assert got["total"]["requests"] == 1800 and got["total"]["rps"] == 29.7
    with pytest.raises(ValueError, match="made no request"):
        report(csv=HEAD + "\n,Aggregated,0,0,0,0,0,0,0,0,0,N/A,1,1,1,1,N/A,1,N/A,1,1,0")


def test_the_previous_version_is_the_newest_older_one() -> None:
    reports = {v: {"version": v} for v in ("1.0.0", "1.2.0", "1.10.0", "2.0.0", "notes")}
    assert plan.previous(reports, "1.11.0") == {"version": "1.10.0"}
    assert plan.previous(reports, "1.2.0") == {"version": "1.0.0"}  # never itself
    assert plan.previous(reports, "1.0.0") is None
    assert plan.previous(reports, "not-a-version") is None
    failed: dict[str, dict[str, Any]] = {**reports, "1.10.0": {"version": "1.10.0",
                                                              "passed": False}}  # fmt: skip
    assert plan.previous(failed, "1.11.0") == {"version": "1.2.0"}  # never a failed baseline


def test_a_slower_endpoint_is_named_and_noise_is_not() -> None:
    before = report("1.0.0")
    slow = copy.deepcopy(report("1.1.0"))
    slow["endpoints"]["list"].update(p95_ms=80.0, p99_ms=90.0)  # p95 doubled: +100% > 25%
    slow["endpoints"]["read"].update(p95_ms=34.0)  # +13%: within the policy
    slow["endpoints"]["read"].update(p99_ms=160.0)  # +100 ms: the worst, named first
    found = plan.regressions(before, slow, PerfPolicy(noise_ms=5))
    assert found == ["read: p99 160 ms, was 60 ms in 1.0.0 (at most +50%)",
                     "list: p95 80 ms, was 40 ms in 1.0.0 (at most +25%)"]  # fmt: skip
    tiny = copy.deepcopy(before)
    for figures in tiny["endpoints"].values():
        figures.update(p95_ms=2.0, p99_ms=3.0)
    tinier = copy.deepcopy(tiny)
    tinier["endpoints"]["list"].update(p95_ms=5.0)  # +150%, but 3 ms: noise (noise_ms 5)
    assert plan.regressions(tiny, tinier, PerfPolicy(noise_ms=5)) == []
    assert PerfPolicy().noise_ms == 25  # the run-to-run spread of one 2-core host


def test_errors_and_a_throughput_drop_fail_too() -> None:
    now = copy.deepcopy(report())
    now["endpoints"]["read"]["failures"] = 20  # 2.5% of 800 > 1%
    now["total"]["rps"] = 20.0  # -33% > 20%
    found = plan.regressions(report("1.0.0"), now, PerfPolicy())
    assert "read: 20 of 800 requests failed (at most 1%)" in found
    assert "throughput 20.0/s, was 29.7/s in 1.0.0 (at most -20%)" in found
    assert plan.regressions(None, now, PerfPolicy()) == [found[0]]  # errors need no baseline


@pytest.mark.parametrize(
    ("duration", "message"),
    [("2h", "--duration must look like 60s or 5m"), ("0s", "--duration must look like"),
     ("31m", "--duration must be at most 30m"), ("abc", "--duration must look like")],
)  # fmt: skip
def test_bad_durations_are_refused(duration: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan.duration(duration)


def test_the_locust_command_is_bounded_and_writes_only_with_a_token() -> None:
    argv = plan.locust_argv("py", Path("/r"), "https://127.0.0.1:1", 60, 20, "/t/p", writes=False)
    assert argv[:4] == ["setpriv", "--pdeathsig", "KILL", "--"]  # dies with the task
    assert argv[argv.index("--run-time") + 1] == "60s" and argv[-1] == "Reader"
    assert argv[argv.index("-f") + 1] == "/r/perf/locustfile.py"
    assert plan.locust_argv("py", Path("/r"), "h", 5, 1, "p", writes=True)[-2:] == [
        "Reader", "Editor"]  # fmt: skip
    assert plan.users("500") == 500
    with pytest.raises(ConfigError, match="--users must be a whole number from 1 to 500"):
        plan.users("501")
    for odd in ("²", "٣", "1.5", ""):
        with pytest.raises(ConfigError, match="--users must be a whole number"):
            plan.users(odd)


def test_a_damaged_or_hand_edited_report_is_left_out_and_named(tmp_path: Path) -> None:
    good = report("1.1.0")
    (tmp_path / "1.1.0.json").write_text(json.dumps(good))
    (tmp_path / "1.0.0.json").write_text("{not json")
    broken = copy.deepcopy(good)
    broken["version"] = "0.9.0"
    broken["endpoints"]["list"]["p95_ms"] = "fast"
    (tmp_path / "0.9.0.json").write_text(json.dumps(broken))
    renamed = report("0.8.0")
    (tmp_path / "0.7.0.json").write_text(json.dumps(renamed))  # another version's figures
    reports, bad = plan.load_reports(tmp_path)
    assert list(reports) == ["1.1.0"]
    assert bad == ["0.7.0.json", "0.9.0.json", "1.0.0.json"]
