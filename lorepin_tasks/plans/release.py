"""A release as data: which version, from which changes, and every step to cut it. Pure.

`plan` decides the version from the repository's facts and history (or resumes a release
whose commit exists but whose manifest does not); `validate` refuses, before anything is
written, whatever would make a step fail half-way; `files` computes the new changelog
and version files; the git argv come from `plans.git`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semver import Version

from lorepin_tasks.domain import changelog
from lorepin_tasks.domain.repository import RepoFacts
from lorepin_tasks.domain.versioning import (
    TAG_PREFIX,
    Change,
    History,
    next_version,
    parse_version,
)
from lorepin_tasks.errors import ConfigError, NothingToDo, Refused
from lorepin_tasks.settings import IMAGE_TAG, ReleasePolicy

RELEASE_COMMIT = re.compile(r"^chore\(release\): v(?P<version>\S+)$")
VERSION_LINE = re.compile(r'(?m)^version = "[^"]*"$')
# What a release ships, by Compose service (the geocoder mock stays behind).
SERVICES = ("cms", "db", "proxy", "collector")


@dataclass(frozen=True, kw_only=True)
class ReleasePlan:
    version: Version
    changes: list[Change]
    resume: bool  # HEAD is already the release commit of `version`

    @property
    def tag(self) -> str:
        return f"{TAG_PREFIX}{self.version}"

    @property
    def commit_message(self) -> str:
        return f"chore(release): {self.tag}"


def preflight(facts: RepoFacts, policy: ReleasePolicy) -> None:
    """Refuse to release from anything but a clean, current release branch."""
    if facts.branch is None:
        raise ConfigError(f"HEAD is detached: check out {policy.branch} to release")
    if facts.branch != policy.branch:
        raise ConfigError(f"releases are cut from {policy.branch}, not {facts.branch}")
    if facts.dirty:
        raise ConfigError(
            "the working tree has uncommitted or untracked files: commit or "
            "stash them first (git status)"
        )
    if facts.behind:
        raise ConfigError(
            f"{facts.branch} is {facts.behind} commit(s) behind {facts.upstream}: pull first"
        )


def unfinished(facts: RepoFacts) -> Version | None:
    """The version whose release commit HEAD is, if it is one."""
    resumed = RELEASE_COMMIT.match(facts.head_subject)
    return parse_version(resumed["version"]) if resumed else None


def plan(
    facts: RepoFacts,
    history: History,
    policy: ReleasePolicy,
    *,
    pre: str | None,
    as_version: str | None,
    finished: bool,
) -> ReleasePlan:
    """The release to cut. `finished`: the manifest of HEAD's release commit exists."""
    if (version := unfinished(facts)) is not None:
        if not (finished and version in history.head_versions):
            return ReleasePlan(
                version=version,
                resume=True,
                changes=[c for c in history.changes if c.sha != facts.head],
            )
        # From a finished pre-release, a final (or another kind of pre-release) may follow.
        head_pre = version.prerelease or ""
        promoting = bool(head_pre) and (pre is None or not head_pre.startswith(f"{pre}."))
        if not promoting:
            raise NothingToDo(f"nothing to release since {TAG_PREFIX}{version}")
    if pre and history.head_versions:
        raise NothingToDo(f"nothing new since {TAG_PREFIX}{history.head_versions[-1]}")
    computed = next_version(
        history.last_final,
        history.tags,
        history.changes,
        pre=pre,
        major_on_zero=policy.major_on_zero,
        initial=Version.parse(policy.initial_version),
    )
    if as_version and pre:
        raise ConfigError(
            f"--as and --pre together: say the whole version, e.g. --as {as_version}-{pre}.1"
        )
    if as_version:
        chosen = parse_version(as_version, "--as version")
        if history.last is not None and chosen <= history.last:
            raise ConfigError(f"--as {chosen} is not greater than the last release {history.last}")
    elif computed is None:
        since = f"since {TAG_PREFIX}{history.last_final}" if history.last_final else "yet"
        raise NothingToDo(
            f"nothing to release {since}: no feat, fix, perf, revert or breaking commits"
        )
    else:
        chosen = computed
    return ReleasePlan(version=chosen, changes=history.changes, resume=False)


def validate(release: ReleasePlan, tags: Mapping[str, str], head: str) -> None:
    """Everything that would stop the release half-way, refused before the first write.

    `tags`: every tag of the repository and the commit it points at.
    """
    if release.version.build:
        raise ConfigError(
            f"{release.version}: a release version carries no build metadata (+...): "
            "SemVer ignores it for ordering and an image tag cannot hold '+'"
        )
    if not IMAGE_TAG.match(str(release.version)):
        raise ConfigError(f"{release.version} cannot be an image tag")
    existing = tags.get(release.tag)
    if existing is not None and existing != head:
        raise Refused(
            f"tag {release.tag} exists on another commit ({existing[:7]}); nothing was changed"
        )


def set_version(text: str, version: str, name: str) -> str:
    updated, count = VERSION_LINE.subn(f'version = "{version}"', text, count=1)
    if count != 1:
        raise ConfigError(f'{name} has no `version = "..."` line to carry the version')
    return updated


def files(
    release: ReleasePlan,
    section: str,
    current: Mapping[str, str | None],
    policy: ReleasePolicy,
) -> dict[str, str]:
    """The new text of CHANGELOG.md and of every version file (relative path -> text).

    `current`: the files' text now (None: the file does not exist).
    """
    version = str(release.version)
    new = {
        "CHANGELOG.md": changelog.add_section(current.get("CHANGELOG.md") or "", version, section)
    }
    for name in policy.version_files:
        text = current.get(name)
        if text is None:
            raise ConfigError(f"version file {name} does not exist (release.version_files)")
        new[name] = set_version(text, version, name)
    return new


def resumed_section(release: ReleasePlan, changelog_text: str) -> str | None:
    """The section the release commit wrote, when resuming (the history since its tag is
    empty by then: the changes are in the changelog it committed)."""
    return changelog.section_of(changelog_text, str(release.version)) if release.resume else None


def tag_message(release: ReleasePlan, section: str) -> str:
    return f"LorePin CMS {release.tag}\n\n{section}"


def manifest_path(root: Path, tag: str) -> Path:
    return root / "dist" / "release" / f"{tag}.json"


def manifest(
    release: ReleasePlan,
    *,
    sha: str,
    created: str,
    images: Mapping[str, Mapping[str, str]],
    migration_head: str | None,
) -> dict[str, Any]:
    return {
        "version": str(release.version),
        "tag": release.tag,
        "git_sha": sha,
        "created": created,
        "images": dict(images),
        "migration_head": migration_head,
    }


def release_notes(release: ReleasePlan, section: str, manifest: Mapping[str, Any]) -> str:
    images = "\n".join(f"- `{i['image']}` `{i['id'][:19]}`" for i in manifest["images"].values())
    return (
        f"# LorePin CMS {release.tag}\n\n"
        f"Released {manifest['created'][:10]} from `{manifest['git_sha'][:12]}`; "
        f"schema at migration `{manifest['migration_head']}`.\n\n"
        + section.split("\n", 1)[1].lstrip("\n")
        + f"\n## Images\n\n{images}\n"
    )


def approval(tag: str, approver: str, at: str, commit: str) -> dict[str, str]:
    return {"version": tag, "approved_by": approver, "approved_at": at, "commit": commit}


def same_person(a: str | None, b: str | None) -> bool:
    """Emails compare as people do: case and surrounding spaces do not make another one."""
    return bool(a and b) and str(a).strip().lower() == str(b).strip().lower()


def check_approver(
    policy: ReleasePolicy, tag: str, cutter: str | None, approver: str | None
) -> str:
    approver = (approver or "").strip()
    if not approver:
        raise ConfigError("git has no user.email: approvals are recorded by email")
    if policy.two_person_rule and same_person(cutter, approver):
        raise Refused(
            f"two-person rule: {approver} cut {tag} and cannot approve it; another person must"
        )
    return approver
