"""db.report on a 1 GB database, and the index it recommends, before and after.

Builds the project's PostgreSQL image (a tag of the bench's own) and starts it with
pg_stat_statements loaded, as server environments do; migrates it to head (Alembic), and
fills `pins` with about LOREPIN_BENCH_DB_MB (1024) MB of rows inside the server
(generate_series). Then, in one run:

1. a workload the report should catch: pins looked up by `place_name` (no index), 30
   times; its mean time is the baseline;
2. db.report's own queries and analysis (plan.SQL through psql in the container, as the
   task runs them), three times: the time, and whether it names the index;
3. the index it names, built as it says (CREATE INDEX CONCURRENTLY), and the same
   workload again.

Targets: db.report under 5 s on 1 GB; the index it names turns the workload's mean from
a sequential scan's to an index lookup's. Everything it started is removed at the end.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid

from common import ROOT, base_image, figure

from lorepin_tasks.plans import db_report as plan
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.runtime.pg import Session

MB = int(os.environ.get("LOREPIN_BENCH_DB_MB", "1024"))
ROW_BYTES = 640  # a pin of the generated shape with its indexes (2.06 M pins made 1.23 GiB)
LOOKUPS = 30
ROUNDS = 3
LOOKUP = "SELECT id, title FROM pins WHERE place_name = $1"


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def main() -> None:
    name = f"lorepin-bench-dbreport-{uuid.uuid4().hex[:8]}"
    image = f"{name}:bench"
    try:
        started = time.monotonic()
        docker("build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image()}", "--tag", image,
               str(ROOT / "compose/images/postgres"))  # fmt: skip
        docker("run", "--detach", "--name", name, "--publish", "127.0.0.1::5432",
               "--env", "POSTGRES_USER=lorepin", "--env", "POSTGRES_PASSWORD=bench-only",
               "--env", "POSTGRES_DB=lorepin", "--shm-size", "256m", image, "postgres",
               "-c", "shared_preload_libraries=pg_stat_statements", "-c", "shared_buffers=128MB",
               "-c", "max_wal_size=4GB")  # fmt: skip
        port = docker("port", name, "5432/tcp").stdout.strip().splitlines()[0].rsplit(":", 1)[1]
        url = f"postgresql+psycopg://lorepin:bench-only@127.0.0.1:{port}/lorepin"
        deadline = time.monotonic() + 60
        while docker("exec", name, "pg_isready", "-U", "lorepin", check=False).returncode:
            if time.monotonic() > deadline:
                raise SystemExit(docker("logs", name, check=False).stderr[-2000:])
            time.sleep(1)
        time.sleep(2)  # the image's init restarts the server once
        subprocess.run([sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"),
                        "upgrade", "head"], env={**os.environ, "DATABASE_URL": url},
                       check=True, capture_output=True, timeout=300)  # fmt: skip
        print(f"server and schema ready in {time.monotonic() - started:.0f} s")

        with session(name) as s:
            rows = MB * 1024 * 1024 // ROW_BYTES
            started = time.monotonic()
            s.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            for first in range(0, rows, 500_000):  # in chunks: progress, bounded WAL
                last = min(rows, first + 500_000)
                s.query(FILL.format(first=first + 1, last=last), timeout=1800)
                print(f"  {last:,} of {rows:,} pins", flush=True)
            s.query("VACUUM (ANALYZE) pins", timeout=1800)
            size = int(s.scalar("SELECT pg_database_size(current_database())") or 0)
            print(f"filled {rows:,} pins, database {size / 2**30:.2f} GiB, in "
                  f"{time.monotonic() - started:.0f} s")  # fmt: skip

            s.query("SELECT pg_stat_statements_reset()")
            before = workload(s)
            server_before = server_mean(s)
            times, rep = [], {}
            for _ in range(ROUNDS):
                started = time.monotonic()
                rep = plan.report({k: plan.loaded(s.query(q)) for k, q in plan.SQL.items()})
                times.append(time.monotonic() - started)
            figure("db_report", "db.report on 1 GiB", statistics.median(times), "s")
            named = [c for c in rep["index_candidates"] if c["column"] == "place_name"]
            median = statistics.median(times)
            print(f"db.report's queries and analysis on {size / 2**30:.2f} GiB: median "
                  f"{median:.2f} s of {ROUNDS} ({', '.join(f'{t:.2f}' for t in times)}); "
                  f"target: under 5 s: {'met' if median < 5 else 'MISSED'}")  # fmt: skip
            if not named:
                raise SystemExit(f"db.report did not name the place_name index: {rep}")
            print(f"it names: {named[0]['index']}\n  because {named[0]['why']}")
            started = time.monotonic()
            s.query(named[0]["index"], timeout=3600)
            print(f"the index built in {time.monotonic() - started:.1f} s")
            s.query("SELECT pg_stat_statements_reset()")
            after = workload(s)
            server_after = server_mean(s)
            print(f"pins by place_name, mean of {LOOKUPS} as the client sees it: "
                  f"{before * 1000:.1f} ms before (the baseline: sequential scans), "
                  f"{after * 1000:.2f} ms after: {before / after:.0f}x faster")  # fmt: skip
            figure("db_report", "pins by place_name with the named index (baseline: without)",
                   after * 1000, "ms", before * 1000)  # fmt: skip
            ratio = server_before / server_after
            print(f"  in the server (pg_stat_statements mean_exec_time): {server_before:.1f} ms "
                  f"before, {server_after:.2f} ms after: {ratio:.0f}x")  # fmt: skip
    finally:
        docker("rm", "--force", "--volumes", name, check=False)
        docker("image", "rm", "--force", image, check=False)


# Generated pins: titles, stories of ~400 characters, places from 5,000 names, tags.
FILL = """
INSERT INTO pins (title, slug, story, place_name, latitude, longitude, tags, status,
                  created_at, updated_at)
SELECT 'Pin ' || g, 'pin-' || g, repeat(md5(g::text), 12),
       'Place ' || (g % 5000), (g % 180) - 90 + 0.5, (g % 360) - 180 + 0.5,
       ARRAY['tag' || (g % 50), 'tag' || (g % 7)],
       CASE WHEN g % 10 = 0 THEN 'draft' ELSE 'published' END,
       now() - make_interval(mins => g % 100000), now()
FROM generate_series({first}, {last}) g"""


def session(container: str) -> Session:
    argv = ["docker", "exec", "-i", container, "psql", "-U", "lorepin", "-d", "lorepin",
            "-qtAX", "-F", "\t", "-v", "ON_ERROR_STOP=1"]  # fmt: skip
    return Session(Executor(dry_run=False), argv, {}, "database", quiet=True)


def server_mean(s: Session) -> float:
    """The lookup's mean execution time in the server, in ms."""
    mean = s.scalar("SELECT mean_exec_time FROM pg_stat_statements "
                    "WHERE query LIKE '%FROM pins WHERE place_name = $1'")  # fmt: skip
    return float(mean or "nan")


def workload(s: Session) -> float:
    """Mean seconds of LOOKUPS lookups by place name (prepared, as the CMS's are)."""
    s.query(f"PREPARE lookup(text) AS {LOOKUP}")
    spent = []
    for i in range(LOOKUPS):
        started = time.monotonic()
        s.query(f"EXECUTE lookup('Place {i * 97 % 5000}')", timeout=600)
        spent.append(time.monotonic() - started)
    s.query("DEALLOCATE lookup")
    return statistics.mean(spent)


if __name__ == "__main__":
    main()
