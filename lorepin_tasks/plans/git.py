"""git commands, as argv lists. Pure: no I/O. The executor runs them (echo, dry-run)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def git(root: Path, *args: str) -> list[str]:
    return ["git", "-C", str(root), *args]


def describe(root: Path) -> list[str]:
    return git(root, "describe", "--tags", "--match", "v[0-9]*", "--dirty", "--always")


def head(root: Path) -> list[str]:
    """The commit and its committer time, one per line."""
    return git(root, "log", "-1", "--format=%H%n%cI")


def current_branch(root: Path) -> list[str]:
    """The checked-out branch's name; fails when HEAD is detached."""
    return git(root, "symbolic-ref", "--quiet", "--short", "HEAD")


def config_get(root: Path, key: str) -> list[str]:
    return git(root, "config", "--get", key)


def check_branch_name(root: Path, name: str) -> list[str]:
    return git(root, "check-ref-format", "--branch", name)


def add(root: Path, paths: Sequence[str]) -> list[str]:
    return git(root, "add", "--", *paths)


def commit(root: Path, message: str, paths: Sequence[str]) -> list[str]:
    return git(root, "commit", "--quiet", "-m", message, "--", *paths)


def tag(root: Path, name: str, message: str, *, sign: bool) -> list[str]:
    return git(root, "tag", "-s" if sign else "-a", name, "-m", message)


def delete_tag(root: Path, name: str) -> list[str]:
    return git(root, "tag", "--delete", name)


def reset_keep(root: Path, to: str) -> list[str]:
    """Move the branch back, keeping (and refusing to clobber) uncommitted work."""
    return git(root, "reset", "--quiet", "--keep", to)


def unstage(root: Path, paths: Sequence[str]) -> list[str]:
    return git(root, "reset", "--quiet", "--", *paths)


def notes_append(root: Path, ref: str, message: str, commit: str) -> list[str]:
    return git(root, "notes", "--ref", ref, "append", "-m", message, commit)


def notes_remove(root: Path, ref: str, commit: str) -> list[str]:
    return git(root, "notes", "--ref", ref, "remove", "--ignore-missing", commit)


def worktree_add(root: Path, path: Path, branch: str) -> list[str]:
    return git(root, "worktree", "add", "--detach", "--quiet", str(path), branch)


def worktree_remove(root: Path, path: Path) -> list[str]:
    return git(root, "worktree", "remove", "--force", str(path))


def worktree_prune(root: Path) -> list[str]:
    """Forget worktrees whose directories are gone (a killed run's)."""
    return git(root, "worktree", "prune")
