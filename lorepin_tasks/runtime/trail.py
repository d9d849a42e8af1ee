"""The audit trail of a server environment: in its own database (`lorepin_ops.audit`),
read by everyone who looks at it, and mirrored to this machine, so a lost database does
not erase the history. Records are sealed into a hash chain (domain/audit.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorepin_tasks.domain import audit
from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans.deploy import OPS
from lorepin_tasks.runtime.pg import Session, literal


class Trail:
    def __init__(self, session: Session, mirror: Path) -> None:
        self.session = session
        self.mirror = mirror

    def records(self) -> list[dict[str, Any]]:
        rows = self.session.query(f"SELECT record::text FROM {OPS}.audit ORDER BY seq")
        try:
            return [json.loads(row[0]) for row in rows]
        except (ValueError, IndexError):
            raise LorePinError(f"{OPS}.audit holds a record that is not JSON") from None

    def append(self, record: dict[str, Any], *, commit: bool = False) -> dict[str, Any]:
        """Seal and store a record (seq and chain from the last one); the stored record.
        `commit`: the session is inside a transaction (BEGIN) holding the change the record
        tells of; the two are committed together, before the mirror is written (a run
        killed before that leaves neither; one killed after, a mirror behind, as usual)."""
        last = self.session.query(f"SELECT seq, hash FROM {OPS}.audit ORDER BY seq DESC LIMIT 1")
        seq, previous = (int(last[0][0]) + 1, last[0][1]) if last else (1, audit.GENESIS)
        sealed = audit.seal(previous, {**record, "seq": seq})
        self.session.query(
            f"INSERT INTO {OPS}.audit (seq, at, record, prev, hash) VALUES ("
            f"{seq}, {literal(sealed['at'])}::timestamptz, "
            f"{literal(json.dumps(sealed, sort_keys=True))}::jsonb, "
            f"{literal(previous)}, {literal(sealed['hash'])})"
        )
        if commit:
            self.session.query("COMMIT")
        self.mirror.parent.mkdir(parents=True, exist_ok=True)
        with self.mirror.open("a") as out:
            out.write(json.dumps(sealed, sort_keys=True) + "\n")
        return sealed


def mirrored(path: Path) -> list[dict[str, Any]]:
    """This machine's copy of the trail (what it recorded; other machines keep their own)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    found = []
    for line in lines:
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def carry_over(session: Session, records: list[dict[str, Any]]) -> int:
    """After a point-in-time restore the database holds an older prefix of the trail: put
    back the records it lost, exactly as they were sealed; how many."""
    have = {int(row[0]) for row in session.query(f"SELECT seq FROM {OPS}.audit") if row}
    missing = [r for r in records if isinstance(r.get("seq"), int) and r["seq"] not in have]
    for r in missing:
        session.query(
            f"INSERT INTO {OPS}.audit (seq, at, record, prev, hash) VALUES ("
            f"{int(r['seq'])}, {literal(str(r.get('at')))}::timestamptz, "
            f"{literal(json.dumps(r, sort_keys=True))}::jsonb, "
            f"{literal(str(r.get('prev')))}, {literal(str(r.get('hash')))})"
        )
    return len(missing)
