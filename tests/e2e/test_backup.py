"""`invoke backup.*` against a running stack: create, list, verify, corrupt, restore,
the standard tools on the toolkit's files, a killed backup, a full disk, prune."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    invoke,
    invoke_in_background,
    local_stack,
    new_token,
    published_port,
    request,
)

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with local_stack("lorepin-bk", tmp_path_factory) as env:
        yield env


def _url(stack: dict[str, str]) -> str:
    return f"http://127.0.0.1:{published_port(stack['LOREPIN_PROJECT'] + '-cms-1', 8000)}"


def _add_pin(stack: dict[str, str], title: str) -> None:
    """A pin written by an editor (a new one each time: a restore takes users away too)."""
    token = new_token(lambda *a: invoke(*a, env=stack), "local")
    pin = {"title": title, "latitude": 48.85, "longitude": 2.35, "tags": []}
    assert request("POST", f"{_url(stack)}/api/pins", pin, token)[0] == 201


def _sql(stack: dict[str, str], sql: str) -> str:
    db = f"{stack['LOREPIN_PROJECT']}-db-1"
    argv = ["docker", "exec", db, "psql", "-qtAX", "-U", "lorepin", "-d", "lorepin", "-c", sql]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def _pins(stack: dict[str, str]) -> int:
    return int(_sql(stack, "SELECT count(*) FROM pins"))


def _create(stack: dict[str, str], *args: str) -> dict[str, Any]:
    made = invoke("backup.create", "--json", *args, env=stack)
    assert made.returncode == 0, made.stderr[-2000:]
    manifest: dict[str, Any] = json.loads(made.stdout)
    return manifest


def _listed(stack: dict[str, str]) -> dict[str, dict[str, Any]]:
    answer = invoke("backup.list", "--json", env=stack, check=True)
    return {row["id"]: row for row in json.loads(answer.stdout)}


def _one_line_error(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and text in last, last


def test_backups_restore_verify_and_refuse_what_is_broken(stack: dict[str, str]) -> None:
    backups = Path(stack["LOREPIN_BACKUP_DIR"])
    _add_pin(stack, "Old mill")
    _add_pin(stack, "Chapel well")
    first = _create(stack)
    before_third = _pins(stack)
    assert first["tables"]["public.pins"] == before_third
    assert first["rows"] >= before_third and first["schema_revision"]
    data = backups / f"{first['id']}.dump.age"
    assert oct(data.stat().st_mode & 0o777) == "0o600"
    assert data.read_bytes().startswith(b"age-encryption.org/v1")
    key = Path(stack["LOREPIN_SECRETS_DIR"]) / "backup.key"
    assert "AGE-SECRET-KEY" not in json.dumps(_listed(stack))

    _add_pin(stack, "Third stone")
    second = _create(stack, "--reason", "before-test")
    assert second["tables"]["public.pins"] == before_third + 1

    # verify: a real restore into a throwaway PostgreSQL, then the CMS against it
    checked = invoke("backup.verify", "--id", first["id"], env=stack)
    assert checked.returncode == 0, checked.stderr[-3000:]
    assert "CMS ready" in checked.stdout
    assert _listed(stack)[first["id"]]["verified"] is True
    throwaway = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name={stack['LOREPIN_PROJECT']}-verify"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert throwaway == ""  # removed after the check

    # One byte flipped: verify and restore refuse, the live data stays
    second_data = backups / f"{second['id']}.dump.age"
    good = second_data.read_bytes()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    second_data.write_bytes(bytes(flipped))
    _one_line_error(invoke("backup.verify", "--id", second["id"], env=stack), 6, "corrupt")
    _one_line_error(
        invoke("backup.restore", "--from", second["id"], "--yes", env=stack), 6, "corrupt"
    )
    assert _pins(stack) == before_third + 1
    second_data.write_bytes(good)

    # The wrong key, a missing manifest, a missing key, no confirmation: refused
    key_text = key.read_text()
    key.unlink()
    other = invoke("backup.key", env=stack)
    assert other.returncode == 0 and other.stdout.startswith("age1")
    _one_line_error(
        invoke("backup.restore", "--from", first["id"], "--yes", env=stack), 6, "not one of its"
    )
    key.unlink()
    _one_line_error(
        invoke("backup.restore", "--from", first["id"], "--yes", env=stack), 2, "is missing"
    )
    key.write_text(key_text)
    key.chmod(0o600)
    manifest = backups / f"{first['id']}.json"
    manifest.rename(manifest.with_suffix(".moved"))
    assert _listed(stack)[first["id"]]["status"] == "unusable"
    _one_line_error(
        invoke("backup.restore", "--from", first["id"], "--yes", env=stack), 6, "no manifest"
    )
    manifest.with_suffix(".moved").rename(manifest)
    _one_line_error(
        invoke("backup.restore", "--from", "20991231-000000L", "--yes", env=stack),
        1,
        "no backup 20991231-000000L",
    )
    _one_line_error(invoke("backup.restore", "--from", "latest", env=stack), 2, "invalid")
    _one_line_error(
        invoke("backup.restore", "--from", first["id"], env={**stack, "CI": ""}), 2, "--yes"
    )
    assert _pins(stack) == before_third + 1

    # The real thing: the CMS stops, a safety backup, the data as it was, the CMS back
    restored = invoke("backup.restore", "--from", first["id"], "--yes", env=stack)
    assert restored.returncode == 0, restored.stderr[-3000:]
    assert _pins(stack) == before_third
    assert request("GET", f"{_url(stack)}/readyz")[0] == 200
    safety = [
        r for r in _listed(stack).values() if r["reason"] == f"before-restore-{first['id'].lower()}"
    ]
    assert len(safety) == 1 and safety[0]["rows"] is not None
    again = invoke("backup.restore", "--from", safety[0]["id"], "--yes", env=stack)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _pins(stack) == before_third + 1

    # The standard tools: `age -d` with the key, then plain pg_restore into a fresh database
    fresh = f"{stack['LOREPIN_PROJECT']}-plain"
    try:
        subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                fresh,
                "-e",
                "POSTGRES_USER=lorepin",
                "-e",
                "POSTGRES_PASSWORD=throwaway",
                "-e",
                "POSTGRES_DB=lorepin",
                "lorepin/postgres:e2e",
            ],
            capture_output=True,
            check=True,
        )
        subprocess.run(["docker", "cp", str(key), f"{fresh}:/tmp/backup.key"], check=True)
        subprocess.run(["docker", "cp", str(data), f"{fresh}:/tmp/backup.dump.age"], check=True)
        deadline = time.monotonic() + 60
        while (
            subprocess.run(
                ["docker", "exec", fresh, "pg_isready", "-q", "-h", "127.0.0.1", "-U", "lorepin"],
                check=False,
            ).returncode
            and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        plain = subprocess.run(
            [
                "docker",
                "exec",
                fresh,
                "bash",
                "-c",
                "age -d -i /tmp/backup.key /tmp/backup.dump.age | pg_restore -U lorepin -d lorepin "
                "&& psql -qtAX -U lorepin -d lorepin -c 'SELECT count(*) FROM pins'",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert plain.returncode == 0, plain.stderr
        assert int(plain.stdout.strip()) == before_third
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", fresh], capture_output=True, check=False)


def test_a_killed_backup_leaves_nothing_listed_and_the_next_one_works(
    stack: dict[str, str],
) -> None:
    backups = Path(stack["LOREPIN_BACKUP_DIR"])
    # Enough data (about 40 MB of text) that the dump is still streaming when it is killed.
    _sql(
        stack,
        "CREATE TABLE IF NOT EXISTS bulk AS SELECT g AS id, repeat(md5(g::text), 12) AS body "
        "FROM generate_series(1, 100000) AS g",
    )
    before = set(_listed(stack))
    proc = invoke_in_background("backup.create", env=stack)
    deadline = time.monotonic() + 60
    while not list(backups.glob("*.partial")) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the backup ended before it could be killed mid-way"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    listed = _listed(stack)
    assert all(row["status"] == "ok" for row in listed.values() if row["id"] not in before)
    made = _create(stack)
    assert made["id"] in _listed(stack)
    assert not list(backups.glob("*.partial"))


def test_a_full_disk_is_one_line_and_keeps_nothing(stack: dict[str, str], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root: a small tmpfs stands for the full backup disk")
        pytest.skip("mounting a small tmpfs needs root")
    tiny = tmp_path / "tiny"
    tiny.mkdir(mode=0o700)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(tiny)], check=True
    )
    try:
        free = shutil.disk_usage(tiny).free
        (tiny / "filler").write_bytes(b"\0" * (free - 4096))  # one page left
        full = invoke("backup.create", env={**stack, "LOREPIN_BACKUP_DIR": str(tiny)})
        _one_line_error(full, 1, "No space left on device")
        assert [p.name for p in tiny.iterdir()] == ["filler"]
    finally:
        subprocess.run(["umount", str(tiny)], check=False)


def test_prune_keeps_what_the_policy_says(stack: dict[str, str]) -> None:
    for _ in range(2):
        _create(stack)
    listed = _listed(stack)
    verified = [i for i, r in listed.items() if r["verified"]]
    dry = invoke("backup.prune", "--dry-run", env=stack, check=True)
    assert "+ rm" in dry.stderr and set(_listed(stack)) == set(listed)
    pruned = invoke("backup.prune", "--yes", env=stack)
    assert pruned.returncode == 0, pruned.stderr
    left = _listed(stack)
    newest = sorted(listed, reverse=True)[:3]  # keep.last defaults to 3
    assert set(newest) <= set(left)
    assert set(verified) <= set(left)  # the newest verified one stays
    assert len(left) < len(listed)
    _one_line_error(invoke("backup.prune", "--yes", env=stack), 3, "every backup is kept")
