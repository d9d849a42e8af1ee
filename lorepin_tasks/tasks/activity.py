"""User activity: `invoke activity.report` (sessions per day, top routes, flows) from the
CMS's privacy-first `activity` table (docs/logging.md, "User activity")."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import activity_report as plan
from lorepin_tasks.plans import db_report
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import logs as logs_plan
from lorepin_tasks.runtime import ops
from lorepin_tasks.settings import whole_number
from lorepin_tasks.tasks._common import DRY_HELP, ENV_HELP, JSON_HELP, open_env, task


@task(
    help={
        "env": ENV_HELP,
        "since": "from: a span back from now (7d, 12h, 1w) or an ISO 8601 time (default 7d)",
        "until": "to (excluded): like --since, or now (the default)",
        "top": "routes and flows listed (default 10)",
        "json": JSON_HELP,
        "dry_run": DRY_HELP,
    }
)
def report(
    c: Context,
    env: str = "local",
    since: str = "7d",
    until: str = "now",
    top: str = str(plan.TOP),
    json_: bool = False,
    dry_run: bool = False,
) -> None:
    """Who used the CMS and how, without knowing who: active sessions per day, the top
    routes, and the most frequent flows from one route to the next within a visit."""
    start, end = logs_plan.window(since, until, datetime.now(UTC))
    count = whole_number(top, "--top", low=1, high=1000)
    ctx = open_env(c, env, dry_run=dry_run)
    sql = plan.queries(start, end, count)
    if ctx.run.dry_run:
        ctx.run.run(deploy_plan.psql(ctx.env, "activity.report"), env=ctx.variables)
        for name in ("totals", "days", "routes", "flows"):
            ctx.run.say(sql[name].strip())
        return
    with ops.database_session(ctx, "activity.report") as session:
        if not db_report.loaded(session.query(sql["exists"])):
            raise LorePinError(
                f"the database of '{ctx.env.name}' has no activity table: its schema is older "
                f"than revision 0007, which adds it (`invoke db.current --env {ctx.env.name}`)"
            )
        found = {name: db_report.loaded(session.query(sql[name]))
                 for name in ("totals", "days", "routes", "flows")}  # fmt: skip
    built = {
        "env": ctx.env.name,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "retention_days": ctx.env.activity_retention_days,
        **found,
    }
    print(json.dumps(built, indent=2) if json_ else plan.text(built), end="\n" if json_ else "")


ns = Collection("activity", report)
