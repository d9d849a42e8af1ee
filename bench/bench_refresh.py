"""`invoke staging.refresh` beside a plain restore of the same backup.

    .venv/bin/nox -s bench -- refresh     (or: .venv/bin/python bench/bench_refresh.py)

Cuts release 1.0.0 in a throwaway clone (its own image prefix), deploys it to a staging
and a production environment of its own (unique projects, Docker-chosen ports), fills
production's database with PINS pins (~1 GB at the default 1.5 M: stories of ~600
bytes), USERS users and as many activity rows, takes a logical backup and verifies it.
Then, side by side on the same backup:
1. the baseline: a plain restore, `age -d | pg_restore` into a fresh PostgreSQL of the
   same image (what any restore of that file costs);
2. `invoke staging.refresh --yes`: the same restore beside production, anonymization,
   checks, the copy into staging and the swap.
Everything it started is removed at the end, even on failure.

Target (issue 16): the refresh <= 2x the plain restore. LOREPIN_BENCH_REFRESH_PINS sets a
smaller size for a quick look.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pyrage
import yaml
from common import (
    base_image,
    bench_clone,
    figure,
    free_port,
    private_homes,
    remove_images,
    run,
)

PINS = int(os.environ.get("LOREPIN_BENCH_REFRESH_PINS", "1500000"))
USERS = 100_000
FILL = [  # constant numbers only
    f"INSERT INTO cms_users (name, role) SELECT 'person.' || g, 'viewer' "  # noqa: S608
    f"FROM generate_series(1, {USERS}) g",
    "INSERT INTO pins (title, slug, story, place_name, latitude, longitude, tags, status) "  # noqa: S608
    "SELECT 'Pin ' || g, 'pin-' || g, repeat(md5(g::text), 18), 'Town ' || (g % 1000), "
    "(g % 179) - 89 + 0.5, (g % 359) - 179 + 0.5, ARRAY['bench', 'tag' || (g % 50)], "
    "CASE WHEN g % 4 = 0 THEN 'draft' ELSE 'published' END "
    f"FROM generate_series(1, {PINS}) g",
    "INSERT INTO activity (session_id, user_id, method, route, status, duration_ms) "  # noqa: S608
    "SELECT md5(g::text)::uuid, 'person.' || (g % 1000), 'GET', '/api/pins', 200, 3.5 "
    f"FROM generate_series(1, {USERS}) g",
]


def invoke(repo: Path, env: dict[str, str], *args: str, timeout: float = 3600) -> str:
    return run([sys.executable, "-m", "invoke", *args], repo, env, timeout=timeout)


def setup(tmp: Path, projects: dict[str, str], prefix: str) -> tuple[Path, dict[str, str]]:
    """A clone with a staging and a production of its own, and release 1.0.0."""
    from lorepin_tasks.plans import deploy as plan

    repo, git = bench_clone(tmp)
    config = yaml.safe_load((repo / "invoke.yaml").read_text())
    for name, project in projects.items():
        secrets = tmp / f"secrets-{name}"
        secrets.mkdir(mode=0o700)
        (secrets / "db_password").write_text(uuid.uuid4().hex + "\n")
        (secrets / "db_password").chmod(0o644)
        env = config["lorepin"]["environments"][name]
        env.update(project=project, http_port=0, https_port=0, secrets_dir=str(secrets))
        env["logs"]["port"] = free_port()
        env["deploy"].update(watch=2, approvals=0, windows=[])
        env["deploy"].pop("requires_e2e", None)
        env.pop("replica", None)  # one database each: the refresh is what is measured
        env.pop("secrets", None)
        if name == "production":
            cert, key = secrets / "tls.crt", secrets / "tls.key"
            subprocess.run(plan.tls_certificate(cert, key, ["127.0.0.1"]), capture_output=True,
                           check=True)  # fmt: skip
            for f in (cert, key):
                f.chmod(0o644)
    (repo / "invoke.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    subprocess.run([*git, "commit", "-qam", "chore: bench environments"], check=True)
    env = {"BASE_IMAGE": base_image(), "LOREPIN_IMAGE_PREFIX": prefix,
           "LOREPIN_AGE_IDENTITY": str(tmp / "age.key"), **private_homes(tmp)}  # fmt: skip
    (tmp / "age.key").write_text(f"{pyrage.x25519.Identity.generate()}\n")
    (tmp / "age.key").chmod(0o600)
    print("cutting release 1.0.0 ...", flush=True)
    invoke(repo, env, "release", "--as", "1.0.0", "--yes")
    return repo, env


def plain_restore(
    repo: Path, env: dict[str, str], backup: str, image: str, server: str | None = None
) -> float:
    """Seconds to decrypt and pg_restore the backup into a fresh PostgreSQL of its image,
    or (`server`: a database container) into a new database on that server, with its WAL
    archiving and settings (dropped after)."""
    from lorepin_tasks import settings as settings_mod
    from lorepin_tasks.plans import backup as backup_plan
    from lorepin_tasks.runtime import backups

    config = yaml.safe_load((repo / "invoke.yaml").read_text())["lorepin"]
    settings = settings_mod.load(config, root=repo, environ={**os.environ, **env})
    production = settings.environment("production")
    data = backup_plan.data_path(production, backup)
    key = (production.secrets_dir / backup_plan.IDENTITY_FILE).read_text()
    identity = pyrage.x25519.Identity.from_str(
        next(ln for ln in key.splitlines() if ln.startswith("AGE-SECRET-KEY-"))
    )
    name = server or f"lorepin-bench-plain-restore-{uuid.uuid4().hex[:6]}"
    database = "lorepin_bench_plain" if server else "lorepin"
    psql = ["docker", "exec", name, "psql", "-qX", "-U", "lorepin", "-d", "lorepin", "-c"]
    if server:
        subprocess.run([*psql, f"CREATE DATABASE {database}"], capture_output=True, check=True)
    else:
        subprocess.run(["docker", "run", "-d", "--name", name, "-e", "POSTGRES_USER=lorepin",
                        "-e", "POSTGRES_DB=lorepin", "-e", "POSTGRES_PASSWORD=bench", image],
                       capture_output=True, check=True)  # fmt: skip
    try:
        while subprocess.run(["docker", "exec", name, "pg_isready", "-q", "-h", "127.0.0.1",
                              "-U", "lorepin"], check=False).returncode:  # fmt: skip
            time.sleep(0.5)
        started = time.monotonic()
        with subprocess.Popen(["docker", "exec", "-i", name, "pg_restore", "-U", "lorepin",
                               "-d", database, "--exit-on-error", "--no-owner",
                               "--no-privileges"], stdin=subprocess.PIPE) as proc:  # fmt: skip
            assert proc.stdin is not None
            backups.decrypt(data, proc.stdin, identity, backup)
            proc.stdin.close()
            if proc.wait() != 0:
                raise SystemExit("the plain restore failed")
        return time.monotonic() - started
    finally:
        if server:
            subprocess.run([*psql, f"DROP DATABASE IF EXISTS {database}"], capture_output=True,
                           check=False)  # fmt: skip
        else:
            subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


def main() -> None:
    suffix = uuid.uuid4().hex[:6]
    projects = {"staging": f"lorepin-bench-rf-stg-{suffix}",
                "production": f"lorepin-bench-rf-prd-{suffix}"}  # fmt: skip
    prefix = f"lorepin-bench-refresh-{suffix}"
    with tempfile.TemporaryDirectory(prefix="lorepin-bench-refresh-") as tmp_:
        tmp = Path(tmp_)
        repo, env = setup(tmp, projects, prefix)
        try:
            for name in ("production", "staging"):
                print(f"deploying 1.0.0 to {name} ...", flush=True)
                invoke(repo, env, "deploy", "--env", name, "--version", "1.0.0", "--yes")
            print(f"filling production: {PINS:,} pins, {USERS:,} users ...", flush=True)
            db = f"{projects['production']}-db-1"
            for sql in FILL:
                subprocess.run(["docker", "exec", db, "psql", "-qX", "-v", "ON_ERROR_STOP=1",
                                "-U", "lorepin", "-d", "lorepin", "-c", sql],
                               check=True, capture_output=True)  # fmt: skip
            size_sql = "SELECT pg_database_size('lorepin')"
            size = subprocess.run(
                ["docker", "exec", db, "psql", "-qtAX", "-U", "lorepin", "-d", "lorepin", "-c",
                 size_sql], capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            print("backing up and verifying production ...", flush=True)
            invoke(repo, env, "backup.create", "--env", "production")
            listed = json.loads(invoke(repo, env, "backup.list", "--env", "production", "--json"))
            backup = listed[0]["id"]
            invoke(repo, env, "backup.verify", "--env", "production", "--id", backup)
            image = subprocess.run(
                ["docker", "inspect", "--format", "{{.Config.Image}}", db],
                capture_output=True, text=True, check=True,
            ).stdout.strip()  # fmt: skip
            print("plain restore of the same backup ...", flush=True)
            plain_s = plain_restore(repo, env, backup, image)
            print("plain restore into a new database on staging's server ...", flush=True)
            server_s = plain_restore(repo, env, backup, image, f"{projects['staging']}-db-1")
            print("staging.refresh ...", flush=True)
            started = time.monotonic()
            invoke(repo, env, "staging.refresh", "--yes")
            refresh_s = time.monotonic() - started
            history = json.loads(invoke(repo, env, "deploy.history", "--env", "staging", "--json"))
            detail = next(r for r in reversed(history) if r["action"] == "staging-refresh")[
                "detail"
            ]
        finally:
            for name in projects:
                subprocess.run([sys.executable, "-m", "invoke", "down", "--env", name,
                                "--volumes", "--yes"], cwd=repo, env={**os.environ, **env},
                               capture_output=True, check=False)  # fmt: skip
            remove_images(prefix)
    ratio = refresh_s / plain_s if plain_s else 0.0
    print(f"\nproduction's database: {int(size) / 1e9:.2f} GB ({PINS:,} pins, {USERS:,} users, "
          f"{USERS:,} activity rows); backup {backup}")  # fmt: skip
    print(f"{'step':<44} {'seconds':>8}")
    print(f"{'plain restore (age -d | pg_restore), baseline':<44} {plain_s:>8.1f}")
    print(f"{'  the same into a database on staging`s server':<44} {server_s:>8.1f}")
    print(f"{'staging.refresh, the whole command':<44} {refresh_s:>8.1f}")
    for key in ("restore_seconds", "anonymize_seconds", "rows_seconds", "copy_seconds"):
        print(f"{'  of which ' + key.removesuffix('_seconds'):<44} {detail.get(key, 0):>8.1f}")
    print(f"{'  write pause of the swap (ms)':<44} {detail.get('pause_ms', 0):>8}")
    print(
        f"refresh / plain restore: {ratio:.2f}x (target <= 2x); / the same on staging's "
        f"server: {refresh_s / server_s:.2f}x"
    )
    figure("refresh", "refresh_seconds", refresh_s, "s", baseline=plain_s)
    figure("refresh", "refresh_vs_server_restore", refresh_s, "s", baseline=server_s)
    figure("refresh", "swap_pause_ms", float(detail.get("pause_ms", 0)), "ms")


if __name__ == "__main__":
    main()
