"""Incidents as data: the SQL the `incident.*` tasks run against an environment's
`lorepin_ops.incidents` (opened by the incident receiver, monitoring/incident_receiver.py)
and the postmortem draft they write. Pure: no I/O."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

OPS = "lorepin_ops"
EXISTS = f"SELECT to_regclass('{OPS}.incidents') IS NOT NULL"
STATUSES = ("open", "acknowledged", "resolved")
# The trail's actions that belong in a postmortem's timeline (what people did around it).
TIMELINE_ACTIONS = frozenset(
    {"deploy", "rollback", "restore", "failover", "rejoin", "migrate", "scheduled-backup",
     "backup", "lock-break"}
)  # fmt: skip
BEFORE, AFTER = timedelta(hours=1), timedelta(minutes=30)  # the trail's window around one


DIGITS = re.compile(r"^[0-9]{1,19}$")  # ASCII digits only (str.isdigit takes "²", say)


def incident_id(text: str) -> int:
    """An incident's number as a person types it: 12, #12 or INC-12."""
    digits = text.strip().upper().removeprefix("INC-").removeprefix("#")
    if not DIGITS.match(digits) or not 0 < int(digits) < 2**63:
        raise ValueError(f"invalid incident id {text!r}: a number like 12 (or INC-12)")
    return int(digits)


def one_line(text: str) -> str:
    """Text for a table cell or a terminal line: no line breaks, no control characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def list_sql(*, every: bool) -> str:
    where = "" if every else "WHERE status <> 'resolved'"
    return (
        f"SELECT coalesce(jsonb_agg(i ORDER BY i.id DESC), '[]') FROM (SELECT id, title, "
        "classification, severity, priority, status, opened_at, acknowledged_at, "
        f"acknowledged_by, resolved_at, resolved_by FROM {OPS}.incidents {where}) i"
    )


def show_sql(number: int) -> str:
    return (
        f"SELECT jsonb_build_object('incident', to_jsonb(i), 'events', coalesce((SELECT "
        f"jsonb_agg(e ORDER BY e.at, e.id) FROM {OPS}.incident_events e "
        f"WHERE e.incident_id = i.id), '[]')) FROM {OPS}.incidents i WHERE i.id = {number}"
    )


def event_sql(number: int, kind: str, who: str, detail_json: str) -> str:
    """`who` and `detail_json` arrive as SQL literals."""
    return (
        f"INSERT INTO {OPS}.incident_events (incident_id, kind, who, detail) "
        f"VALUES ({number}, '{kind}', {who}, {detail_json}::jsonb)"
    )


def ack_sql(number: int, who: str) -> str:
    return (
        f"UPDATE {OPS}.incidents SET status = 'acknowledged', acknowledged_at = now(), "
        f"acknowledged_by = {who} WHERE id = {number} AND status = 'open' RETURNING id"
    )


def resolve_sql(number: int, who: str) -> str:
    return (
        f"UPDATE {OPS}.incidents SET status = 'resolved', resolved_at = now(), "
        f"resolved_by = {who} WHERE id = {number} AND status <> 'resolved' RETURNING id"
    )


def when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def timeline(
    incident: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    trail: Sequence[Mapping[str, Any]],
) -> list[tuple[datetime, str]]:
    """Every event of the incident and every trail record (deploys, rollbacks, restores...)
    from an hour before it opened to half an hour after it was resolved, in time order."""
    opened = when(incident["opened_at"])
    assert opened is not None
    closed = when(incident.get("resolved_at")) or opened + timedelta(days=3650)
    rows: list[tuple[datetime, str]] = []
    for e in events:
        detail = e.get("detail") or {}
        said = one_line(", ".join(detail.get("alerts") or []) or detail.get("text") or "")
        for label, times in (("began", detail.get("began")), ("ended", detail.get("ended"))):
            if isinstance(times, str):  # one time for the whole group (receivers before)
                times = {said: times}
            for name, moment in (times or {}).items():
                row = (when(moment) or opened, f"{one_line(name)} {label} (Prometheus)")
                if moment and row not in rows:
                    rows.append(row)
        at = when(e["at"])
        assert at is not None
        rows.append((at, f"incident {e['kind']} ({e['who']}){f': {said}' if said else ''}"))
    for r in trail:
        at = when(r.get("at"))
        if at is None or not opened - BEFORE <= at <= closed + AFTER:
            continue
        if r.get("action") not in TIMELINE_ACTIONS:
            continue
        version = f" {r['version']}" if r.get("version") else ""
        who, outcome = one_line(str(r.get("who", "?"))), r.get("outcome")
        rows.append((at, f"{r['action']}{version} by {who}: {outcome}"))
    return sorted(rows, key=lambda row: row[0])


def postmortem(
    env: str,
    incident: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]],
    trail: Sequence[Mapping[str, Any]],
    *,
    draft: bool,
) -> str:
    """The postmortem's Markdown: the facts filled in, the judgement left to people."""
    opened, resolved = when(incident["opened_at"]), when(incident.get("resolved_at"))
    assert opened is not None
    lasted = f"{int((resolved - opened).total_seconds())} s" if resolved else "still open"
    alerts = sorted({a.get("labels", {}).get("alertname", "?") for a in incident["alerts"]})
    rows = timeline(incident, events, trail)
    lines = [
        f"# Postmortem: INC-{incident['id']} {incident['title']}",
        "",
        *(["> DRAFT: the incident is not resolved yet."] if draft else []),
        *([""] if draft else []),
        f"- Environment: {env}",
        f"- Priority: {incident['priority']} ({incident['severity']}); classification: "
        f"{incident['classification']}",
        f"- Opened: {opened:%Y-%m-%d %H:%M:%S %Z}; resolved: "
        f"{f'{resolved:%Y-%m-%d %H:%M:%S %Z}' if resolved else '-'} ({lasted})",
        f"- Acknowledged by: {incident.get('acknowledged_by') or '-'}",
        f"- Alerts: {', '.join(alerts) or '-'}",
        "",
        "## Summary",
        "",
        "_What happened, in two or three sentences._",
        "",
        "## Impact",
        "",
        f"_Who was affected and how; for how long ({lasted} from the first alert to the "
        "resolution); requests or data lost._",
        "",
        "## Timeline (UTC)",
        "",
        "| time | what |",
        "| --- | --- |",
        *(f"| {at:%Y-%m-%d %H:%M:%S} | {what.replace('|', '/')} |" for at, what in rows),
        "",
        "## Root cause",
        "",
        "_Why it happened (ask why until the answer is a process or a design, not a person)._",
        "",
        "## What went well",
        "",
        "- ",
        "",
        "## What went wrong",
        "",
        "- ",
        "",
        "## Preventive actions",
        "",
        "| action | owner | due | issue |",
        "| --- | --- | --- | --- |",
        "|  |  |  |  |",
        "",
    ]
    return stamped("\n".join(lines))


STAMP = re.compile(r"\n<!-- written by invoke incident\.postmortem: sha256 ([0-9a-f]{64}) -->\n$")


def stamped(text: str) -> str:
    """The postmortem with a last line that says what the toolkit wrote."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    return f"{text}\n<!-- written by invoke incident.postmortem: sha256 {digest} -->\n"


def untouched(text: str) -> bool:
    """Whether a postmortem file is still exactly what the toolkit wrote (so a newer draft
    may replace it): no one has written a word in it."""
    found = STAMP.search(text)
    if found is None:
        return False
    return hashlib.sha256(text[: found.start()].encode()).hexdigest() == found.group(1)
