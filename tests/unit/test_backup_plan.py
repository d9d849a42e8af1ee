"""Backups as data: ids, manifests, what a restore brings back, what a prune keeps."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans import backup as plan
from lorepin_tasks.settings import BackupPolicy
from lorepin_tasks.settings import _backup as backup_policy

NOW = datetime(2026, 11, 30, 14, 15, 3, tzinfo=UTC)

TOC = """;
; Archive created at 2026-11-30 13:54:17 UTC
;
; Selected TOC Entries:
;
6; 2615 16399 SCHEMA - lorepin_ops lorepin
218; 1259 16400 TABLE lorepin_ops audit lorepin
219; 1259 16407 TABLE lorepin_ops migration_checksums lorepin
220; 1259 16414 SEQUENCE lorepin_ops migration_log_id_seq lorepin
217; 1259 16394 TABLE public alembic_version lorepin
216; 1259 16386 TABLE public pins lorepin
3381; 0 0 SEQUENCE OWNED BY public pins_id_seq lorepin
3371; 0 16400 TABLE DATA lorepin_ops audit lorepin
3372; 0 16407 TABLE DATA lorepin_ops migration_checksums lorepin
3369; 0 16386 TABLE DATA public pins lorepin
3221; 2606 16406 CONSTRAINT lorepin_ops audit audit_pkey lorepin
3223; 2606 16413 CONSTRAINT lorepin_ops migration_checksums migration_checksums_pkey lorepin
3217; 2606 16393 CONSTRAINT public pins pins_pkey lorepin
3390; 0 0 ACL public TABLE pins lorepin
3391; 826 16500 DEFAULT ACL public DEFAULT PRIVILEGES FOR TABLES lorepin
"""


def test_ids_sort_by_time_and_stay_unique() -> None:
    first = plan.backup_id(NOW)
    assert first == "20261130-141503L"
    assert plan.backup_id(NOW, [first]) == "20261130-14150301L"
    assert plan.started_at(first) == NOW
    assert plan.check_id(first) == first


@pytest.mark.parametrize("bad", ["", "latest", "20261130-141503F", "../x", "20261130141503L"])
def test_a_bad_id_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        plan.check_id(bad)


@pytest.mark.parametrize("bad", ["", "Manual", "a b", "x" * 64, "-lead"])
def test_a_bad_reason_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        plan.check_reason(bad)


def test_a_restore_keeps_the_environments_own_records() -> None:
    """The CMS's schema and the schema ledger come back; the audit trail and deploy
    history of the environment are never rewound; privileges are the tail's, not the
    backup's."""
    kept = [ln for ln in plan.restore_list(TOC).splitlines() if not ln.startswith(";")]
    assert kept == [
        "219; 1259 16407 TABLE lorepin_ops migration_checksums lorepin",
        "217; 1259 16394 TABLE public alembic_version lorepin",
        "216; 1259 16386 TABLE public pins lorepin",
        "3381; 0 0 SEQUENCE OWNED BY public pins_id_seq lorepin",
        "3372; 0 16407 TABLE DATA lorepin_ops migration_checksums lorepin",
        "3369; 0 16386 TABLE DATA public pins lorepin",
        "3223; 2606 16413 CONSTRAINT lorepin_ops migration_checksums "
        "migration_checksums_pkey lorepin",
        "3217; 2606 16393 CONSTRAINT public pins pins_pkey lorepin",
    ]


def test_the_restore_commits_only_after_the_rows_match() -> None:
    tail = plan.restore_tail(
        {"tables": {"public.pins": 3, "lorepin_ops.audit": 9, "lorepin_ops.migration_checksums": 6}}
    )
    assert "FROM public.pins) <> 3" in tail
    assert "migration_checksums) <> 6" in tail
    assert "audit" not in tail  # the live trail stays: its rows are not the backup's
    assert tail.rstrip().endswith("COMMIT;")
    # The roles' grants as the migrator keeps them, in the same transaction, before the check.
    granted = "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO lorepin_cms;"
    assert granted in tail and tail.index(granted) < tail.index("DO $check$")
    assert "GRANT CONNECT ON DATABASE lorepin TO" in tail and "{database}" not in tail
    # pg_restore's script empties the search_path: every table is named with its schema.
    assert "ON alembic_version" not in tail and "ON public.alembic_version" in tail
    assert plan.RESTORE_HEAD.startswith("BEGIN;")
    assert "COMMIT" not in plan.RESTORE_HEAD


def test_the_restore_pipe_never_commits_a_cut_stream() -> None:
    env = _env()
    script = plan.restore_into_live(env)[-1]
    assert "set -o pipefail" in script
    assert f"pg_restore -L {plan.LIST_FILE} -f - && cat {plan.TAIL_FILE} || exit 1" in script
    assert "--single-transaction" not in script  # psql would COMMIT at the end of any input


def good_manifest(id_: str = "20261130-141503L", **extra: Any) -> dict[str, Any]:
    return {
        "format": 1,
        "id": id_,
        "environment": "local",
        "sha256": "0" * 64,
        "bytes": 10,
        "tables": {"public.pins": 3, 'public."Odd ""name"""': 0},
        "recipients": ["age1" + "q" * 58],
        **extra,
    }


@pytest.mark.parametrize(
    ("manifest", "size", "problem"),
    [
        (None, 10, "no manifest"),
        ({}, 10, "not a backup manifest"),
        (good_manifest(format=2), 10, "format 2"),
        (good_manifest(id="20261130-141504L"), 10, "describes"),
        (good_manifest(tables={"public.pins; DROP TABLE x": 1}), 10, "table counts"),
        (good_manifest(tables={"public.pins": -1}), 10, "table counts"),
        (good_manifest(tables={"public.pins": "3"}), 10, "table counts"),
        (good_manifest(rows=-5), 10, "row total"),
        (good_manifest(recipients=["age1evil"]), 10, "recipients"),
        (good_manifest(), None, "data file is missing"),
        (good_manifest(), 11, "has 11 bytes"),
    ],
)
def test_a_manifest_that_does_not_describe_its_file_is_a_problem(
    manifest: Any, size: int | None, problem: str
) -> None:
    found = plan.manifest_problem("20261130-141503L", manifest, size)
    assert found is not None and problem in found


def test_a_good_manifest_has_no_problem() -> None:
    assert plan.manifest_problem("20261130-141503L", good_manifest(), 10) is None


def _backup(at: datetime, **manifest: Any) -> plan.Backup:
    id_ = plan.backup_id(at)
    return plan.Backup(id=id_, manifest=good_manifest(id_, **manifest), data_bytes=10)


def test_prune_keeps_grandfather_father_son() -> None:
    # One backup every 6 hours for 70 days.
    found = [_backup(NOW - timedelta(hours=6 * i)) for i in range(4 * 70)]
    policy = BackupPolicy(keep_last=2, keep_daily=3, keep_weekly=2, keep_monthly=3)
    kept = plan.retained(found, policy)
    newest = sorted(kept, reverse=True)
    assert newest[:2] == [found[0].id, found[1].id]
    daily = [i for i, why in kept.items() if why == "daily"]
    assert len(daily) == 3 - 1  # today's newest is kept already as "newest"
    months = {plan.started_at(i).strftime("%Y-%m") for i in kept}
    assert months == {"2026-11", "2026-10", "2026-09"}
    assert len(kept) <= 2 + 3 + 2 + 3


def test_prune_never_drops_the_newest_verified_or_a_pinned_backup() -> None:
    old_verified = _backup(NOW - timedelta(days=400), verified={"ok": True})
    pinned = _backup(NOW - timedelta(days=500), pinned=True)
    failed = _backup(NOW - timedelta(days=300), verified={"ok": False})
    recent = [_backup(NOW - timedelta(hours=i)) for i in range(3)]
    only_newest = BackupPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)
    kept = plan.retained([*recent, failed, old_verified, pinned], only_newest)
    assert kept[old_verified.id] == "newest verified"
    assert kept[pinned.id] == "pinned"
    assert failed.id not in kept


def test_unusable_backups_are_never_counted_as_kept() -> None:
    broken = plan.Backup(id=plan.backup_id(NOW), manifest=None, data_bytes=5, problem="x")
    assert plan.retained([broken], BackupPolicy()) == {}


def test_backup_settings_are_checked() -> None:
    assert backup_policy({}, "e") == BackupPolicy()
    key = "age1" + "q" * 58
    policy = backup_policy({"recipients": [key], "keep": {"last": 5, "monthly": 12}}, "e")
    assert policy.recipients == (key,) and policy.keep_last == 5 and policy.keep_monthly == 12
    for bad in (
        {"recipients": ["not-a-key"]},
        {"keep": {"hourly": 3}},
        {"keep": {"last": 0}},
        {"retention": 3},
    ):
        with pytest.raises(ConfigError):
            backup_policy(bad, "e")


def _env() -> Any:
    from lorepin_tasks.settings import Environment

    return Environment(
        name="local",
        kind="local",
        project="lorepin-local",
        compose_files=(Path("compose/compose.yaml"),),
        http_port=8080,
        db_port=None,
        image_tag="dev",
        state_dir=Path("/state"),
        secrets_dir=Path("/state/secrets"),
        backups_dir=Path("/state/backups"),
    )


def test_files_live_in_the_environments_backups_directory() -> None:
    env = _env()
    assert plan.data_path(env, "20261130-141503L") == Path(
        "/state/backups/20261130-141503L.dump.age"
    )
    assert plan.manifest_path(env, "20261130-141503L").name == "20261130-141503L.json"
    other = replace(env, docker_context="far")
    assert plan.dump(other, "00000003-1")[:3] == ["docker", "--context", "far"]
    assert plan.dump(env, "00000003-1")[-1] == "--snapshot=00000003-1"


INFO = [
    {
        "name": "lorepin",
        "status": {"code": 0, "message": "ok"},
        "backup": [
            {
                "label": "20261130-100000F",
                "type": "full",
                "timestamp": {"start": 1796032800, "stop": 1796032810},
                "info": {"size": 40_000_000, "repository": {"size": 5_000_000, "delta": 5_000_000}},
                "error": False,
            },
            {
                "label": "20261130-100000F_20261130-110000I",
                "type": "incr",
                "timestamp": {"start": 1796036400, "stop": 1796036402},
                "info": {"size": 40_100_000, "repository": {"size": 5_100_000, "delta": 90_000}},
                "error": True,
            },
        ],
    }
]


def test_pgbackrest_info_becomes_backups_newest_first() -> None:
    found, problem = plan.physical(INFO)
    assert problem is None
    assert [b.label for b in found] == ["20261130-100000F_20261130-110000I", "20261130-100000F"]
    assert found[0].type == "incr" and found[0].error and found[0].stored == 90_000
    assert found[1].stop == datetime(2026, 11, 30, 10, 0, 10, tzinfo=UTC)
    assert plan.physical([]) == ([], "pgBackRest reported nothing")
    assert plan.physical([{"name": "other"}])[1] == "no stanza 'lorepin'"
    assert all(plan.is_label(b.label) for b in found)
    assert not plan.is_label("20261130-141503L")


def test_a_point_in_time_must_have_a_zone_be_past_and_after_a_backup() -> None:
    found, _ = plan.physical(INFO)
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert plan.target_time("2026-11-30T10:30:00Z", now, found) == datetime(
        2026, 11, 30, 10, 30, tzinfo=UTC
    )
    assert plan.target_time("2026-11-30 11:30:00+01:00", now, found).hour == 10
    for text, message in [
        ("2026-11-30T10:30:00", "has no zone"),
        ("yesterday", "invalid time"),
        ("2026-11-30T13:00:00Z", "in the future"),
        ("2026-11-30T09:00:00Z", "before the oldest backup ended"),
    ]:
        with pytest.raises(ConfigError, match=message):
            plan.target_time(text, now, found)
    with pytest.raises(ConfigError, match="no physical backup"):
        plan.target_time("2026-11-30T10:30:00Z", now, [])


def test_restores_go_to_a_time_or_to_a_backup_and_promote() -> None:
    when = datetime(2026, 11, 30, 10, 30, 5, tzinfo=UTC)
    assert plan.restore_args(to_time=when) == [
        "--repo=1",
        "--delta",
        "--type=time",
        "--target=2026-11-30 10:30:05+00",
        "--target-action=promote",
        "restore",
    ]
    assert plan.restore_args(label="20261130-100000F", repo=2)[:4] == [
        "--repo=2",
        "--delta",
        "--set=20261130-100000F",
        "--type=immediate",
    ]
    assert plan.pgbackrest(_env(), "info")[:6] == [
        "docker",
        "exec",
        "-u",
        "postgres",
        "lorepin-local-db-1",
        "pgbackrest",
    ]


def test_the_two_sites_get_certificates_of_a_private_ca_named_by_service(
    tmp_path: Path,
) -> None:
    first = plan.tls_commands(tmp_path, with_ca=True)
    assert len(first) == 3 and "/CN=lorepin-backup-ca" in first[0]
    for node, argv in zip(("db", "backup-site"), first[1:], strict=True):
        assert f"/CN={node}" in argv and f"subjectAltName=DNS:{node}" in argv
        assert "extendedKeyUsage=serverAuth,clientAuth" in argv
        assert str(tmp_path / "backup-tls" / "ca.key") in argv  # signed by the CA
    again = plan.tls_commands(tmp_path, with_ca=False)
    assert again == first[1:]  # an existing CA issues missing certificates again
    assert [f.name for f in plan.tls_files(tmp_path)] == [
        "ca.crt", "ca.key", "db.crt", "db.key", "backup-site.crt", "backup-site.key"
    ]  # fmt: skip


def _full(label: str, repo: int, day: int, *, kind: str = "full", error: bool = False) -> Any:
    at = datetime(2026, 11, day, 10, 0, tzinfo=UTC)
    return plan.Physical(
        label=label, type=kind, start=at, stop=at, bytes=1, stored=1, error=error, repo=repo
    )


def test_physical_retention_expires_whole_full_sets_and_keeps_each_repos_newest() -> None:
    found = [
        _full("20261101-100000F", 1, 1),
        _full("20261110-100000F", 1, 10),
        _full("20261110-100000F_20261111-100000I", 1, 11, kind="incr"),
        _full("20261120-100000F", 1, 20, error=True),
        _full("20261101-100000F", 2, 1),
    ]
    policy = BackupPolicy(keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0)
    going = plan.expirable(found, policy)
    assert going == {1: ["20261101-100000F"], 2: []}  # incr goes with its full; errors stay


def test_the_backup_schedule_reads_as_seconds_per_type() -> None:
    assert backup_policy({"schedule": {"full": "7d", "incr": "1h"}}, "e").schedule == (
        ("full", 604800),
        ("incr", 3600),
    )
    assert backup_policy({"schedule": {}}, "e").schedule == ()  # no schedule: none runs
    for bad in ({"hourly": "1h"}, {"incr": "10s"}, {"full": "soon"}):
        with pytest.raises(ConfigError):
            backup_policy({"schedule": bad}, "e")


def test_a_restore_approval_names_one_backup_or_one_instant_in_utc() -> None:
    assert plan.restore_target("20261130-141503L", "") == "backup 20261130-141503L"
    assert plan.restore_target("20261130-141503F", "") == "backup 20261130-141503F"
    assert plan.restore_target("", "2026-11-30T15:03:17+01:00") == "time 2026-11-30T14:03:17Z"
    for from_, to_time, why in (
        ("", "", "say which backup"),
        ("latest", "", "invalid backup id"),
        ("", "yesterday", "invalid time"),
        ("", "2026-11-30T14:03:17", "has no zone"),
        ("20261130-141503L", "2026-11-30T14:03:17Z", "not both"),
    ):
        with pytest.raises(ConfigError, match=why):
            plan.restore_target(from_, to_time)


def _approval(who: str, target: str, at: datetime) -> dict[str, Any]:
    return {
        "action": "restore-approval",
        "who": who,
        "at": at.isoformat(),
        "outcome": "approved",
        "detail": {"target": target},
    }


def test_a_restore_counts_fresh_approvals_of_its_target_by_others_once() -> None:
    now = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
    target = "backup 20261130-141503L"
    records = [
        _approval("ann@example.org on host-1", target, now - timedelta(hours=25)),  # stale
        _approval("bob@example.org on host-2", "backup 20261129-000000L", now),  # another
        _approval("Cid@example.org on host-3", target, now - timedelta(minutes=5)),
        _approval("cid@example.org on laptop", target, now - timedelta(minutes=4)),  # twice
        _approval("req@example.org on host-9", target, now),  # the requester's own
    ]
    assert plan.restore_approvers(records, target, "req@example.org on host-1", now) == [
        "cid@example.org"
    ]
    spent = [*records, {"action": "restore", "outcome": "restored", "detail": {}}]
    assert plan.restore_approvers(spent, target, "req@example.org on host-1", now) == []
    started = [*records, {"action": "restore", "outcome": "started", "detail": {}}]
    assert plan.restore_approvers(started, target, "req@example.org", now) == ["cid@example.org"]


def test_a_verification_s_names_are_dns_labels_for_any_project_and_label() -> None:
    env = replace(_env(), project="p" * 31)
    label = "20261130-171225F_20261130-171520I"
    names = plan.verify_names(env, label, "f913c2")
    assert all(len(name) <= 63 for name in names.values()), names
    assert names["db"] != plan.verify_names(env, "20261130-171225F", "f913c2")["db"]


def test_the_schedule_s_runs_enter_the_trail_once_each() -> None:
    runs = [
        {"at": "2026-11-30T10:00:00Z", "type": "full", "outcome": "ok"},
        {"at": "2026-11-30T11:00:00Z", "type": "incr", "outcome": "failed"},
        {"at": "2026-11-30T12:00:00Z", "type": "incr", "outcome": "ok"},
        {"type": "incr"},  # a line without a time is not a run
    ]
    assert plan.unrecorded(runs, []) == runs[:3]
    trail = [
        {"action": "deploy", "detail": {}},
        {"action": plan.SCHEDULED, "detail": {"run_at": "2026-11-30T11:00:00Z"}},
        {"action": "restore", "detail": {"run_at": "2026-11-30T23:00:00Z"}},  # not a run
    ]
    assert plan.unrecorded(runs, trail) == [runs[2]]
    assert plan.unrecorded(runs, [*trail, {"action": plan.SCHEDULED, "detail": runs[2] | {
        "run_at": runs[2]["at"]}}]) == []  # fmt: skip


def test_a_restore_without_a_safety_backup_keeps_the_data_directory_first() -> None:
    args = plan.restore_args(label="20261130-101500F", repo=1)
    plain = plan.restore_oneoff(args)[-1]
    kept = plan.restore_oneoff(args, keep="20261130T101500Z-before-restore")[-1]
    assert "cp -a" not in plain and plain.startswith('rm -f "$PGDATA/postmaster.pid"')
    copy, _, rest = kept.partition(' && rm -f "$PGDATA/postmaster.pid"')
    # The copy is complete or not there (a partial one is renamed only when whole), and
    # the restore runs only after it.
    assert f"{plan.KEPT}/20261130T101500Z-before-restore.partial/" in copy
    assert copy.index("cp -a") < copy.index("mv ") and "pgbackrest" in rest
    assert rest.endswith("--set=20261130-101500F --type=immediate --target-action=promote restore")


def test_latest_recovers_all_the_archived_wal_from_the_newest_backup() -> None:
    assert plan.restore_args(latest=True, repo=2) == [
        "--repo=2", "--delta", "--type=default", "restore"
    ]  # fmt: skip
    assert plan.restore_target("", "LATEST") == "time latest"
