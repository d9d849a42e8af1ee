"""Per-branch environments for real: side by side with local, isolated, pruned exactly."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import git
import pytest

from lorepin_tasks.plans.feature import FeatureName, name_for
from lorepin_tasks.settings import Checkout
from tests.conftest import invoke, new_token, request, run_hints, unique_project
from tests.release_helpers import base_image, clone_project, commit, invoke_in

pytestmark = pytest.mark.docker
BRANCHES = (
    "feat/Map-Search",
    "feat/gone",
    "feat/merged",
    "feat/expiring",
    "fix/ÜBER_lang-" + "x" * 180,
)


def of_project(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {
        kind: subprocess.run(
            [*argv, "--filter", label], capture_output=True, text=True, check=True
        ).stdout.split()
        for kind, argv in {
            "containers": ["docker", "ps", "-aq"],
            "networks": ["docker", "network", "ls", "-q"],
            "volumes": ["docker", "volume", "ls", "-q"],
        }.items()
    }


def named(repo: git.Repo, branch: str) -> FeatureName:
    """The environment name of `branch` in the checkout `repo` (as the toolkit derives it)."""
    root = Path(repo.working_tree_dir or ".").resolve()
    return name_for(branch, Checkout.of(root, socket.gethostname()).id)


def features(repo: git.Repo) -> dict[str, dict[str, object]]:
    listed = invoke_in(repo, "feature.list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {f["branch"]: f for f in json.loads(listed.stdout)}


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[git.Repo]:
    repo = clone_project(tmp_path)
    try:
        yield repo
    finally:  # whatever happened, no environment of this clone's branches survives it
        for branch in BRANCHES:
            project = named(repo, branch).project
            if any(of_project(project).values()):
                invoke_in(repo, "feature.down", "--branch", branch, "--yes")


def test_branches_get_isolated_environments_and_prune_removes_exactly_the_stale(
    repo: git.Repo, tmp_path: Path
) -> None:
    alive, gone, merged, expiring, odd = BRANCHES
    for branch in (alive, gone, expiring, odd):
        repo.create_head(branch)
    repo.git.checkout("-b", merged)
    commit(repo, "feat: merged work")
    repo.git.checkout("main")

    local_env = {
        "LOREPIN_PROJECT": unique_project("lorepin-e2e-local"),
        "LOREPIN_HTTP_PORT": "0",
        "LOREPIN_DB_PORT": "0",
        "LOREPIN_IMAGE_TAG": "e2e",
        "LOREPIN_SECRETS_DIR": str(tmp_path / "local-secrets"),
    }
    try:
        assert invoke("up", env=local_env, timeout=900).returncode == 0
        # Two runs for one branch at once: one builds it, the other is told who is at it.
        root = Path(repo.working_tree_dir or ".")
        racers = [
            subprocess.Popen(
                [sys.executable, "-m", "invoke", "feature.up", "--branch", odd],
                cwd=root,
                env={**os.environ, "BASE_IMAGE": base_image()},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        outcomes = sorted(
            (p.returncode, out, err) for p in racers for out, err in [p.communicate()]
        )
        assert [code for code, _, _ in outcomes] == [0, 5], [o[2][-2000:] for o in outcomes]
        assert "seeded 3000 pins" in outcomes[0][1]
        busy = outcomes[1][2].strip()
        assert busy.startswith(f"error: environment 'feature' ({named(repo, odd).project}) is ")
        assert "being changed by " in busy and "(feature.up, pid " in busy
        assert len(busy.splitlines()) == 1

        # Four more feature environments beside a local one (the odd, 200-character one too).
        # Each first seeding prints its developer's admin token, once.
        tokens = {"local": new_token(lambda *a: invoke(*a, env=local_env), "local")}
        for branch, ttl in ((alive, "72h"), (gone, "72h"), (merged, "72h"), (expiring, "1h")):
            result = invoke_in(repo, "feature.up", "--branch", branch, "--ttl", ttl)
            assert result.returncode == 0, result.stderr[-3000:]
            assert "seeded 3000 pins; admin token of developer (shown once): lp_" in result.stdout
            tokens[branch] = result.stdout.split("(shown once): ")[1].split(";")[0]

        envs = features(repo)
        assert set(envs) == set(BRANCHES)
        local_url = json.loads(invoke("status", "--json", env=local_env).stdout)["url"]
        urls = {b: str(e["url"]) for b, e in envs.items()} | {"local": local_url}
        assert len(set(urls.values())) == 6
        assert all(u.startswith("http://127.0.0.1:") for u in urls.values())

        # Each environment has its own data (and tokens): a pin created in one is absent
        # from the others, and a token of one opens no other.
        for owner in (alive, gone, "local"):
            pin = {"title": f"only in {owner}", "latitude": 1, "longitude": 2}
            code, made = request("POST", f"{urls[owner]}/api/pins", pin, tokens[owner])
            assert code == 201 and isinstance(made, dict)
            assert made["place_name"], "the mock geocoder named the place"
            for other, url in urls.items():
                code, page = request("GET", f"{url}/api/pins?limit=100", None, tokens.get(other))
                titles = [p["title"] for p in page["items"]] if isinstance(page, dict) else []
                assert (f"only in {owner}" in titles) == (other == owner), (owner, other)
                if other != owner and other in tokens:
                    assert request("GET", f"{url}/api/pins", None, tokens[owner])[0] == 401
        code, page = request("GET", f"{urls[alive]}/api/pins?limit=1", None, tokens[alive])
        assert isinstance(page, dict) and page["total"] == 3001  # seeded + the one above
        code, public = request("GET", f"{urls[alive]}/api/pins?limit=1")
        assert isinstance(public, dict) and 0 < public["total"] < 3001  # the drafts are not

        # Re-running up updates in place: same URL, data kept, expiry extended.
        again = invoke_in(repo, "feature.up", "--branch", alive)
        assert again.returncode == 0 and "nothing seeded" in again.stdout
        assert features(repo)[alive]["url"] == urls[alive]
        assert features(repo)[alive]["expires_at"] >= envs[alive]["expires_at"]  # type: ignore[operator]

        # A second checkout on the same engine sees none of them and prunes none of them.
        other = clone_project(tmp_path / "other")
        assert features(other) == {}
        later = (datetime.now(UTC) + timedelta(days=30)).isoformat()
        assert (
            "nothing to prune"
            in invoke_in(other, "feature.prune", "--yes", "--as-of", later).stdout
        )
        assert set(features(repo)) == set(BRANCHES)

        # A failed migration's hint works for a feature environment too.
        secret = Path(os.environ["XDG_STATE_HOME"]) / "lorepin" / named(repo, gone).project
        password = secret / "secrets" / "db_password"
        original = password.read_text()
        password.write_text("not-the-password\n")
        failed = invoke_in(repo, "feature.up", "--branch", gone)
        password.write_text(original)
        assert failed.returncode == 1
        assert run_hints(failed.stderr, cwd=root) == [
            f"invoke feature.logs --service migrate --branch {gone}"
        ]
        assert invoke_in(repo, "feature.up", "--branch", gone).returncode == 0

        # Make three of them stale: deleted branch, merged branch, expired ttl (2 h from now).
        repo.delete_head(gone, force=True)
        repo.git.merge(merged, "--no-ff", "-m", "Merge feat/merged")
        in_two_hours = (datetime.now(UTC) + timedelta(hours=2)).isoformat()

        dry = invoke_in(repo, "feature.prune", "--dry-run", "--as-of", in_two_hours)
        assert dry.returncode == 0, dry.stderr
        lines = [ln for ln in dry.stdout.splitlines() if ln.startswith("prune ")]
        assert sorted(lines) == sorted(
            [
                f"prune {envs[gone]['project']} (branch '{gone}'): branch deleted",
                f"prune {envs[merged]['project']} (branch '{merged}'): branch merged",
                next(ln for ln in lines if f"(branch '{expiring}'): expired " in ln),
            ]
        )
        assert set(features(repo)) == set(BRANCHES)  # the dry run removed nothing

        assert invoke_in(repo, "feature.prune", "--dry-run").stdout.count("prune ") == 2
        pruned = invoke_in(repo, "feature.prune", "--yes", "--as-of", in_two_hours)
        assert pruned.returncode == 0, pruned.stderr
        assert set(features(repo)) == {alive, odd}
        for branch in (gone, merged, expiring):
            assert of_project(str(envs[branch]["project"])) == {
                "containers": [],
                "networks": [],
                "volumes": [],
            }
        code, _ = request("GET", f"{urls['local']}/readyz")
        assert code == 200, "pruning never touches another environment"

        for branch in (alive, odd):
            down = invoke_in(repo, "feature.down", "--branch", branch, "--yes")
            assert down.returncode == 0, down.stderr
            assert of_project(str(envs[branch]["project"])) == {
                "containers": [],
                "networks": [],
                "volumes": [],
            }
        images = subprocess.run(
            ["docker", "image", "ls", "--format", "{{.Tag}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert not [t for t in images if t.startswith("br-feat-map-search")]
    finally:
        invoke("down", "--volumes", "--yes", env=local_env)


def test_bad_input_changes_nothing(repo: git.Repo) -> None:
    repo.git.checkout("--detach")
    detached = invoke_in(repo, "feature.up")
    assert detached.returncode == 2
    assert detached.stderr.strip() == "error: HEAD is detached: say which branch with --branch NAME"
    bad = invoke_in(repo, "feature.up", "--branch", "bad..name")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: invalid branch name 'bad..name'"
    missing = invoke_in(repo, "feature.up", "--branch", "no-such-branch")
    assert missing.returncode == 2
    assert "there is no local branch 'no-such-branch'" in missing.stderr
    nothing = invoke_in(repo, "feature.down", "--branch", "never-deployed", "--yes")
    assert nothing.returncode == 1
    assert nothing.stderr.strip().startswith(
        "error: there is no feature environment for branch 'never-deployed'"
    )
    assert invoke_in(repo, "feature.up", "--branch", "x", "--ttl", "forever").stderr.strip() == (
        "error: invalid ttl 'forever': a number and s, m, h or d, like 90m, 72h, 7d"
    )
