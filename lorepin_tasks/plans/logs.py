"""The central log of a server environment, as data: which day files a search reads, the
commands that read them inside the collector, and what a line says (time, service, level,
request id). Pure: no I/O.

The collector (compose/images/collector) files every line under
`<service>/<YYYY-MM-DD>.log` (UTC days) as `<UTC time> <service> <line>`, the time in
RFC 3339 with microseconds. Those times sort as text, so a search reads the day files its
window touches, lets `grep -F` (inside the collector, next to the files) drop what cannot
match, and merges what is left by time (docs/logging.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import compose, proxy
from lorepin_tasks.plans.deploy import COLLECTOR, container
from lorepin_tasks.settings import Environment

ROOT = "/var/log/lorepin"
READER = "lorepin-log-reader"  # in the log group: reads, cannot write or remove
LEVELS = ("debug", "info", "warning", "error", "critical")
SERVICE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
DAY_FILE = re.compile(r"^/var/log/lorepin/(?P<service>[^/]+)/(?P<day>\d{4}-\d{2}-\d{2})\.log$")
RELATIVE = re.compile(r"^(?P<n>[0-9]{1,6})(?P<unit>[smhdw])$")
UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_WINDOW = timedelta(days=3660)  # ten years of day files at most
# The id the CMS puts in front of its SQL (lorepin_cms.logs), as PostgreSQL logs it.
SQL_REQUEST_ID = re.compile(rf"/\* request_id='({proxy.SANE_ID})' \*/")
# PostgreSQL's severities (log_line_prefix first, then "SEVERITY:  ").
PG_SEVERITY = re.compile(
    r"\b(DEBUG[1-5]?|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|STATEMENT|CONTEXT):  "
)
PG_LEVEL = {"DEBUG": "debug", "WARNING": "warning", "ERROR": "error", "FATAL": "critical",
            "PANIC": "critical"}  # fmt: skip
JSON_LEVEL = {"warn": "warning", "fatal": "critical", "panic": "critical", "dpanic": "critical"}


@dataclass(frozen=True, kw_only=True)
class Query:
    since: datetime
    until: datetime
    services: tuple[str, ...] = ()  # none: every service
    level: str | None = None  # this one and worse
    request_id: str | None = None
    grep: str | None = None

    @property
    def needle(self) -> str | None:
        """The fixed string `grep -F` keeps lines by: the request id, else the text."""
        return self.request_id or self.grep


def window(since: str, until: str, now: datetime) -> tuple[datetime, datetime]:
    """The [--since, --until) window the flags ask for, or a one-line refusal."""
    start, end = parse_time(since, now, "--since"), parse_time(until, now, "--until")
    if start >= end:
        raise ConfigError(f"--since ({stamp(start)}) must be before --until ({stamp(end)})")
    if end - start > MAX_WINDOW:
        raise ConfigError(f"the window is over {MAX_WINDOW.days} days: narrow --since/--until")
    return start, end


def parse_time(text: str, now: datetime, what: str) -> datetime:
    """`now`, a span back from now (90s, 15m, 1h, 2d, 1w), or an ISO 8601 date or time
    (UTC unless it says otherwise)."""
    raw = text.strip()
    if raw == "now":
        return now
    try:
        if match := RELATIVE.match(raw):
            return now - timedelta(seconds=int(match["n"]) * UNIT[match["unit"]])
        moment = datetime.fromisoformat(raw)
        # In UTC: a time at either end of the calendar may not have a UTC one.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ConfigError(
            f"{what}: invalid time {text!r}: a span back from now (30m, 1h, 2d, 1w), "
            "an ISO 8601 time (2026-12-01T09:30, UTC unless an offset is given) or now"
        ) from None


def query(
    *,
    now: datetime,
    since: str,
    until: str,
    services: Sequence[str],
    level: str,
    request_id: str,
    grep: str,
) -> Query:
    """The search the flags ask for, or a one-line refusal."""
    start, end = window(since, until, now)
    if level and level.lower() not in LEVELS:
        raise ConfigError(f"--level must be one of {', '.join(LEVELS)}, got {level!r}")
    for name in services:
        if not SERVICE.match(name):
            raise ConfigError(f"--service: invalid service name {name!r}")
    if request_id and not re.fullmatch(proxy.SANE_ID, request_id):
        raise ConfigError(
            f"--request-id: {request_id!r} is not a request id (1 to 128 letters, digits, . _ : -)"
        )
    if "\n" in grep:
        raise ConfigError("--grep: one line of text")
    return Query(
        since=start,
        until=end,
        services=tuple(services),
        level=level.lower() or None,
        request_id=request_id or None,
        grep=grep or None,
    )


def stamp(moment: datetime) -> str:
    """A time as the collector writes it: compares with its lines as text."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def days(since: datetime, until: datetime) -> list[str]:
    first, last = since.astimezone(UTC).date(), until.astimezone(UTC).date()
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def collector(env: Environment) -> str:
    return container(env, COLLECTOR)


def list_files(env: Environment) -> list[str]:
    """Every day file on the log volume (as the reader: what a search may read)."""
    return [
        *compose.docker(env), "exec", "--user", READER, collector(env),
        "find", ROOT, "-mindepth", "2", "-maxdepth", "2", "-name", "*.log",
    ]  # fmt: skip


def services_in(listing: Iterable[str]) -> dict[str, list[str]]:
    """{service: [day, ...]} from the day files' paths."""
    found: dict[str, list[str]] = {}
    for path in listing:
        if match := DAY_FILE.match(path.strip()):
            found.setdefault(match["service"], []).append(match["day"])
    return {s: sorted(d) for s, d in sorted(found.items())}


def matching(service: str, present: Iterable[str]) -> list[str]:
    """The services with logs a name means: itself, or (`cms`) its colours (cms-blue,
    cms-green), the service as people call it."""
    present = list(present)
    return [service] if service in present else [p for p in present if p.startswith(f"{service}-")]


def files(q: Query, present: dict[str, list[str]], env_name: str) -> list[str]:
    """The day files the search reads: its services' (each must have logs) and days."""
    wanted = [found for s in q.services for found in matching(s, present)]
    unknown = [s for s in q.services if not matching(s, present)]
    if unknown:
        known = ", ".join(present) or "none yet"
        raise ConfigError(
            f"no logs of service {unknown[0]!r} in '{env_name}' (services with logs: {known})"
        )
    window = set(days(q.since, q.until))
    return [
        f"{ROOT}/{service}/{day}.log"
        for service in dict.fromkeys(wanted or present)
        for day in present[service]
        if day in window
    ]


def read(env: Environment, q: Query, paths: Sequence[str]) -> list[str]:
    """The command that prints the candidate lines: `grep -F` keeps those holding the
    request id (or the text) next to the files; without either, every line."""
    base = [*compose.docker(env), "exec", "--user", READER, "--env", "LC_ALL=C", collector(env)]
    if q.needle:
        return [*base, "grep", "--no-filename", "--fixed-strings", "-e", q.needle, "--", *paths]
    return [*base, "cat", "--", *paths]


@dataclass(frozen=True)
class Line:
    time: str
    service: str
    message: str

    @property
    def fields(self) -> dict[str, Any] | None:
        if not self.message.startswith("{"):
            return None
        try:
            parsed = json.loads(self.message)
        except ValueError:
            return None
        return parsed if isinstance(parsed, dict) else None

    @property
    def level(self) -> str:
        """The line's severity, from its JSON `level` or PostgreSQL's prefix; info else."""
        if (fields := self.fields) is not None:
            raw = str(fields.get("level", "info")).lower()
            raw = JSON_LEVEL.get(raw, raw)
            return raw if raw in LEVELS else "info"
        if match := PG_SEVERITY.search(self.message):
            return PG_LEVEL.get(match[1].rstrip("12345"), "info")
        return "info"

    @property
    def request_id(self) -> str | None:
        """The CMS's `request_id`, the proxy's X-Request-Id header, or the SQL comment's."""
        if (fields := self.fields) is not None:
            if rid := fields.get("request_id"):
                return str(rid)
            # Caddy logs the request as it came (the client's id, if any) and the response
            # headers, where the id it made itself is.
            request = fields.get("request")
            for headers in (
                fields.get("resp_headers"),
                isinstance(request, dict) and request.get("headers"),
            ):
                value = headers.get("X-Request-Id") if isinstance(headers, dict) else None
                if isinstance(value, list) and value:
                    return str(value[0])
            return None
        match = SQL_REQUEST_ID.search(self.message)
        return match[1] if match else None

    def as_json(self) -> dict[str, Any]:
        fields = self.fields
        return {
            "time": self.time,
            "service": self.service,
            "level": self.level,
            "request_id": self.request_id,
            "message": fields if fields is not None else self.message,
        }


def parse(raw: str) -> Line | None:
    """One collector line, or None for what is not one (a torn last line)."""
    parts = raw.rstrip("\n").split(" ", 2)
    if len(parts) < 3 or len(parts[0]) < 20 or parts[0][4] != "-":
        return None
    return Line(*parts)


def matches(line: Line, q: Query, since: str, until: str) -> bool:
    """Inside the window, bad enough, and (the prefilter is a substring) really the id."""
    if not since <= line.time < until:
        return False
    if q.level and LEVELS.index(line.level) < LEVELS.index(q.level):
        return False
    if q.request_id and line.request_id != q.request_id:
        return False
    return not (q.grep and q.grep not in line.message)


def select(raw: Iterable[str], q: Query) -> list[Line]:
    """The lines a search shows, oldest first (a stable merge of the services' files)."""
    since, until = stamp(q.since), stamp(q.until)
    found = [line for text in raw if (line := parse(text)) and matches(line, q, since, until)]
    return sorted(found, key=lambda line: line.time)


def text(line: Line, width: int) -> str:
    return f"{line.time}  {line.service:<{width}}  {line.message}"
