"""Confirmation of destructive steps."""

from __future__ import annotations

import os
import sys

from lorepin_tasks.errors import Aborted, ConfigError


def confirm(question: str, *, yes: bool) -> None:
    """Return when the user agreed (or `--yes`, or CI); raise otherwise. Never guesses."""
    if yes or os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return
    if not sys.stdin.isatty():
        raise ConfigError(f"{question} Needs confirmation and no terminal is attached: pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise Aborted("aborted; nothing was changed")
