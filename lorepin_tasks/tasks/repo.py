"""The repository's own settings as code: `invoke repo.protect` applies
.github/settings/branch-protection.json to the main branch through GitHub's REST API
and reads it back. docs/ci-cd.md."""

from __future__ import annotations

import json
import os
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError
from lorepin_tasks.plans import github as plan
from lorepin_tasks.runtime import github
from lorepin_tasks.tasks._common import DRY_HELP, load_settings, task

RULES = ".github/settings/branch-protection.json"
TOKEN_VARIABLES = ("GITHUB_TOKEN", "LOREPIN_GITHUB_TOKEN")


def _origin(root: Path) -> str | None:
    from lorepin_tasks.runtime import git

    try:
        remote = git.repo(root).remotes["origin"]
    except (IndexError, KeyError, ValueError):
        return None
    return str(remote.url)


@task(
    help={
        "repo": "OWNER/NAME (default: $GITHUB_REPOSITORY, else the origin remote's)",
        "branch": "the branch to protect (default: main)",
        "rules": f"the rules, in the shape of GitHub's API (default: {RULES})",
        "dry_run": DRY_HELP,
    }
)
def protect(
    c: Context, repo: str = "", branch: str = "main", rules: str = RULES, dry_run: bool = False
) -> None:
    """Protect the branch as the rules file says (required checks, reviews, linear
    history, no force pushes), with a token from GITHUB_TOKEN, and check GitHub's answer."""
    settings = load_settings(c)
    path = settings.root / rules
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the rules {rules}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read the rules {rules}: not UTF-8 text") from None
    body = plan.rules(text, rules)
    name = plan.repository(repo, os.environ, _origin(settings.root))
    url = plan.protection_url(plan.api_base(os.environ), name, plan.branch(branch))
    if dry_run:
        print(f"PUT {url}\n{json.dumps(body, indent=2)}\nGET {url}  (to check it)")
        return
    token = plan.token(os.environ, TOKEN_VARIABLES)
    if not token:
        raise ConfigError("no GitHub token: set GITHUB_TOKEN (a token that may administer "
                          f"{name}); nothing changed")  # fmt: skip
    base = plan.api_base(os.environ)
    status, _ = github.call("GET", f"{base}/repos/{name}", token)
    if status == 401:
        raise LorePinError("GitHub refused the token (expired or revoked?); nothing changed")
    if status in (403, 404):
        raise LorePinError(f"{name}: not visible to this token, or no such repository "
                           f"(GitHub answered {status}); nothing changed")  # fmt: skip
    if status != 200:
        raise LorePinError(f"GitHub answered {status} for {name}; nothing changed")
    status, answer = github.call("PUT", url, token, body, changed=True)
    if status != 200:
        why = answer.get("message") if isinstance(answer, dict) else None
        shown = " ".join(str(why).split())[:200] if why else ""  # one line, no escapes
        shown = "".join(ch for ch in shown if ch.isprintable())
        raise LorePinError(f"GitHub refused the protection of {branch} ({status}"
                           f"{f': {shown}' if shown else ''})")  # fmt: skip
    status, applied = github.call("GET", url, token, changed=True)
    if status != 200 or not isinstance(applied, dict):
        raise LorePinError(f"the protection of {branch} was sent but could not be read back "
                           f"({status}): check it on GitHub")  # fmt: skip
    if found := plan.differences(body, applied):
        raise LorePinError(f"{name}@{branch} is protected, but differently: {'; '.join(found)}")
    checks = ", ".join((body.get("required_status_checks") or {}).get("contexts", [])) or "none"
    print(f"{name}@{branch} protected as {rules} says (required checks: {checks})")


ns = Collection("repo", protect)
