"""`invoke security.scan` without a deployed environment: bad input is one line and exit 2,
an environment that is not running one line and exit 1. The scan's credential search
over a real git history: a Slack webhook committed and removed again is still found
(where it was, never its value); an allowed hash is not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import git
import pytest

from lorepin_tasks.plans import security as plan
from lorepin_tasks.runtime.security_scan import dependency_audit, history_secrets
from tests.conftest import ROOT, invoke
from tests.release_helpers import loopback_server

# A made-up webhook of Slack's shape (detect-secrets knows it); in no real workspace.
WEBHOOK = "https://hooks.slack.com/services/T00000000/B00000000/" + "X" * 24


def test_a_credential_removed_from_the_tree_is_still_found_in_the_history(tmp_path: Path) -> None:
    repo = git.Repo.init(tmp_path / "repo")
    root = Path(repo.working_tree_dir or ".")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "t").set_value("user", "email", "t@example.invalid")
    config = root / "notify.py"
    config.write_text(f'# settings\nURL = "{WEBHOOK}"\n')
    (root / "secrets").mkdir()
    (root / "secrets" / "db_password.age").write_text("-----BEGIN AGE ENCRYPTED FILE-----\n")
    repo.index.add([str(config), "secrets/db_password.age"])
    repo.index.commit("add the webhook")
    config.write_text('URL = open("/run/secrets/webhook").read()\n')
    repo.index.add([str(config)])
    repo.index.commit("read it from a file instead")

    hits = history_secrets(root)
    assert [(h.where, h.kind) for h in hits] == [("notify.py:2 (git history)", "Slack Token")]
    [finding] = plan.secrets(hits, allow=set())
    assert finding.severity == "high" and WEBHOOK not in finding.what
    assert plan.secrets(hits, allow={hits[0].sha1}) == []


@pytest.mark.parametrize(
    ("args", "code", "error"),
    [
        (("--env", "staging", "--fail-on", "critical"), 2,
         "error: --fail-on must be one of high, medium, low, got 'critical'"),
        (("--env", "staging", "--examples", "0"), 2, "error: --examples must be 1 to 1000, got 0"),
        ((), 2, "error: say which environment: --env staging or --env production"),
        (("--env", "local"), 2, "error: 'local' is a local environment, started with `invoke up`"),
        (("--env", "nowhere"), 2, "error: unknown environment 'nowhere'"),
        (("--env", "staging"), 1, "error: the proxy of 'staging' is not running: deploy it first"),
    ],
)  # fmt: skip
def test_the_scan_refuses_bad_input_and_an_environment_not_deployed(
    tmp_path: Path, args: tuple[str, ...], code: int, error: str
) -> None:
    project = {"LOREPIN_PROJECT": f"lorepin-scan-none-{tmp_path.name[-12:]}".lower()[:40]}
    done = invoke("security.scan", *args, env=project)
    assert done.returncode == code, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(error), done.stderr


@pytest.fixture
def osv() -> Iterator[str]:
    """A stand-in for the OSV API (a third-party service): starlette has an advisory."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = json.loads(self.rfile.read(int(self.headers["content-length"])))
            vulns = [] if query["package"]["name"].lower() != "starlette" else [{
                "id": "GHSA-test-0001", "summary": "a test advisory", "details": "-",
                "modified": "2026-01-01T00:00:00Z", "aliases": [],
                "affected": [{"package": {"name": "starlette", "ecosystem": "PyPI"},
                              "ranges": [{"type": "ECOSYSTEM", "events": [
                                  {"introduced": "0"}, {"fixed": "99.0.0"}]}]}],
            }]  # fmt: skip
            data = json.dumps({"vulns": vulns} if vulns else {}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with loopback_server(Handler) as base:
        yield f"{base}/v1/query"


def test_a_known_vulnerability_of_a_pinned_dependency_is_high(
    osv: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOREPIN_OSV_URL", osv)
    findings, not_run = dependency_audit(ROOT)
    version = next(line.split("==")[1] for line in (ROOT / "cms/requirements.txt").read_text()
                   .splitlines() if line.startswith("starlette=="))  # fmt: skip
    assert [(f.severity, f.what) for f in findings if "requirements" in f.what] == [
        ("high", f"cms/requirements.txt: starlette {version}: GHSA-test-0001 (fixed in 99.0.0)")
    ]
    assert "pip-audit" not in not_run
    monkeypatch.setenv("LOREPIN_OSV_URL", "http://127.0.0.1:9/v1/query")  # nothing listens
    findings, not_run = dependency_audit(ROOT)
    assert not [f for f in findings if "requirements" in f.what]
    assert not_run["pip-audit"].startswith("its vulnerability service did not answer: ")
