"""Errors the toolkit reports to its users: one line, what to do next, an exit code.

Every task ends through `tasks._common.task`, which turns a `LorePinError` into its
message on stderr and its exit code, never a traceback. The codes are the project's one
table (lorepin_cms/exit_codes.py, documented in the README), shared with the migrator.
"""

from __future__ import annotations

from lorepin_cms.exit_codes import ExitCode


class LorePinError(Exception):
    """A failure the user can act on. The message is one line saying what to do next."""

    exit_code = ExitCode.FAILED


class ConfigError(LorePinError):
    """Bad input or settings: unknown environment, invalid flag, missing secret."""

    exit_code = ExitCode.BAD_INPUT


class NothingToDo(LorePinError):
    """The request was valid but there was nothing to act on."""

    exit_code = ExitCode.NOTHING_TO_DO


class Aborted(LorePinError):
    """The user declined a confirmation; nothing was changed."""

    exit_code = ExitCode.ABORTED


class Busy(LorePinError):
    """Another run holds the lock of what this one would change."""

    exit_code = ExitCode.BUSY


class Refused(LorePinError):
    """Refused for safety: the state is not what this step needs (e.g. another's env)."""

    exit_code = ExitCode.REFUSED


class CommandFailed(LorePinError):
    """An external command exited non-zero."""

    def __init__(self, shown: str, returncode: int, output_tail: str = "") -> None:
        self.cause = last_line(output_tail).removeprefix("error: ")
        detail = f": {self.cause}" if self.cause else ""
        super().__init__(f"command failed with exit code {returncode}: {shown}{detail}")
        self.returncode = returncode


_BY_CODE: dict[int, type[LorePinError]] = {
    cls.exit_code: cls for cls in (ConfigError, NothingToDo, Aborted, Busy, Refused)
}


def for_exit_code(code: int, message: str) -> LorePinError:
    """The error of the table's `code`: a one-off migrator's exit code passes through."""
    return _BY_CODE.get(code, LorePinError)(message)


def last_line(text: str) -> str:
    """The last non-empty line of a command's output: usually the one that says why."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
