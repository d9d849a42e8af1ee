"""The one executor: every external command the toolkit runs goes through `Executor.run`,
and every file a task writes through `Executor.write`.

It echoes a copy-pasteable `+ cmd` line (secrets redacted), honours dry-run, times each
step and turns failures into `CommandFailed`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from lorepin_tasks.errors import CommandFailed, ConfigError, LorePinError

REDACTED = "******"


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def shown(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The command as a shell line: `KEY=value ... argv`, each word quoted."""
    prefix = [f"{k}={shlex.quote(v)}" for k, v in sorted((env or {}).items())]
    return " ".join([*prefix, *(shlex.quote(a) for a in argv)])


class Executor:
    def __init__(
        self,
        *,
        dry_run: bool = False,
        secrets: Iterable[str] = (),
        out: TextIO | None = None,
    ) -> None:
        self.dry_run = dry_run
        self._secrets = {s for s in secrets if s}
        self._out = out or sys.stderr

    def add_secret(self, value: str) -> None:
        if value:
            self._secrets.add(value)

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        return text

    def say(self, message: str) -> None:
        print(self.redact(message), file=self._out, flush=True)

    def run(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        capture: bool = False,
        check: bool = True,
        mutates: bool = True,
        quiet: bool = False,
        timeout: float | None = None,
        stdout_to: Path | None = None,
        capture_stderr: bool = False,
        no_input: bool = False,
        progress: bool = False,
        stdin_text: str | None = None,
    ) -> Result:
        """Run argv with `env` added to the process environment.

        `mutates=False` marks read-only commands (ps, inspect): they still run under
        dry-run, so a dry run can show what it would do given the real state.
        `capture` collects output instead of streaming it to the terminal;
        `capture_stderr` keeps stderr for the error message (and, unless quiet, shows it
        as it comes: a long step's progress);
        `stdout_to` writes stdout to a new file (mode 0600), e.g. a database dump;
        `no_input` gives the command no terminal to ask questions on (Compose would offer
        to recreate a volume whose labels changed: it must decline, never ask);
        `progress` sends what the command prints to stderr, with the toolkit's own
        progress, so stdout carries only results (URLs, JSON); `stdin_text` is fed to the
        command (a config it loads: a dry run shows it below the command).
        """
        line = shown(argv, env) + (f" > {shlex.quote(str(stdout_to))}" if stdout_to else "")
        if self.dry_run and mutates:
            self.say(f"+ {line}")
        elif not quiet:  # the environment prefix is for copy-paste; a live run skips it
            self.say(
                f"+ {shown(argv)}" + (f" > {shlex.quote(str(stdout_to))}" if stdout_to else "")
            )
        if self.dry_run and mutates:
            if stdin_text is not None:
                self.say(f"  (stdin: {self.redact(stdin_text)[:2000]})")
            return Result(tuple(argv), 0, "", "", 0.0)
        if shutil.which(argv[0]) is None:
            raise ConfigError(
                f"'{argv[0]}' is not installed or not on PATH; run scripts/bootstrap.sh"
            )
        started = time.monotonic()
        progress_out = self._progress_fd() if progress and not capture else None
        if capture_stderr and not (capture or quiet or stdout_to or timeout):
            # Long steps show their progress and keep it for the error message.
            code, stderr = self._tee_stderr(argv, env, no_input, progress_out)
            return self._finish(argv, line, code, "", stderr, started, quiet=quiet, check=check)
        sink = None
        if stdout_to is not None:
            try:
                stdout_to.parent.mkdir(parents=True, exist_ok=True)
                sink = open(stdout_to, "xb", opener=lambda p, f: os.open(p, f, 0o600))  # noqa: SIM115
            except FileExistsError:
                raise LorePinError(f"{stdout_to} exists already; it is not overwritten") from None
            except OSError as exc:
                raise LorePinError(f"cannot write {stdout_to}: {exc.strerror}") from None
        try:
            proc = subprocess.run(
                list(argv),
                env={**os.environ, **(env or {})},
                stdout=sink or (subprocess.PIPE if capture else progress_out),
                stderr=subprocess.PIPE if capture or capture_stderr or sink else None,
                text=sink is None,
                check=False,
                timeout=timeout,
                stdin=None
                if stdin_text is not None
                else (subprocess.DEVNULL if capture or sink or no_input else None),
                input=stdin_text if sink is None else None,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandFailed(self.redact(line), -1, f"timed out after {timeout} s") from exc
        finally:
            if sink is not None:
                sink.close()
        stderr = (
            proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
        )
        stdout = proc.stdout if isinstance(proc.stdout, str) else ""
        return self._finish(
            argv, line, proc.returncode, stdout, stderr or "", started, quiet=quiet, check=check
        )

    def pipe(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        read: Callable[[IO[bytes]], object] | None = None,
        write: Callable[[IO[bytes]], object] | None = None,
        check: bool = True,
    ) -> Result:
        """Run argv with its stdout streamed to `read` or its stdin from `write` (bytes: a
        database dump flows through, never whole in memory). Always mutating: a dry run
        prints the command. If `read`/`write` raises, the command is killed and the error
        goes on; a command that stops reading early (BrokenPipe) is judged by its exit code.
        """
        line = shown(argv, env)
        self.say(f"+ {line if self.dry_run else shown(argv)}")
        if self.dry_run:
            return Result(tuple(argv), 0, "", "", 0.0)
        if shutil.which(argv[0]) is None:
            raise ConfigError(
                f"'{argv[0]}' is not installed or not on PATH; run scripts/bootstrap.sh"
            )
        started = time.monotonic()
        with subprocess.Popen(
            list(argv),
            env={**os.environ, **(env or {})},
            stdin=subprocess.PIPE if write else subprocess.DEVNULL,
            stdout=subprocess.PIPE if read else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        ) as proc:
            errors: list[bytes] = []
            drain = threading.Thread(
                target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""),
                daemon=True,
            )
            drain.start()
            try:
                if read and proc.stdout:
                    read(proc.stdout)
                if write and proc.stdin:
                    try:
                        write(proc.stdin)
                    except BrokenPipeError:
                        pass  # it read what it needed (pg_restore -l): its exit code says
                    finally:
                        with suppress(OSError):
                            proc.stdin.close()
            except BaseException:
                proc.kill()
                raise
            code = proc.wait()
            drain.join()
        stderr = b"".join(errors).decode(errors="replace")
        return self._finish(argv, line, code, "", stderr, started, quiet=False, check=check)

    def _progress_fd(self) -> int | None:
        try:
            return self._out.fileno()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation included
            return None

    def _tee_stderr(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None,
        no_input: bool,
        stdout: int | None = None,
    ) -> tuple[int, str]:
        """Run with stderr both shown (redacted) as it comes and kept."""
        kept: list[str] = []
        with subprocess.Popen(
            list(argv),
            env={**os.environ, **(env or {})},
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            stdin=subprocess.DEVNULL if no_input else None,
        ) as proc:
            for chunk in proc.stderr or ():
                kept.append(chunk)
                self._out.write(self.redact(chunk))
                self._out.flush()
        return proc.returncode, "".join(kept)

    def _finish(
        self,
        argv: Sequence[str],
        line: str,
        code: int,
        stdout: str,
        stderr: str,
        started: float,
        *,
        quiet: bool,
        check: bool,
    ) -> Result:
        seconds = time.monotonic() - started
        if not quiet and seconds >= 2:
            self.say(f"  ({seconds:.1f} s)")
        result = Result(tuple(argv), code, stdout, stderr, seconds)
        if check and not result.ok:
            raise CommandFailed(self.redact(line), code, self.redact(result.stderr))
        return result

    def write(self, path: Path, text: str, *, mode: int | None = None) -> None:
        """Write a file, or under dry-run say which file would be written."""
        if self.dry_run:
            self.say(f"# would write {path}")
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if mode is not None:
            path.chmod(mode)
