"""`invoke data.generate` of a million pins, beside a plain COPY of the same rows.

    .venv/bin/nox -s bench -- data      (or: .venv/bin/python bench/bench_data.py)

Works in a throwaway clone of the committed project with a local-kind environment of its
own (removed at the end), images cached. In one run:
  generate   `invoke data.generate --pins 1000000` (Faker pools, rows made in Python,
             streamed into psql's COPY in one transaction): the target is <= 60 s
  plain COPY the same rows, already in a file inside the database container, COPYed by
             psql there: the database's own share of the work (the baseline)
Both land in the same table with its indexes; the second run's rows go after the first's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, figure, run, stack_env, timed

from lorepin_tasks.plans import testdata

PINS = int(os.environ.get("LOREPIN_BENCH_PINS", "1000000"))


def main() -> None:
    invoke = [sys.executable, "-m", "invoke"]
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        project = f"lorepin-bench-data-{os.getpid()}"
        env = stack_env(project, tmp)
        db = f"{project}-db-1"
        try:
            run([*invoke, "up"], clone, env)
            generate = timed(
                [*invoke, "data.generate", "--pins", str(PINS), "--seed", "5"], clone, env
            )
            rows = Path(tmp) / "pins.copy"
            with rows.open("w", encoding="utf-8") as out:
                out.writelines(testdata.pin_rows(6, PINS, testdata.pools(6)))
            subprocess.run(["docker", "cp", str(rows), f"{db}:/tmp/pins.copy"], check=True)
            started = time.monotonic()
            run(["docker", "exec", db, "psql", "-U", "lorepin", "-d", "lorepin", "-qX", "-c",
                 f"{testdata.copy_pins()[:-len(' FROM STDIN')]} FROM '/tmp/pins.copy'"],
                clone, env)  # fmt: skip
            plain = time.monotonic() - started
        finally:
            subprocess.run([*invoke, "down", "--volumes", "--yes"], cwd=clone,
                           env={**os.environ, **env}, capture_output=True, check=False)  # fmt: skip
    print(
        f"data.generate of {PINS:,} pins: {generate:.1f} s (target <= 60 s); "
        f"plain COPY of the same number from a file in the container: {plain:.1f} s "
        f"({generate / plain:.1f}x)"
    )
    figure("data", "generate_1m_pins_seconds", generate, "s", baseline=plain)


if __name__ == "__main__":
    main()
