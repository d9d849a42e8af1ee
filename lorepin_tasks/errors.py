"""Errors the toolkit reports to its users: one line, a hint, an exit code."""

from __future__ import annotations


class LorePinError(Exception):
    """A failure the user can act on. The message is one line saying what to do next."""

    exit_code = 1


class ConfigError(LorePinError):
    """Bad input or settings: unknown environment, invalid flag, missing secret."""

    exit_code = 2


class NothingToDo(LorePinError):
    """The request was valid but there was nothing to act on."""

    exit_code = 3


class Aborted(LorePinError):
    """The user declined a confirmation; nothing was changed."""

    exit_code = 4


class CommandFailed(LorePinError):
    """An external command exited non-zero."""

    def __init__(self, shown: str, returncode: int, output_tail: str = "") -> None:
        lines = output_tail.strip().splitlines()
        self.cause = lines[-1].removeprefix("error: ") if lines else ""
        detail = f": {self.cause}" if self.cause else ""
        super().__init__(f"command failed with exit code {returncode}: {shown}{detail}")
        self.returncode = returncode
