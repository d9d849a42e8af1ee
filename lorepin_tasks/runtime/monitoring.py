"""The monitoring of an environment as the tasks read it: Prometheus's HTTP API, asked
from inside its container (the same whether or not it is published), and the open
incidents in the environment's database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from lorepin_tasks.errors import LorePinError, last_line
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import incident as incident_plan
from lorepin_tasks.runtime import git, ops
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.pg import Session

PROMETHEUS, PROMETHEUS_PORT = "prometheus", 9090
API = f"http://127.0.0.1:{PROMETHEUS_PORT}/monitoring/prometheus/api/v1"


def prometheus(ctx: EnvContext, path: str) -> Any:
    """An answer of Prometheus's HTTP API (`path` after /api/v1/)."""
    done = ctx.run.run(
        [*compose.docker(ctx.env), "exec", deploy_plan.container(ctx.env, PROMETHEUS),
         "curl", "-fsS", "--max-time", "10", f"{API}/{path}"],
        env=ctx.engine, check=False, capture=True, capture_stderr=True, mutates=False,
        quiet=True,
    )  # fmt: skip
    if not done.ok and "error: 4" in done.stderr:  # curl -f on a 4xx: it answered, and refused
        raise LorePinError(
            f"Prometheus of '{ctx.env.name}' refused the query: {last_line(done.stderr)}"
        )
    if not done.ok:
        raise LorePinError(
            f"Prometheus of '{ctx.env.name}' does not answer: {last_line(done.stderr)} "
            f"(start it with `invoke monitor.up --env {ctx.env.name}`)"
        )
    answer = json.loads(done.stdout)
    if answer.get("status") != "success":
        raise LorePinError(f"Prometheus said: {answer.get('error', answer)}")
    return answer["data"]


@contextmanager
def incidents_database(ctx: EnvContext) -> Iterator[Session]:
    """A session on the database that holds the incidents: the one that takes writes
    (after a failover: the replica), running."""
    with ops.database_session(ctx, git.who_am_i(ctx.run, ctx.settings.root)) as session:
        yield session


def open_incidents(ctx: EnvContext) -> list[dict[str, Any]]:
    """The environment's incidents that are not resolved (none before the first)."""
    with incidents_database(ctx) as session:
        if session.scalar(incident_plan.EXISTS) != "t":
            return []
        found: list[dict[str, Any]] = json.loads(
            session.scalar(incident_plan.list_sql(every=False)) or "[]"
        )
        return found
