"""What both benchmarks need: the project's base image and a timed command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorepin_tasks import settings as settings_mod  # noqa: E402


def base_image() -> str:
    base = settings_mod.load({}, root=ROOT).base_image
    if not base:
        raise SystemExit("no base image: run scripts/bootstrap.sh")
    return base


def private_homes(tmp: str | Path) -> dict[str, str]:
    """Per-user state and caches of a benchmark's runs inside its temporary directory."""
    return {"XDG_STATE_HOME": f"{tmp}/state", "XDG_CACHE_HOME": f"{tmp}/cache"}


def stack_env(project: str, tmp: str) -> dict[str, str]:
    """How a benchmark's own local stack is driven: its project, Docker-chosen ports, the
    `bench` tag (never the developer's `dev` images), state inside `tmp`."""
    return {
        "BASE_IMAGE": base_image(),
        "LOREPIN_PROJECT": project,
        "LOREPIN_HTTP_PORT": "0",
        "LOREPIN_DB_PORT": "0",
        "LOREPIN_IMAGE_TAG": "bench",
        "LOREPIN_SECRETS_DIR": f"{tmp}/secrets",
        **private_homes(tmp),
    }


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> str:
    """The command's output; exits the benchmark with its error when it fails."""
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stdout[-1500:]}{proc.stderr[-2500:]}")
    return proc.stdout


def timed(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> float:
    """Seconds the command took; exits the benchmark with its error when it fails."""
    started = time.monotonic()
    run(argv, cwd, env, timeout)
    return time.monotonic() - started


def remove_images(prefix: str) -> None:
    """Every image of the bench's own prefix (`prefix/...`), whatever its tag."""
    refs = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    ours = [r for r in refs if r.startswith(f"{prefix}/")]
    if ours:
        subprocess.run(["docker", "image", "rm", *ours], capture_output=True, check=False)


def free_port() -> int:
    """A loopback port nothing listens on now (for a port that must be known up front)."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


FIGURES = "LOREPIN_BENCH_FIGURES"


def figure(bench: str, name: str, value: float, unit: str, baseline: float | None = None) -> None:
    """Keep a headline figure (and the baseline measured beside it, in the same unit) as
    one JSON line in build/bench/figures.jsonl ($LOREPIN_BENCH_FIGURES), which
    `invoke ci.record --bench` adds to the CI history for the dashboard's trends."""
    import json

    path = Path(os.environ.get(FIGURES) or ROOT / "build" / "bench" / "figures.jsonl")
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"bench": bench, "name": name, "value": round(value, 4), "unit": unit}
    if baseline is not None:
        line["baseline"] = round(baseline, 4)
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(line) + "\n")


def bench_clone(tmp: Path) -> tuple[Path, list[str]]:
    """A clone of this checkout in `tmp` with a bench identity and no release tags (its
    releases are its own); the clone and its `git -C` command."""
    repo = tmp / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    git = ["git", "-C", str(repo)]
    subprocess.run([*git, "config", "user.email", "bench@example.invalid"], check=True)
    subprocess.run([*git, "config", "user.name", "Bench"], check=True)
    tags = subprocess.run([*git, "tag"], capture_output=True, text=True, check=True).stdout
    if tags.split():
        subprocess.run([*git, "tag", "-d", *tags.split()], capture_output=True, check=True)
    return repo, git
