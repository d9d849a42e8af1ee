"""A throwaway clone of this repository to cut releases in, and a webhook receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import git

from lorepin_tasks import settings as settings_mod
from tests.conftest import ROOT


def clone_project(tmp_path: Path, email: str = "cutter@example.invalid") -> git.Repo:
    """The committed project, on `main`, with its own identity and no remote ahead."""
    repo = git.Repo.clone_from(ROOT, tmp_path / "repo", branch=git.Repo(ROOT).active_branch.name)
    if repo.active_branch.name != "main":
        repo.git.checkout("-B", "main")
    repo.git.branch("--unset-upstream")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Cutter").set_value("user", "email", email)
    for tag in repo.tags:  # releases of the real project are not the clone's business
        repo.delete_tag(tag)
    return repo


def commit(repo: git.Repo, message: str) -> None:
    path = Path(repo.working_tree_dir or ".") / "docs" / "release-test.txt"
    path.write_text(path.read_text() + message + "\n" if path.exists() else message + "\n")
    repo.index.add([str(path)])
    repo.index.commit(message)


def base_image() -> str:
    """The base image bootstrap chose for this checkout (a clone has no record of its own)."""
    return settings_mod.load({}, root=ROOT).base_image or "debian:bookworm-slim"


def invoke_in(
    repo: git.Repo, *args: str, env: dict[str, str] | None = None, timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=repo.working_tree_dir,
        env={**os.environ, "BASE_IMAGE": base_image(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def webhook_receiver() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A Slack-like incoming webhook on 127.0.0.1 that records what it is sent."""
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    with loopback_server(Handler) as base:
        yield f"{base}/hooks/T000/B000/secret-token", received


@contextmanager
def loopback_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A stand-in HTTP service on 127.0.0.1 (its base URL) for the block, then gone."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def remove_images(prefix: str) -> None:
    """Remove every image tag under a test's private repository prefix."""
    refs = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    ours = [r for r in refs if r.startswith(f"{prefix}/") or f"/{prefix}/" in r]
    if ours:
        subprocess.run(["docker", "image", "rm", "-f", *ours], capture_output=True, check=False)
