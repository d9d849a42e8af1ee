"""`invoke repo.protect` against a stand-in of GitHub's REST API on 127.0.0.1 (GitHub is
a third-party service): the documented requests, in order; a refused or missing token
changes nothing; bad input is one line and exit 2."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, invoke

GOOD = "ghp_stand_in_good_token"
REPO = "lorepin/cms"
PROTECTION = f"/repos/{REPO}/branches/main/protection"


@dataclass
class GitHub:
    url: str
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, token
    stored: dict[str, Any] = field(default_factory=dict)
    ignore_linear_history: bool = False
    redirect_to: str = ""  # answer the first GET with a redirect there


@pytest.fixture
def github() -> Iterator[GitHub]:
    """What GitHub documents for these endpoints: 401 for a bad token, 200 with the
    repository, the protection stored by PUT and read back by GET (flags as
    {"enabled": ...})."""
    state = GitHub(url="")

    class Api(BaseHTTPRequestHandler):
        def answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def handle_one(self, method: str) -> None:
            token = self.headers.get("authorization", "").removeprefix("Bearer ")
            state.requests.append((method, self.path, token))
            if token != GOOD or self.headers.get("x-github-api-version") != "2022-11-28":
                return self.answer(401, {"message": "Bad credentials"})
            if method == "GET" and self.path == f"/repos/{REPO}":
                if state.redirect_to:
                    self.send_response(302)
                    self.send_header("location", state.redirect_to)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return None
                return self.answer(200, {"full_name": REPO})
            if method == "PUT" and self.path == PROTECTION:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                state.stored = body
                return self.answer(200, {"url": self.path})
            if method == "GET" and self.path == PROTECTION and state.stored:
                shown = {k: {"enabled": v} for k, v in state.stored.items() if isinstance(v, bool)}
                if state.ignore_linear_history:
                    shown.pop("required_conversation_resolution")  # as if GitHub dropped it
                return self.answer(200, {**shown,
                    "required_status_checks": state.stored["required_status_checks"],
                    "required_pull_request_reviews":
                        state.stored["required_pull_request_reviews"]})  # fmt: skip
            return self.answer(404, {"message": "Not Found"})

        def do_GET(self) -> None:
            self.handle_one("GET")

        def do_PUT(self) -> None:
            self.handle_one("PUT")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def protect(github: GitHub, *args: str, token: str = GOOD) -> Any:
    env = {"GITHUB_API_URL": github.url, "GITHUB_TOKEN": token, "GITHUB_REPOSITORY": REPO,
           "LOREPIN_GITHUB_TOKEN": ""}  # fmt: skip
    return invoke("repo.protect", *args, env=env)


def test_the_rules_file_is_applied_and_read_back(github: GitHub) -> None:
    done = protect(github)
    assert done.returncode == 0, done.stderr
    assert [(m, p) for m, p, _ in github.requests] == [
        ("GET", f"/repos/{REPO}"), ("PUT", PROTECTION), ("GET", PROTECTION)
    ]  # fmt: skip
    rules = json.loads((ROOT / ".github/settings/branch-protection.json").read_text())
    assert github.stored == rules
    assert done.stdout.strip() == (
        f"{REPO}@main protected as .github/settings/branch-protection.json says "
        "(required checks: lint and types, tests)"
    )
    assert GOOD not in done.stdout + done.stderr


def test_an_expired_token_changes_nothing(github: GitHub) -> None:
    done = protect(github, token="ghp_expired")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: GitHub refused the token (expired or revoked?); nothing changed"
    )
    assert [m for m, _, _ in github.requests] == ["GET"] and github.stored == {}


def test_no_token_is_bad_input_and_sends_nothing(github: GitHub) -> None:
    done = protect(github, token="")
    assert done.returncode == 2 and done.stderr.startswith("error: no GitHub token")
    assert github.requests == []


def test_a_protection_github_did_not_keep_is_an_error(github: GitHub) -> None:
    github.ignore_linear_history = True
    done = protect(github)
    assert done.returncode == 1
    assert "differently: required_conversation_resolution is False" in done.stderr


def test_the_dry_run_shows_the_request_and_sends_nothing(github: GitHub) -> None:
    done = protect(github, "--dry-run")
    assert done.returncode == 0 and done.stdout.startswith(f"PUT {github.url}{PROTECTION}\n")
    assert github.requests == []


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--repo", "not a repo"], "error: --repo: 'not a repo' is not OWNER/NAME"),
        (["--branch", "main..x"], "error: --branch: 'main..x' is not a branch name"),
        (["--rules", "nope.json"], "error: cannot read the rules nope.json:"),
        (["--rules", "invoke.yaml"], "error: invoke.yaml: not JSON"),
        (["--rules", "cms/admin/package.json"], "error: cms/admin/package.json: missing "),
    ],
)
def test_bad_input_is_one_line_exit_2_and_sends_nothing(
    github: GitHub, args: list[str], error: str
) -> None:
    done = protect(github, *args)
    assert done.returncode == 2 and done.stderr.startswith(error), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and github.requests == []


def test_a_redirect_is_an_answer_and_the_token_goes_nowhere_else(github: GitHub) -> None:
    github.redirect_to = f"{github.url}/elsewhere"
    done = protect(github)
    assert done.returncode == 1 and "GitHub answered 302" in done.stderr
    assert [p for _, p, _ in github.requests] == [f"/repos/{REPO}"]  # not followed


@pytest.mark.parametrize(
    "api", ["http://127.0.0.1.example.com", "http://localhost.example.com:80", "ftp://127.0.0.1"]
)
def test_an_api_that_is_not_https_or_this_machine_is_refused(github: GitHub, api: str) -> None:
    env = {"GITHUB_API_URL": api, "GITHUB_TOKEN": GOOD, "GITHUB_REPOSITORY": REPO}
    done = invoke("repo.protect", env=env)
    assert done.returncode == 2 and done.stderr.startswith("error: GITHUB_API_URL must be https")


def test_a_token_with_a_newline_from_its_file_works_one_with_odd_characters_is_refused(
    github: GitHub,
) -> None:
    assert protect(github, token=GOOD + "\r\n").returncode == 0
    for odd in (GOOD[:5] + "\r" + GOOD[5:], GOOD + "\u20ac"):
        done = protect(github, token=odd)
        assert done.returncode == 2 and "holds characters no GitHub token has" in done.stderr
        assert GOOD[5:] not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("rules", "error"),
    [
        ({"required_status_checks": {"contexts": [1]}}, "required_status_checks needs"),
        ({"required_pull_request_reviews": "x"}, "required_pull_request_reviews needs"),
        ({"enforce_admins": "false"}, "enforce_admins must be true or false"),
    ],
)
def test_rules_of_the_wrong_type_are_refused_before_any_request(
    github: GitHub, tmp_path: Path, rules: dict[str, object], error: str
) -> None:
    given = {**json.loads((ROOT / ".github/settings/branch-protection.json").read_text()), **rules}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(given))
    done = protect(github, "--rules", str(path))
    assert done.returncode == 2 and error in done.stderr and github.requests == []
