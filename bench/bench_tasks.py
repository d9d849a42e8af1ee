"""The toolkit's own overhead, each beside its baseline in one run.

    .venv/bin/nox -s bench          (or: .venv/bin/python bench/bench_tasks.py)

1. `invoke --list` with the project's tasks beside `invoke --list` of a tasks file with
   one trivial task, same interpreter and Invoke (15 interleaved runs each; medians), in
   a checkout as bootstrap leaves it (the toolkit's bytecode compiled). Target: <= 0.3 s.
2. A warm `invoke up` (nothing changed) beside the raw `docker compose up --detach --wait`
   it runs, the exact command its --dry-run prints (5 paired runs; medians).
   Target: <= 1.2x.
Works in a throwaway clone under a unique project, removed afterwards.
"""

from __future__ import annotations

import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_image, figure, private_homes, timed


def seconds(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {shlex.join(argv)}\n{proc.stderr.decode()[-2000:]}")
    return time.monotonic() - started


def raw_up(clone: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The exact `docker compose up` that `invoke up` runs, from its dry run."""
    dry = subprocess.run(
        [sys.executable, "-m", "invoke", "up", "--dry-run"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(ln for ln in dry.stderr.splitlines() if " up --detach " in ln)
    words = shlex.split(line.removeprefix("+ "))
    count = next(i for i, w in enumerate(words) if not re.match(r"^[A-Z_][A-Z0-9_]*=", w))
    return words[count:], {**env, **dict(w.split("=", 1) for w in words[:count])}


def main() -> None:
    invoke = [sys.executable, "-m", "invoke"]
    env = {**os.environ, "BASE_IMAGE": base_image()}
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-") as tmp:
        empty = Path(tmp) / "empty"
        empty.mkdir()
        # A tasks file with one trivial task: what Invoke itself costs.
        (empty / "tasks.py").write_text(
            "from invoke import task\n\n\n@task\ndef noop(c):\n    pass\n"
        )
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        # As scripts/bootstrap.sh leaves a checkout: the toolkit's bytecode compiled.
        subprocess.run(
            [
                sys.executable,
                "-m",
                "compileall",
                "-q",
                "lorepin_tasks",
                "cms/lorepin_cms",
                "tasks.py",
            ],
            cwd=clone,
            check=True,
            capture_output=True,
        )
        lists: dict[str, list[float]] = {"project": [], "empty": []}
        for _ in range(15):
            lists["project"].append(seconds([*invoke, "--list"], clone, env))
            lists["empty"].append(seconds([*invoke, "--list"], empty, env))

        stack = {
            **env,
            "LOREPIN_PROJECT": f"lorepin-bench-tasks-{os.getpid()}",
            "LOREPIN_HTTP_PORT": "0",
            "LOREPIN_DB_PORT": "0",
            "LOREPIN_IMAGE_TAG": f"bench-{os.getpid()}",
            **private_homes(tmp),
        }
        ups: dict[str, list[float]] = {"invoke up": [], "raw compose up": []}
        try:
            timed([*invoke, "up"], clone, stack)  # cold: builds and starts
            argv, raw_env = raw_up(clone, stack)
            for _ in range(5):
                ups["raw compose up"].append(seconds(argv, clone, raw_env))
                ups["invoke up"].append(seconds([*invoke, "up"], clone, stack))
        finally:
            subprocess.run(
                [*invoke, "down", "--volumes", "--yes"],
                cwd=clone,
                env=stack,
                capture_output=True,
                check=False,
            )
            tag = stack["LOREPIN_IMAGE_TAG"]
            for image in ("cms", "postgres", "geocoder-mock"):
                subprocess.run(
                    ["docker", "image", "rm", f"lorepin/{image}:{tag}"],
                    capture_output=True,
                    check=False,
                )

    print(f"\n{'measurement':<34} {'median s':>9} {'min s':>7} {'max s':>7}")
    for label, values in (
        ("invoke --list (project tasks)", lists["project"]),
        ("invoke --list (one-task file)", lists["empty"]),
        ("raw docker compose up --wait", ups["raw compose up"]),
        ("warm invoke up", ups["invoke up"]),
    ):
        print(f"{label:<34} {statistics.median(values):9.3f} {min(values):7.3f} {max(values):7.3f}")
    listing = statistics.median(lists["project"])
    ratio = statistics.median(ups["invoke up"]) / statistics.median(ups["raw compose up"])
    figure("tasks", "invoke --list (baseline: a one-task file)", listing, "s",
           statistics.median(lists["empty"]))  # fmt: skip
    figure(
        "tasks",
        "warm invoke up (baseline: raw docker compose up)",
        statistics.median(ups["invoke up"]),
        "s",
        statistics.median(ups["raw compose up"]),
    )
    print(f"invoke --list {listing:.3f} s: {'meets' if listing <= 0.3 else 'MISSES'} <= 0.3 s")
    print(
        f"warm up / raw compose up = {ratio:.2f}x: {'meets' if ratio <= 1.2 else 'MISSES'} <= 1.2x"
    )


if __name__ == "__main__":
    main()
