"""The audit of a server environment: `invoke audit.verify` (the hash chain of its trail)
and `invoke audit.report` (a compliance report: who changed it and how, schema changes,
data access, on a verified chain). docs/logging.md, "Audit".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.domain import audit
from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import audit_report as plan
from lorepin_tasks.plans import logs as logs_plan
from lorepin_tasks.runtime import logs, ops
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.trail import mirrored
from lorepin_tasks.tasks._common import DRY_HELP, SERVER_ENV_HELP, server_env, task


def _problems(ctx: EnvContext, records: list[dict[str, Any]]) -> list[str]:
    """What is wrong with the trail: its chain, and this machine's copy against it."""
    problems = audit.verify(records)
    by_seq = {r.get("seq"): r for r in records}
    for mine in mirrored(ctx.env.state_dir / "audit.jsonl"):
        theirs = by_seq.get(mine.get("seq"))
        if theirs is None:
            problems.append(f"record {mine.get('seq')}: on this machine, missing in the database")
        elif theirs != mine:
            problems.append(f"record {mine.get('seq')}: differs from this machine's copy")
    return problems


def _trail(ctx: EnvContext, what: str) -> list[dict[str, Any]] | None:
    records = ops.trail_records(ctx, "audit")
    if records is None and not ctx.run.dry_run:
        raise LorePinError(
            f"cannot {what} the audit trail of '{ctx.env.name}': its database is not running "
            f"(`invoke status --env {ctx.env.name}`)"
        )
    return records


@task(help={"env": SERVER_ENV_HELP, "dry_run": DRY_HELP})
def verify(c: Context, env: str = "", dry_run: bool = False) -> None:
    """Check the environment's audit trail: the hash chain, and this machine's copy of it."""
    ctx = server_env(c, env, dry_run)
    records = _trail(ctx, "verify")
    if records is None:
        return
    problems = _problems(ctx, records)
    if problems:
        raise LorePinError(
            f"the audit trail of '{ctx.env.name}' is broken: {problems[0]}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
        )
    print(f"the audit trail of '{ctx.env.name}' is intact ({len(records)} records)")


@task(
    help={
        "env": SERVER_ENV_HELP,
        "since": "from: a span back from now (30d, 12h, 1w) or an ISO 8601 time (default 30d)",
        "until": "to (excluded): like --since, or now (the default)",
        "format": "md (the default), json or html",
        "dry_run": DRY_HELP,
    }
)
def report(
    c: Context,
    env: str = "",
    since: str = "30d",
    until: str = "now",
    format: str = "md",
    dry_run: bool = False,
) -> None:
    """A compliance report of a server environment on stdout: deploys, rollbacks,
    restores and failovers with approvals and overrides, schema changes and data access,
    on a verified audit trail. Exit 1 (after the report) when the chain is broken."""
    if format not in plan.FORMATS:
        raise ConfigError(f"--format must be md, json or html, got {format!r}")
    ctx = server_env(c, env, dry_run, what="audit reports are for")
    now = datetime.now(UTC)
    start, end = logs_plan.window(since, until, now)
    records = _trail(ctx, "report on")
    schema = ops.schema_changes(ctx, start.isoformat(), end.isoformat())
    access, problem = None, None
    try:  # the central log's pgaudit lines: a report without them says why
        q = logs_plan.Query(since=start, until=end, grep="AUDIT: SESSION")
        access = plan.data_access(logs.search(ctx, q))
    except LorePinError as exc:
        problem = f"unavailable: {exc}"
    if records is None:  # a dry run: the commands were shown
        return
    problems = _problems(ctx, records)
    built = plan.build(
        env=ctx.env.name, since=start, until=end, generated=now, records=records,
        problems=problems, schema=schema, access=access, access_problem=problem,
        kept_from=now - timedelta(days=ctx.env.log_retention_days),
    )  # fmt: skip
    if format == "json":
        print(json.dumps(built, indent=2))
    else:
        print(plan.markdown(built) if format == "md" else plan.as_html(built), end="")
    if problems:  # the report is out; the broken chain is the exit code's
        raise LorePinError(f"the audit trail of '{ctx.env.name}' is broken: {problems[0]}")


ns = Collection("audit", verify, report)
