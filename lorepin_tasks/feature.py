"""Ephemeral per-branch environments: `feature.up`, `feature.down`, `feature.list`,
`feature.prune`.

Config (invoke.yaml, `lorepin.feature`): `compose_files` (the stack plus the mocks and
the feature overlay), `ttl` (how long an environment lives after its last `feature.up`,
e.g. 72h), `seed_count` (generated pins per environment).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git
from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.context import (
    EnvContext,
    ensure_secrets,
    executor,
    load_settings,
    require_base_image,
    run_oneoff,
    task,
)
from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import feature as plan
from lorepin_tasks.runtime import http
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.runtime.git import describe
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.settings import Settings
from lorepin_tasks.stack import check_started, published_url

DEFAULTS: dict[str, Any] = {
    "compose_files": ["compose/compose.yaml", "compose/mocks.yaml", "compose/feature.yaml"],
    "ttl": "72h",
    "seed_count": 3000,
}
IMAGES = ("cms", "postgres", "geocoder-mock")
BRANCH_HELP = "the branch (default: the one checked out)"
DRY_HELP = "print the exact commands and change nothing"


def _config(c: Context) -> dict[str, Any]:
    return {**DEFAULTS, **dict(c.config.get("lorepin", {}).get("feature", {}) or {})}


def _repo(settings: Settings) -> git.Repo:
    try:
        return git.Repo(settings.root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ConfigError(f"{settings.root} is not a git repository") from None


def _branch(repo: git.Repo, branch: str) -> str:
    if not branch:
        if repo.head.is_detached:
            raise ConfigError("HEAD is detached: say which branch with --branch NAME")
        return repo.active_branch.name
    try:
        repo.git.check_ref_format("--branch", branch)
    except git.GitCommandError:
        raise ConfigError(f"invalid branch name {branch!r}") from None
    return branch


def _release_branch(c: Context) -> str:
    return str((c.config.get("lorepin", {}).get("release", {}) or {}).get("branch", "main"))


@contextmanager
def _source(run: Executor, repo: git.Repo, branch: str) -> Iterator[Path]:
    """The tree to build from: the working tree for the checked-out branch (uncommitted
    changes included), else a temporary worktree of the branch, removed afterwards."""
    root = Path(repo.working_tree_dir or ".")
    if not repo.head.is_detached and repo.active_branch.name == branch:
        yield root
        return
    if branch not in [h.name for h in repo.heads]:
        raise ConfigError(f"there is no local branch {branch!r} (git branch --list)")
    path = Path(tempfile.mkdtemp(prefix="lorepin-worktree-"))
    run.run(["git", "-C", str(root), "worktree", "add", "--detach", "--quiet", str(path), branch])
    try:
        yield path
    finally:
        run.run(["git", "-C", str(root), "worktree", "remove", "--force", str(path)], check=False)
        shutil.rmtree(path, ignore_errors=True)


def _context(
    settings: Settings,
    name: plan.FeatureName,
    files: tuple[Path, ...],
    run: Executor,
    source: Path,
    created: datetime,
    expires: datetime,
    port: int = 0,
) -> EnvContext:
    env = plan.environment(name, files, settings_mod.state_home(os.environ), port)
    return EnvContext(
        settings=settings,
        env=env,
        run=run,
        revision=describe(source),
        extra=plan.labels(name, created, expires),
    )


def _current_port(run: Executor, project: str) -> int:
    """The host port the branch's CMS has now, so an update keeps the URL people have."""
    result = run.run(
        ["docker", "port", f"{project}-{compose.HTTP_SERVICE}-1", str(compose.HTTP_PORT)],
        capture=True,
        check=False,
        mutates=False,
        quiet=True,
    )
    port = result.stdout.strip().splitlines()[0].rpartition(":")[2] if result.stdout.strip() else ""
    return int(port) if result.ok and port.isdigit() else 0


def _created_at(run: Executor, project: str) -> datetime | None:
    result = run.run(
        [
            "docker",
            "volume",
            "inspect",
            "--format",
            '{{index .Labels "dev.lorepin.created-at"}}',
            f"{project}_db-data",
        ],
        capture=True,
        check=False,
        mutates=False,
        quiet=True,
    )
    return plan.parse_stamp(result.stdout.strip()) if result.ok else None


@task(
    help={
        "branch": BRANCH_HELP,
        "ttl": "lifetime after this run, e.g. 72h, 90m, 7d",
        "dry_run": DRY_HELP,
    }
)
def up(c: Context, branch: str = "", ttl: str = "", dry_run: bool = False) -> None:
    """Start (or update) the branch's own environment: build, migrate, seed, print its URL."""
    settings = load_settings(c)
    config = _config(c)
    repo = _repo(settings)
    branch = _branch(repo, branch)
    lifetime = plan.parse_ttl(ttl or str(config["ttl"]))
    name = plan.name_for(branch)
    run = executor(c, dry_run)
    now = datetime.now(UTC).replace(microsecond=0)
    created = _created_at(run, name.project) or now
    port = _current_port(run, name.project)
    # The branch's own compose files serve every step, so the worktree lives until the end.
    with _source(run, repo, branch) as source:
        files = tuple(source / f for f in config["compose_files"])
        ctx = _context(settings, name, files, run, source, created, now + lifetime, port)
        require_base_image(ctx)
        ensure_secrets(ctx)
        run.say(f"==> feature '{branch}' -> {name.project}: building images")
        run.run(compose.build(ctx.env), env=ctx.variables)
        run.say(f"==> {name.project}: starting (expires {(now + lifetime).isoformat()})")
        run.run(compose.up(ctx.env, wait_timeout=ctx.settings.wait_timeout), env=ctx.variables)
        if run.dry_run:
            seed = compose.run(ctx.env, "migrate", _seed_command(config, name), name="seed")
            run.run(seed, env=ctx.variables)
            run.say("dry run: nothing was built, started or seeded")
            return
        check_started(ctx)
        seeded = run_oneoff(ctx, "migrate", _seed_command(config, name), capture=True).strip()
        url = published_url(ctx)
    http.wait_ready(f"{url}/readyz", timeout=settings.wait_timeout, say=run.say)
    expires = f"{now + lifetime:%Y-%m-%d %H:%M} UTC"
    print(f"feature '{branch}' is ready: {url}/  ({seeded}; expires {expires})")


def _seed_command(config: dict[str, Any], name: plan.FeatureName) -> list[str]:
    count = int(config["seed_count"])
    return [
        "python",
        "-m",
        "lorepin_cms.seed",
        "--count",
        str(count),
        "--seed",
        str(int(name.digest, 16) % 2**31),
    ]


def find(run: Executor) -> list[plan.Found]:
    """Every feature environment on the engine, from its containers' and volumes' labels."""

    def ids(argv: list[str]) -> list[str]:
        return run.run(argv, capture=True, mutates=False, quiet=True).stdout.split()

    label = f"label={plan.LABEL}.kind=feature"
    containers = ids(["docker", "ps", "-aq", "--filter", label])
    volumes = ids(["docker", "volume", "ls", "-q", "--filter", label])
    details: list[dict[str, Any]] = []
    if containers:
        details += json.loads(
            run.run(
                ["docker", "inspect", *containers], capture=True, mutates=False, quiet=True
            ).stdout
        )
    if volumes:
        details += [
            {"Config": {"Labels": v.get("Labels") or {}}, "volume": True}
            for v in json.loads(
                run.run(
                    ["docker", "volume", "inspect", *volumes],
                    capture=True,
                    mutates=False,
                    quiet=True,
                ).stdout
            )
        ]
    envs: dict[str, dict[str, Any]] = {}
    for item in details:
        labels = item["Config"]["Labels"] or {}
        project = labels.get("com.docker.compose.project")
        if not project:
            continue
        env = envs.setdefault(
            project,
            {
                "branch": labels.get(f"{plan.LABEL}.branch", "?"),
                "created": labels.get(f"{plan.LABEL}.created-at"),
                "expires": None,
                "url": None,
                "health": "stopped",
                "containers": 0,
            },
        )
        if item.get("volume"):
            continue
        env["containers"] += 1
        env["expires"] = labels.get(f"{plan.LABEL}.expires-at") or env["expires"]
        if labels.get("com.docker.compose.service") == compose.HTTP_SERVICE:
            state = item.get("State", {})
            env["health"] = (state.get("Health") or {}).get("Status") or state.get("Status", "?")
            bound = (item.get("NetworkSettings", {}).get("Ports") or {}).get(
                f"{compose.HTTP_PORT}/tcp"
            ) or []
            if bound:
                env["url"] = f"http://{bound[0]['HostIp']}:{bound[0]['HostPort']}"
    return sorted(
        (
            plan.Found(
                project=p,
                branch=e["branch"],
                created=plan.parse_stamp(e["created"]),
                expires=plan.parse_stamp(e["expires"]),
                url=e["url"],
                health=e["health"],
                containers=e["containers"],
            )
            for p, e in envs.items()
        ),
        key=lambda f: f.branch,
    )


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


@task(name="list", help={"json": "print machine-readable JSON"})
def list_(c: Context, json_: bool = False) -> None:
    """List the feature environments: branch, name, URL, health, age, expiry."""
    found = find(Executor())
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
    print(f"{'BRANCH':<30} {'NAME':<36} {'URL':<24} {'HEALTH':<9} {'AGE':<7} EXPIRES")
    for f in found:
        print(
            f"{f.branch[:30]:<30} {f.project:<36} {f.url or '-':<24} {f.health:<9} "
            f"{_age(f.created, now):<7} {_age(f.expires, now)}"
        )


def _remove(c: Context, run: Executor, found: plan.Found) -> None:
    settings = load_settings(c)
    name = plan.name_for(found.branch) if found.branch != "?" else None
    if name is None or name.project != found.project:
        raise LorePinError(
            f"{found.project} has no usable branch label; remove it with "
            f"`docker compose -p {found.project} down --volumes`"
        )
    files = tuple(settings.root / f for f in _config(c)["compose_files"])
    created = found.created or datetime.now(UTC)
    ctx = _context(settings, name, files, run, settings.root, created, found.expires or created)
    run.run(compose.down(ctx.env, volumes=True), env=ctx.variables)
    tags = [f"{settings.image_prefix}/{image}:{name.image_tag}" for image in IMAGES]
    run.run(["docker", "image", "rm", *tags], check=False, capture=True)
    if run.dry_run:
        run.say(f"# would delete {ctx.env.secrets_dir}")
    else:
        shutil.rmtree(ctx.env.secrets_dir.parent, ignore_errors=True)
        print(f"removed {found.project} (branch '{found.branch}')")


@task(help={"branch": BRANCH_HELP, "yes": "do not ask for confirmation", "dry_run": DRY_HELP})
def down(c: Context, branch: str = "", yes: bool = False, dry_run: bool = False) -> None:
    """Remove the branch's environment: containers, network, volumes, its image tags."""
    settings = load_settings(c)
    branch = _branch(_repo(settings), branch)
    name = plan.name_for(branch)
    run = executor(c, dry_run)
    found = [f for f in find(run) if f.project == name.project]
    if not found:
        raise LorePinError(
            f"there is no feature environment for branch {branch!r} "
            f"({name.project}); see `invoke feature.list`"
        )
    if not run.dry_run:
        confirm(
            f"Delete the environment of branch '{branch}' ({name.project}) and its data?", yes=yes
        )
    _remove(c, run, found[0])


@task(help={"yes": "do not ask for confirmation", "dry_run": "show what would go; remove nothing"})
def prune(c: Context, yes: bool = False, dry_run: bool = False) -> None:
    """Remove environments that expired or whose branch was deleted or merged."""
    settings = load_settings(c)
    repo = _repo(settings)
    run = executor(c, dry_run)
    heads = {h.name: h.commit.hexsha for h in repo.heads}
    release = _release_branch(c)
    # Merged: the tip is in the release branch, but came in through a merge rather than
    # being one of its own first-parent commits (which is where a branch just created from
    # it points). Fast-forwarded or squashed branches are not recognised: they wait for
    # their expiry, the safe side.
    mainline: set[str] = set()
    merged_in: set[str] = set()
    if release in heads:
        mainline = set(repo.git.rev_list("--first-parent", release).split())
        merged_in = set(repo.git.rev_list(release).split()) - mainline
    now = datetime.now(UTC)
    doomed = []
    for f in find(run):
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
        _remove(c, run, f)


ns = Collection("feature", up, down, list_, prune)
ns.configure({"lorepin": {"feature": DEFAULTS}})
