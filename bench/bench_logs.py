"""Searching a day of central logs: `invoke logs.search --request-id` against `grep` over
the same files, in one run.

    .venv/bin/nox -s bench -- logs     (or: .venv/bin/python bench/bench_logs.py)

Builds the collector image and starts it (a unique name, as a server environment's
collector would be named) with a day of logs on its volume: LOREPIN_BENCH_LINES lines
(1,000,000 unless said) spread over four services in the collector's own format, the
proxy's and the CMS's lines JSON as they write them, one request id in a few of them.
Then, alternating, three rounds each: `grep -F` over the day's files inside the collector
(the baseline: what a person would run), and `invoke logs.search --env staging
--request-id ID` (the whole task: Invoke's start, the listing, the grep, the merge).
Everything it started is removed at the end, even on failure.

Targets: logs.search at most 2x the grep, and under 5 s.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_image, figure, private_homes

LINES = int(os.environ.get("LOREPIN_BENCH_LINES", "1000000"))
ROUNDS = 3
RID = "bench-7d1e0c55-43f2-4d0b-9e55-2f9d3a1c6b10"
SERVICES = ("proxy", "cms-blue", "db", "backup-site")


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


def main() -> None:
    suffix = uuid.uuid4().hex[:6]
    project = f"lorepin-bench-logs-{suffix}"
    name, image = f"{project}-collector-1", f"lorepin-bench-logs-{suffix}/collector:bench"
    day = time.strftime("%Y-%m-%d", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **private_homes(tmp), "LOREPIN_PROJECT": project}
        try:
            docker("build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image()}", "--tag",
                   image, str(ROOT / "compose/images/collector"))  # fmt: skip
            docker("run", "--detach", "--name", name, image)
            dirs = " ".join(f"/var/log/lorepin/{s}" for s in SERVICES)
            variables = [f"n={LINES}", f"day={day}T", f"target={RID}", "dir=/var/log/lorepin",
                         f"file={day}.log"]  # fmt: skip
            started = time.monotonic()
            subprocess.run(
                ["docker", "exec", "-i", name, "sh", "-c", f'mkdir -p {dirs} && awk '
                 + " ".join(f"-v {v}" for v in variables) + " -f /dev/stdin"],
                input=(Path(__file__).parent / "logs_day.awk").read_text(), text=True, check=True,
            )  # fmt: skip
            size = docker("exec", name, "du", "-sb", "/var/log/lorepin").stdout.split()[0]
            print(f"a day of logs: {LINES:,} lines, {int(size) / 1e6:.0f} MB, written in "
                  f"{time.monotonic() - started:.1f} s")  # fmt: skip
            files = [
                f"/var/log/lorepin/{s}/{day}.log"
                for s in ("proxy", "cms-blue", "db", "backup-site")
            ]
            grep = ["docker", "exec", "--user", "lorepin-log-reader", "--env", "LC_ALL=C", name,
                    "grep", "-h", "-F", "-e", RID, "--", *files]  # fmt: skip
            tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
            window = ["--since", day, "--until", tomorrow]  # all of today, not the last 24 h
            search = [sys.executable, "-m", "invoke", "logs.search", "--env", "staging",
                      "--request-id", RID, *window, "--json"]  # fmt: skip
            times: dict[str, list[float]] = {"grep": [], "logs.search": []}
            expected = sum(  # logs_day.awk's: the id in a few lines, none of backup-site's
                1 for i in range(LINES) if i % 250_000 < 12 and i % 4 != 3
            )
            for _ in range(ROUNDS):
                for label, argv in (("grep", grep), ("logs.search", search)):
                    started = time.monotonic()
                    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True,
                                          text=True, check=False)  # fmt: skip
                    times[label].append(time.monotonic() - started)
                    found = len(done.stdout.splitlines())
                    if done.returncode != 0 or found != expected:
                        why = f"{found} lines ({expected} expected)\n{done.stderr[-900:]}"
                        raise SystemExit(f"{label}: exit {done.returncode}, {why}")
            g, s = statistics.median(times["grep"]), statistics.median(times["logs.search"])
            for label, median in (("grep -F (baseline)", g), ("logs.search", s)):
                rounds = ", ".join(f"{t:.2f}" for t in times[label.split()[0]])
                print(f"{label:<20} median {median:.2f} s  (rounds {rounds})")
            figure("logs", "logs.search over a day (baseline: grep -F)", s, "s", g)
            verdict = "met" if s <= 2 * g and s < 5 else "MISSED"
            print(f"logs.search / grep: {s / g:.2f}x (target <= 2x and < 5 s): {verdict}")
        finally:
            docker("rm", "--force", "--volumes", name, check=False)
            docker("image", "rm", "--force", image, check=False)


if __name__ == "__main__":
    main()
