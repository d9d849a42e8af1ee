"""Reading a server environment's central log where it lies: inside its collector, as the
log reader (lorepin_tasks.plans.logs says which files and which commands)."""

from __future__ import annotations

import io
from typing import IO

from lorepin_tasks.errors import LorePinError, last_line
from lorepin_tasks.plans import logs as plan
from lorepin_tasks.runtime import docker
from lorepin_tasks.runtime.environment import EnvContext


def search(ctx: EnvContext, q: plan.Query) -> list[plan.Line]:
    """The lines the query asks for, oldest first (none under a dry run: the commands are
    shown). A collector that is not running is a one-line error naming its state."""
    listed = ctx.run.run(
        plan.list_files(ctx.env), env=ctx.engine, capture=True, mutates=False, quiet=True,
        check=False,
    )  # fmt: skip
    if not listed.ok and not ctx.run.dry_run:
        found = docker.container(ctx, plan.collector(ctx.env))
        if found is None and "No such container" in listed.stderr:
            raise LorePinError(
                f"'{ctx.env.name}' has no log collector: deploy it first "
                f"(`invoke deploy --env {ctx.env.name} --version X.Y.Z`)"
            )
        if found is None or found.state == "running":  # no engine, or the read failed
            raise LorePinError(
                f"cannot read the log of '{ctx.env.name}': {last_line(listed.stderr)}"
            )
        raise LorePinError(
            f"the log collector of '{ctx.env.name}' is {found.state}: its files cannot be "
            f"read (`invoke deploy --env {ctx.env.name}` starts it; "
            f"`invoke logs --env {ctx.env.name} -s collector` says why it stopped)"
        )
    paths = plan.files(q, plan.services_in(listed.stdout.splitlines()), ctx.env.name)
    if not paths and not ctx.run.dry_run:
        return []
    raw: list[str] = []

    def keep(stream: IO[bytes]) -> None:
        raw.extend(io.TextIOWrapper(stream, encoding="utf-8", errors="replace"))

    # Without a listing (a dry run), the files the engine would be asked for.
    argv = plan.read(ctx.env, q, paths or [f"{plan.ROOT}/*/*.log"])
    done = ctx.run.pipe(argv, env=ctx.engine, read=keep, check=False)
    if done.returncode not in (0, 1):  # grep's 1: no line matched, an answer
        raise LorePinError(f"reading the log of '{ctx.env.name}' failed: {done.stderr.strip()}")
    return plan.select(raw, q)
