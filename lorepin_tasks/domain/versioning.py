"""Release versions from git history: SemVer 2.0 tags (`vX.Y.Z`) and Conventional Commits 1.0.

SemVer parsing and ordering come from the `semver` package; the bump rules are ours:
a `BREAKING CHANGE:` footer or `!` -> major (minor while 0.x unless configured),
`feat` -> minor, `fix`/`perf`/`revert` -> patch, anything else -> no release; never
below a pre-release already cut above the last final release.

Pure: the git facts arrive as plain data (lorepin_tasks/runtime/git.py reads them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum

from semver import Version

from lorepin_tasks.errors import ConfigError

TAG_PREFIX = "v"
HEADER = re.compile(
    r"^(?P<type>[A-Za-z]+)(?:\((?P<scope>[^()\r\n]+)\))?(?P<bang>!)?: (?P<description>\S.*)$"
)
BREAKING_FOOTER = re.compile(r"^BREAKING[ -]CHANGE: *(?P<note>\S.*)$", re.MULTILINE)
GIT_REVERT = re.compile(r'^Revert "(?P<subject>.+)"$')
PRE_IDS = ("rc", "beta")
INITIAL = Version(0, 1, 0)


class Bump(IntEnum):
    NONE = 0
    PATCH = 1
    MINOR = 2
    MAJOR = 3


@dataclass(frozen=True, kw_only=True)
class Change:
    sha: str
    type: str
    scope: str | None
    description: str
    breaking_note: str | None  # set when the change breaks compatibility
    conventional: bool

    @property
    def breaking(self) -> bool:
        return self.breaking_note is not None

    @property
    def bump(self) -> Bump:
        if not self.conventional:
            return Bump.NONE
        if self.breaking:
            return Bump.MAJOR
        if self.type == "feat":
            return Bump.MINOR
        if self.type in ("fix", "perf", "revert"):
            return Bump.PATCH
        return Bump.NONE


def parse_commit(sha: str, message: str) -> Change:
    lines = message.strip().splitlines() or [""]
    subject = lines[0].strip()
    if reverted := GIT_REVERT.match(subject):  # `git revert`'s own message
        return Change(
            sha=sha,
            type="revert",
            scope=None,
            description=reverted["subject"],
            breaking_note=None,
            conventional=True,
        )
    header = HEADER.match(subject)
    if header is None:
        return Change(
            sha=sha,
            type="other",
            scope=None,
            description=subject,
            breaking_note=None,
            conventional=False,
        )
    footer = BREAKING_FOOTER.search(message)
    note = footer["note"].strip() if footer else (header["description"] if header["bang"] else None)
    return Change(
        sha=sha,
        type=header["type"].lower(),
        scope=header["scope"],
        description=header["description"].strip(),
        breaking_note=note,
        conventional=True,
    )


def parse_version(text: str, what: str = "version") -> Version:
    try:
        return Version.parse(text.removeprefix(TAG_PREFIX))
    except ValueError:
        raise ConfigError(
            f"invalid {what} {text!r}: expected SemVer like 1.2.3 or 1.2.3-rc.1"
        ) from None


def bump(version: Version, kind: Bump, *, major_on_zero: bool) -> Version:
    if kind is Bump.MAJOR and version.major == 0 and not major_on_zero:
        kind = Bump.MINOR
    if kind is Bump.MAJOR:
        return version.bump_major()
    if kind is Bump.MINOR:
        return version.bump_minor()
    return version.bump_patch()


def next_version(
    last_final: Version | None,
    existing: Iterable[Version],
    changes: Sequence[Change],
    *,
    pre: str | None = None,
    major_on_zero: bool = False,
    initial: Version = INITIAL,
) -> Version | None:
    """The version the changes since the last final release call for, or None."""
    if pre is not None and pre not in PRE_IDS:
        raise ConfigError(f"--pre must be one of {', '.join(PRE_IDS)}, got {pre!r}")
    kind = max((c.bump for c in changes), default=Bump.NONE)
    if kind is Bump.NONE:
        return None
    final = initial if last_final is None else bump(last_final, kind, major_on_zero=major_on_zero)
    # A pre-release above the last final already promised a version: the next one may not
    # fall below it (after 0.3.0-rc.1, a fix makes 0.3.0, never 0.2.1).
    pending = max(
        (v for v in existing if v.prerelease and (last_final is None or v > last_final)),
        default=None,
    )
    if pending is not None and pending.finalize_version() > final:
        final = pending.finalize_version()
    if pre is None:
        return final
    numbers = [
        int(v.prerelease.split(".")[1])
        for v in existing
        if v.finalize_version() == final
        and v.prerelease
        and re.fullmatch(rf"{pre}\.\d+", v.prerelease)
    ]
    return final.replace(prerelease=f"{pre}.{max(numbers, default=0) + 1}")


@dataclass(frozen=True, kw_only=True)
class ReleaseTag:
    """A `vX.Y.Z` tag as git shows it."""

    name: str
    version: Version
    sha: str  # the commit it points at
    tagger: str | None = None  # the annotated tag's tagger (email)
    tagged_at: str | None = None  # ISO 8601


@dataclass(frozen=True, kw_only=True)
class History:
    """What the release tags reachable from HEAD and the commits since the last final say."""

    tags: dict[Version, ReleaseTag]
    changes: list[Change]
    head: str

    @property
    def last(self) -> Version | None:
        return max(self.tags, default=None)

    @property
    def last_final(self) -> Version | None:
        return newest_final(self.tags)

    @property
    def head_versions(self) -> list[Version]:
        return sorted(v for v, t in self.tags.items() if t.sha == self.head)


def release_tag(
    name: str, sha: str, tagger: str | None = None, at: str | None = None
) -> ReleaseTag | None:
    """The release tag `name` names, or None for any other tag."""
    if not name.startswith(TAG_PREFIX):
        return None
    try:
        version = Version.parse(name[len(TAG_PREFIX) :])
    except ValueError:
        return None
    return ReleaseTag(name=name, version=version, sha=sha, tagger=tagger, tagged_at=at)


def newest_final(tags: Iterable[Version]) -> Version | None:
    return max((v for v in tags if not v.prerelease), default=None)
