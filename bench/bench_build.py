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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_image, figure, private_homes, remove_images, timed


def main() -> None:
    base = base_image()
    prefix = f"lorepin-bench-{os.getpid()}"
    build = [sys.executable, "-m", "invoke", "images.build"]
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-") as tmp:
        env = {"BASE_IMAGE": base, "LOREPIN_IMAGE_PREFIX": prefix, **private_homes(tmp)}
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        try:
            cold = timed([*build, "--no-cache"], clone, env)
            warm = timed(build, clone, env)
            app = clone / "cms" / "lorepin_cms" / "app.py"
            app.write_text(app.read_text() + "\n# bench: a one-line change\n")
            edit = timed(build, clone, env)
        finally:
            remove_images(prefix)
    print(f"\n{'build':<34}  seconds  of cold")
    for label, seconds in (
        ("cold (--no-cache)", cold),
        ("warm, no change", warm),
        ("after a one-line CMS change", edit),
    ):
        print(f"{label:<34}  {seconds:7.1f}  {seconds / cold:6.1%}")
    figure("build", "rebuild after a one-line change (baseline: cold)", edit, "s", cold)
    verdict = "meets" if edit <= 0.15 * cold else "MISSES"
    print(f"one-line rebuild {edit / cold:.1%} of cold: {verdict} the 15 % target")


if __name__ == "__main__":
    main()
