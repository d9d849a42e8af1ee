"""Errors the toolkit reports to its users: one line, what to do next, an exit code.

Every task ends through `tasks._common.task`, which turns a `LorePinError` into its
message on stderr and its exit code, never a traceback. The classes are the project's one
hierarchy (lorepin_cms/exit_codes.py, shared with the migrator); this module adds what
only the toolkit raises.
"""

from __future__ import annotations

from lorepin_cms.exit_codes import (
    Aborted,
    BadInput,
    Busy,
    ExitCode,
    LorePinError,
    NothingToDo,
    Refused,
)

__all__ = [
    "Aborted",
    "Busy",
    "CommandFailed",
    "ConfigError",
    "ExitCode",
    "LorePinError",
    "NothingToDo",
    "Refused",
    "for_exit_code",
    "last_line",
]

# The toolkit's name for bad input: a flag, a setting, an environment that cannot be used.
ConfigError = BadInput


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
