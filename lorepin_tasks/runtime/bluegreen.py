"""The single-host deploy backend: two colours of the CMS as Compose services behind the
proxy, on the environment's engine. `tasks/deploy.py` drives it through the `Backend`
seam; a multi-host backend (Docker Swarm) is meant to sit behind the same seam.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Protocol

from lorepin_tasks.errors import LorePinError, last_line
from lorepin_tasks.plans import compose, proxy
from lorepin_tasks.plans import deploy as plan
from lorepin_tasks.runtime import docker, secrets
from lorepin_tasks.runtime.environment import EnvContext


class Backend(Protocol):
    def state(self) -> plan.State: ...
    def prepare(self, version: str) -> None: ...
    def start(self, state: plan.State, colour: str, version: str) -> None: ...
    def running(self, colour: str, version: str, why: str = "") -> None: ...
    def probe(self, colour: str, path: str) -> tuple[int, str]: ...
    def switch(self, colour: str | None) -> None: ...
    def stop(self, colour: str) -> None: ...
    def keep(self, colour: str) -> None: ...
    def public_port(self) -> int: ...
    def errors_since(self, since: str) -> tuple[int, int]: ...


class ComposeBlueGreen:
    """Colours are `cms-blue` and `cms-green`; the proxy's live config says which serves."""

    def __init__(self, ctx: EnvContext) -> None:
        self.ctx = ctx

    def _variables(self, **extra: str) -> dict[str, str]:
        return {**self.ctx.variables, **extra}

    def state(self) -> plan.State:
        colours = {
            name: plan.Colour(name=name, version=None, running=False) for name in plan.COLOURS
        }
        for c in docker.services(self.ctx):
            colour = c.labels.get(f"{compose.LABEL}.colour")
            if colour in colours:
                colours[colour] = plan.Colour(
                    name=colour,
                    version=c.labels.get(f"{compose.LABEL}.version"),
                    running=c.state == "running",
                    paused=c.state == "paused",
                )
        answer = self.ctx.run.run(
            plan.proxy_upstream(self.ctx.env),
            env=self.ctx.variables,
            capture=True,
            check=False,
            mutates=False,
            quiet=True,
        )
        active = plan.upstream_colour(answer.stdout) if answer.ok else None
        if active and not colours[active].version:  # routed to a colour that is gone
            active = None  # (the proxy kept its config through a `down`)
        return plan.State(colours=colours, active=active)

    def prepare(self, version: str) -> None:
        """The database and the proxy (first deploy: created from the release's images)."""
        ctx = replace(self.ctx, env=replace(self.ctx.env, image_tag=version))
        self.ctx.run.run(
            plan.infra_up(ctx.env, wait_timeout=ctx.settings.wait_timeout),
            env=ctx.variables,
            no_input=True,
            progress=True,
        )
        if self.ctx.run.dry_run:
            return
        up = {c.service for c in docker.services(self.ctx) if c.state == "running"}
        missing = sorted(set(plan.infra(self.ctx.env)) - up)
        if missing:
            raise LorePinError(
                f"{', '.join(missing)} of '{self.ctx.env.name}' did not start "
                f"(`{self.ctx.hint('logs', '--service', missing[0])}`)"
            )

    def start(self, state: plan.State, colour: str, version: str) -> None:
        """Start (or replace) a colour with a release; `running` says when it is ready."""
        kept = state.colours[colour]
        if kept.paused:  # the kept release: thawed in an instant
            self.ctx.run.run(
                plan.colour_unpause(self.ctx.env, colour), env=self.ctx.variables, capture=True
            )
            if kept.version == version:
                return
        versions = plan.variables(state, **{colour: version})
        result = self.ctx.run.run(
            plan.colour_up(self.ctx.env, colour),
            env=self._variables(**versions),
            check=False,
            capture_stderr=True,
            no_input=True,
            progress=True,
        )
        if not self.ctx.run.dry_run:
            self.running(colour, version, last_line(result.stderr))

    def running(self, colour: str, version: str, why: str = "") -> None:
        """Fail, naming the engine's reason, unless the colour's container runs."""
        found = {c.service: c for c in docker.services(self.ctx)}.get(plan.service(colour))
        if found is not None and found.state == "running":
            return
        if found is not None:
            why = found.error or f"{found.state} (exit code {found.exit_code})"
        raise LorePinError(
            f"{colour} ({version}) is not running: {self.ctx.run.redact(why or 'no container')} "
            f"(`{self.ctx.hint('logs', '--service', plan.service(colour))}`)"
        )

    def probe(self, colour: str, path: str) -> tuple[int, str]:
        """Status and body of a request to one colour directly (not through the proxy)."""
        result = self.ctx.run.run(
            plan.probe(self.ctx.env, colour, path),
            env=self.ctx.variables,
            capture=True,
            check=False,
            mutates=False,
            quiet=True,
        )
        body, _, code = result.stdout.rstrip("\n").rpartition("\n")
        return (int(code) if code.isdigit() else 0), body

    def switch(self, colour: str | None) -> None:
        """Route the proxy to `colour` (a whole new config, applied gracefully)."""
        config = plan.proxy_config(
            colour,
            self.public_port(),
            plan.server_name(self.ctx.env),
            secrets.monitoring_access(self.ctx),
            self.ctx.env.admin_allow,
        )
        self.ctx.run.run(
            plan.proxy_load(self.ctx.env), env=self.ctx.variables, stdin_text=config, capture=True
        )
        if self.ctx.run.dry_run:
            return
        now = self.state().active
        if now != colour:
            raise LorePinError(f"the proxy still routes to {now} after switching to {colour}")

    def stop(self, colour: str) -> None:
        self.ctx.run.run(
            plan.colour_stop(self.ctx.env, colour), env=self.ctx.variables, capture=True
        )

    def keep(self, colour: str) -> None:
        self.ctx.run.run(
            plan.colour_pause(self.ctx.env, colour), env=self.ctx.variables, capture=True
        )

    def public_port(self) -> int:
        if self.ctx.run.dry_run:
            return self.ctx.env.https_port or 8443
        address = docker.published(self.ctx, plan.PROXY, proxy.HTTPS_PORT)
        if not address:
            raise LorePinError(f"the proxy of '{self.ctx.env.name}' publishes no HTTPS port")
        return int(address.rpartition(":")[2])

    def errors_since(self, since: str) -> tuple[int, int]:
        """(requests, 5xx answers) the proxy logged since `since` (RFC 3339)."""
        log = self.ctx.run.run(
            plan.access_log(self.ctx.env, since),
            env=self.ctx.variables,
            capture=True,
            check=False,
            mutates=False,
            quiet=True,
        ).stdout
        total = errors = 0
        for line in log.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("logger") != "http.log.access.access":
                continue
            total += 1
            errors += int(entry.get("status", 0)) >= 500
        return total, errors
