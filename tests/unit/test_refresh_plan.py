"""`invoke staging.refresh`'s choices and SQL: which backup it takes, what the copy must
hold, which columns must never equal production's, and a swap that carries staging's own
users across."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from lorepin_cms import db_roles
from lorepin_tasks.plans import anonymize
from lorepin_tasks.plans import refresh as plan
from lorepin_tasks.plans.backup import Backup

RULES = anonymize.load(Path(__file__).resolve().parents[2] / anonymize.RULES_FILE)


def backup(id_: str, verified: bool | None, problem: str | None = None) -> Backup:
    manifest: dict[str, Any] = {"environment": "production", "tables": {}}
    if verified is not None:
        manifest["verified"] = {"ok": verified, "problem": None if verified else "rows differ"}
    return Backup(id=id_, manifest=manifest, data_bytes=10, problem=problem)


NEWEST, MIDDLE, OLDEST = "20261202-090000-a", "20261201-090000-a", "20261130-090000-a"


def test_the_newest_verified_backup_is_taken_and_others_are_refused_by_name() -> None:
    found = [backup(NEWEST, None), backup(MIDDLE, True), backup(OLDEST, True)]
    assert plan.source_backup(found, None).id == MIDDLE  # the newest is not verified yet
    assert plan.source_backup(found, OLDEST).id == OLDEST
    with pytest.raises(ValueError, match=f"backup {NEWEST} is not verified"):
        plan.source_backup(found, NEWEST)
    failed = [backup(NEWEST, False)]
    with pytest.raises(ValueError, match=r"failed its verification \(rows differ\)"):
        plan.source_backup(failed, NEWEST)
    with pytest.raises(ValueError, match="no verified logical backup"):
        plan.source_backup(failed, None)
    with pytest.raises(ValueError, match="no verified logical backup"):
        plan.source_backup([], None)
    with pytest.raises(ValueError, match="has no logical backup 20261101"):
        plan.source_backup(found, "20261101-090000-a")
    with pytest.raises(ValueError, match="unusable: checksum"):
        plan.source_backup([backup(NEWEST, True, problem="checksum")], NEWEST)


def test_the_copy_holds_the_backups_rows_and_none_of_a_truncated_table() -> None:
    manifest = {"tables": {"public.pins": 10, "public.cms_users": 3, "public.api_tokens": 4,
                           "public.alembic_version": 1, "lorepin_ops.audit": 9}}  # fmt: skip
    expected = plan.expected_counts(manifest, RULES)
    assert expected == {"pins": 10, "cms_users": 3, "api_tokens": 0}
    assert plan.count_problems(expected, {"pins": 10, "cms_users": 3, "api_tokens": 0}) == []
    assert plan.count_problems(expected, {"pins": 9, "cms_users": 3}) == [
        "pins has 9 rows, the source 10",
        "api_tokens has no rows, the source 0",
    ]


def test_counts_since_the_backup_leave_out_what_staging_made() -> None:
    sql = plan.counts_sql(["pins", "activity", "cms_users"], since="2026-12-02T09:00:00+00:00")
    assert "created_at <= '2026-12-02T09:00:00+00:00'" in sql
    assert "NOT tags @> ARRAY['test-data']" in sql
    assert "at <= '2026-12-02T09:00:00+00:00'" in sql
    assert "api_tokens a WHERE a.user_id = cms_users.id" in sql  # staging's token holders
    assert "WHERE" not in plan.counts_sql(["pins"])
    assert "''" in plan.counts_sql(["pins"], since="x'y")  # quoted, never closed early
    assert "FROM lorepin_refresh.pins" in plan.counts_sql(["pins"], schema=plan.INCOMING)
    assert "nspname = 'lorepin_refresh'" in plan.not_enforced_sql(plan.INCOMING)
    assert "nspname = 'public'" in plan.not_enforced_sql()


def test_personal_columns_are_the_rewritten_ones_and_a_truncated_tables() -> None:
    columns = [("cms_users", "name"), ("cms_users", "role"), ("api_tokens", "key"),
               ("api_tokens", "secret_sha256"), ("api_tokens", "expires_at"),
               ("activity", "session_id"), ("pins", "place_name"), ("pins", "title")]  # fmt: skip
    assert plan.sensitive_columns(RULES, columns) == [
        ("cms_users", "name"),
        ("api_tokens", "key"),
        ("api_tokens", "secret_sha256"),
        ("activity", "session_id"),
    ]


def test_the_swap_pauses_writes_moves_schemas_and_carries_staging_users_across() -> None:
    swap = plan.swap_sql(["pg_stat_statements"])
    order = [next(i for i, s in enumerate(swap) if s.startswith(p)) for p in (
        "SET LOCAL lock_timeout", "DROP SCHEMA IF EXISTS lorepin_before_refresh", "DO $$",
        "ALTER SCHEMA public RENAME TO lorepin_before_refresh",
        "ALTER SCHEMA lorepin_refresh RENAME TO public",
        "ALTER EXTENSION pg_stat_statements SET SCHEMA public",
        "INSERT INTO public.cms_users", "INSERT INTO public.api_tokens")]  # fmt: skip
    assert order == sorted(order)
    assert "IN EXCLUSIVE MODE" in plan.LOCK_WRITES  # writes wait, reads go on
    assert all(g.replace("{database}", "lorepin") in swap for g in db_roles.GRANTS)
    assert "t.revoked_at IS NULL AND t.expires_at > now()" in swap[-1]
    back = plan.swap_back_sql(["pg_stat_statements"])
    assert back[1:3] == ["ALTER SCHEMA public RENAME TO lorepin_refresh",
                         "ALTER SCHEMA lorepin_before_refresh RENAME TO public"]  # fmt: skip


TOC = """;
; Archive created at 2026-12-02 09:00:00 UTC
;
6; 2615 16385 SCHEMA - lorepin_ops lorepin
3443; 0 0 ACL - SCHEMA public pg_database_owner
2; 3079 16386 EXTENSION - pg_stat_statements
3440; 0 0 COMMENT - EXTENSION pg_stat_statements
217; 1259 16395 TABLE lorepin_ops migration_checksums lorepin
223; 1259 16440 TABLE public activity lorepin
3448; 0 0 ACL public TABLE activity lorepin
222; 1259 16439 SEQUENCE public activity_id_seq lorepin
227; 1259 16464 TABLE public api_tokens lorepin
225; 1259 16451 TABLE public cms_users lorepin
221; 1259 16418 TABLE public pins lorepin
3424; 0 16395 TABLE DATA lorepin_ops migration_checksums lorepin
3430; 0 16440 TABLE DATA public activity lorepin
3434; 0 16464 TABLE DATA public api_tokens lorepin
3432; 0 16451 TABLE DATA public cms_users lorepin
3428; 0 16418 TABLE DATA public pins lorepin
3458; 0 0 SEQUENCE SET public activity_id_seq lorepin
3265; 2606 16433 CONSTRAINT public pins pk_pins lorepin
3263; 1259 16434 INDEX public ix_pins_tags lorepin
3279; 2606 16475 FK CONSTRAINT public api_tokens fk_api_tokens_user_id_cms_users lorepin
2072; 826 16485 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES lorepin
"""


def names(listing: str) -> list[str]:
    return [" ".join(line.split(" ")[3:-1]) for line in listing.splitlines()]


def test_only_the_rewritten_tables_rows_go_through_the_throwaway() -> None:
    entries = plan.toc(TOC)
    assert plan.rewritten(RULES) == ["cms_users", "activity"]  # pins: keep; tokens: truncate
    assert names(plan.throwaway_list(entries, RULES)) == [
        "TABLE public activity",
        "SEQUENCE public activity_id_seq",
        "TABLE public api_tokens",
        "TABLE public cms_users",
        "TABLE public pins",
        "TABLE DATA public activity",
        "TABLE DATA public cms_users",
        "SEQUENCE SET public activity_id_seq",
    ]  # fmt: skip (no index, no constraint, nothing of lorepin_ops, no ACL, no extension)
    pre, rows, post = plan.incoming_lists(entries, RULES)
    assert "TABLE DATA" not in pre and "lorepin_ops" not in pre + rows + post
    assert names(rows) == ["TABLE DATA public pins"]  # straight in; api_tokens' rows nowhere
    fk = "FK CONSTRAINT public api_tokens fk_api_tokens_user_id_cms_users"
    assert names(post) == ["CONSTRAINT public pins pk_pins", "INDEX public ix_pins_tags", fk]


def test_definitions_and_row_headers_are_renamed_into_incoming_never_a_row() -> None:
    ddl = ("CREATE TABLE public.pins (id bigint DEFAULT nextval('public.pins_id_seq'::regclass)"
           ", note text DEFAULT 'republic.x');")  # fmt: skip
    assert plan.into_incoming(ddl) == (
        "CREATE TABLE lorepin_refresh.pins (id bigint DEFAULT "
        "nextval('lorepin_refresh.pins_id_seq'::regclass), note text DEFAULT 'republic.x');"
    )
    awk = plan.ROWS_INTO_INCOMING
    assert '$0 == "\\\\."' in awk and "/^COPY public\\./" in awk
