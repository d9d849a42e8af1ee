"""The monitoring of a server environment: `monitor.up`, `monitor.down`, `monitor.status`.

Prometheus, Alertmanager and the node, postgres and blackbox exporters
(compose/monitoring.yaml, one image from Debian's packages: monitoring/Dockerfile) join
the environment's own Compose project; nothing of theirs is published. Their
configuration, alert rules and rule tests live in monitoring/ (docs/monitoring.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit

from lorepin_cms.exit_codes import ExitCode
from lorepin_tasks.errors import ConfigError, LorePinError, last_line
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import images as images_plan
from lorepin_tasks.plans import monitoring as monitoring_plan
from lorepin_tasks.runtime import docker, secrets
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    SERVER_ENV_HELP,
    build_stale,
    locked,
    require_base_image,
    server_env,
    start,
    task,
)

FILE = "compose/monitoring.yaml"
QUERIES = "monitoring/postgres-queries.yml"  # no checker in the image: checked here
BUILT_BY = "prometheus"  # the service that carries the image's build (all share it)
SERVICES = ("prometheus", "alertmanager", "node-exporter", "postgres-exporter",
            "blackbox-exporter", "incident-receiver")  # fmt: skip
PROMETHEUS_API = "http://127.0.0.1:9090/monitoring/prometheus/api/v1"
# The configuration, checked inside the image that runs it before anything starts.
CHECKS = (
    ("promtool", "check", "config", "/etc/lorepin/monitoring/prometheus.yml"),
    ("amtool", "check-config", "/etc/lorepin/monitoring/alertmanager.yml"),
    ("prometheus-blackbox-exporter", "--config.file=/etc/lorepin/monitoring/blackbox.yml",
     "--config.check"),
)  # fmt: skip
# Targets that are down by design: the paused colour (the previous release, kept).
PAUSABLE = ("cms", "probe_colour")


BAKED = "/etc/lorepin/monitoring/"  # where the image holds the repository's monitoring/


def why(said: str) -> str:
    """The checker's own reason: the line that says FAILED or error, with the one after it
    when it only announces it ("FAILED:" then the file, line and cause)."""
    lines = [ln.strip() for ln in said.splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if "FAILED" in line or "rror" in line:
            return f"{line} {lines[i + 1]}" if line.endswith(":") and i + 1 < len(lines) else line
    return lines[-1] if lines else "no reason given"


def monitored(c: Context, env: str, dry_run: bool) -> EnvContext:
    """The environment with its monitoring's Compose file (a server environment only)."""
    ctx = server_env(c, env, dry_run, what="monitoring is for")
    problems = monitoring_plan.query_problems((ctx.settings.root / QUERIES).read_text())
    if problems:
        raise ConfigError(f"the monitoring configuration is invalid ({QUERIES}): {problems[0]}")
    path = ctx.settings.root / FILE
    files = ctx.env.compose_files
    if path not in files:
        files = (*files, path)
    return replace(ctx, env=replace(ctx.env, compose_files=files, profiles=("*",)))


def image(ctx: EnvContext, model: docker.Model) -> str:
    return str(model.services[BUILT_BY].image)


def check_config(ctx: EnvContext, ref: str, previous: str | None) -> None:
    """promtool, amtool and the blackbox exporter on the configuration baked into `ref`:
    a bad file stops here, with the checker's own words, before any service is touched;
    the tag goes back to the `previous` image, so nothing recreated later runs it."""
    for check in CHECKS:
        argv = [*compose.docker(ctx.env), "run", "--rm", "--network", "none",
                "--env", f"LOREPIN_ENV={ctx.env.name}", "--entrypoint", check[0], ref,
                *check[1:]]  # fmt: skip
        done = ctx.run.run(argv, env=ctx.engine, check=False, capture=True, capture_stderr=True)
        if done.ok or ctx.run.dry_run:
            continue
        put_back = images_plan.tag_image(previous, ref) if previous else images_plan.remove([ref])
        ctx.run.run([*compose.docker(ctx.env), *put_back[1:]], env=ctx.engine, check=False)
        said = (done.stdout + done.stderr).replace(BAKED, "monitoring/")
        raise ConfigError(f"the monitoring configuration is invalid ({check[0]}): {why(said)}")


def database_running(ctx: EnvContext) -> None:
    running = {c.service for c in docker.containers(ctx) if c.state == "running"}
    if compose.DB_SERVICE not in running:
        raise LorePinError(
            f"'{ctx.env.name}' has no running database: deploy it first "
            f"(`invoke deploy --env {ctx.env.name} --version X.Y.Z`)"
        )


@task(help={"env": SERVER_ENV_HELP, "dry_run": DRY_HELP})
def up(c: Context, env: str = "", dry_run: bool = False) -> None:
    """Build the monitoring image if it changed, check its configuration, start it."""
    ctx = monitored(c, env, dry_run)
    require_base_image(ctx.settings)
    with locked(ctx, "monitor.up"):
        docker.ensure_owned(ctx)
        if not ctx.run.dry_run:
            database_running(ctx)
        secrets.ensure_alert_webhook(ctx)
        model = docker.model(ctx)
        ref = image(ctx, model)
        before = docker.images(ctx.run, compose.docker(ctx.env), [ref]).get(ref)
        build_stale(ctx, model, only=[BUILT_BY], force=False)
        check_config(ctx, ref, before.id if before else None)
        wanted = docker.Model(services={n: model.services[n] for n in SERVICES})
        argv = compose.up(
            ctx.env, wait_timeout=ctx.settings.wait_timeout, services=SERVICES, recreate=True
        )
        start(ctx, argv, wanted)
        if ctx.run.dry_run:
            return
    print(f"monitoring of '{ctx.env.name}' is up: `invoke monitor.status --env {ctx.env.name}`")


@task(help={"env": SERVER_ENV_HELP, "dry_run": DRY_HELP})
def down(c: Context, env: str = "", dry_run: bool = False) -> None:
    """Stop and remove the monitoring's containers (their data volumes are kept)."""
    ctx = monitored(c, env, dry_run)
    with locked(ctx, "monitor.down"):
        docker.ensure_owned(ctx)
        ctx.run.run([*compose.compose(ctx.env), "rm", "--stop", "--force", *SERVICES],
                    env=ctx.variables, no_input=True)  # fmt: skip
        if not ctx.run.dry_run:
            left = [c.service for c in docker.containers(ctx) if c.service in SERVICES]
            if left:
                raise LorePinError(f"still there after monitor.down: {', '.join(left)}")
    if not ctx.run.dry_run:
        print(f"monitoring of '{ctx.env.name}' stopped (its data volumes are kept)")


def prometheus_get(ctx: EnvContext, path: str) -> Any:
    """A Prometheus HTTP API answer, asked from inside its container (it is not published)."""
    container = f"{ctx.env.project}-prometheus-1"
    done = ctx.run.run(
        [*compose.docker(ctx.env), "exec", container, "curl", "-fsS", "--max-time", "10",
         f"{PROMETHEUS_API}/{path}"],
        env=ctx.engine, check=False, capture=True, capture_stderr=True, mutates=False,
    )  # fmt: skip
    if not done.ok:
        raise LorePinError(
            f"Prometheus of '{ctx.env.name}' does not answer: {last_line(done.stderr)} "
            f"(start it with `invoke monitor.up --env {ctx.env.name}`)"
        )
    answer = json.loads(done.stdout)
    if answer.get("status") != "success":
        raise LorePinError(f"Prometheus said: {answer.get('error', answer)}")
    return answer["data"]


@task(help={"env": SERVER_ENV_HELP, "json": JSON_HELP})
def status(c: Context, env: str = "", json_: bool = False) -> None:
    """Each scrape target's health and every alert that is firing or pending; exit 1 when
    a target is down (a paused colour's excepted) or an alert fires."""
    ctx = monitored(c, env, dry_run=False)
    targets = prometheus_get(ctx, "targets?state=active")["activeTargets"]
    alerts = prometheus_get(ctx, "alerts")["alerts"]
    if json_:
        print(json.dumps({"targets": targets, "alerts": alerts}, indent=2))
    else:
        for t in sorted(targets, key=lambda t: (t["labels"]["job"], t["labels"]["instance"])):
            error = f"  {t['lastError']}" if t.get("lastError") else ""
            print(f"{t['health']:<8} {t['labels']['job']:<14} {t['labels']['instance']}{error}")
        for a in alerts:
            print(f"ALERT {a['state']:<8} {a['labels'].get('severity', '?'):<8} "
                  f"{a['labels']['alertname']}: {a['annotations'].get('summary', '')}")  # fmt: skip
        if not alerts:
            print("no alert firing or pending")
    down = [t for t in targets if t["health"] != "up" and t["labels"]["job"] not in PAUSABLE]
    firing = [a for a in alerts if a["state"] == "firing"]
    if down or firing:
        raise Exit(code=ExitCode.FAILED)


ns = Collection("monitor", up, down, status)
