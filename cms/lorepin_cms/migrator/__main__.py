"""The migrator's command line: `python -m lorepin_cms.migrator [options] ACTION`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from lorepin_cms.config import ROOT, database_url
from lorepin_cms.exit_codes import ExitCode
from lorepin_cms.migrator.errors import MigrationError
from lorepin_cms.migrator.runner import Migrator, Options, default_who, one_line


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    options = Options(
        who=args.who or default_who(),
        lock_wait=args.lock_wait,
        lock_timeout=args.lock_timeout,
        statement_timeout=args.statement_timeout,
        retries=args.retries,
        accept_changed=tuple(getattr(args, "accept_changed", ())),
    )
    migrator = Migrator(database_url(), options, migrations_dir=args.migrations_dir)
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
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except DBAPIError as exc:
        print(f"error: database unreachable or failing: {one_line(exc)}", file=sys.stderr)
        return ExitCode.FAILED
    finally:
        migrator.engine.dispose()
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
