"""Secrets at rest, through the real CLI in a clone of the project: `invoke secrets.*`
with real age keys (pyrage), the files as they would be committed, `nox -s lint`'s check
of secrets/, and `invoke deploy` refusing a secret it cannot decrypt before it changes
anything. Bad input is one line and exit 2, and writes nothing."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.release_helpers import clone_project, invoke_in

WEBHOOK = "https://hooks.example.invalid/T0/B0/secret-part"


class Clone:
    def __init__(self, tmp_path: Path) -> None:
        self.repo = clone_project(tmp_path)
        self.root = Path(self.repo.working_tree_dir or ".")
        self.keys = tmp_path / "keys"
        self.env = {"XDG_STATE_HOME": str(tmp_path / "state"),
                    "XDG_CONFIG_HOME": str(tmp_path / "config")}  # fmt: skip

    def run(self, *args: str, who: str = "alice", stdin: str | None = None,
            ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        env = {**self.env, "LOREPIN_AGE_IDENTITY": str(self.keys / f"{who}.key")}
        if stdin is None:
            return invoke_in(self.repo, *args, env=env)
        return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=self.root,
                              env={**os.environ, **env}, input=stdin, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip

    def keygen(self, who: str) -> str:
        done = self.run("secrets.keygen", who=who)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1]

    def recipients(self, env: str, *keys: str) -> None:
        path = self.root / "invoke.yaml"
        config = yaml.safe_load(path.read_text())
        config["lorepin"]["environments"][env]["secrets"] = {"recipients": list(keys)}
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def release_manifest(self) -> None:
        release = self.root / "dist" / "release" / "v1.0.0.json"
        release.parent.mkdir(parents=True)
        release.write_text(json.dumps({"images": {"cms": "lorepin/cms:1.0.0"},
                                       "git_sha": self.repo.head.commit.hexsha}))  # fmt: skip

    def stored(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in (self.root / "secrets").rglob("*.age"))


@pytest.fixture
def clone(tmp_path: Path) -> Clone:
    made = Clone(tmp_path)
    made.recipients("staging", made.keygen("alice"))
    return made


def test_keygen_makes_a_private_identity_and_never_replaces_one(clone: Clone) -> None:
    key = clone.keys / "alice.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_text()
    again = clone.run("secrets.keygen")
    assert again.returncode == 6 and again.stderr.strip().endswith(
        "exists: an identity is never replaced (it may be the only key)"
    )
    assert key.read_text() == before


def test_a_secret_is_stored_encrypted_and_read_back_only_by_a_recipient(clone: Clone) -> None:
    done = clone.run("secrets.set", "--env", "staging", "--name", "alert_webhook", stdin=WEBHOOK)
    assert done.returncode == 0, done.stderr
    sealed = (clone.root / "secrets/staging/alert_webhook.age").read_text()
    assert sealed.startswith("-----BEGIN AGE ENCRYPTED FILE-----") and "secret-part" not in sealed
    assert WEBHOOK not in done.stdout + done.stderr
    got = clone.run("secrets.get", "--env", "staging", "--name", "alert_webhook")
    assert (got.returncode, got.stdout) == (0, WEBHOOK + "\n")
    listed = clone.run("secrets.list", "--env", "staging", "--json")
    assert json.loads(listed.stdout) == [{"name": "alert_webhook", "in_secrets_dir": "missing",
                                          "file": "secrets/staging/alert_webhook.age"}]  # fmt: skip
    lint = subprocess.run([sys.executable, "scripts/check-secrets.py"], cwd=clone.root,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert lint.returncode == 0, lint.stderr

    clone.keygen("bob")  # not a recipient (yet)
    refused = clone.run("secrets.get", "--env", "staging", "--name", "alert_webhook", who="bob")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.startswith("error: cannot decrypt secrets/staging/alert_webhook.age")
    assert len(refused.stderr.strip().splitlines()) == 1


def test_rotate_encrypts_again_to_the_recipients_as_they_are_now(clone: Clone) -> None:
    alice = (clone.keys / "alice.key").read_text().split("public key: ")[1].split()[0]
    for name in ("alert_webhook", "db_password"):
        stdin = WEBHOOK if name == "alert_webhook" else None
        extra = () if stdin else ("--generate",)
        done = clone.run("secrets.set", "--env", "staging", "--name", name, *extra, stdin=stdin)
        assert done.returncode == 0, done.stderr
    bob = clone.keygen("bob")
    clone.recipients("staging", alice, bob)
    assert clone.run("secrets.get", "--env", "staging", "--name", "db_password",
                     who="bob").returncode == 2  # fmt: skip
    done = clone.run("secrets.rotate", "--env", "staging")
    assert done.returncode == 0, done.stderr
    assert "2 secret(s) of 'staging' encrypted again to 2 recipient(s)" in done.stdout
    got = clone.run("secrets.get", "--env", "staging", "--name", "alert_webhook", who="bob")
    assert got.stdout == WEBHOOK + "\n"
    # Alice leaves: bob rotates to himself alone; her key opens nothing any more.
    clone.recipients("staging", bob)
    assert clone.run("secrets.rotate", "--env", "staging", who="bob").returncode == 0
    gone = clone.run("secrets.get", "--env", "staging", "--name", "db_password")
    assert gone.returncode == 2 and "cannot decrypt" in gone.stderr


@pytest.mark.parametrize(
    ("args", "stdin", "error"),
    [
        (("--env", "staging", "--name", "api_key"), "x", "error: unknown secret 'api_key' "),
        (("--env", "production", "--name", "db_password"), "x",
         "error: environment 'production' has no secrets.recipients in invoke.yaml"),
        (("--env", "staging", "--name", "db_password"), "", "error: a secret is one line"),
        (("--env", "staging", "--name", "db_password"), "a\nb", "error: a secret is one line"),
        (("--env", "nowhere", "--name", "db_password"), "x", "error: unknown environment"),
        (("--name", "db_password"), "x", "error: say which environment"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_stores_nothing(
    clone: Clone, args: tuple[str, ...], stdin: str, error: str
) -> None:
    done = clone.run("secrets.set", *args, stdin=stdin)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(error) and len(done.stderr.strip().splitlines()) == 1
    assert clone.stored() == []


def test_a_plain_file_under_secrets_fails_the_lint(clone: Clone) -> None:
    plain = clone.root / "secrets" / "staging" / "db_password.age"
    plain.parent.mkdir(parents=True)
    plain.write_text("hunter2\n")  # named like a secret, but not encrypted
    lint = subprocess.run([sys.executable, "scripts/check-secrets.py"], cwd=clone.root,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert lint.returncode == 1
    assert lint.stderr.strip() == (
        "error: secrets/staging/db_password.age: not age-encrypted: a plain-text secret must "
        "not be committed (store it with `invoke secrets.set`)"
    )


def test_deploy_refuses_a_secret_encrypted_to_another_key_before_any_change(
    clone: Clone, tmp_path: Path
) -> None:
    """The stored secret is Bob's: Alice's deploy stops with one line before it locks,
    writes a secret or starts anything."""
    bob = clone.keygen("bob")
    clone.recipients("staging", bob)
    done = clone.run("secrets.set", "--env", "staging", "--name", "db_password", "--generate",
                     who="bob")  # fmt: skip
    assert done.returncode == 0, done.stderr
    clone.release_manifest()  # deploy's first check; the images are never reached
    deploy = clone.run("deploy", "--env", "staging", "--version", "1.0.0", "--yes")
    assert deploy.returncode == 2, deploy.stdout + deploy.stderr
    assert (
        deploy.stderr.startswith("error: cannot decrypt secrets/staging/db_password.age with ")
        and len(deploy.stderr.strip().splitlines()) == 1
    )
    assert not (tmp_path / "state").exists()  # no lock, no secrets_dir, no history


def test_deploy_refuses_a_stored_database_password_unlike_the_one_in_place(
    clone: Clone, tmp_path: Path
) -> None:
    """The database was made with the password in the secrets_dir: a different stored one
    would lock the CMS out, so the deploy stops before it writes it (exit 6)."""
    done = clone.run("secrets.set", "--env", "staging", "--name", "db_password", "--generate")
    assert done.returncode == 0, done.stderr
    placed = tmp_path / "staging-secrets"
    placed.mkdir(mode=0o700)
    (placed / "db_password").write_text("the-one-the-database-has\n")
    clone.release_manifest()  # deploy's first check; the images are never reached
    clone.env["LOREPIN_SECRETS_DIR"] = str(placed)
    deploy = clone.run("deploy", "--env", "staging", "--version", "1.0.0", "--yes")
    assert deploy.returncode == 6, deploy.stdout + deploy.stderr
    assert deploy.stderr.startswith(
        f"error: secrets/staging/db_password.age differs from {placed / 'db_password'}, the "
        "value the environment's data was made with"
    )
    assert (placed / "db_password").read_text() == "the-one-the-database-has\n"
    listed = clone.run("secrets.list", "--env", "staging", "--json")
    assert json.loads(listed.stdout)[0]["in_secrets_dir"] == "differs"


def test_a_rollback_without_the_cms_role_password_says_a_deploy_makes_it(
    clone: Clone, tmp_path: Path
) -> None:
    """An environment deployed before the CMS had its own role: the rollback refuses before
    anything, and names what makes the missing secret."""
    placed = tmp_path / "staging-secrets"
    placed.mkdir(mode=0o700)
    (placed / "db_password").write_text("the-one-the-database-has\n")
    clone.env["LOREPIN_SECRETS_DIR"] = str(placed)
    refused = clone.run("rollback", "--env", "staging", "--yes")
    assert (refused.returncode, refused.stderr.count("\n")) == (2, 1), refused.stderr
    assert refused.stderr == (
        f"error: the secret {placed / 'cms_db_password'} of 'staging' is missing: a deploy "
        "makes it, with its database role\n"
    )
    assert sorted(p.name for p in placed.iterdir()) == ["db_password"]

    # A secret that is there but unusable is one line too, naming what to do.
    (placed / "cms_db_password").mkdir()
    (placed / "monitor_db_password").write_text("one\ntwo\n")
    refused = clone.run("rollback", "--env", "staging", "--yes")
    assert (refused.returncode, refused.stderr) == (2, (
        f"error: the secret {placed / 'cms_db_password'} is a directory, not a file: delete "
        "it, and a deploy makes a new one\n"))  # fmt: skip
    (placed / "cms_db_password").rmdir()
    (placed / "db_password").write_bytes(b"\xff\xfe\n")
    refused = clone.run("rollback", "--env", "staging", "--yes")
    unreadable = f"error: the secret {placed / 'db_password'} does not hold text: restore it\n"
    assert (refused.returncode, refused.stderr) == (2, unreadable)


@pytest.mark.parametrize(
    ("stdin", "error"),
    [
        (b"\xff\xfe\x00bin", "error: a secret is one line of UTF-8 text"),
        (b"x\x00y", "error: a secret is one line of text, not empty, without control"),
        (b"a\rb", "error: a secret is one line of text, not empty, without control"),
        (b"x" * 5000, "error: a secret is at most 4096 characters"),
        (b"x" * 40000, "error: a secret is at most 4096 characters"),
    ],
)
def test_a_value_that_is_not_one_short_line_of_text_is_refused(
    clone: Clone, stdin: bytes, error: str
) -> None:
    env = {**os.environ, **clone.env, "LOREPIN_AGE_IDENTITY": str(clone.keys / "alice.key")}
    done = subprocess.run([sys.executable, "-m", "invoke", "secrets.set", "--env", "staging",
                           "--name", "backup_webhook"], cwd=clone.root, env=env, input=stdin,
                          capture_output=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().startswith(error) and len(done.stderr.splitlines()) == 1
    assert clone.stored() == []


def test_a_mistyped_recipient_a_linked_secret_and_a_bad_identity_path_are_one_line(
    clone: Clone, tmp_path: Path
) -> None:
    alice = (clone.keys / "alice.key").read_text().split("public key: ")[1].split()[0]
    clone.recipients("staging", alice[:-1] + ("q" if alice[-1] != "q" else "p"))  # checksum off
    done = clone.run("secrets.set", "--env", "staging", "--name", "db_password", "--generate")
    assert done.returncode == 2 and done.stderr.startswith(
        "error: environment 'staging': secrets.recipients has age1"), done.stderr  # fmt: skip
    clone.recipients("staging", alice)
    (clone.root / "secrets" / "staging").mkdir(parents=True)
    (clone.root / "secrets" / "staging" / "db_password.age").symlink_to("/nonexistent")
    got = clone.run("secrets.get", "--env", "staging", "--name", "db_password")
    assert got.returncode == 2 and got.stderr.startswith(
        "error: secrets/staging/db_password.age is not a file (a link or a directory)"
    )
    lint = subprocess.run([sys.executable, "scripts/check-secrets.py"], cwd=clone.root,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert (lint.returncode, lint.stderr.strip()) == (
        1,
        "error: secrets/staging/db_password.age: a symbolic link: store the file itself",
    )
    odd = {**clone.env, "LOREPIN_AGE_IDENTITY": "~nosuchuser-lorepin/k"}
    done = invoke_in(clone.repo, "secrets.list", "--env", "staging", env=odd)
    assert done.returncode == 2 and done.stderr.strip() == (
        "error: LOREPIN_AGE_IDENTITY: '~nosuchuser-lorepin/k' names no known home directory"
    )
    for out in (str(tmp_path / "afile" / "k"), "/proc/lorepin-k"):
        (tmp_path / "afile").touch()
        made = clone.run("secrets.keygen", "--out", out)
        assert made.returncode == 2 and made.stderr.startswith("error: cannot write the identity")


def test_a_killed_write_leaves_no_file_lint_or_git_would_take(clone: Clone) -> None:
    """A write is `.<NAME>.age.part`, then a rename: one a kill left behind is ignored by
    git and by the lint, and the secret itself is whole (the old value or the new)."""
    done = clone.run("secrets.set", "--env", "staging", "--name", "db_password", "--generate")
    assert done.returncode == 0, done.stderr
    left = clone.root / "secrets" / "staging" / ".db_password.age.part"
    left.write_bytes(b"-----BEGIN AGE ENCRYPTED FILE-----\nYWdl")  # as a kill -9 leaves it
    lint = subprocess.run([sys.executable, "scripts/check-secrets.py"], cwd=clone.root,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert lint.returncode == 0, lint.stderr
    assert clone.repo.git.status("--porcelain", "--untracked-files=all", "secrets") == (
        "?? secrets/staging/db_password.age"
    )
    assert clone.run("secrets.get", "--env", "staging", "--name", "db_password").returncode == 0


def test_a_rotation_cut_short_stops_what_would_use_the_password_until_it_is_finished(
    clone: Clone, tmp_path: Path
) -> None:
    """`db.rotate-password` checks before it changes anything (the stored copy's recipients,
    a running database); a run killed after the role changed leaves the new value aside,
    and every task that would use the old one refuses until a run finishes it."""
    placed = tmp_path / "staging-secrets"
    placed.mkdir(mode=0o700)
    for name in ("db_password", "cms_db_password", "monitor_db_password"):
        (placed / name).write_text(f"{name}-value\n")
    clone.env["LOREPIN_SECRETS_DIR"] = str(placed)
    done = clone.run("secrets.set", "--env", "staging", "--name", "db_password", "--generate")
    assert done.returncode == 0, done.stderr
    stored = (clone.root / "secrets" / "staging" / "db_password.age").read_bytes()

    def unchanged() -> None:
        assert {p.name: p.read_text() for p in placed.iterdir() if not p.name.startswith(".")} == {
            n: f"{n}-value\n" for n in ("db_password", "cms_db_password", "monitor_db_password")
        }
        assert (clone.root / "secrets" / "staging" / "db_password.age").read_bytes() == stored

    alice = (clone.keys / "alice.key").read_text().split("public key: ")[1].split()[0]
    clone.recipients("staging", alice[:-1] + ("q" if alice[-1] != "q" else "p"))
    refused = clone.run("db.rotate-password", "--env", "staging", "--yes")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "secrets.recipients has age1" in refused.stderr
    clone.recipients("staging", alice)
    refused = clone.run("db.rotate-password", "--env", "staging", "--yes")
    assert (refused.returncode, refused.stderr) == (1, (
        "error: the database of 'staging' is not running: the password is changed in it, "
        "so start it first\n"))  # fmt: skip
    bad = clone.run("db.rotate-password", "--env", "Staging!", "--yes")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    unchanged()

    (placed / ".db_password.next").write_text("the-new-one\n")  # as a killed run leaves it
    clone.release_manifest()
    for args in (
        ("deploy", "--env", "staging", "--version", "1.0.0", "--yes"),
        ("rollback", "--env", "staging", "--yes"),
        ("db.current", "--env", "staging"),
        ("down", "--env", "staging"),  # the database could not start again
    ):
        refused = clone.run(*args)
        assert (refused.returncode, refused.stderr) == (6, (
            "error: a rotation of the database password of 'staging' did not finish: finish "
            "it first (`invoke db.rotate-password --env staging`)\n")), args  # fmt: skip
    unchanged()
    assert (placed / ".db_password.next").read_text() == "the-new-one\n"
    (placed / ".db_password.next").write_bytes(b"\xff\x00damaged")  # a fresh value replaces it,
    refused = clone.run("db.rotate-password", "--env", "staging", "--yes")  # but not yet
    assert refused.returncode == 1 and refused.stderr.endswith("so start it first\n")
    assert (placed / ".db_password.next").read_bytes() == b"\xff\x00damaged"
    unchanged()
    # Without its data the rotation is moot: the next database starts with the file's.
    gone = clone.run("down", "--env", "staging", "--volumes", "--yes")
    assert gone.returncode == 0, gone.stderr
    assert not (placed / ".db_password.next").exists()
    unchanged()
