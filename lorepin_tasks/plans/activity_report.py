"""The user activity report (`invoke activity.report`), as SQL and as text. Pure: the rows
come in.

From the CMS's `activity` table (lorepin_cms.activity): active sessions per day, the top
routes, and the most frequent flows: one request followed by the next in the same session
within FLOW_GAP (a longer pause starts a new visit). Every figure is aggregated: the
report never shows a session id.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

FLOW_GAP = "30 minutes"  # as analytics tools cut a visit
TOP = 10


def queries(since: datetime, until: datetime, top: int = TOP) -> dict[str, str]:
    """Each section's query: one row, one JSON document (jsonb: no line breaks for psql).
    Only times and a whole number are put in (S608)."""
    # isoformat() is digits, '-', ':', '.', '+' and 'T': a literal as it stands.
    window = f"at >= '{since.isoformat()}'::timestamptz AND at < '{until.isoformat()}'::timestamptz"
    return {
        "exists": "SELECT to_jsonb(to_regclass('public.activity') IS NOT NULL)",
        "totals": f"""
SELECT jsonb_build_object('sessions', count(DISTINCT session_id), 'requests', count(*),
                          'users', count(DISTINCT user_id), 'first', min(at), 'last', max(at))
FROM activity WHERE {window}""",  # noqa: S608
        "days": f"""
SELECT coalesce(jsonb_agg(t ORDER BY t.day), '[]') FROM (
  SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day,
         count(DISTINCT session_id) AS sessions, count(*) AS requests,
         count(DISTINCT user_id) AS users
  FROM activity WHERE {window} GROUP BY 1) t""",  # noqa: S608
        "routes": f"""
SELECT coalesce(jsonb_agg(t ORDER BY t.requests DESC, t.method, t.route), '[]') FROM (
  SELECT method, route, count(*) AS requests, count(DISTINCT session_id) AS sessions,
         round(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)::numeric, 1)
           AS p95_ms,
         round(avg((status >= 500)::int)::numeric, 4) AS error_ratio
  FROM activity WHERE {window}
  GROUP BY method, route ORDER BY requests DESC, method, route LIMIT {int(top)}) t""",  # noqa: S608
        "flows": f"""
SELECT coalesce(jsonb_agg(t ORDER BY t.times DESC, t.from, t.to), '[]') FROM (
  SELECT previous AS from, step AS to, count(*) AS times,
         count(DISTINCT session_id) AS sessions
  FROM (
    SELECT session_id, method || ' ' || route AS step,
           lag(method || ' ' || route) OVER visit AS previous,
           at - lag(at) OVER visit AS gap
    FROM activity WHERE {window}
    WINDOW visit AS (PARTITION BY session_id ORDER BY at, id)) s
  WHERE previous IS NOT NULL AND gap <= interval '{FLOW_GAP}'
  GROUP BY previous, step ORDER BY times DESC, previous, step LIMIT {int(top)}) t""",  # noqa: S608
    }


def text(report: Mapping[str, Any]) -> str:
    """The report as a person reads it."""
    totals = report["totals"]
    lines = [
        f"user activity of '{report['env']}', {report['since']} to {report['until']} (UTC):",
        f"  {totals['sessions']} sessions, {totals['requests']} requests, "
        f"{totals['users']} signed-in users; kept {report['retention_days']} days",
        "",
        "active sessions per day:",
        f"  {'DAY':<10} {'SESSIONS':>9} {'REQUESTS':>9} {'USERS':>6}",
    ]
    lines += [
        f"  {d['day']:<10} {d['sessions']:>9} {d['requests']:>9} {d['users']:>6}"
        for d in report["days"]
    ] or ["  none"]
    lines += ["", "top routes:",
              f"  {'REQUESTS':>9} {'SESSIONS':>9} {'P95 MS':>8} {'5XX':>6}  ROUTE"]  # fmt: skip
    lines += [
        f"  {r['requests']:>9} {r['sessions']:>9} {float(r['p95_ms']):>8.1f} "
        f"{float(r['error_ratio']):>6.1%}  {r['method']} {r['route']}"
        for r in report["routes"]
    ] or ["  none"]
    lines += ["", f"most frequent flows (next request within {FLOW_GAP}):",
              f"  {'TIMES':>6} {'SESSIONS':>9}  FLOW"]  # fmt: skip
    lines += [
        f"  {f['times']:>6} {f['sessions']:>9}  {f['from']} -> {f['to']}" for f in report["flows"]
    ] or ["  none"]
    return "\n".join(lines) + "\n"
