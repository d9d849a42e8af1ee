"""The migrator's command line where no database is needed: refusals before connecting."""

from __future__ import annotations

import os
import subprocess
import sys

from lorepin_cms.exit_codes import ExitCode

# Nothing listens on port 1 of the loopback: connecting fails at once.
NOWHERE = "postgresql+psycopg://lorepin:x@127.0.0.1:1/lorepin"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "LOREPIN_"))}
    return subprocess.run(
        [sys.executable, "-m", "lorepin_cms.migrator", "--who", "tester", *args],
        env={**environ, "DATABASE_URL": NOWHERE, **(env or {})},
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
