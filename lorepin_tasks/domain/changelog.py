"""CHANGELOG.md in the Keep a Changelog layout, written from Conventional Commits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from lorepin_tasks.domain.versioning import Change

PREAMBLE = """# Changelog

All notable changes to this project are documented here. The format follows
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/), and versions follow
[Semantic Versioning](https://semver.org/spec/v2.0.0.html).

## [Unreleased]
"""

GROUPS = (  # (title, types); breaking changes come first whatever their type
    ("Features", ("feat",)),
    ("Bug fixes", ("fix",)),
    ("Performance", ("perf",)),
    ("Reverts", ("revert",)),
)
VERSION_HEADING = re.compile(r"^## \[(?P<version>[^\]]+)\]", re.MULTILINE)


def _item(change: Change, text: str) -> str:
    scope = f"**{change.scope}:** " if change.scope else ""
    return f"- {scope}{text} ({change.sha[:7]})"


def section(version: str, day: date, changes: Sequence[Change]) -> str:
    """One release's section: breaking changes first, then each type's group."""
    lines = [f"## [{version}] - {day.isoformat()}", ""]
    breaking = [c for c in changes if c.breaking]
    if breaking:
        lines += ["### ⚠ Breaking changes", ""]
        lines += [_item(c, c.breaking_note or c.description) for c in breaking]
        lines.append("")
    for title, types in GROUPS:
        items = [c for c in changes if c.type in types]
        if items:
            lines += [f"### {title}", ""]
            lines += [_item(c, c.description) for c in items]
            lines.append("")
    if len(lines) == 2:
        lines += ["No user-facing changes.", ""]
    return "\n".join(lines)


def versions(text: str) -> list[str]:
    return [m["version"] for m in VERSION_HEADING.finditer(text) if m["version"] != "Unreleased"]


def add_section(text: str, version: str, new_section: str) -> str:
    """The changelog with `new_section` as the newest release; unchanged if already there."""
    if version in versions(text):
        return text
    if not text.strip():
        text = PREAMBLE
    if "## [Unreleased]" not in text:
        first = VERSION_HEADING.search(text)
        at = first.start() if first else len(text)
        text = text[:at].rstrip("\n") + "\n\n## [Unreleased]\n\n" + text[at:]
    unreleased = text.index("## [Unreleased]")
    following = VERSION_HEADING.search(text, unreleased + len("## [Unreleased]"))
    at = following.start() if following else len(text)
    head = text[:at].rstrip("\n") + "\n\n"
    tail = text[at:]
    return head + new_section.rstrip("\n") + "\n" + ("\n" + tail if tail else "")


def section_of(text: str, version: str) -> str | None:
    """The section of `version` in a changelog, as `section` wrote it (None if absent)."""
    headings = list(VERSION_HEADING.finditer(text))
    for i, heading in enumerate(headings):
        if heading["version"] == version:
            end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
            return text[heading.start() : end].rstrip("\n") + "\n"
    return None
