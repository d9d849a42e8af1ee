"""The database's performance: `invoke db.report` (what is slow and why, from
pg_stat_statements and the statistics views) and `invoke db.maintain` (VACUUM (ANALYZE)
and REINDEX CONCURRENTLY where the report says so, under the migration lock, each step
in the migration log). docs/database-performance.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from invoke.context import Context

from lorepin_tasks.errors import Busy, NothingToDo
from lorepin_tasks.plans import db_report as plan
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.runtime import ops
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session, literal
from lorepin_tasks.tasks._common import DRY_HELP, ENV_HELP, JSON_HELP, open_env, task

LOG = "lorepin_ops.migration_log"
# The migrator's advisory lock (lorepin_cms.migrator.runner.LOCK_KEY, which a unit test
# holds this to): not imported, since importing the migrator costs every task 0.8 s.
LOCK_KEY = (0x4C50, 0x4D49)


def _report(session: Session) -> dict[str, Any]:
    return plan.report({name: plan.loaded(session.query(sql)) for name, sql in plan.SQL.items()})


def _rows(t: dict[str, Any]) -> int:
    return int(t["live_rows"]) + int(t["dead_rows"])


# (title, the report's key, one line of an item) of the report's lists, in order.
SECTIONS: tuple[tuple[str, str, Callable[[dict[str, Any]], str]], ...] = (
    ("index candidates", "index_candidates", lambda i: f"{i['index']};\n      {i['why']}"),
    ("large tables read by sequential scans", "sequential_scans",
     lambda t: f"{t['table']}: {t['seq_scan']} seq scans, {t['idx_scan']} index scans, "
     f"{t['live_rows']} rows"),
    ("unused indexes (no scan since the statistics were reset)", "unused_indexes",
     lambda i: f"{i['index']} on {i['table']} ({int(i['bytes']) / 1e3:.0f} kB)"),
    ("duplicate indexes", "duplicate_indexes",
     lambda d: f"{', '.join(d['indexes'])} on {d['table']}"),
    ("invalid indexes", "invalid_indexes", lambda i: f"{i['index']} on {i['table']}"),
    ("tables with many dead rows (db.maintain vacuums them)", "bloat",
     lambda t: f"{t['table']}: {t['dead_rows']} dead of {_rows(t)} ({t['dead_ratio']:.0%})"),
    ("connections by state", "connections",
     lambda c: f"{c['state']}: {c['count']} ({c['application'] or '-'}), "
     f"oldest {c['oldest_s']} s"),
)  # fmt: skip


def _ms(value: object) -> str:
    return f"{float(str(value)):,.1f}"


@task(help={"env": ENV_HELP, "json": JSON_HELP, "dry_run": DRY_HELP})
def report(c: Context, env: str = "local", json_: bool = False, dry_run: bool = False) -> None:
    """What is slow in the environment's database and why: top statements, index
    candidates, unused and duplicate indexes, dead rows, cache hits, connections, and on
    Swarm pgbouncer's pools."""
    ctx = open_env(c, env, dry_run=dry_run, swarm=True)
    if ctx.env.swarm is not None:
        rep = _swarm_report(ctx)
    elif ctx.run.dry_run:
        ctx.run.run(deploy_plan.psql(ctx.env, "db.report"), env=ctx.variables)
        return
    else:
        with ops.database_session(ctx, "db.report") as session:
            rep = _report(session)
    if ctx.run.dry_run:
        return
    if json_:
        print(json.dumps(rep, indent=2, default=str))
        return
    ratio = rep["cache_hit_ratio"]
    used = sum(int(c["count"]) for c in rep["connections"])
    print(f"database of '{ctx.env.name}': {int(rep['size_bytes'] or 0) / 1e6:.1f} MB, cache hit "
          f"ratio {'-' if ratio is None else f'{float(ratio):.2%}'}, {used} of "
          f"{rep['max_connections']} connections")  # fmt: skip
    if not rep["statements_tracked"]:
        print("statements: pg_stat_statements is not loaded here (server environments load it)")
    for title, key in (("slowest statements, by total time", "top_total"),
                       ("slowest statements, by mean time", "top_mean")):  # fmt: skip
        print(f"\n{title}:\n  {'TOTAL MS':>10} {'CALLS':>8} {'MEAN MS':>9}  STATEMENT")
        for s in rep[key]:
            print(f"  {_ms(s['total_ms']):>10} {s['calls']:>8} {_ms(s['mean_ms']):>9}  "
                  f"{s['query'][:110]}")  # fmt: skip
    for title, key, show in SECTIONS:
        items = rep[key]
        print(f"\n{title}: {'none' if not items else ''}".rstrip())
        for item in items:
            print(f"  {show(item)}")
    if "pools" in rep:
        print("\nconnection pool (pgbouncer, transaction mode):")
        for p in rep["pools"]:
            print(f"  {p['database']}/{p['user']}: clients {p['cl_active']} active, "
                  f"{p['cl_waiting']} waiting (longest {p['maxwait']} s); server "
                  f"connections {p['sv_active']} in use, {p['sv_idle']} idle")  # fmt: skip


def _swarm_report(ctx: EnvContext) -> dict[str, Any]:
    """The report of a swarm environment: its database's, from a session in its task,
    and pgbouncer's pools, asked inside pgbouncer's task."""
    from lorepin_tasks.runtime.swarm import Swarm  # only swarm environments need it

    swarm = Swarm(ctx)
    swarm.require_up()
    if swarm.inspect("db") is None:
        raise NothingToDo(f"nothing is deployed to '{ctx.env.name}': it has no database yet")
    if ctx.run.dry_run:
        ctx.run.say(f"+ {' '.join(swarm.psql('db.report'))}")
        swarm.pools()
        return {}
    with swarm.session("db.report") as session:
        rep = _report(session)
    return {**rep, "pools": swarm.pools()}


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP})
def maintain(c: Context, env: str = "local", dry_run: bool = False) -> None:
    """VACUUM (ANALYZE) the tables with many dead rows and REINDEX CONCURRENTLY the invalid
    indexes (db.report's list), under the migration lock, each step in the migration log."""
    ctx = open_env(c, env, dry_run=dry_run)
    with ops.database_session(ctx, "db.maintain") as session:
        steps = plan.maintenance(_report(session))
        if not steps:
            raise NothingToDo(f"the database of '{ctx.env.name}' needs no maintenance now")
        a, b = LOCK_KEY
        if session.scalar(f"SELECT pg_try_advisory_lock({a}, {b})") != "t":
            raise Busy(
                f"a migration of '{ctx.env.name}' holds the migration lock: db.maintain "
                "waits for none; try again when it is done"
            )
        for statement, why in steps:
            ctx.run.say(f"+ {statement}  -- {why}")
            if ctx.run.dry_run:
                continue
            started = time.monotonic()
            session.query(statement, timeout=3600)
            ms = int((time.monotonic() - started) * 1000)
            detail = literal(f"{statement} ({why})")
            values = f"('db.maintain', 'maintain', 'ok', {ms}, {detail})"
            insert = f"INSERT INTO {LOG} (who, action, outcome, duration_ms, detail) VALUES "  # noqa: S608
            session.query(insert + values)
        session.query(f"SELECT pg_advisory_unlock({a}, {b})")
    if not ctx.run.dry_run:
        print(f"'{ctx.env.name}': {len(steps)} maintenance step(s) done, each in the migration log")
