"""`invoke release` for real: commit, tag, images, manifest; resume; approvals; webhook."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from lorepin_tasks.domain import changelog
from tests.conftest import HEAD, HINT, run_hints
from tests.release_helpers import (
    base_image,
    clone_project,
    commit,
    invoke_in,
    remove_images,
    webhook_receiver,
)

pytestmark = pytest.mark.docker


@pytest.fixture
def prefix() -> Iterator[str]:
    """A private image repository prefix; every image tagged under it is removed after."""
    name = f"lorepin-release-test-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        remove_images(name)


def inspect(ref: str, fmt: str) -> str:
    return subprocess.run(
        ["docker", "image", "inspect", "--format", fmt, ref],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_release_builds_tags_and_records_exactly_what_it_made(tmp_path: Path, prefix: str) -> None:
    repo = clone_project(tmp_path)
    root = Path(repo.working_tree_dir or ".")
    commit(repo, "feat(api): pins near a place")
    env = {"LOREPIN_IMAGE_PREFIX": prefix}
    with webhook_receiver() as (url, received):
        result = invoke_in(
            repo, "release", "--yes", env={**env, "LOREPIN_RELEASE_WEBHOOK_URL": url}
        )
        assert result.returncode == 0, result.stderr[-3000:]
    assert "secret-token" not in result.stdout + result.stderr

    assert [t.name for t in repo.tags] == ["v0.1.0"]
    assert repo.tags[0].tag is not None  # annotated
    assert repo.head.commit.message.strip() == "chore(release): v0.1.0"
    assert 'version = "0.1.0"' in (root / "pyproject.toml").read_text()
    assert not repo.is_dirty(untracked_files=False)

    manifest = json.loads((root / "dist/release/v0.1.0.json").read_text())
    assert manifest["version"] == "0.1.0" and manifest["git_sha"] == repo.head.commit.hexsha
    for name in ("cms", "postgres"):
        ref = f"{prefix}/{name}:0.1.0"
        assert manifest["images"][name] == {"image": ref, "id": inspect(ref, "{{.Id}}")}
    labels = json.loads(inspect(f"{prefix}/cms:0.1.0", "{{json .Config.Labels}}"))
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] == repo.head.commit.hexsha
    assert manifest["migration_head"] == HEAD
    notes = (root / "dist/release/v0.1.0.md").read_text()
    assert notes.startswith("# LorePin CMS v0.1.0\n") and "pins near a place" in notes
    assert received == [
        {"text": f"LorePin CMS v0.1.0 released ({repo.head.commit.hexsha[:12]}, schema {HEAD})"}
    ]

    again = invoke_in(repo, "release", "--yes", env=env)
    assert again.returncode == 3 and "nothing to release since v0.1.0" in again.stderr

    # A later build of the release commit keeps the release's images (same inputs label).
    rebuilt = invoke_in(repo, "images.build", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr[-2000:]
    for name in ("cms", "postgres"):
        assert inspect(f"{prefix}/{name}:0.1.0", "{{.Id}}") == manifest["images"][name]["id"]


def test_a_release_that_fails_half_way_resumes_without_duplicates(
    tmp_path: Path, prefix: str
) -> None:
    repo = clone_project(tmp_path)
    root = Path(repo.working_tree_dir or ".")
    commit(repo, "feat: first")
    env = {"LOREPIN_IMAGE_PREFIX": prefix}
    assert invoke_in(repo, "release", "--yes", env=env).returncode == 0
    commit(repo, "fix: second")

    broken = invoke_in(repo, "release", "--yes", env={**env, "BASE_IMAGE": "no-such/base:1"})
    assert broken.returncode == 1  # the build fails after the commit and the tag
    assert {t.name for t in repo.tags} == {"v0.1.0", "v0.1.1"}
    message = broken.stderr.strip().splitlines()[-1]
    assert message.endswith(
        "the release commit and tag v0.1.1 are in place: fix the cause and run `invoke release` "
        "again to finish it, or `invoke release.abort` to undo them"
    )
    assert HINT.findall(message) == ["invoke release", "invoke release.abort"]
    hint_env = {**env, "BASE_IMAGE": base_image()}
    run_hints("`invoke release.abort`", hint_env, root, ("release.abort",))  # plans the undo
    run_hints("`invoke release`", hint_env, root)  # resumes and finishes it
    resumed = invoke_in(repo, "release", "--yes", env=env)
    assert resumed.returncode == 3, resumed.stderr[-3000:]  # the hint finished it
    notes = (root / "dist/release/v0.1.1.md").read_text()
    assert "second" in notes and "No user-facing changes" not in notes
    text = (root / "CHANGELOG.md").read_text()
    assert text.count("## [0.1.1]") == 1 and text.count("## [0.1.0]") == 1
    assert text.index("## [0.1.1]") < text.index("## [0.1.0]")
    assert sum(1 for c in repo.iter_commits() if "chore(release)" in str(c.message)) == 2
    assert (root / "dist/release/v0.1.1.json").exists()


def test_approval_two_person_rule_and_status(tmp_path: Path, prefix: str) -> None:
    repo = clone_project(tmp_path, email="cutter@example.invalid")
    commit(repo, "feat: approvable")
    assert invoke_in(repo, "release", "--yes", env={"LOREPIN_IMAGE_PREFIX": prefix}).returncode == 0

    with repo.config_writer() as cfg:  # the same person, written differently
        cfg.set_value("user", "email", "  Cutter@Example.invalid ")
    assert invoke_in(repo, "release.approve", "v0.1.0").returncode == 6
    with repo.config_writer() as cfg:
        cfg.set_value("user", "email", "cutter@example.invalid")
    own = invoke_in(repo, "release.approve", "v0.1.0")
    assert own.returncode == 6
    assert own.stderr.strip() == (
        "error: two-person rule: cutter@example.invalid cut v0.1.0 "
        "and cannot approve it; another person must"
    )

    with repo.config_writer() as cfg:
        cfg.set_value("user", "email", "approver@example.invalid")
    with webhook_receiver() as (url, received):
        ok = invoke_in(repo, "release.approve", "v0.1.0", env={"LOREPIN_RELEASE_WEBHOOK_URL": url})
        assert ok.returncode == 0, ok.stderr
    assert received == [{"text": "LorePin CMS v0.1.0 approved by approver@example.invalid"}]
    assert invoke_in(repo, "release.approve", "v0.1.0").returncode == 3  # already approved

    status = json.loads(invoke_in(repo, "release.status", "v0.1.0", "--json").stdout)
    assert status["cut_by"] == "cutter@example.invalid"
    assert [a["approved_by"] for a in status["approvals"]] == ["approver@example.invalid"]
    assert status["manifest"]["version"] == "0.1.0"
    note = repo.git.notes("--ref", "lorepin-approvals", "show", "v0.1.0^{commit}")
    assert json.loads(note)["approved_by"] == "approver@example.invalid"

    missing = invoke_in(repo, "release.status", "v9.9.9")
    assert missing.returncode == 2 and "no release v9.9.9" in missing.stderr


def test_failing_webhook_warns_and_the_release_stands(tmp_path: Path, prefix: str) -> None:
    repo = clone_project(tmp_path)
    commit(repo, "fix: small")
    result = invoke_in(
        repo,
        "release",
        "--yes",
        env={
            "LOREPIN_IMAGE_PREFIX": prefix,
            "LOREPIN_RELEASE_WEBHOOK_URL": "http://127.0.0.1:9/hooks/secret-token",
        },
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "warning: the notification failed" in result.stderr
    assert "secret-token" not in result.stdout + result.stderr
    assert [t.name for t in repo.tags] == ["v0.1.0"]


def test_release_candidates_then_final(tmp_path: Path, prefix: str) -> None:
    repo = clone_project(tmp_path)
    commit(repo, "feat: candidate")
    env = {"LOREPIN_IMAGE_PREFIX": prefix}
    assert invoke_in(repo, "release", "--pre", "rc", "--yes", env=env).returncode == 0
    assert invoke_in(repo, "release", "--pre", "rc", "--yes", env=env).returncode == 3
    commit(repo, "fix: found in rc")
    assert invoke_in(repo, "release", "--pre", "rc", "--yes", env=env).returncode == 0
    final = invoke_in(repo, "release", "--yes", env=env)
    assert final.returncode == 0, final.stderr[-2000:]
    assert sorted(t.name for t in repo.tags) == ["v0.1.0", "v0.1.0-rc.1", "v0.1.0-rc.2"]
    text = (Path(repo.working_tree_dir or ".") / "CHANGELOG.md").read_text()
    assert changelog.versions(text) == ["0.1.0", "0.1.0-rc.2", "0.1.0-rc.1"]
