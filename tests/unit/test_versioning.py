"""Next versions and changelogs from real temporary git repositories."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import git
import pytest
from semver import Version

from lorepin_tasks.domain import changelog
from lorepin_tasks.domain.versioning import Bump, next_version, parse_commit
from lorepin_tasks.errors import ConfigError
from lorepin_tasks.runtime.git import read_history


class Repo:
    def __init__(self, path: Path) -> None:
        self.repo = git.Repo.init(path, initial_branch="main")
        with self.repo.config_writer() as cfg:
            cfg.set_value("user", "name", "Rel Eng").set_value(
                "user", "email", "rel@example.invalid"
            )
        self.path = path
        self.n = 0

    def commit(self, message: str) -> git.Commit:
        self.n += 1
        (self.path / f"f{self.n}").write_text(str(self.n))
        self.repo.index.add([f"f{self.n}"])
        return self.repo.index.commit(message)

    def tag(self, name: str) -> None:
        self.repo.create_tag(name, message=name)

    def next(self, pre: str | None = None, major_on_zero: bool = False) -> str | None:
        h = read_history(self.path)
        v = next_version(h.last_final, h.tags, h.changes, pre=pre, major_on_zero=major_on_zero)
        return str(v) if v else None


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_first_release_with_no_tags(repo: Repo) -> None:
    repo.commit("chore: scaffold")
    assert repo.next() is None
    repo.commit("feat: pins")
    assert repo.next() == "0.1.0"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("fix: off by one", "1.2.4"),
        ("perf: faster list", "1.2.4"),
        ("feat: tags filter", "1.3.0"),
        ("feat(api)!: drop body", "2.0.0"),
        ("fix(db): rename column\n\nBREAKING CHANGE: body is now story", "2.0.0"),
        ("refactor: tidy\n\nBREAKING-CHANGE: config keys renamed", "2.0.0"),
        ("docs: explain", None),
        ("update stuff", None),
        ("Feat: capitalised type", "1.3.0"),
    ],
)
def test_bumps_from_the_commits_since_the_last_release(
    repo: Repo, message: str, expected: str | None
) -> None:
    repo.commit("feat: start")
    repo.tag("v1.2.3")
    repo.commit(message)
    assert repo.next() == expected


def test_the_biggest_change_wins_and_scopes_are_kept(repo: Repo) -> None:
    repo.commit("feat: start")
    repo.tag("v1.0.0")
    repo.commit("fix(api): a")
    repo.commit("feat(admin): b")
    repo.commit("chore: c")
    assert repo.next() == "1.1.0"
    changes = read_history(repo.path).changes
    assert [(c.type, c.scope) for c in changes] == [
        ("chore", None),
        ("feat", "admin"),
        ("fix", "api"),
    ]


def test_breaking_change_while_0x_is_minor_unless_configured(repo: Repo) -> None:
    repo.commit("feat: start")
    repo.tag("v0.4.1")
    repo.commit("feat!: new API")
    assert repo.next() == "0.5.0"
    assert repo.next(major_on_zero=True) == "1.0.0"


def test_merge_commits_count_their_branch_commits_once(repo: Repo) -> None:
    base = repo.commit("feat: start")
    repo.tag("v1.0.0")
    repo.repo.create_head("topic", base).checkout()
    repo.commit("feat(search): full text")
    repo.repo.heads.main.checkout()
    repo.commit("fix: typo")
    repo.repo.git.merge("topic", "--no-ff", "-m", "Merge branch 'topic'")
    changes = read_history(repo.path).changes
    assert sorted(c.description for c in changes) == ["full text", "typo"]
    assert repo.next() == "1.1.0"


def test_reverts_are_patches(repo: Repo) -> None:
    repo.commit("feat: start")
    repo.tag("v1.0.0")
    bad = repo.commit("feat: risky")
    repo.repo.git.revert(bad.hexsha, "--no-edit")
    change = read_history(repo.path).changes[0]
    assert (change.type, change.description) == ("revert", "feat: risky")
    assert change.bump is Bump.PATCH


def test_release_candidates_then_final(repo: Repo) -> None:
    repo.commit("feat: start")
    repo.tag("v1.0.0")
    repo.commit("feat: next thing")
    assert repo.next(pre="rc") == "1.1.0-rc.1"
    repo.tag("v1.1.0-rc.1")
    repo.commit("fix: found in rc")
    assert repo.next(pre="rc") == "1.1.0-rc.2"
    repo.tag("v1.1.0-rc.2")
    assert repo.next(pre="beta") == "1.1.0-beta.1"
    assert repo.next() == "1.1.0"
    repo.tag("v1.1.0")
    assert repo.next() is None


def test_a_pre_release_above_the_last_final_is_never_undercut(repo: Repo) -> None:
    repo.commit("feat: start")
    repo.tag("v0.2.0")
    repo.commit("feat: big")
    repo.tag("v0.3.0-rc.1")
    repo.commit("fix: small")
    assert repo.next() == "0.3.0"  # not 0.2.1, which would sort below the candidate
    assert repo.next(pre="rc") == "0.3.0-rc.2"
    assert repo.next(pre="beta") == "0.3.0-beta.1"


@pytest.mark.parametrize(
    ("last_final", "existing", "message", "expected"),
    [
        (None, ["0.3.0-rc.1"], "fix: x", "0.3.0"),
        ("0.2.0", ["0.2.0", "0.3.0-rc.1"], "fix: x", "0.3.0"),
        ("0.2.0", ["0.2.0", "0.3.0-rc.1"], "feat!: x", "0.3.0"),
        ("0.2.0", ["0.2.0", "0.2.1-rc.1"], "feat: x", "0.3.0"),  # a bigger change wins
        ("1.0.0", ["1.0.0", "0.9.0-rc.1"], "fix: x", "1.0.1"),  # below the final: ignored
    ],
)
def test_next_version_from_plain_data(
    last_final: str | None, existing: list[str], message: str, expected: str
) -> None:
    result = next_version(
        Version.parse(last_final) if last_final else None,
        [Version.parse(v) for v in existing],
        [parse_commit("a" * 40, message)],
    )
    assert str(result) == expected


def test_tags_not_reachable_from_head_are_ignored(repo: Repo) -> None:
    root = repo.commit("feat: start")
    repo.tag("v1.0.0")
    repo.repo.create_head("old", root).checkout()
    repo.commit("fix: on a side branch")
    repo.tag("v1.0.1")
    repo.repo.heads.main.checkout()
    repo.commit("fix: here")
    assert read_history(repo.path).last_final == Version(1, 0, 0)
    assert repo.next() == "1.0.1"


def test_non_conventional_commits_never_release(repo: Repo) -> None:
    repo.commit("feat: start")
    repo.tag("v1.0.0")
    repo.commit("WIP")
    repo.commit("fixed the thing")
    assert repo.next() is None
    assert [c.conventional for c in read_history(repo.path).changes] == [False, False]


def test_invalid_pre_release_id(repo: Repo) -> None:
    repo.commit("feat: start")
    with pytest.raises(ConfigError, match="--pre must be one of rc, beta"):
        repo.next(pre="alpha")


def test_parse_commit_breaking_note_prefers_the_footer() -> None:
    change = parse_commit("a" * 40, "feat(api)!: x\n\nBREAKING CHANGE: clients must resend")
    assert change.breaking_note == "clients must resend"


def changes(*messages: str) -> list:  # type: ignore[type-arg]
    return [parse_commit(f"{i:07d}" + "0" * 33, m) for i, m in enumerate(messages, 1)]


def test_changelog_section_groups_breaking_first_with_short_shas() -> None:
    text = changelog.section(
        "2.0.0",
        date(2026, 11, 25),
        changes(
            "fix(db): index",
            "feat(api)!: drop body",
            "feat: tags",
            "docs: nothing",
            "perf: fast",
        ),
    )
    assert text == (
        "## [2.0.0] - 2026-11-25\n\n"
        "### ⚠ Breaking changes\n\n- **api:** drop body (0000002)\n\n"
        "### Features\n\n- **api:** drop body (0000002)\n- tags (0000003)\n\n"
        "### Bug fixes\n\n- **db:** index (0000001)\n\n"
        "### Performance\n\n- fast (0000005)\n"
    )


def test_changelog_newest_first_and_never_duplicated() -> None:
    text = changelog.add_section(
        "", "1.0.0", changelog.section("1.0.0", date(2026, 1, 1), changes("feat: a"))
    )
    text = changelog.add_section(
        text, "1.1.0", changelog.section("1.1.0", date(2026, 2, 1), changes("feat: b"))
    )
    again = changelog.add_section(text, "1.1.0", "## [1.1.0] - whatever\n")
    assert again == text
    assert changelog.versions(text) == ["1.1.0", "1.0.0"]
    assert text.startswith(changelog.PREAMBLE)
    assert text.count("## [Unreleased]") == 1
    assert "\n\n\n" not in text and text.endswith("\n") and not text.endswith("\n\n")
