"""The compliance report (lorepin_tasks.plans.audit_report): what it counts, what it lists,
and how a broken chain shows in every format."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from lorepin_tasks.plans import audit_report as plan
from lorepin_tasks.plans.logs import Line

SINCE, UNTIL = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
PREFIX = (
    "2026-11-20 10:00:00.000 UTC [42] lorepin@lorepin/lorepin migrator (deploy) LOG:  "
    "AUDIT: SESSION"
)
INSERT = '"INSERT INTO pins VALUES ($1)"'
LINES = [
    Line("2026-11-20T10:00:00.000001+00:00", "db",
         f'{PREFIX},1,1,DDL,CREATE TABLE,,,"CREATE TABLE pins (id bigint)",<not logged>'),
    Line("2026-11-20T10:00:01.000001+00:00", "db",
         f"{PREFIX},2,1,WRITE,INSERT,,,{INSERT},<not logged>"),
    Line("2026-11-20T10:00:02.000001+00:00", "db",
         f"{PREFIX},3,1,WRITE,INSERT,,,{INSERT},<not logged>"),
    Line("2026-11-20T10:00:03.000001+00:00", "db", "2026-11-20 LOG:  checkpoint starting"),
    # A request that carries the words (a User-Agent): the proxy's line, never counted.
    Line("2026-11-20T10:00:04.000001+00:00", "proxy",
         f'{{"user_agent": "{PREFIX},1,1,DDL,DROP TABLE,,,DROP TABLE pins,x"}}'),
]  # fmt: skip


def record(seq: int, at: str, action: str, outcome: str, **detail: object) -> dict[str, object]:
    return {"seq": seq, "at": at, "action": action, "version": "1.2.0", "outcome": outcome,
            "who": "Ada <ada@example.org>", "detail": detail}  # fmt: skip


RECORDS = [
    record(1, "2026-10-30T09:00:00+00:00", "deploy", "succeeded"),  # before the window
    record(2, "2026-11-20T09:00:00+00:00", "deploy", "started"),
    record(3, "2026-11-20T09:01:00+00:00", "deploy", "succeeded", approved_by=["Bob"],
           window_override="hotfix for INC-7 (outside Mon-Fri 09:00-16:00)"),
    record(4, "2026-11-21T09:00:00+00:00", "backup-scheduled", "ok"),
    record(5, "2026-11-22T09:00:00+00:00", "rollback", "succeeded", reason="p99 up"),
]  # fmt: skip
SCHEMA = [{"started_at": "2026-11-20T09:00:30+00:00", "action": "upgrade", "from_rev": "0005",
           "to_rev": "0006", "outcome": "ok", "who": "deploy (staging)"}]  # fmt: skip


def build(problems: list[str]) -> dict[str, Any]:
    return plan.build(env="staging", since=SINCE, until=UNTIL, generated=UNTIL,
                      records=RECORDS, problems=problems, schema=SCHEMA,
                      access=plan.data_access(LINES))  # fmt: skip


def test_pgaudit_lines_are_counted_and_each_schema_statement_listed() -> None:
    access = plan.data_access(LINES)
    day = {"day": "2026-11-20", "user": "lorepin", "application": "lorepin migrator (deploy)"}
    assert access["counts"] == [
        {**day, "class": "DDL", "command": "CREATE TABLE", "count": 1},
        {**day, "class": "WRITE", "command": "INSERT", "count": 2},
    ]
    assert access["ddl"] == [{"time": LINES[0].time, "user": "lorepin", "command": "CREATE TABLE",
                              "application": "lorepin migrator (deploy)",
                              "statement": "CREATE TABLE pins (id bigint)"}]  # fmt: skip


def test_the_report_lists_the_window_s_changes_with_approvals_and_overrides() -> None:
    report = build([])
    assert [(c["seq"], c["action"], c["outcome"]) for c in report["changes"]] == [
        (3, "deploy", "succeeded"), (5, "rollback", "succeeded")
    ]  # fmt: skip
    assert report["summary"] == {
        "deploys succeeded": 1, "rollbacks succeeded": 1, "window overrides": 1,
        "schema changes": 1, "data writes (pgaudit)": 2, "schema statements (pgaudit DDL)": 1,
    }  # fmt: skip
    assert report["chain"] == {"intact": True, "records": 5, "problems": []}
    json.dumps(report)  # as --format json prints it
    text = plan.markdown(report)
    assert "- Audit trail hash chain: intact (5 records verified)" in text
    assert (
        "| 3 | 2026-11-20T09:01:00 | deploy | 1.2.0 | succeeded | Ada <ada@example.org> | Bob |"
        in text
    )
    assert (
        "hotfix for INC-7" in text
        and "| 2026-11-20 | lorepin | lorepin migrator (deploy) | WRITE | INSERT | 2 |" in text
    )


def test_a_broken_chain_is_said_first_in_every_format() -> None:
    report = build(["record 2: its content does not match its hash (edited)"])
    assert "hash chain: **BROKEN**: record 2: its content" in plan.markdown(report)
    page = plan.as_html(report)
    assert (
        "<strong>BROKEN</strong>: record 2" in page
        and "<td>Ada &lt;ada@example.org&gt;</td>" in page
    )


def test_what_could_not_be_read_is_said_not_left_empty() -> None:
    why = "unavailable: the log collector of 'staging' is exited"
    report = plan.build(env="staging", since=SINCE, until=UNTIL, generated=UNTIL, records=[],
                        problems=[], schema=[], access=None, access_problem=why)  # fmt: skip
    text = plan.markdown(report)
    assert "_no deploy, rollback, restore or failover in the window._" in text
    assert "_unavailable: the log collector of 'staging' is exited._" in text
