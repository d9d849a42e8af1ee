"""A psql session inside an environment's database container, held open by the toolkit.

It reaches the database the way every other command reaches the engine (`docker compose
exec`, so a remote host over DOCKER_HOST/ssh works too) and lives exactly as long as
the process that opened it: when the toolkit exits, however it exits (`kill -9`
included), psql's stdin closes, the session ends and PostgreSQL releases its session
advisory locks. That is what makes the deploy lock impossible to leave behind.
"""

from __future__ import annotations

import os
import select
import shlex
import subprocess
import time
from collections.abc import Sequence
from contextlib import suppress
from types import TracebackType

from lorepin_tasks.errors import LorePinError, last_line
from lorepin_tasks.runtime.executor import Executor

END = "__lorepin_end__"


class Session:
    """Statements in, rows out (tab-separated, as text)."""

    def __init__(
        self,
        run: Executor,
        argv: Sequence[str],
        env: dict[str, str],
        what: str,
        *,
        quiet: bool = False,
    ) -> None:
        self.what = what
        self.run = run
        if not quiet:
            run.say(f"+ {shlex.join(argv)}")
        self.proc = subprocess.Popen(
            list(argv),
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # Ctrl-C interrupts the task, not its session: the task still records why.
            # The session ends with the task all the same (its stdin closes).
            start_new_session=True,
        )
        self.pending = b""  # read from psql, not yet returned (select sees only the pipe)

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            with suppress(OSError):
                if self.proc.stdin is not None:
                    self.proc.stdin.close()  # psql quits; the session and its locks end
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def query(self, sql: str, *, timeout: float = 60) -> list[list[str]]:
        """Run statements; the rows of their output (the last statement's, usually)."""
        if self.proc.stdin is None or self.proc.stdout is None or self.proc.poll() is not None:
            raise LorePinError(f"the {self.what} session is closed: {self._stderr()}")
        try:
            self.proc.stdin.write(f"{sql.rstrip().rstrip(';')};\n\\echo {END}\n".encode())
            self.proc.stdin.flush()
        except OSError:
            raise LorePinError(f"the {self.what} session ended: {self._stderr()}") from None
        rows: list[list[str]] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline, timeout)
            if line == END:
                return rows
            if line:
                rows.append(line.split("\t"))

    def _line(self, deadline: float, timeout: float) -> str:
        fd = self.proc.stdout.fileno() if self.proc.stdout else -1
        while b"\n" not in self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LorePinError(f"the {self.what} did not answer within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # psql stopped (ON_ERROR_STOP): the statement failed
                raise LorePinError(f"the {self.what} refused a statement: {self._stderr()}")
            self.pending += chunk
        line, _, self.pending = self.pending.partition(b"\n")
        return line.decode(errors="replace")

    def scalar(self, sql: str) -> str | None:
        rows = self.query(sql)
        return rows[-1][0] if rows and rows[-1] else None

    def _stderr(self) -> str:
        self.close()
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        said = self.run.redact(last_line(err).removeprefix("psql:<stdin>:"))
        return said or f"it ended (exit code {self.proc.poll()}) with no message"


def literal(value: str | None) -> str:
    """A SQL string literal (psql has no bind parameters on its stdin)."""
    if value is None:
        return "NULL"
    return "'" + value.replace("'", "''") + "'"
