"""Searching the central log (lorepin_tasks.plans.logs): which files, which lines, in
which order, and the refusals of bad flags."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import logs as plan

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
RID = "0b6e5a1c-6a7d-4c43-9a3e-1f2b3c4d5e6f"
PRESENT = {"cms-blue": ["2026-11-29", "2026-11-30", "2026-12-01"], "db": ["2026-12-01"],
           "proxy": ["2026-11-30", "2026-12-01"]}  # fmt: skip


def q(**flags: str | list[str]) -> plan.Query:
    given: dict[str, object] = {"since": "1d", "until": "now", "services": [], "level": "",
                                "request_id": "", "grep": "", **flags}  # fmt: skip
    return plan.query(now=NOW, **given)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", datetime(2026, 12, 1, 9, 58, 30, tzinfo=UTC)),
        ("2d", datetime(2026, 11, 29, 10, 0, tzinfo=UTC)),
        ("1w", datetime(2026, 11, 24, 10, 0, tzinfo=UTC)),
        ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC)),
        ("2026-11-30T12:00+01:00", datetime(2026, 11, 30, 11, 0, tzinfo=UTC)),
        ("now", NOW),
    ],
)
def test_times_are_spans_back_iso_times_in_utc_or_now(text: str, expected: datetime) -> None:
    assert plan.parse_time(text, NOW, "--since") == expected


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"since": "yesterday"}, "--since: invalid time 'yesterday'"),
        (
            {"until": "1h", "since": "10m"},
            "--since (2026-12-01T09:50:00.000000+00:00) must be before",
        ),
        ({"level": "loud"}, "--level must be one of debug, info, warning, error, critical"),
        ({"services": ["../etc"]}, "--service: invalid service name '../etc'"),
        ({"request_id": "x' */ --"}, '--request-id: "x\' */ --" is not a request id'),
        ({"grep": "a\nb"}, "--grep: one line of text"),
        ({"since": "999999w"}, "--since: invalid time '999999w'"),
        ({"since": "0001-01-01"}, "the window is over 3660 days"),
    ],
)
def test_bad_flags_are_refused_in_one_line(flags: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + __import__("re").escape(message)):
        q(**flags)  # type: ignore[arg-type]


def test_a_search_reads_the_day_files_its_window_touches_of_its_services() -> None:
    listing = [f"/var/log/lorepin/{s}/{d}.log" for s, days in PRESENT.items() for d in days]
    present = plan.services_in([*listing, "/var/log/lorepin/odd.txt"])
    assert present == PRESENT
    assert plan.files(q(), present, "staging") == [
        "/var/log/lorepin/cms-blue/2026-11-30.log", "/var/log/lorepin/cms-blue/2026-12-01.log",
        "/var/log/lorepin/db/2026-12-01.log",
        "/var/log/lorepin/proxy/2026-11-30.log", "/var/log/lorepin/proxy/2026-12-01.log",
    ]  # fmt: skip
    assert plan.files(q(services=["db"], since="3d"), present, "staging") == [
        "/var/log/lorepin/db/2026-12-01.log"
    ]
    assert plan.files(q(services=["cms"], since="1h"), present, "staging") == [
        "/var/log/lorepin/cms-blue/2026-12-01.log"  # cms: both colours (here, blue)
    ]
    with pytest.raises(ConfigError, match=r"^no logs of service 'nginx' in 'staging' \(services "
                       r"with logs: cms-blue, db, proxy\)$"):  # fmt: skip
        plan.files(q(services=["nginx"]), present, "staging")


def test_grep_runs_beside_the_files_as_the_reader_with_a_fixed_string() -> None:
    from tests.unit.test_deploy_plan import staging

    argv = plan.read(staging(), q(request_id=RID), ["/var/log/lorepin/db/2026-12-01.log"])
    assert argv[argv.index("exec"):] == [
        "exec", "--user", "lorepin-log-reader", "--env", "LC_ALL=C", "lorepin-staging-collector-1",
        "grep", "--no-filename", "--fixed-strings", "-e", RID, "--",
        "/var/log/lorepin/db/2026-12-01.log",
    ]  # fmt: skip
    assert plan.read(staging(), q(), ["f"])[-3:] == ["cat", "--", "f"]


PROXY = json.dumps({"level": "info", "ts": 1, "msg": "handled request",
                    "request": {"method": "POST", "headers": {"X-Request-Id": [RID]}},
                    "status": 201})  # fmt: skip
CMS = json.dumps({"event": "request", "level": "info", "request_id": RID, "status": 201})
STATEMENT = f"INSERT INTO pins (title) VALUES ($1) /* request_id='{RID}' */"  # noqa: S608
AUDIT = ("2026-12-01 09:59:01.100 UTC [77] lorepin@lorepin/ LOG:  AUDIT: SESSION,1,1,WRITE,"
         f'INSERT,,,"{STATEMENT}",<not logged>')  # fmt: skip
RAW = [
    f"2026-12-01T09:59:01.200000+00:00 proxy {PROXY}\n",
    f"2026-12-01T09:59:01.150000+00:00 cms-blue {CMS}\n",
    f"2026-12-01T09:59:01.100000+00:00 db {AUDIT}\n",
    f"2026-12-01T09:59:02.000000+00:00 cms-blue {CMS.replace(RID, RID + '-other')}\n",
    "2026-12-01T09:59:03.000000+00:00 db 2026-12-01 ERROR:  deadlock detected\n",
    "2026-11-29T09:00:00.000000+00:00 db old line, before the window\n",
    "2026-12-01T09:59:0",  # a torn last line
]


def test_one_request_is_found_in_proxy_cms_and_database_oldest_first() -> None:
    found = plan.select(RAW, q(request_id=RID))
    assert [(line.service, line.request_id) for line in found] == [
        ("db", RID),
        ("cms-blue", RID),
        ("proxy", RID),
    ]  # the other request, whose id starts with this one, is not it
    assert found[0].as_json()["message"].startswith("2026-12-01 09:59:01.100 UTC [77]")
    assert found[2].as_json()["message"]["status"] == 201


def test_the_proxy_line_names_the_id_it_made_itself_from_its_response_headers() -> None:
    made = json.dumps({"level": "info", "request": {"headers": {}},
                       "resp_headers": {"X-Request-Id": [RID]}})  # fmt: skip
    raw = [f"2026-12-01T09:59:01.200000+00:00 proxy {made}\n"]
    assert [line.request_id for line in plan.select(raw, q(request_id=RID))] == [RID]


def test_levels_come_from_json_or_postgresql_and_filter_this_bad_or_worse() -> None:
    assert [line.level for line in plan.select(RAW, q())] == [
        "info",
        "info",
        "info",
        "info",
        "error",
    ]
    assert [line.message for line in plan.select(RAW, q(level="warning"))] == [
        "2026-12-01 ERROR:  deadlock detected"
    ]
    assert plan.select(RAW, q(grep="deadlock", since="2026-12-01T09:59:02.5")) == [
        plan.Line("2026-12-01T09:59:03.000000+00:00", "db", "2026-12-01 ERROR:  deadlock detected")
    ]


@pytest.mark.parametrize("moment", ["0001-01-01T00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_at_the_end_of_the_calendar_is_a_one_line_refusal(moment: str) -> None:
    with pytest.raises(ConfigError, match=r"^--since: invalid time"):
        plan.parse_time(moment, NOW, "--since")
