"""`db.check`: proves the migration history is safe before it reaches a real database.

The runtime half of the task: Alembic and SQLAlchemy against a throwaway PostgreSQL,
and squawk through the executor (argv from `plans.db`).

1. exactly one head;
2. the offline SQL of every revision passes the migration linter (squawk), except rules
   a revision acknowledges with a written reason (`squawk_acknowledged = {rule: why}`);
3. on a throwaway PostgreSQL: every revision upgrades one step at a time, then downgrades
   one step at a time, each downgrade restoring the schema exactly as it was; then the
   whole history upgrades again and the result must equal the CMS's models.
   A revision that declares `irreversible = "why"` is reported, and its downgrade not run.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, MetaData, create_engine, inspect, text

from lorepin_cms.migrator import alembic_config
from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import db as plan
from lorepin_tasks.runtime.executor import Executor

ALEMBIC_BOOKKEEPING = re.compile(
    r"^(CREATE TABLE alembic_version \(.*?\);"
    r"|(INSERT INTO|UPDATE|DELETE FROM) alembic_version\b.*?;)$",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Finding:
    revision: str | None
    problem: str
    error: bool = True

    def __str__(self) -> str:
        where = f"revision {self.revision}" if self.revision else "history"
        return f"{'FAIL' if self.error else 'note'}: {where}: {self.problem}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(f.error for f in self.findings)

    def add(self, revision: str | None, problem: str, *, error: bool = True) -> None:
        self.findings.append(Finding(revision, problem, error))


def ordered(script: ScriptDirectory) -> list[Script]:
    return list(reversed(list(script.walk_revisions())))


def check_heads(script: ScriptDirectory, report: Report) -> bool:
    heads = script.get_heads()
    report.checked.append("one head")
    if len(heads) > 1:
        names = " ".join(sorted(heads))
        report.add(
            None,
            f"{len(heads)} heads ({', '.join(sorted(heads))}): merge them with "
            f"`alembic merge -m 'merge heads' {names}`",
        )
        return False
    return True


# -- linting -------------------------------------------------------------------------


def offline_sql(migrations_dir: Path, rev: Script) -> str:
    cfg = alembic_config(migrations_dir)
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    down = rev.down_revision
    span = f"{down}:{rev.revision}" if isinstance(down, str) else rev.revision
    command.upgrade(cfg, span, sql=True)
    return ALEMBIC_BOOKKEEPING.sub("", buffer.getvalue())


def squawk_binary() -> str:
    # The venv's scripts dir first: the squawk-cli package puts its binary there.
    found = shutil.which("squawk", path=sysconfig.get_path("scripts")) or shutil.which("squawk")
    if found is None:
        raise ConfigError("squawk is not installed (the squawk-cli package); run bootstrap")
    return found


def lint(
    run: Executor, migrations_dir: Path, script: ScriptDirectory, report: Report, workdir: Path
) -> None:
    report.checked.append("squawk lint of every revision's SQL")
    for rev in ordered(script):
        acknowledged: dict[str, str] = getattr(rev.module, "squawk_acknowledged", {}) or {}
        for rule, why in acknowledged.items():
            if not str(why).strip():
                report.add(rev.revision, f"acknowledges squawk rule {rule} without a reason")
        path = workdir / f"{rev.revision}.sql"
        path.write_text(offline_sql(migrations_dir, rev))
        proc = run.run(
            plan.squawk(squawk_binary(), path), capture=True, check=False, mutates=False, quiet=True
        )
        try:
            violations: list[dict[str, Any]] = json.loads(proc.stdout or "[]")
        except ValueError:
            report.add(rev.revision, f"squawk could not lint it: {proc.stderr.strip()[:200]}")
            continue
        for v in violations:
            rule = v.get("rule_name", "?")
            if rule in acknowledged:
                continue
            lines = path.read_text().splitlines()
            statement = lines[min(int(v.get("line", 0)), len(lines) - 1)].strip()  # 0-based
            report.add(
                rev.revision,
                f"squawk {rule}: {v.get('message', '').strip()} ({statement[:80]}) "
                f"- fix it, or acknowledge it in the revision: squawk_acknowledged = "
                f"{{'{rule}': 'why it is safe'}}",
            )


# -- round trip on a real database ---------------------------------------------------


def snapshot(conn: Connection) -> dict[str, Any]:
    """The schema as comparable data: tables, columns, keys, indexes, checks, triggers."""
    insp = inspect(conn)
    tables: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        if name == "alembic_version":
            continue
        tables[name] = {
            "columns": {
                c["name"]: (str(c["type"]), c["nullable"], str(c.get("default")))
                for c in insp.get_columns(name)
            },
            "pk": insp.get_pk_constraint(name).get("constrained_columns"),
            "fks": sorted(str(fk) for fk in insp.get_foreign_keys(name)),
            "indexes": sorted(
                (
                    i["name"],
                    tuple(map(str, i["column_names"])),
                    i["unique"],
                    str(i.get("dialect_options", {})),
                )
                for i in insp.get_indexes(name)
            ),
            "checks": sorted((c["name"], c["sqltext"]) for c in insp.get_check_constraints(name)),
            "uniques": sorted(str(u) for u in insp.get_unique_constraints(name)),
        }
    routines = (
        conn.execute(
            text(
                "SELECT p.proname || ':' || md5(p.prosrc) FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'public' ORDER BY 1"
            )
        )
        .scalars()
        .all()
    )
    triggers = (
        conn.execute(
            text(
                "SELECT tgrelid::regclass || ':' || tgname FROM pg_trigger WHERE NOT tgisinternal "
                "ORDER BY 1"
            )
        )
        .scalars()
        .all()
    )
    return {"tables": tables, "routines": list(routines), "triggers": list(triggers)}


def describe_difference(before: dict[str, Any], after: dict[str, Any]) -> str:
    problems = []
    for key in ("routines", "triggers"):
        extra = sorted(set(after[key]) - set(before[key]))
        gone = sorted(set(before[key]) - set(after[key]))
        problems += [f"{key[:-1]} {x.split(':')[0]} left behind" for x in extra]
        problems += [f"{key[:-1]} {x.split(':')[0]} missing" for x in gone]
    bt, at = before["tables"], after["tables"]
    problems += [f"table {t} left behind" for t in sorted(set(at) - set(bt))]
    problems += [f"table {t} missing" for t in sorted(set(bt) - set(at))]
    for t in sorted(set(bt) & set(at)):
        for part in ("columns", "pk", "fks", "indexes", "checks", "uniques"):
            b, a = bt[t][part], at[t][part]
            if b == a:
                continue
            if part == "columns":
                problems += [f"column {t}.{c} left behind" for c in sorted(set(a) - set(b))]
                problems += [f"column {t}.{c} missing" for c in sorted(set(b) - set(a))]
                problems += [
                    f"column {t}.{c} changed" for c in sorted(set(a) & set(b)) if a[c] != b[c]
                ]
            else:
                problems.append(f"{part} of {t} differ")
    return "; ".join(problems) or "schemas differ"


def round_trip(
    migrations_dir: Path, script: ScriptDirectory, url: str, metadata: MetaData, report: Report
) -> None:
    report.checked.append("step-by-step upgrade, downgrade and upgrade on PostgreSQL")
    cfg = alembic_config(migrations_dir)
    engine = create_engine(url)
    revisions = ordered(script)
    try:
        with engine.connect() as conn:

            def step(action: str, target: str) -> None:
                conn.commit()  # alembic owns the transactions (autocommit blocks need that)
                cfg.attributes["connection"] = conn
                (command.upgrade if action == "upgrade" else command.downgrade)(cfg, target)
                conn.commit()

            states = [snapshot(conn)]
            for rev in revisions:
                try:
                    step("upgrade", rev.revision)
                except Exception as exc:
                    conn.rollback()
                    report.add(rev.revision, f"upgrade failed: {_one_line(exc)}")
                    return
                states.append(snapshot(conn))

            for index in range(len(revisions) - 1, -1, -1):
                rev = revisions[index]
                reason = getattr(rev.module, "irreversible", None)
                if reason:
                    report.add(
                        rev.revision,
                        f"irreversible ({reason}); downgrades below it "
                        "are not tested: roll back with a restore",
                        error=False,
                    )
                    break
                target = rev.down_revision if isinstance(rev.down_revision, str) else "base"
                try:
                    step("downgrade", target)
                except Exception as exc:
                    conn.rollback()
                    report.add(
                        rev.revision,
                        f"downgrade failed: {_one_line(exc)} (declare "
                        '`irreversible = "why"` if it cannot be undone)',
                    )
                    return
                now = snapshot(conn)
                if now != states[index]:
                    report.add(
                        rev.revision,
                        "downgrade does not restore the schema: "
                        + describe_difference(states[index], now),
                    )
                    return

            step("upgrade", "head")
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), metadata
            )
            if diff:
                head = script.get_current_head()
                report.add(
                    head,
                    "the models and the migrated schema differ (a model change "
                    f"without a migration?): {_describe_diff(diff)}; "
                    "write one with `invoke db.revision -m MSG --autogenerate`",
                )
    finally:
        engine.dispose()


def _describe_diff(diff: list[Any]) -> str:
    parts = []
    for item in diff:
        entry = item[0] if isinstance(item, list) else item
        op = entry[0]
        detail = next(
            (str(getattr(x, "name", "")) for x in entry[1:] if getattr(x, "name", None)), ""
        )
        parts.append(f"{op} {detail}".strip())
    return ", ".join(parts[:10])


def _one_line(exc: BaseException) -> str:
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def run_checks(
    run: Executor, migrations_dir: Path, metadata: MetaData, url: str, workdir: Path
) -> Report:
    """Every check, on `url` (an empty database that the checks may change freely)."""
    report = Report()
    script = ScriptDirectory(str(migrations_dir))
    if not check_heads(script, report):
        return report
    lint(run, migrations_dir, script, report, workdir)
    round_trip(migrations_dir, script, url, metadata, report)
    return report
