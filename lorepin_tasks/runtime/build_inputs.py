"""What an image is built from, as one hash: `up` skips a build whose inputs did not change.

The inputs of a service's image: every file Docker would send as its build context
(.dockerignore applied the way Docker applies it), the Dockerfile, the build args and
target, and the base image's ID. The hash is stamped on the image as a label
(`dev.lorepin.build-inputs`); an image whose label equals the hash of the tree as it is
now needs no build. BuildKit's own cache still decides which layers a real build redoes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def digest(build: Mapping[str, Any], base_image_id: str) -> str:
    context = Path(str(build.get("context", ".")))
    dockerfile = context / str(build.get("dockerfile") or "Dockerfile")
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {
                "args": build.get("args") or {},
                "target": build.get("target"),
                "dockerfile": str(dockerfile.relative_to(context))
                if dockerfile.is_relative_to(context)
                else str(dockerfile),
                "base": base_image_id,
            },
            sort_keys=True,
        ).encode()
    )
    h.update(b"\0dockerfile\0" + _content(dockerfile))
    for relative in sorted(context_files(context, dockerfile)):
        path = context / relative
        mode = b"x" if os.access(path, os.X_OK) and not path.is_symlink() else b"-"
        h.update(b"\0" + relative.encode() + b"\0" + mode + b"\0" + _content(path))
    return h.hexdigest()[:32]


def _content(path: Path) -> bytes:
    if path.is_symlink():
        return b"link:" + os.readlink(path).encode()
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return b"missing"


def ignore_patterns(context: Path, dockerfile: Path) -> list[str]:
    """The .dockerignore that applies (a Dockerfile-specific one wins, as in BuildKit)."""
    for candidate in (Path(f"{dockerfile}.dockerignore"), context / ".dockerignore"):
        try:
            return candidate.read_text().splitlines()
        except OSError:
            continue
    return []


class Matcher:
    """.dockerignore semantics (moby/patternmatcher): the last matching pattern wins, `!`
    re-includes, a pattern matching a directory matches everything under it."""

    def __init__(self, lines: list[str]) -> None:
        self.rules: list[tuple[bool, re.Pattern[str], str]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            if pattern == ".":
                continue
            self.rules.append((negated, re.compile(_regex(pattern)), pattern))

    def excluded(self, relative: str) -> bool:
        parents = _parents(relative)
        result = False
        for negated, regex, _ in self.rules:
            if any(regex.match(p) for p in parents):
                result = not negated
        return result

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception pattern could re-include something under `directory`."""
        for negated, _, pattern in self.rules:
            if not negated:
                continue
            literal = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
            if literal.startswith(f"{directory}/") or f"{directory}/".startswith(literal):
                return True
        return False


def _parents(relative: str) -> list[str]:
    parts = relative.split("/")
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _regex(pattern: str) -> str:
    out, i = "^", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i)
            if end == -1:
                out += re.escape(ch)
            else:
                out += pattern[i : end + 1]
                i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return out + "$"


def context_files(context: Path, dockerfile: Path) -> Iterator[str]:
    """The relative paths of the files Docker sends as the build context."""
    matcher = Matcher(ignore_patterns(context, dockerfile))
    for top, dirs, files in os.walk(context):
        base = os.path.relpath(top, context)
        prefix = "" if base == "." else f"{base}/"
        dirs[:] = [
            d
            for d in dirs
            if not matcher.excluded(prefix + d) or matcher.may_include_below(prefix + d)
        ]
        for name in files:
            if not matcher.excluded(prefix + name):
                yield prefix + name
