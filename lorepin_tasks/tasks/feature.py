"""Ephemeral per-branch environments: `feature.up`, `feature.down`, `feature.list`,
`feature.logs`, `feature.prune`.

Config (invoke.yaml, `lorepin.feature`): `compose_files` (the stack plus the mocks and
the feature overlay), `ttl` (how long an environment lives after its last `feature.up`,
e.g. 72h), `seed_count` (generated pins per environment).

An environment belongs to the checkout that made it (a label on everything it has):
this checkout's tasks never list, change or remove another checkout's.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import feature as plan
from lorepin_tasks.plans import git as git_plan
from lorepin_tasks.runtime import docker, git, secrets
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.settings import Settings, parse_ttl
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    LOGS_HELP,
    YES_HELP,
    bring_up,
    executor,
    load_settings,
    locked,
    require_base_image,
    show_logs,
    task,
)

BRANCH_HELP = "the branch (default: the one checked out)"


def _branch(run: Executor, settings: Settings, branch: str) -> str:
    if not branch:
        current = git.current_branch(run, settings.root)
        if current is None:
            raise ConfigError("HEAD is detached: say which branch with --branch NAME")
        return current
    if not git.is_branch_name(run, settings.root, branch):
        raise ConfigError(f"invalid branch name {branch!r}")
    return branch


def _context(
    settings: Settings,
    run: Executor,
    name: plan.FeatureName,
    files: tuple[Path, ...] = (),
    *,
    port: int = 0,
    labels: dict[str, str] | None = None,
) -> EnvContext:
    """The branch's environment; without files it serves only project-wide queries."""
    return EnvContext(
        settings=settings,
        env=plan.environment(name, files, settings.state_home, port),
        run=run,
        extra=labels or {},
        address=("--branch", name.branch),
        task_prefix="feature.",
    )


@contextmanager
def _source(run: Executor, settings: Settings, name: plan.FeatureName) -> Iterator[Path]:
    """The tree to build from: the working tree for the checked-out branch (uncommitted
    changes included), else a temporary worktree of the branch, removed afterwards.

    The worktree's path is the environment's own, and the caller holds its lock: what a
    killed run left there is removed first, and no other run can be using it.
    """
    root, branch = settings.root, name.branch
    if git.current_branch(run, root) == branch:
        yield root
        return
    import tempfile

    path = Path(tempfile.gettempdir()) / f"lorepin-worktree-{name.project}"
    if run.dry_run:  # the commands, with this checkout's files standing in for the branch's
        run.run(git_plan.worktree_add(root, path, branch))
        yield root
        run.run(git_plan.worktree_remove(root, path))
        return
    if path.exists():
        run.run(git_plan.worktree_remove(root, path), check=False, quiet=True)
        shutil.rmtree(path, ignore_errors=True)
    run.run(git_plan.worktree_prune(root), check=False, quiet=True)
    run.run(git_plan.worktree_add(root, path, branch))
    try:
        yield path
    finally:
        run.run(git_plan.worktree_remove(root, path), check=False)
        shutil.rmtree(path, ignore_errors=True)


@task(
    help={
        "branch": BRANCH_HELP,
        "ttl": "lifetime after this run, e.g. 72h, 90m, 7d",
        "dry_run": DRY_HELP,
    }
)
def up(c: Context, branch: str = "", ttl: str = "", dry_run: bool = False) -> None:
    """Start (or update) the branch's own environment: build, migrate, seed, print its URL."""
    began = time.monotonic()
    settings = load_settings(c)
    run = executor(c, dry_run)
    branch = _branch(run, settings, branch)
    lifetime = parse_ttl(ttl) if ttl else settings.feature.ttl
    require_base_image(settings)
    if git.current_branch(run, settings.root) != branch and branch not in git.branches(
        settings.root
    ):
        raise ConfigError(f"there is no local branch {branch!r} (git branch --list)")
    name = plan.name_for(branch, settings.checkout.id)
    probe = _context(settings, run, name)
    with locked(probe, "feature.up"):
        docker.ensure_owned(probe)
        found = docker.services(probe)
        now = datetime.now(UTC).replace(microsecond=0)
        created = next(
            (
                when
                for v in docker.volumes(probe)
                if (when := plan.parse_stamp(v.labels.get(f"{plan.LABEL}.created-at")))
            ),
            now,
        )
        # An update keeps the URL people have: the port its CMS has now.
        address = next(
            (
                a
                for x in found
                if x.service == compose.HTTP_SERVICE and (a := x.published(compose.HTTP_PORT))
            ),
            "",
        )
        port = int(address.rpartition(":")[2]) if address else 0
        # The branch's own compose files serve every step: the worktree lives to the end.
        with _source(run, settings, name) as source:
            files = tuple(source / f for f in settings.feature.compose_files)
            labels = plan.labels(name, created, now + lifetime)
            ctx = _context(settings, run, name, files, port=port, labels=labels)
            ctx = replace(ctx, revision=git.describe(run, source))
            secrets.ensure(ctx)
            run.say(f"==> feature '{branch}' -> {name.project} (expires {now + lifetime:%c} UTC)")
            containers = bring_up(ctx, began)
            seeded = "not seeded (feature.seed_count is 0)"
            if settings.feature.seed_count:
                seed = plan.seed_command(settings.feature, name)
                seeded = docker.run_oneoff(ctx, "migrate", seed, kind=plan.ONEOFF, capture=True)
    if run.dry_run:
        run.say("dry run: nothing was built, started or seeded")
        return
    url = docker.published_url(ctx, containers)
    expires = f"{now + lifetime:%Y-%m-%d %H:%M} UTC"
    print(f"feature '{branch}' is ready: {url}/  ({seeded.strip()}; expires {expires})")


def _age(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    seconds = abs(int((now - when).total_seconds()))
    text = (
        f"{seconds // 86400}d{seconds % 86400 // 3600}h"
        if seconds >= 86400
        else f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    )
    return text if now >= when else f"in {text}"


@task(name="list", help={"json": JSON_HELP, "dry_run": DRY_HELP})
def list_(c: Context, json_: bool = False, dry_run: bool = False) -> None:
    """List this checkout's feature environments: branch, name, URL, health, age, expiry."""
    settings = load_settings(c)
    run = executor(c, dry_run)
    if run.dry_run:
        for query in plan.find(settings.checkout.id):
            run.run(query)
        return
    found = docker.feature_environments(run, settings.checkout.id)
    now = datetime.now(UTC)
    if json_:
        print(
            json.dumps(
                [
                    {
                        "branch": f.branch,
                        "project": f.project,
                        "url": f.url,
                        "health": f.health,
                        "created_at": f.created.isoformat() if f.created else None,
                        "expires_at": f.expires.isoformat() if f.expires else None,
                        "containers": f.containers,
                    }
                    for f in found
                ],
                indent=2,
            )
        )
        return
    if not found:
        print("no feature environments")
        return
    width = max(len(f.project) for f in found)
    print(f"{'BRANCH':<30} {'NAME':<{width}} {'URL':<24} {'HEALTH':<9} {'AGE':<7} EXPIRES")
    for f in found:
        branch = f.branch if len(f.branch) <= 30 else f"{f.branch[:29]}…"
        print(
            f"{branch:<30} {f.project:<{width}} {f.url or '-':<24} {f.health:<9} "
            f"{_age(f.created, now):<7} {_age(f.expires, now)}"
        )


def _found_context(settings: Settings, run: Executor, found: plan.Found) -> EnvContext:
    """An environment `feature.list` found, with this checkout's compose files."""
    name = plan.name_for(found.branch, settings.checkout.id) if found.branch != "?" else None
    if name is None or name.project != found.project:
        raise LorePinError(
            f"{found.project} has no usable branch label; remove it with "
            f"`docker compose -p {found.project} down --volumes`"
        )
    files = tuple(settings.root / f for f in settings.feature.compose_files)
    now = datetime.now(UTC)
    labels = plan.labels(name, found.created or now, found.expires or now)
    return _context(settings, run, name, files, labels=labels)


def _remove(settings: Settings, run: Executor, found: plan.Found) -> None:
    ctx = _found_context(settings, run, found)
    with locked(ctx, "feature.down"):
        docker.ensure_owned(ctx, data=True)
        docker.down(ctx, volumes_too=True)
        name = plan.name_for(found.branch, settings.checkout.id)
        run.run(plan.remove_images(settings.image_prefix, name), check=False, capture=True)
    # Its state (secrets, lock) goes last, once nothing of it is left to unlock.
    if run.dry_run:
        run.say(f"# would delete {ctx.env.state_dir}")
        return
    shutil.rmtree(ctx.env.state_dir, ignore_errors=True)
    print(f"removed {found.project} (branch '{found.branch}')")


def _found(settings: Settings, run: Executor, branch: str) -> plan.Found:
    name = plan.name_for(branch, settings.checkout.id)
    for f in docker.feature_environments(run, settings.checkout.id):
        if f.project == name.project:
            return f
    raise LorePinError(
        f"there is no feature environment for branch {branch!r} "
        f"({name.project}); see `invoke feature.list`"
    )


@task(help={"branch": BRANCH_HELP, "yes": YES_HELP, "dry_run": DRY_HELP})
def down(c: Context, branch: str = "", yes: bool = False, dry_run: bool = False) -> None:
    """Remove the branch's environment: containers, network, volumes, its image tags."""
    settings = load_settings(c)
    run = executor(c, dry_run)
    found = _found(settings, run, _branch(run, settings, branch))
    if not run.dry_run:
        confirm(
            f"Delete the environment of branch '{found.branch}' ({found.project}) and its data?",
            yes=yes,
        )
    _remove(settings, run, found)


@task(help={**LOGS_HELP, "branch": BRANCH_HELP, "dry_run": DRY_HELP})
def logs(
    c: Context,
    service: str = "",
    branch: str = "",
    follow: bool = False,
    tail: str = "200",
    dry_run: bool = False,
) -> None:
    """Show the logs of the branch's environment (or of one SERVICE)."""
    settings = load_settings(c)
    run = executor(c, dry_run)
    found = _found(settings, run, _branch(run, settings, branch))
    show_logs(_found_context(settings, run, found), service, follow=follow, tail=tail)


@task(
    help={
        "yes": YES_HELP,
        "as_of": "judge expiry as of this UTC time (e.g. 2026-12-01T09:00), to see what "
        "a later prune would remove",
        "dry_run": "show what would go; remove nothing",
    }
)
def prune(c: Context, yes: bool = False, as_of: str = "", dry_run: bool = False) -> None:
    """Remove this checkout's environments that expired or whose branch was deleted or merged."""
    settings = load_settings(c)
    run = executor(c, dry_run)
    now = _as_of(as_of) if as_of else datetime.now(UTC)
    heads = git.branches(settings.root)
    release = settings.release.branch
    merged_in = git.merged_into(settings.root, release) if release in heads else set()
    doomed = []
    for f in docker.feature_environments(run, settings.checkout.id):
        tip = heads.get(f.branch)
        merged = tip is not None and f.branch != release and tip in merged_in
        reason = plan.prune_reason(f, now=now, branch_exists=tip is not None, merged=merged)
        if reason:
            doomed.append((f, reason))
    if not doomed:
        print("nothing to prune")
        return
    for f, reason in doomed:
        print(f"prune {f.project} (branch '{f.branch}'): {reason}")
    if not run.dry_run:
        confirm(f"Delete these {len(doomed)} environment(s) and their data?", yes=yes)
    for f, _ in doomed:
        _remove(settings, run, f)


def _as_of(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"invalid --as-of {text!r}: an ISO time like 2026-12-01T09:00") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


ns = Collection("feature", up, down, list_, logs, prune)
