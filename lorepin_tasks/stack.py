"""Run an environment's stack: `up`, `down`, `status`, `logs`, `build`.

Config (invoke.yaml, `lorepin:`): `environments.<name>` gives each environment's kind,
Compose project, files, ports and image tag; `wait_timeout` bounds every wait.
"""

from __future__ import annotations

import json
import time
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.context import EnvContext, ensure_secrets, open_env, require_base_image, task
from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.runtime import http
from lorepin_tasks.runtime.prompt import confirm

ENV_HELP = "environment name (see invoke.yaml; default: local)"
DRY_HELP = "print the exact commands and change nothing"


def published(ctx: EnvContext, service: str, container_port: int) -> str | None:
    """`host:port` that Docker published for a service's port, or None."""
    result = ctx.run.run(
        compose.port(ctx.env, service, container_port),
        env=ctx.variables,
        capture=True,
        check=False,
        mutates=False,
        quiet=True,
    )
    lines = result.stdout.strip().splitlines() if result.ok else []
    return lines[0] if lines else None


def published_url(ctx: EnvContext) -> str:
    """The CMS's URL on the host, as Docker actually published it."""
    address = published(ctx, compose.HTTP_SERVICE, compose.HTTP_PORT)
    if not address:
        raise LorePinError(f"the cms service of '{ctx.env.name}' publishes no port; is it running?")
    return f"http://{address}"


def services(ctx: EnvContext) -> list[dict[str, Any]]:
    result = ctx.run.run(
        compose.ps(ctx.env), env=ctx.variables, capture=True, mutates=False, quiet=True
    )
    rows = []
    for line in result.stdout.splitlines():
        line = line.strip()
        if line.startswith("["):  # older Compose prints one JSON array
            rows.extend(json.loads(line))
        elif line:
            rows.append(json.loads(line))
    return rows


@task(
    help={"env": ENV_HELP, "dry_run": DRY_HELP, "service": "build only these (repeatable)"},
    iterable=["service"],
)
def build(
    c: Context, env: str = "local", service: list[str] | None = None, dry_run: bool = False
) -> None:
    """Build the environment's images (cached layers are reused)."""
    ctx = open_env(c, env, dry_run=dry_run)
    require_base_image(ctx)
    ctx.run.run(compose.build(ctx.env, service or ()), env=ctx.variables)


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP})
def up(c: Context, env: str = "local", dry_run: bool = False) -> None:
    """Build what changed, start the stack, migrate, wait until ready, print the URLs."""
    started = time.monotonic()
    ctx = open_env(c, env, dry_run=dry_run)
    require_base_image(ctx)
    ensure_secrets(ctx)
    say = ctx.run.say
    say(f"==> {ctx.env.name}: building images (project {ctx.env.project})")
    ctx.run.run(compose.build(ctx.env), env=ctx.variables)
    say(f"==> {ctx.env.name}: starting db, migrate, cms")
    ctx.run.run(compose.up(ctx.env, wait_timeout=ctx.settings.wait_timeout), env=ctx.variables)
    if ctx.run.dry_run:
        say("dry run: nothing was built or started")
        return
    check_started(ctx)
    url = published_url(ctx)
    http.wait_ready(f"{url}/readyz", timeout=ctx.settings.wait_timeout, say=say)
    _, version = http.get(f"{url}/version")
    schema = version.get("schema_revision") if isinstance(version, dict) else None
    took = time.monotonic() - started
    print(f"LorePin CMS '{ctx.env.name}' is ready after {took:.1f} s, schema at {schema}")
    print(f"  CMS:      {url}/")
    print(f"  API:      {url}/api/pins")
    print(f"  health:   {url}/healthz  ready: {url}/readyz  version: {url}/version")
    if ctx.env.db_port is not None:
        print(
            f"  database: 127.0.0.1:{_db_port(ctx)} (user lorepin, db lorepin; "
            f"password in {ctx.env.secrets_dir / 'db_password'})"
        )


def check_started(ctx: EnvContext) -> None:
    """Fail with the cause when a service did not come up.

    `compose up --wait` exits 0 even when a one-shot dependency (migrate) failed and its
    dependants never started, so the outcome is read back from the containers.
    """
    for row in services(ctx):
        name, state, code = row.get("Service"), row.get("State"), row.get("ExitCode", 0)
        if state == "exited" and code != 0:
            log = ctx.run.run(
                compose.logs(ctx.env, [str(name)], follow=False, tail="20"),
                env=ctx.variables,
                capture=True,
                check=False,
                mutates=False,
                quiet=True,
            ).stdout
            last = _cause([line.split("|", 1)[-1].strip() for line in log.splitlines()])
            raise LorePinError(
                f"service '{name}' of '{ctx.env.name}' exited with code {code}: {last} "
                f"(full log: invoke logs {name} --env {ctx.env.name})"
            )


def _cause(lines: list[str]) -> str:
    """The line of a failed service's log that says why: the last error line, else the last."""
    meaningful = [ln for ln in lines if ln and not ln.startswith("(Background on this error")]
    errors = [ln for ln in meaningful if "error" in ln.lower() or "fatal" in ln.lower()]
    return (errors or meaningful or ["no output"])[-1]


def _db_port(ctx: EnvContext) -> str:
    return (published(ctx, compose.DB_SERVICE, compose.DB_PORT) or "?").rpartition(":")[2]


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "volumes": "also delete the environment's data volumes (asks first)",
        "yes": "do not ask for confirmation",
    }
)
def down(
    c: Context, env: str = "local", volumes: bool = False, yes: bool = False, dry_run: bool = False
) -> None:
    """Stop and remove the stack's containers and network; data is kept unless --volumes."""
    ctx = open_env(c, env, dry_run=dry_run)
    if volumes and not ctx.run.dry_run:
        found = ctx.run.run(
            compose.volumes(ctx.env),
            capture=True,
            mutates=False,
            quiet=True,
            env=ctx.variables,
        ).stdout.split()
        if found:
            confirm(
                f"Delete the data of environment '{ctx.env.name}' (volumes: {', '.join(found)})?",
                yes=yes,
            )
    ctx.run.run(compose.down(ctx.env, volumes=volumes), env=ctx.variables)
    if not ctx.run.dry_run:
        kept = "" if volumes else " (data volumes kept; --volumes deletes them)"
        print(f"environment '{ctx.env.name}' is down{kept}")


@task(help={"env": ENV_HELP, "dry_run": DRY_HELP, "json": "print machine-readable JSON"})
def status(c: Context, env: str = "local", json_: bool = False, dry_run: bool = False) -> None:
    """Show the environment's services, their health, the running version and URLs."""
    ctx = open_env(c, env, dry_run=dry_run)
    if ctx.run.dry_run:
        ctx.run.run(compose.ps(ctx.env), env=ctx.variables)
        return
    rows = services(ctx)
    report: dict[str, Any] = {
        "env": ctx.env.name,
        "project": ctx.env.project,
        "services": [
            {
                "service": r.get("Service"),
                "state": r.get("State"),
                "health": r.get("Health") or "-",
                "image": r.get("Image"),
                "status": r.get("Status"),
            }
            for r in rows
        ],
        "url": None,
        "version": None,
    }
    running = any(
        r.get("Service") == compose.HTTP_SERVICE and r.get("State") == "running" for r in rows
    )
    if running:
        report["url"] = published_url(ctx)
        code, body = http.get(f"{report['url']}/version")
        report["version"] = body if code == 200 else None
        report["ready"] = http.get(f"{report['url']}/readyz")[0] == 200
    if json_:
        print(json.dumps(report, indent=2))
        return
    if not rows:
        print(f"environment '{ctx.env.name}' (project {ctx.env.project}) is not running")
        return
    print(f"environment '{ctx.env.name}' (project {ctx.env.project})")
    print(f"  {'SERVICE':<10} {'STATE':<10} {'HEALTH':<10} IMAGE")
    for s in report["services"]:
        print(f"  {s['service']:<10} {s['state']:<10} {s['health']:<10} {s['image']}")
    if report["url"]:
        v = report["version"] or {}
        print(f"  url: {report['url']}/   ready: {'yes' if report.get('ready') else 'no'}")
        print(
            f"  version {v.get('version')} (git {str(v.get('git_revision'))[:12]}), "
            f"schema {v.get('schema_revision')} (expected {v.get('schema_expected')})"
        )


@task(
    help={
        "env": ENV_HELP,
        "dry_run": DRY_HELP,
        "follow": "keep streaming new lines",
        "tail": "lines per service to show first (or 'all')",
    },
    optional=["service"],
)
def logs(
    c: Context,
    service: str = "",
    env: str = "local",
    follow: bool = False,
    tail: str = "200",
    dry_run: bool = False,
) -> None:
    """Show the logs of the environment's services (or one SERVICE)."""
    ctx = open_env(c, env, dry_run=dry_run)
    if tail != "all" and not tail.isdigit():
        raise LorePinError(f"--tail takes a number or 'all', got {tail!r}")
    ctx.run.run(
        compose.logs(ctx.env, [service] if service else [], follow=follow, tail=tail),
        env=ctx.variables,
        check=False,
        quiet=True,
    )


ns = Collection("stack", build, up, down, status, logs)
