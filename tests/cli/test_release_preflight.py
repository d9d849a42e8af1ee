"""`invoke release` refuses what it must, and its dry run writes nothing (no Docker)."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from tests.release_helpers import clone_project, commit, invoke_in


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    repo = clone_project(tmp_path)
    commit(repo, "feat(api): pins near a place")
    return repo


def test_dry_run_shows_version_changelog_and_commands_and_writes_nothing(
    repo: git.Repo,
) -> None:
    head = repo.head.commit
    result = invoke_in(repo, "release", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "release v0.1.0 (last: no release yet" in result.stderr
    assert "### Features\n\n- **api:** pins near a place (" in result.stdout
    assert "+ git -C" in result.stderr and "commit --quiet -m 'chore(release): v0.1.0'" in (
        result.stderr
    )
    assert "tag -a v0.1.0" in result.stderr
    assert "docker compose" in result.stderr and " build" in result.stderr
    assert repo.head.commit == head and not repo.tags and not repo.is_dirty(untracked_files=True)
    assert not (Path(repo.working_tree_dir or ".") / "dist").exists()


def test_refuses_a_dirty_tree_even_untracked(repo: git.Repo) -> None:
    (Path(repo.working_tree_dir or ".") / "scratch.txt").write_text("x")
    result = invoke_in(repo, "release", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: the working tree has uncommitted or untracked "
        "files: commit or stash them first (git status)"
    )


def test_refuses_another_branch(repo: git.Repo) -> None:
    repo.git.checkout("-b", "feature/x")
    result = invoke_in(repo, "release", "--yes")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: releases are cut from main, not feature/x"
    assert not repo.tags


def test_refuses_detached_head(repo: git.Repo) -> None:
    repo.git.checkout("--detach")
    assert invoke_in(repo, "release").stderr.strip() == (
        "error: HEAD is detached: check out main to release"
    )


def test_refuses_a_branch_behind_its_upstream(repo: git.Repo) -> None:
    commit(repo, "fix: newer upstream")
    repo.git.update_ref("refs/remotes/origin/main", "HEAD")
    repo.git.branch("--set-upstream-to", "origin/main")
    repo.git.reset("--hard", "HEAD~1")
    result = invoke_in(repo, "release", "--yes")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: main is 1 commit(s) behind origin/main: pull first"


def test_nothing_to_release_has_its_own_exit_code(tmp_path: Path) -> None:
    repo = clone_project(tmp_path)
    # Released up to here: whatever the project's own history holds is in that release.
    repo.create_tag("v0.1.0", message="chore(release): v0.1.0")
    commit(repo, "docs: typo")
    result = invoke_in(repo, "release", "--yes")
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "error: nothing to release since v0.1.0: no feat, fix, perf, revert or breaking commits"
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        (["--as", "banana"], "error: invalid --as version 'banana': expected SemVer"),
        (["--pre", "alpha"], "error: --pre must be one of rc, beta, got 'alpha'"),
        (["--pre", "rc", "--as", "2.0.0"], "error: --as and --pre together: say the whole"),
    ],
)
def test_bad_versions_are_one_line_errors(repo: git.Repo, flag: list[str], message: str) -> None:
    result = invoke_in(repo, "release", *flag, "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def test_as_must_be_greater_than_the_last_release(repo: git.Repo) -> None:
    repo.create_tag("v1.0.0", message="v1.0.0")
    commit(repo, "fix: later")
    result = invoke_in(repo, "release", "--as", "0.9.0", "--dry-run")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --as 0.9.0 is not greater than the last release 1.0.0"
    assert "release v1.0.1" in invoke_in(repo, "release", "--dry-run").stderr


def test_build_metadata_is_refused_before_anything_is_written(repo: git.Repo) -> None:
    head = repo.head.commit
    result = invoke_in(repo, "release", "--as", "0.3.0-rc.1+build.5", "--yes")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: 0.3.0-rc.1+build.5: a release version carries no build metadata (+...): "
        "SemVer ignores it for ordering and an image tag cannot hold '+'"
    )
    assert repo.head.commit == head and not repo.tags and not repo.is_dirty(untracked_files=True)


def test_a_tag_of_the_version_on_another_commit_is_refused_first(repo: git.Repo) -> None:
    head = repo.head.commit
    side = repo.create_head("side", "HEAD~1")
    side.checkout()
    commit(repo, "fix: elsewhere")
    repo.create_tag("v0.1.0", message="cut on a side branch")  # not reachable from main
    repo.heads.main.checkout()
    result = invoke_in(repo, "release", "--yes")
    assert result.returncode == 6
    assert result.stderr.strip().startswith("error: tag v0.1.0 exists on another commit (")
    assert repo.head.commit == head and not repo.is_dirty(untracked_files=True)


def test_a_version_file_without_a_version_line_is_refused_first(repo: git.Repo) -> None:
    root = Path(repo.working_tree_dir or ".")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Cutter")
    (root / "invoke.yaml").write_text(
        (root / "invoke.yaml").read_text()
        + "  release:\n    version_files: [pyproject.toml, README.md]\n"
    )
    repo.index.add(["invoke.yaml"])
    repo.index.commit("chore: a second version file")
    head = repo.head.commit
    result = invoke_in(repo, "release", "--yes")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'error: README.md has no `version = "..."` line to carry the version'
    )
    assert repo.head.commit == head and not repo.tags and not repo.is_dirty(untracked_files=True)


def test_an_unfinished_release_can_be_aborted_and_cut_again(repo: git.Repo) -> None:
    before = repo.head.commit
    # A release that stops after its commit and tag: the build cannot find its base image.
    broken = invoke_in(repo, "release", "--yes", env={"BASE_IMAGE": "no-such/base:1"})
    assert broken.returncode == 1
    assert [t.name for t in repo.tags] == ["v0.1.0"]
    assert str(repo.head.commit.message).startswith("chore(release): v0.1.0")

    with repo.config_writer() as cfg:  # someone approves it before it is aborted
        cfg.set_value("user", "email", "approver@example.invalid")
    assert invoke_in(repo, "release.approve", "v0.1.0").returncode == 0
    with repo.config_writer() as cfg:
        cfg.set_value("user", "email", "cutter@example.invalid")
    release_commit = repo.head.commit.hexsha
    assert release_commit in repo.git.notes("--ref", "lorepin-approvals", "list")

    dry = invoke_in(repo, "release.abort", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "tag --delete v0.1.0" in dry.stderr and "reset --quiet --keep 'HEAD~1'" in dry.stderr
    assert [t.name for t in repo.tags] == ["v0.1.0"]

    aborted = invoke_in(repo, "release.abort", "--yes")
    assert aborted.returncode == 0, aborted.stderr
    assert "v0.1.0 aborted" in aborted.stdout
    assert repo.head.commit == before and not repo.tags
    assert not repo.is_dirty(untracked_files=True)
    assert release_commit not in repo.git.notes("--ref", "lorepin-approvals", "list")
    assert "release v0.1.0 (last: no release yet" in invoke_in(repo, "release", "--dry-run").stderr

    nothing = invoke_in(repo, "release.abort", "--yes")
    assert nothing.returncode == 3
    assert "no unfinished release to abort" in nothing.stderr
