"""Per-branch environments as data and commands: names, labels, expiry, what to prune.
Pure: no I/O.

A branch's name becomes a Compose project name: lowercase, every run of characters
outside [a-z0-9] one '-', no '-' at either end, cut to fit, and always followed by a short
hash of the checkout and the exact branch name, so two different branches (or the same
branch in two checkouts on one engine) never share a name and every container, network
and volume name stays within 63 characters.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.settings import Environment, FeaturePolicy

PROJECT_PREFIX = "lorepin-f-"
MAX_NAME = 63
# The longest suffix Compose adds to a project name: "-<service>-<n>" for containers,
# "_<volume>"/"_default" for volumes and networks. Services are at most 8 characters.
LONGEST_SUFFIX = len("-geocoder-99")
HASH_LENGTH = 8
SLUG_MAX = MAX_NAME - LONGEST_SUFFIX - len(PROJECT_PREFIX) - 1 - HASH_LENGTH
LABEL = "dev.lorepin"
IMAGES = ("cms", "postgres", "geocoder-mock")
ONEOFF = "seed"  # the label kind of the seeding one-off containers


@dataclass(frozen=True, kw_only=True)
class FeatureName:
    branch: str
    slug: str
    digest: str

    @property
    def project(self) -> str:
        return (
            f"{PROJECT_PREFIX}{self.slug}-{self.digest}"
            if self.slug
            else f"{PROJECT_PREFIX}{self.digest}"
        )

    @property
    def image_tag(self) -> str:
        """Images built for the branch: removed with its environment."""
        return f"br-{self.project.removeprefix(PROJECT_PREFIX)}"

    @property
    def seed(self) -> int:
        """The seed of its generated data: the same branch always gets the same pins."""
        return int(hashlib.sha256(self.branch.encode()).hexdigest()[:8], 16) % 2**31


def name_for(branch: str, checkout: str) -> FeatureName:
    if not branch or branch.strip() != branch:
        raise ConfigError(f"invalid branch name {branch!r}")
    slug = re.sub(r"[^a-z0-9]+", "-", branch.lower()).strip("-")[:SLUG_MAX].rstrip("-")
    digest = hashlib.sha256(f"{checkout}\0{branch}".encode()).hexdigest()[:HASH_LENGTH]
    return FeatureName(branch=branch, slug=slug, digest=digest)


def environment(
    name: FeatureName, compose_files: tuple[Path, ...], state: Path, port: int = 0
) -> Environment:
    return Environment(
        name="feature",
        kind="feature",
        project=name.project,
        compose_files=compose_files,
        # 0: Docker picks a free port on 127.0.0.1 (no collisions); an update passes the
        # port the environment already has, so its URL stays the same.
        http_port=port,
        db_port=None,
        image_tag=name.image_tag,
        state_dir=state / name.project,
        secrets_dir=state / name.project / "secrets",
        backups_dir=state / name.project / "backups",
    )


def seed_command(policy: FeaturePolicy, name: FeatureName) -> list[str]:
    """Generated pins for the branch's database (the CMS image's seeder)."""
    return [
        "python",
        "-m",
        "lorepin_cms.seed",
        "--count",
        str(policy.seed_count),
        "--seed",
        str(name.seed),
        "--token",  # the developer's token, printed once by feature.up
    ]


def find(checkout: str) -> tuple[list[str], list[str]]:
    """The feature environments of one checkout: (its containers, its volumes) queries."""
    filters = [
        "--filter",
        f"label={LABEL}.kind=feature",
        "--filter",
        f"label={LABEL}.checkout={checkout}",
    ]
    return (
        ["docker", "ps", "--all", "--quiet", "--no-trunc", *filters],
        ["docker", "volume", "ls", "--quiet", *filters],
    )


def inspect_volumes(names: list[str]) -> list[str]:
    return ["docker", "volume", "inspect", *names]


def remove_images(prefix: str, name: FeatureName) -> list[str]:
    return ["docker", "image", "rm", *(f"{prefix}/{image}:{name.image_tag}" for image in IMAGES)]


# ISO 8601 basic format, in UTC: Compose reads "2026-11-25T10:00:00+00:00" in an overlay
# file as a YAML timestamp, not a string, and rejects it as a label value.
STAMP = "%Y%m%dT%H%M%SZ"


def stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime(STAMP)


def parse_stamp(text: str | None) -> datetime | None:
    try:
        return datetime.strptime(text, STAMP).replace(tzinfo=UTC) if text else None
    except ValueError:
        return None


def labels(name: FeatureName, created: datetime, expires: datetime) -> dict[str, str]:
    """The Compose variables behind the feature overlay's labels."""
    return {
        "LOREPIN_BRANCH": name.branch,
        "LOREPIN_CREATED_AT": stamp(created),
        "LOREPIN_EXPIRES_AT": stamp(expires),
    }


@dataclass(frozen=True, kw_only=True)
class Found:
    """A feature environment as Docker shows it."""

    project: str
    branch: str
    created: datetime | None
    expires: datetime | None
    url: str | None
    health: str
    containers: int


def prune_reason(env: Found, *, now: datetime, branch_exists: bool, merged: bool) -> str | None:
    if env.expires is not None and env.expires <= now:
        return f"expired {env.expires.isoformat(timespec='minutes')}"
    if not branch_exists:
        return "branch deleted"
    if merged:
        return "branch merged"
    return None
