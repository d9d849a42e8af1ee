"""The git adapter: what the checkout is and what its history says, as plain data.

Quick questions (describe, config) run `git` through the executor; history walks use
GitPython, imported only by the tasks that need it (it costs ~0.1 s to import).
Changes to the repository (commit, tag, notes, worktrees) are argv from `plans.git`,
run by the executor like every other command.
"""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lorepin_tasks.domain.repository import RepoFacts
from lorepin_tasks.domain.revision import UNKNOWN, Revision, from_describe
from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import git as plan
from lorepin_tasks.runtime.executor import Executor

if TYPE_CHECKING:
    import git

    from lorepin_tasks.domain.versioning import History, ReleaseTag

APPROVALS_REF = "lorepin-approvals"


def _read(run: Executor, argv: list[str]) -> str | None:
    result = run.run(argv, capture=True, check=False, mutates=False, quiet=True)
    return result.stdout.strip() if result.ok else None


def describe(run: Executor, root: Path) -> Revision:
    """Version from the newest `vX.Y.Z` tag (`git describe`), revision and commit time.

    The commit time, not the wall clock, stamps images: the same commit builds the same
    image metadata, so an unchanged checkout never forces a rebuild.
    """
    described = _read(run, plan.describe(root))
    head = _read(run, plan.head(root))
    if not described or not head or len(head.split()) != 2:
        return UNKNOWN
    sha, created = head.split()
    return from_describe(described, sha, created)


def who_am_i(run: Executor, root: Path) -> str:
    """Who is acting, for logs: git's user.email (else the OS user) at this host."""
    email = _read(run, plan.config_get(root, "user.email"))
    return f"{email or getpass.getuser()} on {socket.gethostname()}"


def is_branch_name(run: Executor, root: Path, name: str) -> bool:
    return _read(run, plan.check_branch_name(root, name)) is not None


def repo(root: Path) -> git.Repo:
    import git

    try:
        return git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise ConfigError(f"{root} is not a git repository") from None


def facts(root: Path) -> RepoFacts:
    r = repo(root)
    import git

    try:
        detached = r.head.is_detached
        branch = None if detached else r.active_branch
        upstream = branch.tracking_branch() if branch is not None else None
        behind = (
            sum(1 for _ in r.iter_commits(f"HEAD..{upstream.name}")) if upstream is not None else 0
        )
        head = r.head.commit
        reader = r.config_reader()
        return RepoFacts(
            branch=branch.name if branch is not None else None,
            dirty=r.is_dirty(untracked_files=True),
            upstream=upstream.name if upstream is not None else None,
            behind=behind,
            head=head.hexsha,
            head_subject=str(head.message).strip().splitlines()[0] if head.message else "",
            head_time=head.committed_datetime.isoformat(),
            user_email=str(reader.get_value("user", "email", "")) or None,
            sign_tags=str(reader.get_value("tag", "gpgSign", "false")).lower() == "true",
        )
    except (git.GitError, ValueError) as exc:
        raise LorePinError(f"git could not read {root}: {_one_line(exc)}") from None


def release_tags(root: Path, *, reachable: bool = True) -> dict[Any, ReleaseTag]:
    """SemVer `vX.Y.Z` tags (by default only those reachable from HEAD)."""
    import git

    from lorepin_tasks.domain.versioning import release_tag

    r = repo(root)

    found = {}
    try:
        head = r.head.commit
        for ref in r.tags:
            commit = ref.commit
            if reachable and not (commit == head or r.is_ancestor(commit, head)):
                continue
            annotated = ref.tag
            tag = release_tag(
                ref.name,
                commit.hexsha,
                annotated.tagger.email if annotated is not None else None,
                _iso(annotated.tagged_date) if annotated is not None else None,
            )
            if tag is not None:
                found[tag.version] = tag
    except (git.GitError, ValueError) as exc:
        raise LorePinError(f"git could not read the tags of {root}: {_one_line(exc)}") from None
    return found


def read_history(root: Path) -> History:
    """Release tags reachable from HEAD and the commits since the last final release."""
    import git

    from lorepin_tasks.domain.versioning import History, parse_commit

    tags = release_tags(root)
    r = repo(root)

    history = History(tags=tags, changes=[], head=r.head.commit.hexsha)
    last_final = history.last_final
    span = f"{tags[last_final].name}..HEAD" if last_final else "HEAD"
    try:
        changes = [
            parse_commit(c.hexsha, str(c.message)) for c in r.iter_commits(span, no_merges=True)
        ]
    except (git.GitError, ValueError) as exc:
        raise LorePinError(f"git could not read the history of {root}: {_one_line(exc)}") from None
    return History(tags=tags, changes=changes, head=history.head)


def approvals(root: Path, commit: str) -> list[dict[str, str]]:
    """The approvals recorded on a release's commit (JSON lines in a git note)."""
    r = repo(root)
    import git

    try:
        text = r.git.notes("--ref", APPROVALS_REF, "show", commit)
    except git.GitCommandError:
        return []
    found = []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a note edited by hand: show the valid records
        if isinstance(record, dict) and "approved_by" in record:
            found.append(record)
    return found


def tags(root: Path) -> dict[str, str]:
    """Every tag of the repository and the commit it points at."""
    import git

    try:
        return {t.name: t.commit.hexsha for t in repo(root).tags}
    except (git.GitError, ValueError) as exc:
        raise LorePinError(f"git could not read the tags of {root}: {_one_line(exc)}") from None


def pushed(root: Path, commit: str) -> list[str]:
    """The remote-tracking branches that already contain `commit` (as last fetched)."""
    out = repo(root).git.branch("--remotes", "--contains", commit)
    return [line.strip() for line in out.splitlines() if line.strip()]


def branches(root: Path) -> dict[str, str]:
    """Local branches and the commit each points at."""
    return {h.name: h.commit.hexsha for h in repo(root).heads}


def current_branch(run: Executor, root: Path) -> str | None:
    """The checked-out branch, or None when HEAD is detached (or not a repository)."""
    return _read(run, plan.current_branch(root)) or None


def merged_into(root: Path, release: str) -> set[str]:
    """Commits that entered `release` through a merge (not its own first-parent line).

    A branch's tip among them was merged; a branch just created from `release` points at
    a first-parent commit instead, so it does not look merged. Fast-forwarded or squashed
    branches are not recognised: they wait for their expiry, the safe side.
    """
    r = repo(root)
    mainline = set(r.git.rev_list("--first-parent", release).split())
    return set(r.git.rev_list(release).split()) - mainline


def _iso(timestamp: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[-1].strip() if lines else type(exc).__name__
