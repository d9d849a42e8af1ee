"""The project's images as data and commands: names, tags, registry references, what to
prune, and the docker argv that tag, push, pull and remove them. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.settings import IMAGE_TAG, SEMVER, Environment

if TYPE_CHECKING:
    from semver import Version

# Compose service -> image name (under the settings' image prefix).
IMAGES = {
    "cms": "cms",
    "db": "postgres",
    "geocoder": "geocoder-mock",
    "proxy": "proxy",
    "collector": "collector",
}
# The files that define every image, read with every profile on (the proxy and the
# colours belong to server environments, the geocoder mock to local and feature ones).
IMAGE_FILES = ("compose/compose.yaml", "compose/mocks.yaml", "compose/server.yaml")


def image_env(env: Environment, root: Path, tag: str) -> Environment:
    """An environment's engine and settings, with every image of the project, at `tag`."""
    return replace(
        env,
        compose_files=tuple(root / f for f in IMAGE_FILES),
        profiles=("*",),
        image_tag=tag,
    )


LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
REGISTRY = re.compile(rf"^(?P<host>{LABEL}(?:\.{LABEL})*|\[[0-9a-f:]+\]):(?P<port>[0-9]{{1,5}})$")
TAG_CHARS = re.compile(r"[^A-Za-z0-9_.-]")
SHA_TAG = re.compile(r"^sha-[0-9a-f]{7,40}$")
MANIFEST_IMAGE = "build-manifest"


def version_tag(text: str) -> str:
    """The image tag of a released version (`1.2.0`, `v1.2.0`, `1.3.0-rc.1`) or `sha-...`.

    Refused, not rewritten: a path, an empty string, build metadata (`+` cannot be in a
    tag, and SemVer ignores it for ordering) or anything else that names no release.
    """
    tag = text.removeprefix("v")
    if SHA_TAG.match(text):
        return text
    if SEMVER.match(tag) and "+" not in tag and IMAGE_TAG.match(tag):
        return tag
    raise ConfigError(
        f"invalid version {text!r}: a released version like 1.2.0 (or v1.2.0, 1.3.0-rc.1) "
        "or a build's sha-<hex> tag"
    )


def tag_safe(text: str) -> str:
    """A docker tag from any text: SemVer's '+' and other characters become '-'."""
    return TAG_CHARS.sub("-", text)[:128].lstrip(".-") or "untagged"


def tags(version: str, sha: str, branch: str | None, release_branch: str) -> list[str]:
    """The version, `sha-<short>`, and `branch-<slug>` for builds off the release branch."""
    found = [tag_safe(version), f"sha-{sha[:7]}"]
    if branch and branch != release_branch:
        slug = re.sub(r"[^a-z0-9]+", "-", branch.lower()).strip("-")[:100]
        found.append(f"branch-{slug or 'x'}")
    return found


def services(selected: Sequence[str]) -> list[str]:
    unknown = sorted(set(selected) - set(IMAGES))
    if unknown:
        raise ConfigError(
            f"unknown service(s) {', '.join(unknown)}; images exist for {', '.join(IMAGES)}"
        )
    return list(selected) or list(IMAGES)


def registry(value: str) -> str:
    match = REGISTRY.match(value)
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"invalid registry {value!r}: expected HOST:PORT like 127.0.0.1:5000")
    return value


def ref(prefix: str, image: str, tag: str, registry_host: str | None = None) -> str:
    name = f"{prefix}/{image}:{tag}"
    return f"{registry_host}/{name}" if registry_host else name


@dataclass(frozen=True, kw_only=True)
class LocalImage:
    id: str
    repository: str
    tag: str


def prune_plan(
    images: Iterable[LocalImage], *, in_use: set[str], keep: int
) -> tuple[list[LocalImage], list[tuple[LocalImage, str]]]:
    """(tags to remove, tags kept with why) among versioned and sha- tags.

    Kept: the newest `keep` versions (and every tag on the same image), and every image a
    container uses (running or stopped, any environment). Other tags (dev, e2e, br-...)
    belong to environments and are never pruned here.
    """
    candidates = [i for i in images if _version(i.tag) is not None or i.tag.startswith("sha-")]
    versions = sorted({v for i in candidates if (v := _version(i.tag)) is not None}, reverse=True)
    newest = set(versions[:keep])
    protected_ids = {i.id for i in candidates if _version(i.tag) in newest}
    remove: list[LocalImage] = []
    kept: list[tuple[LocalImage, str]] = []
    for image in candidates:
        if image.id in in_use:
            kept.append((image, "used by a container"))
        elif image.id in protected_ids:
            kept.append((image, f"among the newest {keep} versions"))
        else:
            remove.append(image)
    return remove, kept


def _version(tag: str) -> Version | None:
    from semver import Version

    try:
        return Version.parse(tag)
    except ValueError:
        return None


def manifest_entry(
    service: str,
    image: str,
    refs: Sequence[str],
    inspect: Mapping[str, object],
    base_image: str | None,
    revision: str,
    built_at: str,
) -> dict[str, object]:
    digests = inspect.get("RepoDigests") or []
    return {
        "service": service,
        "name": image,
        "tags": list(refs),
        "id": inspect.get("Id"),
        "digests": list(digests) if isinstance(digests, list) else [],
        "size": inspect.get("Size"),
        "base_image": base_image,
        "git_revision": revision,
        "built_at": built_at,
    }


# -- commands --------------------------------------------------------------------------


def tag_image(source: str, target: str) -> list[str]:
    return ["docker", "tag", source, target]


def push(ref: str) -> list[str]:
    return ["docker", "push", "--quiet", ref]


def pull(ref: str) -> list[str]:
    return ["docker", "pull", "--quiet", ref]


def inspect(*refs: str) -> list[str]:
    return ["docker", "image", "inspect", *refs]


def list_images() -> list[str]:
    return ["docker", "image", "ls", "--no-trunc", "--format", "{{json .}}"]


def all_containers() -> list[str]:
    return ["docker", "ps", "--all", "--quiet", "--no-trunc"]


def inspect_containers(ids: Sequence[str]) -> list[str]:
    return ["docker", "inspect", "--format", "{{.Image}}", *ids]


def remove(refs: Sequence[str]) -> list[str]:
    return ["docker", "image", "rm", *refs]


def import_file(archive: Path, ref: str) -> list[str]:
    """A one-file image (the build manifest travels beside the images it describes)."""
    return ["docker", "import", "--change", 'CMD ["/none"]', str(archive), ref]


def create(name: str, ref: str) -> list[str]:
    return ["docker", "create", "--name", name, ref]


def copy_out(container: str, path: str, target: Path) -> list[str]:
    return ["docker", "cp", f"{container}:{path}", str(target)]


def remove_container(name: str) -> list[str]:
    return ["docker", "rm", name]
