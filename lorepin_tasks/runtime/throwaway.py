"""Throwaway copies of an environment's database (and CMS) on a network of their own:
what `backup.verify` restores into and `dr.drill` destroys and recovers. Everything one
starts is labelled for its environment and checkout and removed however it ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import backup as plan
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.runtime import docker, ops
from lorepin_tasks.runtime.bluegreen import ComposeBlueGreen
from lorepin_tasks.runtime.environment import EnvContext


def db_container(ctx: EnvContext) -> docker.Container:
    """The environment's running database container, or a clear error."""
    name = deploy_plan.container(ctx.env, compose.DB_SERVICE)
    found = docker.container(ctx, name)
    if found is None or found.state != "running":
        ops.refuse_failed_over(ctx)  # a fenced primary is named as such
    if found is not None and found.state != "running" and ctx.env.is_server:
        raise LorePinError(
            f"the database of '{ctx.env.name}' is not running: start it (`docker start {name}`);"
            " if it cannot start (a restore cut short), docs/disaster-recovery.md, scenario 3"
        )
    if found is None or found.state != "running":
        start = "`invoke deploy`" if ctx.env.is_server else f"`{ctx.hint('up')}`"
        raise LorePinError(
            f"the database of '{ctx.env.name}' is not running: start it first ({start})"
        )
    return found


def serving(ctx: EnvContext) -> tuple[str | None, list[str]]:
    """The version the environment serves and the CMS containers that take writes."""
    if ctx.env.is_server:
        state = ComposeBlueGreen(ctx).state()
        writers = [
            deploy_plan.container(ctx.env, deploy_plan.service(c.name))
            for c in state.colours.values()
            if c.running or c.name == state.active  # the live one even if it stopped
        ]
        return state.serving, writers
    # The CMS even if it stopped (a restore cut short stops it): a restore starts it again.
    return ctx.env.image_tag, [c.name for c in docker.services(ctx) if c.service == "cms"]


def image_id(ctx: EnvContext, name: str) -> str | None:
    found = docker.container(ctx, name)
    return found.image_id if found else None


@dataclass
class Throwaway:
    """A PostgreSQL (and a CMS) of the backup's images on a network of their own, removed
    however the verification ends. The password goes in with `docker cp`, so it never
    shows in `docker inspect`."""

    ctx: EnvContext
    backup: str
    names: dict[str, str]
    password: str
    volumes: list[str] = field(default_factory=list)  # named volumes it made

    def docker(self, *args: str, check: bool = True, quiet: bool = False) -> Any:
        """A docker command; its output is kept, never mixed into the task's own."""
        return self.ctx.run.run(
            [*compose.docker(self.ctx.env), *args],
            env=self.ctx.engine,
            check=check,
            capture=True,
            quiet=quiet,
        )

    def create_network(self) -> None:
        """Its network: internal (nothing of it is reachable from outside), labelled."""
        labels = plan.labels(self.ctx.env, self.ctx.settings.checkout.id, self.backup)
        self.docker("network", "create", "--internal", *labels, self.names["network"])

    def start(
        self,
        role: str,
        image: str,
        environment: dict[str, str],
        *,
        args: Sequence[str] = (),
        command: Sequence[str] = (),
        files: dict[str, str] | None = None,
    ) -> None:
        """Create, copy the secrets in (into /tmp of the container), start."""
        name = self.names[role]
        labels = plan.labels(self.ctx.env, self.ctx.settings.checkout.id, self.backup)
        env_args = [arg for k, v in environment.items() for arg in ("-e", f"{k}={v}")]
        network = ["--network", self.names["network"]]
        self.docker("create", "--name", name, *network, *labels, *env_args, *args, image, *command)
        tar = docker.files_tar(
            files if files is not None else {Path(plan.PASSWORD_FILE).name: self.password}
        )
        self.ctx.run.pipe(
            [
                *compose.docker(self.ctx.env),
                "cp",
                "-",
                f"{name}:{Path(plan.PASSWORD_FILE).parent}/",
            ],
            env=self.ctx.engine,
            write=lambda sink: sink.write(tar),
        )
        self.docker("start", name)

    def takes_writes(self) -> bool:
        """Its database is up on TCP (not the socket-only server of a first
        initialisation) and out of recovery."""

        def sql(*argv: str) -> Any:
            return self.docker(
                "exec", "-u", "postgres", self.names["db"], *argv, check=False, quiet=True
            )

        if not sql("pg_isready", "-q", "-h", "127.0.0.1", "-U", "lorepin", "-d", "lorepin").ok:
            return False
        answer = sql("psql", "-qtAX", "-U", "lorepin", "-d", "postgres", "-c",
                     "SELECT pg_is_in_recovery()")  # fmt: skip
        return bool(answer.ok and answer.stdout.strip() == "f")

    def cms_ready(self) -> bool:
        """Its CMS answers /readyz (asked from inside: nothing of it is published)."""
        probe = (
            "import sys, urllib.request as u\n"
            "try:\n    u.urlopen('http://127.0.0.1:8000/readyz', timeout=2)\n"
            "except Exception:\n    sys.exit(1)\n"
        )
        return bool(
            self.docker(
                "exec", self.names["cms"], "python3", "-c", probe, check=False, quiet=True
            ).ok
        )

    def remove(self) -> None:
        for role in ("cms", "db"):
            if role in self.names:  # a copy without a CMS has no name for one
                self.docker("rm", "-f", "-v", self.names[role], check=False, quiet=True)
        for volume in self.volumes:
            self.docker("volume", "rm", volume, check=False, quiet=True)
        self.docker("network", "rm", self.names["network"], check=False, quiet=True)


def remove_left(ctx: EnvContext, name_prefix: str = "") -> int:
    """Throwaways of this environment and checkout (a verification's, a refresh's) that a
    run cut short left, with their networks; those whose names start with `name_prefix`
    only, when given. How many containers went."""
    filters = [
        "--filter", f"label=dev.lorepin.env={ctx.env.name}",
        "--filter", f"label=dev.lorepin.checkout={ctx.settings.checkout.id}",
        "--filter", f"label={plan.VERIFY_LABEL}",
        *(["--filter", f"name={name_prefix}"] if name_prefix else []),
    ]  # fmt: skip
    base = [*compose.docker(ctx.env)]

    def listed(*args: str) -> list[str]:
        found = ctx.run.run([*base, *args, *filters], env=ctx.engine, capture=True, quiet=True,
                            mutates=False)  # fmt: skip
        return found.stdout.split()

    containers = listed("ps", "-aq")
    if containers:
        ctx.run.run([*base, "rm", "-f", "-v", *containers], env=ctx.engine, capture=True,
                    quiet=True)  # fmt: skip
    if networks := listed("network", "ls", "-q"):
        ctx.run.run([*base, "network", "rm", *networks], env=ctx.engine, capture=True,
                    quiet=True, check=False)  # fmt: skip
    return len(containers)


def wait_for(deadline: float, what: str, probe: Callable[[], bool]) -> None:
    started = time.monotonic()
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(0.5)
    raise LorePinError(f"the {what} did not come up within {deadline - started:.0f} s")
