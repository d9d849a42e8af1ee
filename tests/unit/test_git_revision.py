from __future__ import annotations

import io
from pathlib import Path

import git

from lorepin_tasks.domain.revision import UNKNOWN, Revision
from lorepin_tasks.runtime import git as git_adapter
from lorepin_tasks.runtime.executor import Executor


def describe(root: Path) -> Revision:
    return git_adapter.describe(Executor(out=io.StringIO()), root)


def commit(repo: git.Repo, name: str) -> git.Commit:
    path = Path(repo.working_tree_dir or ".") / name
    path.write_text(name)
    repo.index.add([str(path)])
    return repo.index.commit(f"feat: add {name}")


def test_outside_git_the_version_is_unknown(tmp_path: Path) -> None:
    assert describe(tmp_path) == UNKNOWN


def test_version_follows_tags_and_dirty_state(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Test").set_value("user", "email", "t@example.invalid")
    first = commit(repo, "a")
    untagged = describe(tmp_path)
    assert untagged.version == f"0.0.0-dev+g{first.hexsha[:7]}"
    assert untagged.sha == first.hexsha
    assert untagged.created == first.committed_datetime.isoformat()

    repo.create_tag("v1.2.3", message="release 1.2.3")
    assert describe(tmp_path).version == "1.2.3"
    (tmp_path / "a").write_text("changed")
    assert describe(tmp_path).version == "1.2.3-dirty"
    repo.git.checkout("--", "a")
    second = commit(repo, "b")
    assert describe(tmp_path).version == f"1.2.3-1-g{second.hexsha[:7]}"
