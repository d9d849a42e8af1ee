"""The scan's credential search over a real git history: a Slack webhook committed and
removed again is still found (where it was, never its value); an allowed hash is not."""

from __future__ import annotations

from pathlib import Path

import git

from lorepin_tasks.plans import security as plan
from lorepin_tasks.runtime.security_scan import history_secrets

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
