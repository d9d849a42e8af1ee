"""The migrator's command line: `python -m lorepin_cms.migrator [options] ACTION`.

Every outcome is an exit code from lorepin_cms.exit_codes; every failure is one line on
stderr starting `error: ` (the toolkit shows that line as the cause), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from alembic.util import CommandError
from sqlalchemy.exc import ArgumentError, DBAPIError

from lorepin_cms.config import ROOT, ConfigError, database_url
from lorepin_cms.exit_codes import ExitCode
from lorepin_cms.migrator.errors import BadInput, MigrationError
from lorepin_cms.migrator.runner import Migrator, Options, default_who, one_line


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One `error:` line and BAD_INPUT like every other refusal, not argparse's usage block.
        raise BadInput(f"{message} (see --help)")


def parser() -> Parser:
    parser = Parser(
        prog="python -m lorepin_cms.migrator",
        description="Applies the CMS's Alembic migrations so they cannot hurt a live database.",
    )
    parser.add_argument("--who", default=None, help="who runs this (for the log)")
    parser.add_argument(
        "--lock-wait", type=float, default=60.0, help="seconds to wait for the lock"
    )
    parser.add_argument("--lock-timeout", default="5s")
    parser.add_argument("--statement-timeout", default="15min")
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--migrations-dir", type=Path, default=ROOT / "migrations")
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("upgrade")
    up.add_argument("--to", default="head")
    up.add_argument("--accept-changed", action="append", default=[])
    down = sub.add_parser("downgrade")
    down.add_argument("--to", required=True)
    sub.add_parser("current")
    hist = sub.add_parser("history")
    hist.add_argument("--limit", type=int, default=50)
    return parser


def password_file(variable: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The password in the file the variable names (unset: None), for a role the migrator
    keeps: LOREPIN_CMS_DB_PASSWORD_FILE, LOREPIN_MONITOR_DB_PASSWORD_FILE."""
    path = environ.get(variable)
    if not path:
        return None
    try:
        password = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {variable} {path}: {exc}") from None
    if not password or "\n" in password:
        raise BadInput(f"{variable} {path} holds no one-line password")
    return password


def open_migrator(args: argparse.Namespace) -> Migrator:
    """The migrator the arguments and the environment describe, or BadInput."""
    options = Options(
        who=args.who or default_who(),
        lock_wait=args.lock_wait,
        lock_timeout=args.lock_timeout,
        statement_timeout=args.statement_timeout,
        retries=args.retries,
        accept_changed=tuple(getattr(args, "accept_changed", ())),
        cms_password=password_file("LOREPIN_CMS_DB_PASSWORD_FILE"),
        monitor_password=password_file("LOREPIN_MONITOR_DB_PASSWORD_FILE"),
    )
    try:
        return Migrator(database_url(), options, migrations_dir=args.migrations_dir)
    except ConfigError as exc:
        raise BadInput(str(exc)) from None
    except ArgumentError as exc:  # e.g. a driver that is not installed
        raise BadInput(f"DATABASE_URL: {one_line(exc)}") from None
    except CommandError as exc:
        raise BadInput(f"--migrations-dir {args.migrations_dir}: {one_line(exc)}") from None


def run(argv: Sequence[str] | None) -> None:
    args = parser().parse_args(argv)
    migrator = open_migrator(args)
    try:
        if args.action == "upgrade":
            migrator.upgrade(args.to)
        elif args.action == "downgrade":
            migrator.downgrade(args.to)
        elif args.action == "current":
            with migrator.engine.connect() as conn:
                current = migrator.current(conn)
            heads = migrator.script.get_heads()
            print(json.dumps({"current": current, "heads": heads, "at_head": current in heads}))
        else:
            print(json.dumps(migrator.history(args.limit)))
    finally:
        migrator.engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(argv)
    except MigrationError as exc:
        return fail(str(exc), exc.exit_code)
    except DBAPIError as exc:
        return fail(f"database unreachable or failing: {one_line(exc)}", ExitCode.FAILED)
    except KeyboardInterrupt:
        return fail(
            "interrupted; a revision in progress was rolled back: check with `current`",
            ExitCode.INTERRUPTED,
        )
    except Exception as exc:  # a bug of ours: still one line, so the toolkit can show it
        return fail(f"unexpected {type(exc).__name__}: {one_line(exc)}", ExitCode.FAILED)
    return ExitCode.OK


def fail(message: str, code: ExitCode) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
