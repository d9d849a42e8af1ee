"""Logical backups and restores of a 1 GB database, beside raw pg_dump / pg_restore.

    .venv/bin/nox -s bench -- backup     (or: .venv/bin/python bench/bench_backup.py)

Starts a local-kind environment of its own (a unique project, Docker-chosen ports,
private state), fills `pins` with at least TARGET_BYTES of generated pins (titles and
stories of random words: text that compresses like prose, not like repeated bytes), then
measures in the same run:
1. the baseline: `pg_dump -Fc` in the database container, to a file on this machine;
2. `invoke backup.create` (the same dump, with SHA-256, age encryption and manifest);
3. the baseline: `pg_restore -j2` of the raw dump into an empty database;
4. `invoke backup.verify` (decrypt, restore into a throwaway PostgreSQL, compare every
   table's rows, start the CMS on it) and `invoke backup.restore` (stop the CMS, safety
   backup, restore in one checked transaction, CMS ready).
Goal (issue 11): backup.create <= 1.1x raw pg_dump. Everything it started is removed at
the end, even on failure.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, figure, private_homes, run

TARGET_BYTES = 1_000_000_000  # of the pins table, as PostgreSQL measures it
IN_SCRATCH = "/tmp/raw.dump"  # noqa: S108 (inside the throwaway container)
BATCH_ROWS = 20_000


def words(seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    syllables = ["ka", "lo", "re", "pin", "sto", "ne", "mar", "tel", "vi", "ga", "ro", "an"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(4000)]


def pins_csv(rows: int, start: int, vocabulary: list[str]) -> bytes:
    rng = random.Random(start)
    lines = []
    for i in range(start, start + rows):
        title = " ".join(rng.choices(vocabulary, k=4)).capitalize()
        story = " ".join(rng.choices(vocabulary, k=220))
        lat, lon = rng.uniform(-80, 80), rng.uniform(-179, 179)
        lines.append(f"{title}\tpin-{i}\t{story}\t{lat:.5f}\t{lon:.5f}\tpublished")
    return ("\n".join(lines) + "\n").encode()


def psql(db: str, sql: str) -> str:
    argv = ["docker", "exec", db, "psql", "-qtAX", "-U", "lorepin", "-d", "lorepin", "-c", sql]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"failed: {sql}: {done.stderr.strip()}")
    return done.stdout.strip()


def fill(db: str) -> int:
    vocabulary = words()
    copy = [
        "docker", "exec", "-i", db, "psql", "-qX", "-U", "lorepin", "-d", "lorepin", "-c",
        "COPY pins (title, slug, story, latitude, longitude, status) FROM STDIN",
    ]  # fmt: skip
    start = 0
    while int(psql(db, "SELECT pg_total_relation_size('pins')")) < TARGET_BYTES:
        subprocess.run(copy, input=pins_csv(BATCH_ROWS, start, vocabulary), check=True)
        start += BATCH_ROWS
    psql(db, "ANALYZE pins")
    return int(psql(db, "SELECT pg_total_relation_size('pins')"))


def seconds(argv: list[str], env: dict[str, str], **kwargs: object) -> float:
    started = time.monotonic()
    subprocess.run(argv, env={**os.environ, **env}, check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]
    return time.monotonic() - started


def main() -> None:
    project = f"lorepin-bench-backup-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-backup-") as tmp:
        env = {
            **private_homes(tmp),
            "LOREPIN_PROJECT": project,
            "LOREPIN_HTTP_PORT": "0",
            "LOREPIN_DB_PORT": "0",
            "LOREPIN_IMAGE_TAG": "e2e",
            "LOREPIN_BACKUP_DIR": f"{tmp}/backups",
        }
        invoke = [sys.executable, "-m", "invoke"]
        db = f"{project}-db-1"
        scratch = f"{project}-raw-restore"
        try:
            run([*invoke, "up"], ROOT, env)
            print("filling pins ...", file=sys.stderr, flush=True)
            t = time.monotonic()
            size = fill(db)
            rows = int(psql(db, "SELECT count(*) FROM pins"))
            print(f"pins: {rows} rows, {size / 1e9:.2f} GB ({time.monotonic() - t:.0f} s to fill)")

            raw = Path(tmp) / "raw.dump"
            with raw.open("wb") as out:
                raw_dump = seconds(
                    ["docker", "exec", db, "pg_dump", "-Fc", "-U", "lorepin", "-d", "lorepin"],
                    {},
                    stdout=out,
                )
            made = json.loads(run([*invoke, "backup.create", "--json"], ROOT, env))
            ours = made["seconds"]
            figure("backup", "backup.create (baseline: raw pg_dump -Fc)", ours, "s", raw_dump)
            print(
                f"backup:  raw pg_dump -Fc {raw_dump:.1f} s ({raw.stat().st_size / 1e6:.0f} MB)"
                f" | backup.create {ours:.1f} s ({made['bytes'] / 1e6:.0f} MB, sha256 + age)"
                f" = {ours / raw_dump:.2f}x (goal <= 1.1x)"
            )

            subprocess.run(
                ["docker", "run", "-d", "--name", scratch, "-e", "POSTGRES_USER=lorepin",
                 "-e", "POSTGRES_PASSWORD=bench", "-e", "POSTGRES_DB=lorepin",
                 "lorepin/postgres:e2e"],
                check=True, capture_output=True,
            )  # fmt: skip
            subprocess.run(["docker", "cp", str(raw), f"{scratch}:{IN_SCRATCH}"], check=True)
            while subprocess.run(
                ["docker", "exec", scratch, "pg_isready", "-q", "-h", "127.0.0.1"], check=False
            ).returncode:
                time.sleep(0.5)
            raw_restore = seconds(
                ["docker", "exec", scratch, "pg_restore", "-j2", "-U", "lorepin", "-d",
                 "lorepin", "--no-owner", IN_SCRATCH],
                {},
            )  # fmt: skip
            verify = seconds([*invoke, "backup.verify", "--id", made["id"]], env,
                             capture_output=True)  # fmt: skip
            restore = seconds(
                [*invoke, "backup.restore", "--from", made["id"], "--yes"], env,
                capture_output=True,
            )  # fmt: skip
            figure("backup", "backup.restore (baseline: raw pg_restore -j2)", restore, "s",
                   raw_restore)  # fmt: skip
            print(
                f"restore: raw pg_restore -j2 (file in the container) {raw_restore:.1f} s"
                f" | backup.verify (decrypt, restore, compare, CMS ready) {verify:.1f} s"
                f" | backup.restore (stop, safety backup, checked restore, ready) {restore:.1f} s"
            )
        finally:
            subprocess.run(["docker", "rm", "-f", "-v", scratch], capture_output=True, check=False)
            subprocess.run(
                [*invoke, "down", "--volumes", "--yes"],
                cwd=ROOT,
                env={**os.environ, **env},
                capture_output=True,
                check=False,
            )


if __name__ == "__main__":
    main()
