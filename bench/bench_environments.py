"""Spin-up times of environments, each beside raw `docker compose up --wait` in one run.

    .venv/bin/nox -s bench          (or: .venv/bin/python bench/bench_environments.py)

Works in a throwaway clone of the committed project (never touches your checkout) and
removes every environment it starts. Measures, with images already cached:
  feature new   `invoke feature.up` of a new branch: build check, start, migrate, seed 3000
  raw compose   `docker compose up --detach --wait` of the same files, fresh project
  feature warm  `invoke feature.up` again, nothing changed (update in place)
  feature edit  `invoke feature.up` after a one-line change to the CMS source
  local warm    `invoke up` of a local-kind environment, nothing changed
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, base_image, figure, private_homes, timed

from lorepin_tasks.plans import feature as plan
from lorepin_tasks.settings import Checkout


def main() -> None:
    base = base_image()
    invoke = [sys.executable, "-m", "invoke"]
    results: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(
            ["git", "-C", str(clone), "checkout", "-q", "-b", "bench/spin-up"], check=True
        )
        env = {
            "BASE_IMAGE": base,
            "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "b@x.invalid",
            "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "b@x.invalid",
            **private_homes(tmp),
        }
        checkout = Checkout.of(clone.resolve(), socket.gethostname())
        name = plan.name_for("bench/spin-up", checkout.id)
        raw_project = f"lorepin-bench-raw-{os.getpid()}"
        local = {
            **env,
            "LOREPIN_PROJECT": f"lorepin-bench-local-{os.getpid()}",
            "LOREPIN_HTTP_PORT": "0",
            "LOREPIN_DB_PORT": "0",
            "LOREPIN_SECRETS_DIR": f"{tmp}/local-secrets",
        }
        raw_vars = {
            **env,
            "COMPOSE_BAKE": "false",
            "LOREPIN_ENV": "feature",
            "LOREPIN_ENV_KIND": "feature",
            "LOREPIN_IMAGE_TAG": name.image_tag,
            "LOREPIN_HTTP_PORT": "0",
            "LOREPIN_SECRETS_DIR": f"{tmp}/raw-secrets",
            "LOREPIN_BRANCH": "bench/raw",
            "LOREPIN_CREATED_AT": "20260101T000000Z",
            "LOREPIN_EXPIRES_AT": "20260101T000000Z",
        }
        files = [
            "-f",
            "compose/compose.yaml",
            "-f",
            "compose/mocks.yaml",
            "-f",
            "compose/feature.yaml",
        ]
        try:
            # Images for the branch tag first, so every measured run finds them cached.
            timed([*invoke, "feature.up"], clone, env)
            timed([*invoke, "feature.down", "--yes"], clone, env)
            new = timed([*invoke, "feature.up"], clone, env)
            results.append(("invoke feature.up (new branch, seeded)", new))
            Path(f"{tmp}/raw-secrets").mkdir(mode=0o700)
            Path(f"{tmp}/raw-secrets/db_password").write_text("bench-only\n")
            raw = [
                "docker",
                "compose",
                "-p",
                raw_project,
                *files,
                "up",
                "--detach",
                "--wait",
                "--no-build",
                "--pull",
                "never",
            ]
            results.append(("raw compose up --wait (fresh project)", timed(raw, clone, raw_vars)))
            running = subprocess.run(
                [
                    "docker",
                    "ps",
                    "-q",
                    "--filter",
                    f"label=com.docker.compose.project={raw_project}",
                    "--filter",
                    "status=running",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            if len(running) != 3:  # db, geocoder, cms (Compose may exit 0 on failure here)
                raise SystemExit(f"raw compose up did not start the stack ({len(running)} running)")
            results.append(
                ("invoke feature.up (again, no change)", timed([*invoke, "feature.up"], clone, env))
            )
            app = clone / "cms" / "lorepin_cms" / "app.py"
            app.write_text(app.read_text() + "\n# bench: a one-line change\n")
            subprocess.run(
                ["git", "-C", str(clone), "commit", "-qam", "chore: bench edit"],
                check=True,
                env={**os.environ, **env},
            )
            results.append(
                (
                    "invoke feature.up (one-line CMS change)",
                    timed([*invoke, "feature.up"], clone, env),
                )
            )
            timed([*invoke, "up"], clone, local)
            results.append(
                ("invoke up (local kind, no change)", timed([*invoke, "up"], clone, local))
            )
        finally:
            subprocess.run(
                [*invoke, "feature.down", "--yes"],
                cwd=clone,
                capture_output=True,
                env={**os.environ, **env},
                check=False,
            )
            subprocess.run(
                [*invoke, "down", "--volumes", "--yes"],
                cwd=clone,
                capture_output=True,
                env={**os.environ, **local},
                check=False,
            )
            subprocess.run(
                ["docker", "compose", "-p", raw_project, *files, "down", "--volumes"],
                cwd=clone,
                capture_output=True,
                env={**os.environ, **raw_vars},
                check=False,
            )
    width = max(len(label) for label, _ in results)
    print(f"\n{'measurement':<{width}}  seconds")
    for label, seconds in results:
        print(f"{label:<{width}}  {seconds:7.1f}")
        figure("environments", label, seconds, "s")


if __name__ == "__main__":
    main()
