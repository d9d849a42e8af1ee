"""The one exit-code table of the LorePin toolkit (`invoke ...`) and the migrator, and the
one hierarchy of errors that carry its codes.

It lives in the CMS package because the migrator ships in the CMS image without the
toolkit: the toolkit's errors (lorepin_tasks/errors.py) and the migrator's
(lorepin_cms/migrator/errors.py) are these classes and their subclasses, and a one-off
migrator's exit code passes through `invoke db.*` unchanged. The README's "Exit codes"
table documents it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # an operation failed (a command, a service, a check): the message says why
    BAD_INPUT = 2  # bad input or settings: refused before anything changed
    NOTHING_TO_DO = 3  # valid, and there was nothing to do
    ABORTED = 4  # a confirmation was declined: nothing changed
    BUSY = 5  # another run holds the lock (migration, deploy, environment): try again later
    REFUSED = 6  # refused for safety: the state is not what it must be (e.g. an edited revision)
    INTERRUPTED = 130  # Ctrl-C


class LorePinError(Exception):
    """A failure the user can act on. The message is one line saying what to do next."""

    exit_code: ClassVar[ExitCode] = ExitCode.FAILED


class BadInput(LorePinError):
    """Bad input or settings: refused before anything changed."""

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
    """Refused for safety: the state is not what this step needs."""

    exit_code = ExitCode.REFUSED
