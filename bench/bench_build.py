"""Image build times in one run: cold, warm with no change, after a one-line CMS change.

    .venv/bin/nox -s bench          (or: .venv/bin/python bench/bench_build.py)

Works in a throwaway clone under a private image prefix, and removes its images after.
"cold" is `invoke images.build --no-cache`: every layer is rebuilt (the base image and
BuildKit's pip/npm download caches stay, as on any build machine that built before).
Target: the one-line rebuild takes at most 15 % of the cold build.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lorepin_tasks import settings as settings_mod  # noqa: E402


def timed(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return time.monotonic() - started


def main() -> None:
    base = settings_mod.load({}, root=ROOT).base_image
    if not base:
        raise SystemExit("no base image: run scripts/bootstrap.sh")
    prefix = f"lorepin-bench-{os.getpid()}"
    env = {"BASE_IMAGE": base, "LOREPIN_IMAGE_PREFIX": prefix}
    build = [sys.executable, "-m", "invoke", "images.build"]
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        try:
            cold = timed([*build, "--no-cache"], clone, env)
            warm = timed(build, clone, env)
            app = clone / "cms" / "lorepin_cms" / "app.py"
            app.write_text(app.read_text() + "\n# bench: a one-line change\n")
            edit = timed(build, clone, env)
        finally:
            refs = subprocess.run(
                ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            ours = [r for r in refs if r.startswith(f"{prefix}/")]
            if ours:
                subprocess.run(["docker", "image", "rm", *ours], capture_output=True, check=False)
    print(f"\n{'build':<34}  seconds  of cold")
    for label, seconds in (
        ("cold (--no-cache)", cold),
        ("warm, no change", warm),
        ("after a one-line CMS change", edit),
    ):
        print(f"{label:<34}  {seconds:7.1f}  {seconds / cold:6.1%}")
    verdict = "meets" if edit <= 0.15 * cold else "MISSES"
    print(f"one-line rebuild {edit / cold:.1%} of cold: {verdict} the 15 % target")


if __name__ == "__main__":
    main()
