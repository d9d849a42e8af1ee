"""The compliance report of a server environment (`invoke audit.report`), as data and as
Markdown, JSON or HTML. Pure: the trail, the migration log and the pgaudit lines come in.

What it answers, for a window of time: who changed the environment and how (deploys,
rollbacks, restores, failovers, with their approvals and deploy-window overrides), which
schema changes ran, and who wrote to or changed the structure of the data (pgaudit); and
whether the hash-chained trail it is built on is intact.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from lorepin_tasks.plans.logs import Line

# pgaudit's session line after PostgreSQL's prefix (`%m [%p] user@db/application`, the
# application's name may hold spaces):
# AUDIT: SESSION,statement,substatement,CLASS,COMMAND,object type,object name,statement,...
PGAUDIT = re.compile(
    r"\] (?P<user>[^@\s]*)@(?P<db>[^/\s]*)/(?P<app>.*?) LOG:  AUDIT: SESSION,\d+,\d+,"
    r"(?P<cls>[A-Z]+),(?P<command>[A-Z ]+),[^,]*,[^,]*,(?P<statement>.*)$"
)
CHANGES = ("deploy", "rollback", "restore", "failover", "rejoin")
DATABASES = ("db", "db-replica")  # the services whose lines pgaudit writes
SCHEMA_ACTIONS = ("upgrade", "downgrade")  # the migration log's changes of the schema
FORMATS = ("md", "json", "html")


def in_window(at: object, since: datetime, until: datetime) -> bool:
    try:
        moment = datetime.fromisoformat(str(at))
    except ValueError:
        return False
    return since <= moment < until


def data_access(lines: Iterable[Line]) -> dict[str, Any]:
    """pgaudit's records: counted by day, user, class and command; each DDL statement."""
    counts: Counter[tuple[str, str, str, str, str]] = Counter()
    ddl = []
    for line in lines:
        # Only the database's own lines: anyone's request can carry the words.
        match = PGAUDIT.search(line.message) if line.service in DATABASES else None
        if not match:
            continue
        app = match["app"] or "-"
        counts[(line.time[:10], match["user"], app, match["cls"], match["command"])] += 1
        if match["cls"] == "DDL":
            statement = match["statement"].rsplit(",", 1)[0].strip('"').strip()
            ddl.append({"time": line.time, "user": match["user"], "application": app,
                        "command": match["command"],
                        "statement": statement[:300] or "(on the lines below it)"})  # fmt: skip
    return {
        "counts": [
            {
                "day": day,
                "user": user,
                "application": app,
                "class": cls,
                "command": command,
                "count": n,
            }
            for (day, user, app, cls, command), n in sorted(counts.items())
        ],
        "ddl": ddl,
    }


def build(
    *,
    env: str,
    since: datetime,
    until: datetime,
    generated: datetime,
    records: Sequence[Mapping[str, Any]],
    problems: Sequence[str],
    schema: Sequence[Mapping[str, Any]],
    access: Mapping[str, Any] | None,
    access_problem: str | None = None,
    kept_from: datetime | None = None,
) -> dict[str, Any]:
    """The report: the chain's state over the whole trail, everything else in the window."""
    changes = []
    for r in records:
        if r.get("action") not in CHANGES or r.get("outcome") == "started":
            continue  # (a started change has its outcome's record too)
        if not in_window(r.get("at"), since, until):
            continue
        detail = r.get("detail") or {}
        changes.append({
            "seq": r.get("seq"), "at": r.get("at"), "action": r.get("action"),
            "version": r.get("version"), "outcome": r.get("outcome"), "who": r.get("who"),
            "approved_by": detail.get("approved_by") or [],
            "window_override": detail.get("window_override"),
            "reason": detail.get("reason"),
        })  # fmt: skip
    summary = Counter(f"{c['action']}s {c['outcome']}" for c in changes)
    return {
        "environment": env,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "generated": generated.isoformat(timespec="seconds"),
        "chain": {"intact": not problems, "records": len(records), "problems": list(problems)},
        "summary": {
            **dict(sorted(summary.items())),
            "window overrides": sum(1 for c in changes if c["window_override"]),
            "schema changes": sum(
                1 for s in schema if s.get("outcome") == "ok" and s.get("action") in SCHEMA_ACTIONS
            ),
            "data writes (pgaudit)": sum(
                c["count"] for c in (access or {}).get("counts", []) if c["class"] == "WRITE"
            ),
            "schema statements (pgaudit DDL)": len((access or {}).get("ddl", [])),
        },
        "changes": changes,
        "schema_changes": [dict(s) for s in schema],
        "data_access": access,
        "data_access_problem": access_problem,
        # The central log keeps logs.retention_days: older data access is gone, not absent.
        "data_access_from": max(since, kept_from).isoformat() if kept_from else since.isoformat(),
    }


def _cell(value: object, *, markdown: bool = True) -> str:
    if value in (None, "", []):
        return "-"
    text = (", ".join(map(str, value)) if isinstance(value, list) else str(value)).replace(
        "\n", " "
    )
    return text.replace("|", "\\|") if markdown else text


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    out = [f"| {' | '.join(headers)} |", f"|{'---|' * len(headers)}"]
    out += [f"| {' | '.join(_cell(v) for v in row)} |" for row in rows]
    return out


def sections(report: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[object]], str]]:
    """(title, headers, rows, what an empty table means) of each part, for every format."""
    access = report["data_access"] or {}
    return [
        ("Changes to the environment",
         ["#", "when (UTC)", "action", "version", "outcome", "who", "approved by",
          "window override", "reason"],
         [[c["seq"], str(c["at"])[:19], c["action"], c["version"], c["outcome"], c["who"],
           c["approved_by"], c["window_override"], c["reason"]] for c in report["changes"]],
         "no deploy, rollback, restore or failover in the window"),
        ("Schema changes (migration log)",
         ["when (UTC)", "action", "from", "to", "outcome", "who"],
         [[str(s.get("started_at"))[:19], s.get("action"), s.get("from_rev"), s.get("to_rev"),
           s.get("outcome"), s.get("who")] for s in report["schema_changes"]],
         "no migration ran in the window"),
        ("Data access (pgaudit: writes and schema statements)",
         ["day", "database user", "application", "class", "command", "statements"],
         [[c["day"], c["user"], c["application"], c["class"], c["command"], c["count"]]
          for c in access.get("counts", [])],
         report["data_access_problem"] or "no write or schema statement in the window"),
        ("Schema statements (pgaudit DDL)",
         ["when (UTC)", "database user", "application", "command", "statement"],
         [[d["time"][:19], d["user"], d["application"], d["command"], d["statement"]]
          for d in access.get("ddl", [])],
         report["data_access_problem"] or "none in the window"),
    ]  # fmt: skip


def markdown(report: Mapping[str, Any]) -> str:
    chain = report["chain"]
    state = (
        f"intact ({chain['records']} records verified)"
        if chain["intact"]
        else f"**BROKEN**: {'; '.join(chain['problems'][:5])}"
    )
    out = [
        f"# Audit report: {report['environment']}",
        "",
        f"- Window: {report['since']} to {report['until']}",
        f"- Generated: {report['generated']}",
        f"- Audit trail hash chain: {state}",
        f"- Data access (pgaudit, from the central log) covers {report['data_access_from']} "
        "on; lines written while the log collector was down are not in it",
        "",
        "## Summary",
        "",
        *_table(["what", "how many"], report["summary"].items()),
    ]
    for title, headers, rows, empty in sections(report):
        out += ["", f"## {title}", ""]
        out += _table(headers, rows) if rows else [f"_{empty}._"]
    return "\n".join(out) + "\n"


def as_html(report: Mapping[str, Any]) -> str:
    e = html.escape
    chain = report["chain"]
    state = (
        f"intact ({chain['records']} records verified)"
        if chain["intact"]
        else f"<strong>BROKEN</strong>: {e('; '.join(chain['problems'][:5]))}"
    )

    def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
        head = "".join(f"<th>{e(h)}</th>" for h in headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{e(_cell(v, markdown=False))}</td>" for v in row) + "</tr>"
            for row in rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Audit report: {e(report['environment'])}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}</style></head><body>",
        f"<h1>Audit report: {e(report['environment'])}</h1>",
        f"<p>Window: {e(report['since'])} to {e(report['until'])}<br>"
        f"Generated: {e(report['generated'])}<br>Audit trail hash chain: {state}<br>"
        f"Data access (pgaudit, from the central log) covers {e(report['data_access_from'])} "
        "on; lines written while the log collector was down are not in it</p>",
        "<h2>Summary</h2>",
        table(["what", "how many"], report["summary"].items()),
    ]
    for title, headers, rows, empty in sections(report):
        parts.append(f"<h2>{e(title)}</h2>")
        parts.append(table(headers, rows) if rows else f"<p><em>{e(empty)}.</em></p>")
    return "".join(parts) + "</body></html>\n"
