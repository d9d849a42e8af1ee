"""The audit trail as a hash chain: each record carries the hash of the one before it.

Editing, removing or reordering any record breaks the chain from there on, and `verify`
names the first record that no longer fits. Pure: records are plain dicts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

GENESIS = "0" * 64


def digest(previous: str, record: Mapping[str, Any]) -> str:
    """The hash of a record (its fields but its own hash) chained to the previous one."""
    body = {k: v for k, v in record.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{previous}\n{canonical}".encode()).hexdigest()


def seal(previous: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as it is stored: with `prev` and its own `hash`."""
    sealed = {**record, "prev": previous}
    return {**sealed, "hash": digest(previous, sealed)}


def verify(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Problems with a trail read in `seq` order (empty: intact)."""
    problems = []
    previous = GENESIS
    expected_seq = records[0].get("seq") if records else None
    for record in records:
        where = f"record {record.get('seq')}"
        if record.get("seq") != expected_seq:
            problems.append(f"{where}: expected record {expected_seq} here (removed or reordered)")
        if record.get("prev") != previous:
            problems.append(f"{where}: does not follow the record before it (removed or reordered)")
        if digest(str(record.get("prev")), record) != record.get("hash"):
            problems.append(f"{where}: its content does not match its hash (edited)")
        previous = str(record.get("hash"))
        seq = record.get("seq")
        expected_seq = seq + 1 if isinstance(seq, int) else None
    return problems
