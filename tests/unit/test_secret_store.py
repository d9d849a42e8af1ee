"""What makes a file under secrets/ wrong (nox -s lint's check), and secret names."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import secret_store as store

SEALED = "-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n-----END AGE ENCRYPTED FILE-----\n"


def test_only_age_files_of_known_secrets_in_env_folders_pass(tmp_path: Path) -> None:
    files = {
        "secrets/README.md": "# plain, and allowed",
        "secrets/staging/db_password.age": SEALED,
        "secrets/staging/backup_cipher.age": "age-encryption.org/v1\n-> X25519 abc\n",
        "secrets/staging/alert_webhook.age": "https://hooks.example.invalid/x\n",
        "secrets/staging/api_key.age": SEALED,
        "secrets/db_password.age": SEALED,
        "secrets/Staging/db_password.age": SEALED,
        "secrets/production/.env": "DB_PASSWORD=x\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert store.problems(tmp_path) == [
        "secrets/Staging/db_password.age: not secrets/<env>/<NAME>.age",
        "secrets/db_password.age: not secrets/<env>/<NAME>.age",
        "secrets/production/.env: not age-encrypted: a plain-text secret must not be "
        "committed (store it with `invoke secrets.set`)",
        "secrets/staging/alert_webhook.age: not age-encrypted: a plain-text secret must not "
        "be committed (store it with `invoke secrets.set`)",
        "secrets/staging/api_key.age: unknown secret 'api_key' (db_password, cms_db_password, "
        "monitor_db_password, backup_cipher, backup_webhook, alert_webhook, monitoring_password)",
    ]
    # What a deploy would place: the known names (the lint names the rest).
    assert store.stored(tmp_path, "staging") == ["alert_webhook", "backup_cipher", "db_password"]
    assert store.problems(tmp_path / "nowhere") == []


@pytest.mark.parametrize("bad", ["", "DB_PASSWORD", "../db_password", "db_password.age"])
def test_a_name_that_is_not_a_secret_of_the_toolkit_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^unknown secret "):
        store.path(Path("/r"), "staging", bad)
