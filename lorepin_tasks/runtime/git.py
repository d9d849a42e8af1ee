"""What git says about the checkout: version, revision, commit time (GitPython)."""

from __future__ import annotations

import getpass
import socket
from dataclasses import dataclass
from pathlib import Path

import git


@dataclass(frozen=True, kw_only=True)
class Revision:
    version: str
    sha: str
    created: str


UNKNOWN = Revision(version="0.0.0-dev", sha="unknown", created="unknown")


def describe(root: Path) -> Revision:
    """Version from the newest `vX.Y.Z` tag (`git describe`), revision and commit time.

    The commit time, not the wall clock, stamps images: the same commit builds the same
    image metadata, so an unchanged checkout never forces a rebuild.
    """
    try:
        repo = git.Repo(root, search_parent_directories=False)
        head = repo.head.commit
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, ValueError):
        return UNKNOWN
    try:
        version = repo.git.describe("--tags", "--match", "v[0-9]*", "--dirty").removeprefix("v")
    except git.GitCommandError:
        dirty = "-dirty" if repo.is_dirty() else ""
        version = f"0.0.0-dev+g{head.hexsha[:7]}{dirty}"
    return Revision(version=version, sha=head.hexsha, created=head.committed_datetime.isoformat())


def who_am_i(root: Path) -> str:
    """Who is acting, for logs: git's user.email (else the OS user) at this host."""
    try:
        email = git.Repo(root).config_reader().get_value("user", "email", "")
    except (git.InvalidGitRepositoryError, git.NoSuchPathError, OSError):
        email = ""
    return f"{email or getpass.getuser()} on {socket.gethostname()}"
