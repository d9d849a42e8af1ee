"""Branch protection as code (`invoke repo.protect`): the rules in
.github/settings/branch-protection.json, checked, and the requests of GitHub's REST API
that apply and read them back. Pure: no I/O. docs/ci-cd.md."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from lorepin_tasks.errors import ConfigError

API = "https://api.github.com"
API_VERSION = "2022-11-28"
REPO = re.compile(r"^[A-Za-z0-9-]{1,39}/[A-Za-z0-9._-]{1,100}$")
BRANCH = re.compile(r"^(?!/|.*//|.*\.\.|.*\.lock$|.*/$)[A-Za-z0-9._/-]{1,255}$")
# What `PUT .../protection` requires in its body (GitHub's documented schema).
REQUIRED = ("required_status_checks", "enforce_admins", "required_pull_request_reviews",
            "restrictions")  # fmt: skip
REMOTE = re.compile(r"github\.com[:/](?P<repo>[^/]+/[^/]+?)(?:\.git)?/?$")


def rules(text: str, where: str) -> dict[str, Any]:
    """The protection rules of the file, or a one-line refusal."""
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: not a JSON object")
    missing = [k for k in REQUIRED if k not in body]
    if missing:
        raise ConfigError(f"{where}: missing {', '.join(missing)} (GitHub requires them)")
    checks = body["required_status_checks"]
    if checks is not None and not (
        isinstance(checks, dict) and isinstance(checks.get("contexts"), list)
    ):
        raise ConfigError(f"{where}: required_status_checks.contexts must be a list")
    return body


def repository(given: str, environ: Mapping[str, str], remote_url: str | None) -> str:
    """owner/name: as given, else GITHUB_REPOSITORY (set in Actions), else the origin
    remote's; a one-line refusal when none is one."""
    name = given or environ.get("GITHUB_REPOSITORY", "")
    if not name and remote_url and (m := REMOTE.search(remote_url)):
        name = m["repo"]
    if not name:
        raise ConfigError("say which repository: --repo OWNER/NAME (no GitHub origin remote)")
    if not REPO.match(name):
        raise ConfigError(f"--repo: {name!r} is not OWNER/NAME")
    return name


def branch(name: str) -> str:
    if not BRANCH.match(name):
        raise ConfigError(f"--branch: {name!r} is not a branch name")
    return name


def api_base(environ: Mapping[str, str]) -> str:
    """GitHub's API, or GITHUB_API_URL (GitHub Enterprise, or a stand-in in tests)."""
    base = environ.get("GITHUB_API_URL") or API
    if not base.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise ConfigError(f"GITHUB_API_URL must be https (or a loopback stand-in), got {base!r}")
    return base.rstrip("/")


def protection_url(base: str, repo: str, name: str) -> str:
    return f"{base}/repos/{repo}/branches/{quote(name, safe='')}/protection"


def headers(token: str) -> dict[str, str]:
    return {
        "Accept": "application/vnd.github+json",
        "Authorization": f"Bearer {token}",
        "X-GitHub-Api-Version": API_VERSION,
        "Content-Type": "application/json",
    }


def differences(wanted: Mapping[str, Any], applied: Mapping[str, Any]) -> list[str]:
    """What GitHub's answer (GET .../protection) says differently from the rules."""
    found = []
    want_checks = sorted((wanted.get("required_status_checks") or {}).get("contexts", []))
    got_checks = sorted((applied.get("required_status_checks") or {}).get("contexts", []))
    if want_checks != got_checks:
        found.append(f"required checks {got_checks}, not {want_checks}")
    for key in ("required_linear_history", "allow_force_pushes", "allow_deletions",
                "enforce_admins"):  # fmt: skip
        if key in wanted and bool((applied.get(key) or {}).get("enabled")) != bool(wanted[key]):
            found.append(f"{key} is {not wanted[key]}")
    reviews = wanted.get("required_pull_request_reviews") or {}
    got = (applied.get("required_pull_request_reviews") or {}).get(
        "required_approving_review_count"
    )
    if reviews and got != reviews.get("required_approving_review_count"):
        found.append(f"{got} approving reviews required, not "
                     f"{reviews.get('required_approving_review_count')}")  # fmt: skip
    return found
