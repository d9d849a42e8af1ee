"""Run an environment's stack: `up`, `down`, `status`, `logs`, `build`.

Config (invoke.yaml, `lorepin:`): `environments.<name>` gives each environment's kind,
Compose project, files, ports and image tag; `wait_timeout` bounds every wait.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.runtime import docker, http, lock, secrets, throwaway
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    ENV_HELP,
    JSON_HELP,
    LOGS_HELP,
    YES_HELP,
    bring_up,
    build_stale,
    locked,
    open_env,
    require_base_image,
    show_logs,
    task,
    with_revision,
)


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "service": "build only this service's image (repeatable)",
        "no_cache": "rebuild every layer (a cold build)",
    },
    iterable=["service"],
)
def build(
    c: Context,
    env: str = "local",
    service: list[str] | None = None,
    no_cache: bool = False,
    dry_run: bool = False,
) -> None:
    """Build the environment's images (cached layers are reused)."""
    ctx = with_revision(open_env(c, env, dry_run=dry_run))
    require_base_image(ctx.settings)
    model = docker.model(ctx)
    chosen = model.check(service or [], ctx.env.name)
    imageless = [n for n in chosen if not model.services[n].build]
    if imageless:
        raise ConfigError(
            f"service {', '.join(imageless)} of '{ctx.env.name}' builds no image of its own"
        )
    only = chosen or [n for n, s in model.services.items() if s.build]
    with locked(ctx, "build"):  # its images are what the environment runs next
        docker.ensure_owned(ctx)
        built = build_stale(ctx, model, only=only, no_cache=no_cache)
    if not ctx.run.dry_run:
        print(f"built {', '.join(built)} for '{ctx.env.name}'")


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP})
def up(c: Context, env: str = "local", dry_run: bool = False) -> None:
    """Build what changed, start the stack, migrate, wait until ready, print the URLs."""
    started = time.monotonic()
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.env.is_server:
        raise ConfigError(
            f"'{ctx.env.name}' is a {ctx.env.kind} environment: it is deployed by version "
            f"(`invoke deploy --env {ctx.env.name} --version X.Y.Z`), never brought `up`"
        )
    require_base_image(ctx.settings)
    if ctx.env.kind == "local":  # a running monitoring (`monitor.up`) is no orphan to remove
        ctx = replace(ctx, env=compose.with_monitoring(ctx.env, ctx.settings.root, started=False))
    with locked(ctx, "up"):
        docker.ensure_owned(ctx)
        ctx = with_revision(ctx)
        secrets.ensure(ctx)
        found = bring_up(ctx, started)
    if ctx.run.dry_run:
        ctx.run.say("dry run: nothing was built or started")
        return
    url = docker.published_url(ctx, found)
    _, version = http.get(f"{url}/version")
    schema = version.get("schema_revision") if isinstance(version, dict) else None
    took = time.monotonic() - started
    print(f"LorePin CMS '{ctx.env.name}' is ready after {took:.1f} s, schema at {schema}")
    print(f"  CMS:      {url}/")
    print(f"  API:      {url}/api/pins")
    print(f"  health:   {url}/healthz  ready: {url}/readyz  version: {url}/version")
    db = next(
        (c.published(compose.DB_PORT) for c in found if c.service == compose.DB_SERVICE), None
    )
    if db:
        print(
            f"  database: {db} (user lorepin, db lorepin; "
            f"password in {ctx.env.secrets_dir / 'db_password'})"
        )


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "volumes": "also delete the environment's data volumes (asks first)",
        "yes": YES_HELP,
    }
)
def down(
    c: Context, env: str = "local", volumes: bool = False, yes: bool = False, dry_run: bool = False
) -> None:
    """Stop and remove the stack's containers and network; data is kept unless --volumes."""
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.env.monitorable:  # its monitoring too, volumes and all
        ctx = replace(ctx, env=compose.with_monitoring(ctx.env, ctx.settings.root))
    with locked(ctx, "down"):
        docker.ensure_owned(ctx, data=volumes)
        if not volumes:  # the database would not start again until the rotation finished
            secrets.refuse_unfinished_rotation(ctx)
        if volumes and not ctx.run.dry_run:
            found = [v.name for v in docker.volumes(ctx)]
            if found:
                confirm(
                    f"Delete the data of environment '{ctx.env.name}' "
                    f"(volumes: {', '.join(found)})?",
                    yes=yes,
                )
        docker.down(ctx, volumes_too=volumes)
        if not ctx.run.dry_run and (left := throwaway.remove_left(ctx)):
            # A verification's or a refresh's copy of the data that a kill -9 left running.
            ctx.run.say(f"    removed {left} throwaway database(s) left by a run cut short")
        if volumes and not ctx.run.dry_run:  # no data: the next one starts with the file's
            (ctx.env.secrets_dir / secrets.ROTATING).unlink(missing_ok=True)
    if not ctx.run.dry_run:
        kept = "" if volumes else " (data volumes kept; --volumes deletes them)"
        print(f"environment '{ctx.env.name}' is down{kept}")


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP, "json": JSON_HELP})
def status(c: Context, env: str = "local", json_: bool = False, dry_run: bool = False) -> None:
    """Show the environment's services, their health, the running version and URLs."""
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.run.dry_run:
        ctx.run.run(compose.project_containers(ctx.env), env=ctx.engine)
        return
    found = docker.services(ctx)
    report = _report(ctx, found)
    if json_:
        print(json.dumps(report, indent=2))
        return
    print(f"environment '{ctx.env.name}' (project {ctx.env.project})")
    if report["changing"]:
        print(f"  being changed by {report['changing']}")
    if not found:
        print("  not running")
        return
    print(f"  {'SERVICE':<18} {'STATE':<12} {'HEALTH':<10} IMAGE")
    for s in report["services"]:
        state = f"{s['state']} ({s['exit_code']})" if s["state"] == "exited" else s["state"]
        print(f"  {s['service']:<18} {state:<12} {s['health']:<10} {s['image']}")
    if "live" in report:
        for c in report["colours"]:
            live = "  <- live" if c["colour"] == report["live"] else ""
            print(f"  {c['colour']:<6} {c['version']:<12} {c['state']}{live}")
        if last := report["last_deploy"]:
            print(
                f"  last {last.get('action')}: {last.get('version')} {last.get('outcome')} "
                f"at {str(last.get('at'))[:19]} UTC by {last.get('who')}"
            )
    for a in report.get("alerts", []):
        print(f"  ALERT {a['severity']} {a['alert']}: {a['summary']}")
    for i in report.get("incidents", []):
        print(f"  INC-{i['id']} {i['priority']} {i['status']}: {i['title']}")
    if "monitoring_error" in report:
        print(f"  monitoring: {report['monitoring_error']}")
    if not report["url"]:
        print("  cms not running: no URL" if "live" not in report else "  nothing deployed yet")
        return
    v = report["version"] or {}
    print(f"  url: {report['url']}/   ready: {'yes' if report['ready'] else 'no'}")
    if not v:
        print("  version unknown: the CMS does not answer /version")
        return
    schema = v.get("schema_revision") or "unknown (database unreachable)"
    print(
        f"  version {v.get('version')} (git {v.get('git_revision')}), "
        f"schema {schema} (expected {v.get('schema_expected')})"
    )


def _report(ctx: EnvContext, found: list[docker.Container]) -> dict[str, Any]:
    report: dict[str, Any] = {
        "env": ctx.env.name,
        "project": ctx.env.project,
        "changing": lock.holder_of(ctx.env.lock_file),
        "services": [
            {
                "service": c.service,
                "state": c.state,
                "health": (c.health if c.state != "paused" else None) or "-",
                "image": c.image,
                "exit_code": c.exit_code,
            }
            for c in sorted(found, key=lambda c: c.service)
        ],
        "url": None,
        "version": None,
        "ready": False,
    }
    cafile = None
    if ctx.env.deploy is not None and found:  # a server kind: colours behind the proxy
        _deployed(ctx, report)
        cafile = ctx.env.secrets_dir / "tls.crt"
    elif any(c.service == compose.HTTP_SERVICE and c.state == "running" for c in found):
        report["url"] = docker.published_url(ctx, found)
    if ctx.env.kind == "local" and found:  # watched on request (`monitor.up --env local`)
        _watched(ctx, report)
    if report["url"]:
        code, body = http.get(f"{report['url']}/version", cafile=cafile)
        report["version"] = body if code == 200 and isinstance(body, dict) else None
        report["ready"] = http.get(f"{report['url']}/readyz", cafile=cafile)[0] == 200
    return report


def _deployed(ctx: EnvContext, report: dict[str, Any]) -> None:
    """Which colour serves which release, and the last deploy this machine recorded."""
    from lorepin_tasks.plans import deploy as plan
    from lorepin_tasks.plans import proxy
    from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
    from lorepin_tasks.runtime.trail import mirrored

    state = ComposeBlueGreen(ctx).state()
    report["live"] = state.active
    report["colours"] = [
        {
            "colour": c.name,
            "version": c.version,
            "state": "paused (kept for rollback)" if c.paused else "running" if c.running else "-",
        }
        for c in state.colours.values()
        if c.version
    ]
    records = mirrored(ctx.env.state_dir / "audit.jsonl")
    report["last_deploy"] = records[-1] if records else None
    _watched(ctx, report)
    address = docker.published(ctx, plan.PROXY, proxy.HTTPS_PORT)
    if state.active and address:
        report["url"] = f"https://{address}"


def _watched(ctx: EnvContext, report: dict[str, Any]) -> None:
    """The firing alerts and open incidents, when the environment's monitoring runs."""
    from lorepin_tasks.runtime import monitoring

    running = docker.container(ctx, f"{ctx.env.project}-{monitoring.PROMETHEUS}-1")
    if running is None or running.state != "running":
        return
    try:
        alerts = monitoring.prometheus(ctx, "alerts")["alerts"]
        report["incidents"] = monitoring.open_incidents(ctx)
    except LorePinError as exc:  # the status still shows the rest
        report["monitoring_error"] = str(exc)
        return
    report["alerts"] = [
        {"alert": a["labels"].get("alertname"), "severity": a["labels"].get("severity"),
         "summary": a["annotations"].get("summary")}
        for a in alerts if a.get("state") == "firing"
    ]  # fmt: skip


@task(help={**LOGS_HELP, "env": ENV_HELP, "dry_run": DRY_HELP})
def logs(
    c: Context,
    service: str = "",
    env: str = "local",
    follow: bool = False,
    tail: str = "200",
    dry_run: bool = False,
) -> None:
    """Show the logs of the environment's services (or one SERVICE): `invoke logs -s db`."""
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.env.monitorable:  # its monitoring's services too
        ctx = replace(ctx, env=compose.with_monitoring(ctx.env, ctx.settings.root))
    show_logs(ctx, service, follow=follow, tail=tail)


ns = Collection("stack", build, up, down, status, logs)
