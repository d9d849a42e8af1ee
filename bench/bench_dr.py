"""`invoke dr.drill` on a 1 GB staging database, and a point-in-time restore of it.

    .venv/bin/nox -s bench -- dr     (or: .venv/bin/python bench/bench_dr.py)

Cuts a release in a throwaway clone (its own image prefix), deploys it to a staging
environment of its own, fills `pins` to about 1 GB (bench_backup's generator), takes a
full physical backup, then measures:
1. `invoke backup.restore --to-time` (PITR to a moment after the full backup), command
   start to the CMS ready again, beside the same restore's pgBackRest step alone;
2. `invoke dr.drill --seconds 75` (past one archive_timeout of 60 s): RTO and RPO.
Goals (issue 11): RPO <= 60 s, RTO <= 5 min for that size on 2 cores. Everything it
started is removed at the end, even on failure.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_backup import fill, psql
from bench_deploy import setup, teardown
from common import figure, run


def main() -> None:
    suffix = uuid.uuid4().hex[:6]
    project, prefix = f"lorepin-bench-dr-{suffix}", f"lorepin-bench-dr-{suffix}"
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-dr-") as name:
        tmp = Path(name)
        repo, env = setup(tmp, project, prefix)
        invoke = [sys.executable, "-m", "invoke"]
        try:
            print("deploying 1.0.0 ...", flush=True)
            run([*invoke, "deploy", "--env", "staging", "--version", "1.0.0"], repo, env)
            db = f"{project}-db-1"
            print("filling pins ...", flush=True)
            size = fill(db)
            rows = int(psql(db, "SELECT count(*) FROM pins"))
            print(f"pins: {rows} rows, {size / 1e9:.2f} GB")
            started = time.monotonic()
            full = json.loads(
                run(
                    [*invoke, "backup.create", "--env", "staging", "--type", "full", "--json"],
                    repo,
                    env,
                )
            )
            print(f"full backup (repo1): {time.monotonic() - started:.1f} s, "
                  f"{full['bytes'] / 1e6:.0f} MB stored")  # fmt: skip
            psql(db, "CREATE TABLE bench_marks (n int); INSERT INTO bench_marks VALUES (1)")
            time.sleep(2)
            target = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            time.sleep(2)
            psql(db, "INSERT INTO bench_marks VALUES (2)")
            started = time.monotonic()
            run([*invoke, "backup.restore", "--env", "staging", "--to-time", target, "--yes"],
                repo, env)  # fmt: skip
            pitr = time.monotonic() - started
            back = psql(db, "SELECT string_agg(n::text, ',') FROM bench_marks")
            last = json.loads(
                run([*invoke, "deploy.history", "--env", "staging", "--json"], repo, env)
            )[-1]
            steps = {s["name"]: s["seconds"] for s in last.get("steps", [])}
            print(
                f"PITR to {target}: {pitr:.1f} s for the whole command (safety backup, "
                f"restore, recovery, CMS ready, the new full backup); marks back: {back} "
                f"(expected 1); the restore itself as recorded (CMS stopped -> data back): "
                f"{last['detail'].get('seconds')} s {steps or ''}"
            )
            drilled = json.loads(
                run(
                    [*invoke, "dr.drill", "--env", "staging", "--seconds", "75", "--json"],
                    repo,
                    env,
                    timeout=3600,
                )
            )
            figure("dr", "dr.drill RTO", drilled["rto_seconds"], "s")
            figure("dr", "dr.drill RPO", drilled["rpo_seconds"], "s")
            figure("dr", "point-in-time restore, whole command", pitr, "s")
            print(
                f"dr.drill: RTO {drilled['rto_seconds']} s (goal <= 300), RPO "
                f"{drilled['rpo_seconds']} s (goal <= 60), database back in "
                f"{drilled['database_back_seconds']} s, markers "
                f"{drilled['markers_recovered']}/{drilled['markers_written']}, "
                f"{'passed' if drilled['passed'] else 'FAILED'}"
            )
        finally:
            teardown(repo, env, prefix)


if __name__ == "__main__":
    main()
