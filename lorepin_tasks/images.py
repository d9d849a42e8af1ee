"""Images and artifacts: `images.build`, `images.push`, `images.pull`, `images.prune`,
`artifacts.download`.

Every image is tagged with the version (`git describe`), `sha-<short>`, and
`branch-<slug>` when built off the release branch, carries OCI labels, and is recorded in
dist/build-manifest.json (name, tags, ID, digests, size, base image, revision, time). In a
registry, the manifest travels beside the images as `<prefix>/build-manifest:<version>`.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import git
from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.context import EnvContext, open_env, require_base_image, task
from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import images as plan
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.runtime.prompt import confirm

DRY_HELP = "print the exact commands and change nothing"
REGISTRY_HELP = "registry as HOST:PORT, e.g. 127.0.0.1:5000"
MANIFEST_IMAGE = "build-manifest"


def manifest_path(root: Path) -> Path:
    return root / "dist" / "build-manifest.json"


def _branch(root: Path) -> str | None:
    try:
        repo = git.Repo(root)
        return None if repo.head.is_detached else repo.active_branch.name
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, TypeError):
        return None


def _release_branch(c: Context) -> str:
    return str((c.config.get("lorepin", {}).get("release", {}) or {}).get("branch", "main"))


def _inspect(run: Executor, ref: str) -> dict[str, Any]:
    out = run.run(["docker", "image", "inspect", ref], capture=True, mutates=False, quiet=True)
    data: dict[str, Any] = json.loads(out.stdout)[0]
    return data


@task(
    iterable=["service"],
    help={
        "service": "build only these services' images (repeatable)",
        "no_cache": "rebuild every layer (a cold build)",
        "dry_run": DRY_HELP,
    },
)
def build(
    c: Context, service: list[str] | None = None, no_cache: bool = False, dry_run: bool = False
) -> None:
    """Build the project's images (cached), tag them, write dist/build-manifest.json."""
    selected = plan.services(service or [])
    ctx = open_env(c, "local", dry_run=dry_run)
    require_base_image(ctx)
    tags = plan.tags(
        ctx.revision.version, ctx.revision.sha, _branch(ctx.settings.root), _release_branch(c)
    )
    env = replace(ctx.env, image_tag=tags[0])
    variables = compose.variables(ctx.settings, env, ctx.revision)
    started = time.monotonic()
    ctx.run.say(f"==> building {', '.join(selected)} as {', '.join(tags)}")
    ctx.run.run(compose.build(env, selected, no_cache=no_cache), env=variables)
    prefix = ctx.settings.image_prefix
    for svc in selected:
        for extra in tags[1:]:
            ctx.run.run(
                [
                    "docker",
                    "tag",
                    plan.ref(prefix, plan.IMAGES[svc], tags[0]),
                    plan.ref(prefix, plan.IMAGES[svc], extra),
                ],
                quiet=True,
            )
    if ctx.run.dry_run:
        ctx.run.say(f"# would write {manifest_path(ctx.settings.root)}")
        return
    built_at = datetime.now(UTC).isoformat(timespec="seconds")
    entries = [
        plan.manifest_entry(
            svc,
            plan.IMAGES[svc],
            [plan.ref(prefix, plan.IMAGES[svc], t) for t in tags],
            _inspect(ctx.run, plan.ref(prefix, plan.IMAGES[svc], tags[0])),
            ctx.settings.base_image,
            ctx.revision.sha,
            built_at,
        )
        for svc in selected
    ]
    manifest = {
        "version": ctx.revision.version,
        "tags": tags,
        "git_revision": ctx.revision.sha,
        "built_at": built_at,
        "build_seconds": round(time.monotonic() - started, 1),
        "images": entries,
    }
    path = manifest_path(ctx.settings.root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    for entry in entries:
        size = float(str(entry["size"] or 0)) / 1e6
        print(f"{entry['name']:<14} {str(entry['id'])[:19]}  {size:6.0f} MB  {', '.join(tags)}")
    print(f"manifest: {path}")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no {path}: run `invoke images.build` first") from None
    except ValueError:
        raise ConfigError(
            f"{path} is not valid JSON: rebuild it with `invoke images.build`"
        ) from None
    if not isinstance(data.get("images"), list) or not data.get("tags"):
        raise ConfigError(f"{path} is not a build manifest: rebuild it with `invoke images.build`")
    return data


@task(help={"registry": REGISTRY_HELP, "dry_run": DRY_HELP})
def push(c: Context, registry: str, dry_run: bool = False) -> None:
    """Push the images in dist/build-manifest.json, and the manifest itself, to a registry."""
    host = plan.registry(registry)
    ctx = open_env(c, "local", dry_run=dry_run)
    path = manifest_path(ctx.settings.root)
    manifest = _read_manifest(path)
    prefix = ctx.settings.image_prefix
    for entry in manifest["images"]:
        for tag in manifest["tags"]:
            remote = plan.ref(prefix, entry["name"], tag, host)
            ctx.run.run(["docker", "tag", plan.ref(prefix, entry["name"], tag), remote], quiet=True)
            ctx.run.run(["docker", "push", "--quiet", remote], capture=True)
        if not ctx.run.dry_run:
            remote = plan.ref(prefix, entry["name"], manifest["tags"][0], host)
            entry["digests"] = _inspect(ctx.run, remote).get("RepoDigests") or []
    if not ctx.run.dry_run:
        path.write_text(json.dumps(manifest, indent=2) + "\n")
    _push_manifest(ctx, manifest, path, host)


def _push_manifest(ctx: EnvContext, manifest: dict[str, Any], path: Path, host: str) -> None:
    """The manifest as a one-file image beside the images it describes, under every tag."""
    prefix = ctx.settings.image_prefix
    remotes = [plan.ref(prefix, MANIFEST_IMAGE, tag, host) for tag in manifest["tags"]]
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "manifest.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(path, arcname="build-manifest.json")
        ctx.run.run(
            ["docker", "import", "--change", 'CMD ["/none"]', str(archive), remotes[0]],
            capture=True,
        )
    for remote in remotes:
        if remote != remotes[0]:
            ctx.run.run(["docker", "tag", remotes[0], remote], quiet=True)
        ctx.run.run(["docker", "push", "--quiet", remote], capture=True)
    if not ctx.run.dry_run:
        print(
            f"pushed {len(manifest['images'])} images and the manifest to {host} as "
            f"{', '.join(manifest['tags'])}"
        )


def _pull(ctx: EnvContext, host: str, names: list[str], tag: str) -> dict[str, str]:
    ids = {}
    prefix = ctx.settings.image_prefix
    for name in names:
        remote = plan.ref(prefix, name, tag, host)
        ctx.run.run(["docker", "pull", "--quiet", remote])
        ctx.run.run(["docker", "tag", remote, plan.ref(prefix, name, tag)], quiet=True)
        if not ctx.run.dry_run:
            ids[name] = str(_inspect(ctx.run, remote)["Id"])
    return ids


@task(
    help={
        "registry": REGISTRY_HELP,
        "version": "the tag to pull (a version or sha-...)",
        "dry_run": DRY_HELP,
    }
)
def pull(c: Context, registry: str, version: str, dry_run: bool = False) -> None:
    """Pull the project's images of a version from a registry and tag them locally."""
    host = plan.registry(registry)
    ctx = open_env(c, "local", dry_run=dry_run)
    ids = _pull(ctx, host, list(plan.IMAGES.values()), plan.tag_safe(version))
    for name, image_id in ids.items():
        print(f"{name:<14} {image_id[:19]}")


@task(
    help={
        "version": "the release to bring here, e.g. 1.2.0",
        "registry": REGISTRY_HELP,
        "dry_run": DRY_HELP,
    }
)
def download(c: Context, version: str, registry: str, dry_run: bool = False) -> None:
    """Bring a version's manifest and images to this machine and check them against it."""
    host = plan.registry(registry)
    ctx = open_env(c, "local", dry_run=dry_run)
    tag = plan.tag_safe(version)
    target = ctx.settings.root / "dist" / "artifacts" / tag / "build-manifest.json"
    remote = plan.ref(ctx.settings.image_prefix, MANIFEST_IMAGE, tag, host)
    ctx.run.run(["docker", "pull", "--quiet", remote])
    container = f"lorepin-manifest-{int(time.time() * 1000)}"
    ctx.run.run(["docker", "create", "--name", container, remote], capture=True)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        ctx.run.run(["docker", "cp", f"{container}:/build-manifest.json", str(target)])
    finally:
        ctx.run.run(["docker", "rm", container], capture=True, check=False)
    if ctx.run.dry_run:
        return
    manifest = _read_manifest(target)
    ids = _pull(ctx, host, [e["name"] for e in manifest["images"]], tag)
    wrong = [e["name"] for e in manifest["images"] if ids.get(e["name"]) != e["id"]]
    if wrong:
        raise LorePinError(f"pulled images differ from the manifest: {', '.join(wrong)}")
    print(f"{version}: manifest at {target}; {len(ids)} images match it")


@task(
    help={
        "keep": "how many newest versions to keep",
        "yes": "do not ask for confirmation",
        "dry_run": "list what would be removed; remove nothing",
    }
)
def prune(c: Context, keep: int = 5, yes: bool = False, dry_run: bool = False) -> None:
    """Remove old versioned project images; never one a container uses or the newest N."""
    if keep < 1:
        raise ConfigError("--keep must be at least 1: the newest version always stays")
    ctx = open_env(c, "local", dry_run=dry_run)
    run = ctx.run
    prefix = ctx.settings.image_prefix
    repositories = {f"{prefix}/{name}" for name in plan.IMAGES.values()}
    listed = run.run(
        ["docker", "image", "ls", "--no-trunc", "--format", "{{json .}}"],
        capture=True,
        mutates=False,
        quiet=True,
    ).stdout.splitlines()
    local = [
        plan.LocalImage(id=d["ID"], repository=d["Repository"], tag=d["Tag"])
        for d in map(json.loads, listed)
        if d["Repository"] in repositories
    ]
    containers = run.run(
        ["docker", "ps", "-aq"], capture=True, mutates=False, quiet=True
    ).stdout.split()
    in_use: set[str] = set()
    if containers:
        details = json.loads(
            run.run(
                ["docker", "inspect", *containers], capture=True, mutates=False, quiet=True
            ).stdout
        )
        in_use = {d["Image"] for d in details}
    remove, kept = plan.prune_plan(local, in_use=in_use, keep=keep)
    for image, why in kept:
        print(f"keep   {image.repository}:{image.tag} ({why})")
    for image in remove:
        print(f"remove {image.repository}:{image.tag}")
    if not remove:
        print("nothing to prune")
        return
    if not run.dry_run:
        confirm(f"Remove these {len(remove)} image tags?", yes=yes)
    run.run(["docker", "image", "rm", *(f"{i.repository}:{i.tag}" for i in remove)], capture=True)


ns = Collection("images", build, push, pull, prune)
artifacts = Collection("artifacts", download)
