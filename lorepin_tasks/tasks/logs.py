"""The central log of a server environment: `invoke logs.search`.

Every container of staging and production logs through the engine's syslog driver to the
environment's collector (rsyslog, compose/images/collector), which files the lines per
service and day on the environment's log volume. A search reads them where they are, as
the collector's read-only log reader, and prints them merged by time (docs/logging.md).
`invoke logs` (the engine's own copy, per container) stays the quick look.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.plans import logs as plan
from lorepin_tasks.runtime import logs
from lorepin_tasks.tasks._common import DRY_HELP, JSON_HELP, SERVER_ENV_HELP, server_env, task


@task(
    iterable=["service"],
    help={
        "env": SERVER_ENV_HELP,
        "service": "only this service's lines (repeatable; default: every service)",
        "level": "only lines this bad or worse: debug, info, warning, error, critical",
        "since": "from: a span back from now (30m, 1h, 2d, 1w) or an ISO 8601 time (UTC)",
        "until": "to (excluded): like --since, or now (the default)",
        "request_id": "every line of one request: proxy, CMS and database",
        "grep": "only lines holding this text (as is, case-sensitive)",
        "json": JSON_HELP + " (one object per line)",
        "dry_run": DRY_HELP,
    },
)
def search(
    c: Context,
    env: str = "",
    service: list[str] | None = None,
    level: str = "",
    since: str = "1d",
    until: str = "now",
    request_id: str = "",
    grep: str = "",
    json_: bool = False,
    dry_run: bool = False,
) -> None:
    """Search an environment's central log: `invoke logs.search --env staging --request-id ID`."""
    ctx = server_env(c, env, dry_run, what="the central log is for")
    q = plan.query(
        now=datetime.now(UTC),
        since=since,
        until=until,
        services=service or [],
        level=level,
        request_id=request_id,
        grep=grep,
    )
    lines = logs.search(ctx, q)
    if json_:
        for line in lines:
            print(json.dumps(line.as_json()))
    else:
        width = max((len(line.service) for line in lines), default=0)
        for line in lines:
            print(plan.text(line, width))
    if not lines and not ctx.run.dry_run:
        what = f"request id {q.request_id}" if q.request_id else "the search"
        print(f"no line of '{ctx.env.name}' matches {what} from {plan.stamp(q.since)} to "
              f"{plan.stamp(q.until)}", file=sys.stderr)  # fmt: skip


ns = Collection("logs", search)
