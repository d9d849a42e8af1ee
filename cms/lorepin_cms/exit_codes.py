"""The one exit-code table of the LorePin toolkit (`invoke ...`) and the migrator.

It lives in the CMS package because the migrator ships in the CMS image without the
toolkit; the toolkit's errors (lorepin_tasks/errors.py) take their codes from here, and a
one-off migrator's exit code passes through `invoke db.*` unchanged. The README's
"Exit codes" table documents it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # an operation failed (a command, a service, a check): the message says why
    BAD_INPUT = 2  # bad input or settings: refused before anything changed
    NOTHING_TO_DO = 3  # valid, and there was nothing to do
    ABORTED = 4  # a confirmation was declined: nothing changed
    BUSY = 5  # another run holds the lock (migration, deploy, environment): try again later
    REFUSED = 6  # refused for safety: the state is not what it must be (e.g. an edited revision)
    INTERRUPTED = 130  # Ctrl-C
