"""Branch protection as code (`invoke repo.protect`): the rules in
.github/settings/branch-protection.json, checked, and the requests of GitHub's REST API
that apply and read them back. Pure: no I/O. docs/ci-cd.md."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from lorepin_tasks.errors import ConfigError

API = "https://api.github.com"
API_VERSION = "2022-11-28"
REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/(?!\.\.?$)[A-Za-z0-9._-]{1,100}$")
TOKEN = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no space: what tokens are
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
BRANCH = re.compile(r"^(?!/|.*//|.*\.\.|.*\.lock$|.*/$)[A-Za-z0-9._/-]{1,255}$")
# What `PUT .../protection` requires in its body (GitHub's documented schema).
REQUIRED = ("required_status_checks", "enforce_admins", "required_pull_request_reviews",
            "restrictions")  # fmt: skip
# The rules that are true or false, as GitHub answers them back ({"enabled": ...}).
FLAGS = ("enforce_admins", "required_linear_history", "allow_force_pushes", "allow_deletions",
         "required_conversation_resolution")  # fmt: skip
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
        isinstance(checks, dict)
        and isinstance(checks.get("contexts"), list)
        and all(isinstance(c, str) and c for c in checks["contexts"])
        and isinstance(checks.get("strict", False), bool)
    ):
        raise ConfigError(f"{where}: required_status_checks needs contexts (a list of check "
                          "names) and strict (true or false)")  # fmt: skip
    reviews = body["required_pull_request_reviews"]
    if reviews is not None and not (
        isinstance(reviews, dict)
        and type(reviews.get("required_approving_review_count", 1)) is int
        and all(isinstance(v, bool) for k, v in reviews.items()
                if k in ("dismiss_stale_reviews", "require_code_owner_reviews"))
    ):  # fmt: skip
        raise ConfigError(f"{where}: required_pull_request_reviews needs a whole "
                          "required_approving_review_count and true/false flags")  # fmt: skip
    for key in FLAGS:
        if key in body and not isinstance(body[key], bool):
            raise ConfigError(f"{where}: {key} must be true or false, got {body[key]!r}")
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
    """GitHub's API, or GITHUB_API_URL (GitHub Enterprise, or a stand-in in tests): https,
    or plain http on this machine's loopback only (the token travels with every request)."""
    from urllib.parse import urlsplit

    base = environ.get("GITHUB_API_URL") or API
    try:
        parts = urlsplit(base)
        host = parts.hostname
        parts.port  # noqa: B018 (raises on a port that is not one)
    except ValueError:
        host = None
    if not host or not (parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK)):
        raise ConfigError(f"GITHUB_API_URL must be https (or a loopback stand-in), got {base!r}")
    return base.rstrip("/")


def token(environ: Mapping[str, str], names: Sequence[str]) -> str:
    """The first token set among `names`, surrounding whitespace (a file's newline) off;
    a one-line refusal, never quoting it, when it holds what no token does."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            if not TOKEN.match(value):
                raise ConfigError(f"{name} holds characters no GitHub token has (spaces, "
                                  "control or non-ASCII characters)")  # fmt: skip
            return value
    return ""


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

    def enabled(key: str) -> bool:
        value = applied.get(key)
        return bool(value.get("enabled")) if isinstance(value, dict) else bool(value)

    def section(key: str) -> Mapping[str, Any]:
        value = applied.get(key)
        return value if isinstance(value, dict) else {}

    found = []
    want_checks = wanted.get("required_status_checks") or {}
    got_checks = section("required_status_checks")
    got_contexts = sorted(map(str, got_checks.get("contexts") or []))
    if sorted(want_checks.get("contexts", [])) != got_contexts:
        found.append(f"required checks {got_checks.get('contexts')}, "
                     f"not {want_checks.get('contexts')}")  # fmt: skip
    if want_checks and bool(got_checks.get("strict")) != bool(want_checks.get("strict")):
        found.append(f"strict checks is {bool(got_checks.get('strict'))}")
    for key in FLAGS:
        if key in wanted and enabled(key) != wanted[key]:
            found.append(f"{key} is {enabled(key)}")
    reviews = wanted.get("required_pull_request_reviews") or {}
    got_reviews = section("required_pull_request_reviews")
    for key, value in reviews.items():
        if key in ("required_approving_review_count", "dismiss_stale_reviews",
                   "require_code_owner_reviews") and got_reviews.get(key) != value:  # fmt: skip
            found.append(f"{key} is {got_reviews.get(key)}, not {value}")
    return found
