"""The monitoring of a server environment (or of `local`, on request): `monitor.up`,
`monitor.down`, `monitor.status`, `monitor.report`, `monitor.dashboards` and the top-level
`errors`.

Prometheus, Alertmanager, the node, postgres and blackbox exporters and the incident
receiver (compose/monitoring.yaml, one image from Debian's packages: monitoring/Dockerfile)
join the environment's own Compose project; nothing of theirs is published but
Prometheus: through the proxy, behind an allow-list and a password, on a server
environment; on the host's loopback for `local`, which has no proxy. Their configuration,
alert rules, rule tests and dashboards live in monitoring/ (docs/monitoring.md).
"""

from __future__ import annotations

import json
import math
import socket
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit

from lorepin_cms.exit_codes import ExitCode
from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import dashboards as dashboards_plan
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import images as images_plan
from lorepin_tasks.plans import monitoring as monitoring_plan
from lorepin_tasks.runtime import docker, monitoring, ops, secrets
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    MONITORED_ENV_HELP,
    build_stale,
    load_settings,
    locked,
    monitored_env,
    require_base_image,
    start,
    task,
)

QUERIES = "monitoring/postgres-queries.yml"  # no checker in the image: checked here
BUILT_BY = "prometheus"  # the service that carries the image's build (all share it)
SERVICES = ("prometheus", "alertmanager", "node-exporter", "postgres-exporter",
            "blackbox-exporter", "incident-receiver")  # fmt: skip
# The configuration, checked inside the image that runs it before anything starts.
CHECKS = (
    ("promtool", "check", "config", "/etc/lorepin/monitoring/prometheus.yml"),
    ("promtool", "check", "config", "/etc/lorepin/monitoring/prometheus-local.yml"),
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
    """The environment with its monitoring's Compose files (a server one, or local)."""
    ctx = monitored_env(c, env, dry_run, what="monitoring is for")
    problems = monitoring_plan.query_problems((ctx.settings.root / QUERIES).read_text())
    if problems:
        raise ConfigError(f"the monitoring configuration is invalid ({QUERIES}): {problems[0]}")
    return replace(ctx, env=compose.with_monitoring(ctx.env, ctx.settings.root))


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


def port_free(ctx: EnvContext) -> None:
    """Local: the loopback port Prometheus is to be published on is free, or already its
    own. Checked before anything is recreated: a taken port would leave no monitoring."""
    port = ctx.env.monitoring_port
    if not port or ctx.env.docker_host or ctx.env.docker_context:  # 0, or another engine's
        return
    if docker.published(ctx, monitoring.PROMETHEUS, monitoring.PROMETHEUS_PORT) == (
        f"127.0.0.1:{port}"
    ):
        return
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"127.0.0.1:{port} is taken: give the local monitoring a free port "
                "(monitoring.port in invoke.yaml, or LOREPIN_MONITORING_PORT; 0: any)"
            ) from None


@task(help={"env": MONITORED_ENV_HELP, "dry_run": DRY_HELP})
def up(c: Context, env: str = "", dry_run: bool = False) -> None:
    """Build the monitoring image if it changed, check its configuration, start it."""
    ctx = monitored(c, env, dry_run)
    require_base_image(ctx.settings)
    with locked(ctx, "monitor.up"):
        docker.ensure_owned(ctx)
        if not ctx.run.dry_run:
            ops.writable_database(ctx)
            port_free(ctx)
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
        if ctx.env.is_server:
            open_to_people(ctx)
        if ctx.run.dry_run:
            return
    print(f"monitoring of '{ctx.env.name}' is up: `invoke monitor.status --env {ctx.env.name}`")
    if not ctx.env.is_server:  # local: published on the loopback, for this machine only
        address = docker.published(ctx, monitoring.PROMETHEUS, monitoring.PROMETHEUS_PORT)
        print(f"  http://{address}/monitoring/prometheus/consoles/cms.html")
        return
    print(
        f"  {ctx.env.url or 'https://<the environment>'}/monitoring/prometheus/consoles/cms.html "
        f"(user monitor, password in {ctx.env.secrets_dir / secrets.MONITORING_PASSWORD}; "
        f"from {', '.join(ctx.env.monitoring_allow)})"
    )


def open_to_people(ctx: EnvContext) -> None:
    """The proxy's /monitoring/ route: the password (and its hash, made by the proxy's own
    Caddy), then the proxy's config again with the route, for the colour that serves."""

    def caddy_hash(password: str) -> str:
        done = ctx.run.run(
            deploy_plan.in_proxy(ctx.env, "caddy", "hash-password"),
            env=ctx.engine, stdin_text=password + "\n", capture=True, quiet=True,
        )  # fmt: skip
        hashed = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if not hashed.startswith("$2"):
            raise LorePinError("the proxy's Caddy did not hash the monitoring password")
        return hashed

    secrets.ensure_monitoring_password(ctx, caddy_hash)
    blue_green = ComposeBlueGreen(ctx)
    active = None if ctx.run.dry_run else blue_green.state().active
    if active or ctx.run.dry_run:
        blue_green.switch(active)


@task(help={"env": MONITORED_ENV_HELP, "dry_run": DRY_HELP})
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


@task(help={"env": MONITORED_ENV_HELP, "json": JSON_HELP})
def status(c: Context, env: str = "", json_: bool = False) -> None:
    """Each scrape target's health and every alert that is firing or pending; exit 1 when
    a target is down (a paused colour's excepted) or an alert fires."""
    ctx = monitored(c, env, dry_run=False)
    targets = monitoring.prometheus(ctx, "targets?state=active")["activeTargets"]
    alerts = monitoring.prometheus(ctx, "alerts")["alerts"]
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
    # Not yet scraped ("unknown") is not down; a paused colour is down by design.
    pausable = PAUSABLE if ctx.env.is_server else ()
    down = [t for t in targets if t["health"] == "down" and t["labels"]["job"] not in pausable]
    firing = [a for a in alerts if a["state"] == "firing"]
    if down or firing:
        raise Exit(code=ExitCode.FAILED)


def since_flag(text: str) -> int:
    try:
        return monitoring_plan.since_seconds(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def query(ctx: EnvContext, promql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = monitoring.prometheus(
        ctx, f"query?{urllib.parse.urlencode({'query': promql})}"
    )["result"]
    return result


def number(sample: Mapping[str, Any]) -> float | None:
    value = float(sample["value"][1])
    return None if math.isnan(value) or math.isinf(value) else value


@task(help={"env": MONITORED_ENV_HELP, "since": "how far back: 30m, 24h, 7d, 2w (default 7d)",
            "json": JSON_HELP})  # fmt: skip
def report(c: Context, env: str = "", since: str = "7d", json_: bool = False) -> None:
    """The CMS's performance over a period, per route (requests, errors, p50, p99) and per
    day, from the environment's Prometheus."""
    seconds = since_flag(since)
    if seconds > monitoring_plan.REPORT_MAX:
        raise ConfigError(f"--since goes back at most {monitoring_plan.REPORT_MAX // 86400}d")
    since = since.strip()
    ctx = monitored(c, env, False)
    routes: dict[str, dict[str, float | None]] = {}
    for name, promql in monitoring_plan.report_queries(since).items():
        for sample in query(ctx, promql):
            routes.setdefault(sample["metric"].get("route", "?"), {})[name] = number(sample)
    end = int(time.time())
    days: dict[str, dict[str, float | None]] = {}
    for name, promql in monitoring_plan.DAILY.items():
        path = "query_range?" + urllib.parse.urlencode(
            # Whole days back from now: the newest point is today's last 24 hours.
            {"query": promql, "start": end - seconds // 86400 * 86400, "end": end, "step": "86400"}
        )
        for series in monitoring.prometheus(ctx, path)["result"]:
            for at, value in series["values"]:
                day = time.strftime("%Y-%m-%d", time.gmtime(float(at)))
                days.setdefault(day, {})[name] = number({"value": [at, value]})
    if json_:
        print(json.dumps({"since": since, "routes": routes, "days": days}, indent=2))
        return
    if not routes:
        print(f"no CMS requests in '{ctx.env.name}' over the last {since}")
        return

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    print(f"the CMS of '{ctx.env.name}' over the last {since}")
    print(f"{'ROUTE':<28} {'REQUESTS':>10} {'5xx':>8} {'P50':>9} {'P99':>9}")
    for route, v in sorted(routes.items(), key=lambda kv: -(kv[1].get("requests") or 0)):
        print(f"{route:<28} {v.get('requests') or 0:>10.0f} {v.get('errors') or 0:>8.0f} "
              f"{ms(v.get('p50')):>9} {ms(v.get('p99')):>9}")  # fmt: skip
    print(f"\n{'DAY (UTC)':<12} {'REQUESTS':>10} {'5xx RATIO':>10} {'P99':>9}")
    for day, v in sorted(days.items()):
        ratio = v.get("error_ratio")
        print(f"{day:<12} {v.get('requests') or 0:>10.0f} "
              f"{'-' if ratio is None else f'{ratio:.2%}':>10} {ms(v.get('p99')):>9}")  # fmt: skip


COLOURS = ("blue", "green")


@task(help={"env": MONITORED_ENV_HELP, "since": "how far back: 30m, 24h, 7d (default 24h)",
            "json": JSON_HELP})  # fmt: skip
def errors(c: Context, env: str = "", since: str = "24h", json_: bool = False) -> None:
    """The CMS's unhandled errors, grouped by fingerprint: how many, first and last seen,
    where, and request ids to follow (from both colours' logs; local's one CMS)."""
    seconds = since_flag(since)
    ctx = monitored_env(c, env, False, what="error tracking is for")
    lines: list[str] = []
    read = 0
    services = [f"cms-{colour}" for colour in COLOURS] if ctx.env.is_server else ["cms"]
    for service in services:
        name = deploy_plan.container(ctx.env, service)
        done = ctx.run.run(  # docker's --since knows s, m and h, not days or weeks
            [*compose.docker(ctx.env), "logs", "--since", f"{seconds}s", name],
            env=ctx.engine, check=False, capture=True, capture_stderr=True, mutates=False,
            quiet=True,
        )  # fmt: skip
        if done.ok:
            read += 1
            lines += (done.stdout + "\n" + done.stderr).splitlines()
    if not read:
        raise LorePinError(
            f"no CMS colour of '{ctx.env.name}' has logs to read (deployed yet? "
            f"`invoke status --env {ctx.env.name}`)"
        )
    groups = monitoring_plan.error_groups(lines)
    if json_:
        print(json.dumps(groups, indent=2))
        return
    if not groups:
        print(f"no unhandled CMS error in '{ctx.env.name}' over the last {since}")
        return
    print(f"{'FINGERPRINT':<13} {'COUNT':>6} {'FIRST SEEN':<20} {'LAST SEEN':<20} TYPE, WHERE")
    for g in groups:
        print(f"{g['fingerprint']:<13} {g['count']:>6} {str(g['first'])[:19]:<20} "
              f"{str(g['last'])[:19]:<20} {g['type']} ({g['category']}) in "
              f"{', '.join(g['routes'])}")  # fmt: skip
        print(f"{'':>20}at {' <- '.join(reversed(g['frames'] or []))}")
        if g["request_ids"]:
            print(f"{'':>20}requests {', '.join(g['request_ids'])}")


@task(help={"check": "change nothing: exit 1 when a file differs from the definition"})
def dashboards(c: Context, check: bool = False) -> None:
    """Write the dashboards (lorepin_tasks/plans/dashboards.py) as Prometheus consoles
    (monitoring/consoles/) and Grafana provisioning (monitoring/grafana/)."""
    root = load_settings(c).root
    stale = [path for path, text in dashboards_plan.files().items()
             if not (root / path).is_file() or (root / path).read_text() != text]  # fmt: skip
    if check:
        if stale:
            raise LorePinError(f"out of date: {', '.join(stale)} (`invoke monitor.dashboards`)")
        print("the dashboards are up to date")
        return
    for path in stale:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(dashboards_plan.files()[path])
        print(f"wrote {path}")
    if not stale:
        print("the dashboards are up to date")


ns = Collection("monitor", up, down, status, report, dashboards)
