"""The migrator's command line where no database is needed: refusals before connecting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorepin_cms.exit_codes import ExitCode
from lorepin_cms.migrator import Migrator
from lorepin_cms.migrator.__main__ import main

# Nothing listens on port 1 of the loopback: connecting fails at once.
NOWHERE = "postgresql+psycopg://lorepin:x@127.0.0.1:1/lorepin"


def cli(
    *args: str, url: str | None = NOWHERE, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "LOREPIN_"))}
    return subprocess.run(
        [sys.executable, "-m", "lorepin_cms.migrator", "--who", "tester", *args],
        env={**environ, **({"DATABASE_URL": url} if url else {}), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_an_unknown_revision_is_bad_input_before_connecting() -> None:
    proc = cli("upgrade", "--to", "nope")
    assert proc.returncode == ExitCode.BAD_INPUT
    assert one_error_line(proc).startswith("error: unknown revision 'nope'")


def test_an_unreachable_database_is_a_failure() -> None:
    proc = cli("upgrade")
    assert proc.returncode == ExitCode.FAILED
    assert one_error_line(proc).startswith("error: database unreachable or failing: ")


def test_an_unreadable_password_file_is_bad_input(tmp_path: Path) -> None:
    missing = tmp_path / "db_password"
    proc = cli("upgrade", url=None, env={"LOREPIN_DB_PASSWORD_FILE": str(missing)})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert one_error_line(proc) == (
        f"error: cannot read LOREPIN_DB_PASSWORD_FILE {missing}: No such file or directory"
    )


def test_a_malformed_database_url_is_bad_input() -> None:
    proc = cli("current", url="not a url")
    assert proc.returncode == ExitCode.BAD_INPUT
    assert one_error_line(proc).startswith("error: DATABASE_URL: ")
    assert "not a url" not in proc.stderr  # a URL may hold a password: never echo it


def test_a_port_that_is_not_a_number_is_bad_input() -> None:
    proc = cli("current", url=None, env={"LOREPIN_DB_PORT": "five"})
    assert proc.returncode == ExitCode.BAD_INPUT
    assert one_error_line(proc) == "error: LOREPIN_DB_PORT: not a port number: 'five'"


def test_a_missing_migrations_dir_is_bad_input(tmp_path: Path) -> None:
    proc = cli("--migrations-dir", str(tmp_path / "nope"), "upgrade")
    assert proc.returncode == ExitCode.BAD_INPUT
    assert one_error_line(proc).startswith(f"error: --migrations-dir {tmp_path / 'nope'}: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["downgrade"], "error: the following arguments are required: --to"),
        (["sideways"], "error: argument action: invalid choice: 'sideways'"),
        (["--lock-wait", "soon", "upgrade"], "error: argument --lock-wait: invalid float value"),
    ],
)
def test_bad_arguments_are_one_line_bad_input(args: list[str], message: str) -> None:
    proc = cli(*args)
    assert proc.returncode == ExitCode.BAD_INPUT
    assert one_error_line(proc).startswith(message)


def test_an_unexpected_failure_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(self: Migrator, target: str = "head") -> str | None:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setenv("DATABASE_URL", NOWHERE)
    monkeypatch.setattr(Migrator, "upgrade", broken)
    assert main(["--who", "tester", "upgrade"]) == ExitCode.FAILED
    assert capsys.readouterr().err == "error: unexpected RuntimeError: boom\n"


def test_an_interrupted_run_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: Migrator, target: str = "head") -> str | None:
        raise KeyboardInterrupt

    monkeypatch.setenv("DATABASE_URL", NOWHERE)
    monkeypatch.setattr(Migrator, "upgrade", interrupted)
    assert main(["--who", "tester", "upgrade"]) == ExitCode.INTERRUPTED
    assert capsys.readouterr().err.startswith("error: interrupted; ")
