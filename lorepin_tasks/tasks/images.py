"""Images and artifacts: `images.build`, `images.push`, `images.pull`, `images.prune`,
`artifacts.download`.

Every image is tagged with the version (`git describe`), `sha-<short>`, and
`branch-<slug>` when built off the release branch, carries OCI labels, and is recorded in
dist/build-manifest.json (name, tags, ID, digests, size, base image, revision, time). In a
registry, the manifest travels beside the images as `<prefix>/build-manifest:<version>`.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import images as plan
from lorepin_tasks.runtime import docker, git
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.settings import whole_number
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    YES_HELP,
    build_stale,
    open_env,
    require_base_image,
    task,
)

REGISTRY_HELP = "registry as HOST:PORT, e.g. 127.0.0.1:5000"
ENGINE_HELP = "environment whose Docker engine to use (default: local)"


def manifest_path(root: Path) -> Path:
    return root / "dist" / "build-manifest.json"


def _inspect(ctx: EnvContext, ref: str) -> dict[str, Any]:
    found = docker.decode(docker.read(ctx.run, plan.inspect(ref)).stdout or "[]", "docker inspect")
    if not found:
        raise LorePinError(f"image {ref} does not exist; see the output above")
    data: dict[str, Any] = found[0]
    return data


@task(
    iterable=["service"],
    help={
        "service": "build only these services' images (repeatable)",
        "no_cache": "rebuild every layer (a cold build)",
        "env": ENGINE_HELP,
        "dry_run": DRY_HELP,
    },
)
def build(
    c: Context,
    service: list[str] | None = None,
    no_cache: bool = False,
    env: str = "local",
    dry_run: bool = False,
) -> None:
    """Build the project's images (cached), tag them, write dist/build-manifest.json."""
    selected = plan.services(service or [])
    ctx = open_env(c, env, dry_run=dry_run)
    require_base_image(ctx.settings)
    revision = git.describe(ctx.run, ctx.settings.root)
    branch = git.current_branch(ctx.run, ctx.settings.root)
    tags = plan.tags(revision.version, revision.sha, branch, ctx.settings.release.branch)
    ctx = replace(ctx, revision=revision, env=plan.image_env(ctx.env, ctx.settings.root, tags[0]))
    started = time.monotonic()
    build_stale(ctx, docker.model(ctx), only=selected, no_cache=no_cache)
    prefix = ctx.settings.image_prefix
    for svc in selected:
        for extra in tags[1:]:
            source = plan.ref(prefix, plan.IMAGES[svc], tags[0])
            ctx.run.run(plan.tag_image(source, plan.ref(prefix, plan.IMAGES[svc], extra)))
    path = manifest_path(ctx.settings.root)
    if ctx.run.dry_run:
        ctx.run.say(f"# would write {path}")
        return
    built_at = datetime.now(UTC).isoformat(timespec="seconds")
    entries = [
        plan.manifest_entry(
            svc,
            plan.IMAGES[svc],
            [plan.ref(prefix, plan.IMAGES[svc], t) for t in tags],
            _inspect(ctx, plan.ref(prefix, plan.IMAGES[svc], tags[0])),
            ctx.settings.base_image,
            revision.sha,
            built_at,
        )
        for svc in selected
    ]
    manifest = {
        "version": revision.version,
        "tags": tags,
        "git_revision": revision.sha,
        "built_at": built_at,
        "build_seconds": round(time.monotonic() - started, 1),
        "images": entries,
    }
    ctx.run.write(path, json.dumps(manifest, indent=2) + "\n")
    for entry in entries:
        size = float(str(entry["size"] or 0)) / 1e6
        print(f"{entry['name']:<14} {str(entry['id'])[:19]}  {size:6.0f} MB  {', '.join(tags)}")
    print(f"manifest: {path}")


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no {path}: run `invoke images.build` first") from None
    except ValueError:
        raise ConfigError(
            f"{path} is not valid JSON: rebuild it with `invoke images.build`"
        ) from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not data.get("tags")
        or not all(isinstance(e, dict) and "name" in e and "id" in e for e in data["images"])
    ):
        raise ConfigError(f"{path} is not a build manifest: rebuild it with `invoke images.build`")
    return data


@task(help={"registry": REGISTRY_HELP, "env": ENGINE_HELP, "dry_run": DRY_HELP})
def push(c: Context, registry: str, env: str = "local", dry_run: bool = False) -> None:
    """Push the images in dist/build-manifest.json, and the manifest itself, to a registry."""
    host = plan.registry(registry)
    ctx = open_env(c, env, dry_run=dry_run)
    path = manifest_path(ctx.settings.root)
    manifest = _read_manifest(path)
    prefix = ctx.settings.image_prefix
    for entry in manifest["images"]:
        for tag in manifest["tags"]:
            remote = plan.ref(prefix, entry["name"], tag, host)
            ctx.run.run(plan.tag_image(plan.ref(prefix, entry["name"], tag), remote), quiet=True)
            ctx.run.run(plan.push(remote), capture=True)
        if not ctx.run.dry_run:
            remote = plan.ref(prefix, entry["name"], manifest["tags"][0], host)
            entry["digests"] = _inspect(ctx, remote).get("RepoDigests") or []
    ctx.run.write(path, json.dumps(manifest, indent=2) + "\n")
    _push_manifest(ctx, manifest, path, host)


def _push_manifest(ctx: EnvContext, manifest: dict[str, Any], path: Path, host: str) -> None:
    """The manifest as a one-file image beside the images it describes, under every tag."""
    import tarfile
    import tempfile

    prefix = ctx.settings.image_prefix
    remotes = [plan.ref(prefix, plan.MANIFEST_IMAGE, tag, host) for tag in manifest["tags"]]
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "manifest.tar"
        if not ctx.run.dry_run:
            with tarfile.open(archive, "w") as tar:
                tar.add(path, arcname="build-manifest.json")
        ctx.run.run(plan.import_file(archive, remotes[0]), capture=True)
    for remote in remotes:
        if remote != remotes[0]:
            ctx.run.run(plan.tag_image(remotes[0], remote), quiet=True)
        ctx.run.run(plan.push(remote), capture=True)
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
        ctx.run.run(plan.pull(remote))
        ctx.run.run(plan.tag_image(remote, plan.ref(prefix, name, tag)), quiet=True)
        if not ctx.run.dry_run:
            ids[name] = str(_inspect(ctx, remote)["Id"])
    return ids


@task(
    help={
        "registry": REGISTRY_HELP,
        "version": "the version to pull (1.2.0, v1.2.0, or a sha-... tag)",
        "env": ENGINE_HELP,
        "dry_run": DRY_HELP,
    }
)
def pull(
    c: Context, registry: str, version: str, env: str = "local", dry_run: bool = False
) -> None:
    """Pull the project's images of a version from a registry and tag them locally."""
    host = plan.registry(registry)
    tag = plan.version_tag(version)
    ctx = open_env(c, env, dry_run=dry_run)
    ids = _pull(ctx, host, list(plan.IMAGES.values()), tag)
    for name, image_id in ids.items():
        print(f"{name:<14} {image_id[:19]}")


@task(
    help={
        "version": "the release to bring here, e.g. 1.2.0 or v1.2.0",
        "registry": REGISTRY_HELP,
        "env": ENGINE_HELP,
        "dry_run": DRY_HELP,
    }
)
def download(
    c: Context, version: str, registry: str, env: str = "local", dry_run: bool = False
) -> None:
    """Bring a version's manifest and images to this machine and check them against it."""
    host = plan.registry(registry)
    tag = plan.version_tag(version)
    ctx = open_env(c, env, dry_run=dry_run)
    target = ctx.settings.root / "dist" / "artifacts" / tag / "build-manifest.json"
    remote = plan.ref(ctx.settings.image_prefix, plan.MANIFEST_IMAGE, tag, host)
    ctx.run.run(plan.pull(remote))
    container = f"lorepin-manifest-{int(time.time() * 1000)}"
    ctx.run.run(plan.create(container, remote), capture=True)
    try:
        if not ctx.run.dry_run:
            target.parent.mkdir(parents=True, exist_ok=True)
        ctx.run.run(plan.copy_out(container, "/build-manifest.json", target))
    finally:
        ctx.run.run(plan.remove_container(container), capture=True, check=False)
    if ctx.run.dry_run:
        return
    manifest = _read_manifest(target)
    ids = _pull(ctx, host, [e["name"] for e in manifest["images"]], tag)
    wrong = [e["name"] for e in manifest["images"] if ids.get(e["name"]) != e["id"]]
    if wrong:
        raise LorePinError(f"pulled images differ from the manifest: {', '.join(wrong)}")
    print(f"{tag}: manifest at {target}; {len(ids)} images match it")


@task(
    help={
        "keep": "how many newest versions to keep",
        "yes": YES_HELP,
        "env": ENGINE_HELP,
        "dry_run": "list what would be removed; remove nothing",
    }
)
def prune(
    c: Context, keep: str = "5", yes: bool = False, env: str = "local", dry_run: bool = False
) -> None:
    """Remove old versioned project images; never one a container uses or the newest N."""
    count = whole_number(keep, "--keep (the newest version always stays)", low=1, high=10_000)
    ctx = open_env(c, env, dry_run=dry_run)
    run = ctx.run
    remove, kept = docker.prunable_images(ctx, keep=count)
    for image, why in kept:
        print(f"keep   {image.repository}:{image.tag} ({why})")
    for image in remove:
        print(f"remove {image.repository}:{image.tag}")
    if not remove:
        print("nothing to prune")
        return
    if not run.dry_run:
        confirm(f"Remove these {len(remove)} image tags?", yes=yes)
    run.run(plan.remove([f"{i.repository}:{i.tag}" for i in remove]), env=ctx.engine, capture=True)


ns = Collection("images", build, push, pull, prune)
artifacts = Collection("artifacts", download)
