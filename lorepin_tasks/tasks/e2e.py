"""`invoke e2e --env E [--dry-run]`: the end-to-end suite (deployed/) against a deployed
environment's public address: API flows with tokens, the admin page in headless
Chromium, TLS and headers at the proxy. JUnit out (dist/e2e/<env>/<version>.xml), the
outcome in the environment's trail, where a production deploy whose policy says
`requires_e2e: staging` looks for a green run of the same version.

The suite signs in with an editor's token made for the run (its user is test data) and
revoked after it; the token reaches pytest in its environment, never on a command line.
Never production: the suite writes (and deletes) pins.
"""

from __future__ import annotations

import os
import sys
import time
import xml.etree.ElementTree as ET
from typing import Any

from invoke.context import Context

from lorepin_cms import access
from lorepin_tasks.errors import LorePinError, Refused
from lorepin_tasks.plans import proxy
from lorepin_tasks.runtime import docker, git, ops, security_scan
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    locked,
    ready_version,
    revoke_token,
    run_token,
    server_env,
    task,
)

SUITE = "deployed"


def _counts(junit: str) -> tuple[int, int]:
    """(tests, failures and errors) of pytest's JUnit report."""
    root = ET.parse(junit).getroot()  # noqa: S314 (written by our own pytest, just now)
    suites = [root] if root.tag == "testsuite" else list(root)
    tests = sum(int(s.get("tests", 0)) for s in suites)
    bad = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    return tests, bad + skipped  # a skipped check is no green


@task(help={"env": "the deployed environment (never production)", "dry_run": DRY_HELP})
def e2e(c: Context, env: str = "", dry_run: bool = False) -> None:
    """Run the end-to-end suite against a deployed environment through its proxy (API
    flows with tokens, the admin page in headless Chromium, TLS and headers); JUnit in
    dist/e2e/<env>/<version>.xml; the outcome recorded in the environment's trail."""
    ctx = server_env(c, env, dry_run, what="the end-to-end suite goes to")
    name = ctx.env.name
    if ctx.env.kind == "production":
        raise Refused(f"'{name}' is production: the suite writes pins; run it on staging, "
                      "with the same version")  # fmt: skip
    out = ctx.settings.root / "dist" / "e2e" / name
    ca = ctx.env.secrets_dir / "tls.crt"
    root = ctx.settings.root
    argv = [sys.executable, "-m", "pytest", str(root / SUITE), "-c", str(root / "pyproject.toml"),
            "-q", "-p", "no:cacheprovider", "--junitxml", str(out / "<version>.xml")]  # fmt: skip
    if ctx.run.dry_run:
        ctx.run.run(argv, env={"LOREPIN_E2E_URL": f"https://127.0.0.1:<{name}'s proxy>",
                               "LOREPIN_E2E_CA": str(ca)})  # fmt: skip
        return
    host, port = security_scan.proxy_address(ctx)
    plain = docker.published(ctx, "proxy", proxy.HTTP_PORT)
    version = ready_version(ctx)
    who = git.who_am_i(ctx.run, ctx.settings.root)
    out.mkdir(parents=True, exist_ok=True)
    junit = out / f"{version}.xml"
    argv[-1] = str(junit)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # the suite
    environ.update(
        LOREPIN_E2E_URL=f"https://{host}:{port}",
        LOREPIN_E2E_HTTP_URL=f"http://{plain.replace('0.0.0.0', '127.0.0.1')}" if plain else "",  # noqa: S104
        LOREPIN_E2E_CA=str(ca) if ca.is_file() else "",
        LOREPIN_E2E_VERSION=version,
        LOREPIN_E2E_ARTIFACTS=str(out / version),
    )
    with locked(ctx, "e2e"):
        # A run cut short leaves "started" as the version's last word: never a green run.
        _record(ctx, who, version, "started", {})
        ctx.run.say(f"==> {name}: end-to-end suite against {version} at https://{host}:{port}")
        started = time.monotonic()
        junit.unlink(missing_ok=True)
        token, key = run_token(ctx, who, "e2e")
        try:
            ctx.run.add_secret(token)
            ctx.run.add_secret(access.secret_of(token))
            environ["LOREPIN_E2E_TOKEN"] = token
            done = ctx.run.run(["setpriv", "--pdeathsig", "KILL", "--", *argv], env=environ,
                               capture=True, check=False, timeout=900)  # fmt: skip
        finally:
            revoke_token(ctx, who, key)
        seconds = round(time.monotonic() - started, 1)
        if junit.is_file():  # the report is kept as an artifact: no secret in it
            junit.write_text(ctx.run.redact(junit.read_text()))
        tests, failed = _counts(str(junit)) if junit.is_file() else (0, 0)
        passed = done.returncode == 0 and not failed and tests > 0
        if passed and ready_version(ctx) != version:
            passed, failed = False, failed or 1  # the release changed under the suite
        detail = {"tests": tests, "failed": failed, "seconds": seconds, "junit": str(junit)}
        _record(ctx, who, version, "passed" if passed else "failed", detail)
    print(ctx.run.redact(done.stdout.rstrip()))
    if not junit.is_file():
        why = (done.stdout + done.stderr).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise LorePinError(f"the end-to-end suite did not run: {ctx.run.redact(why[0])}")
    if not passed:
        raise LorePinError(f"the end-to-end suite failed on '{name}' {version}: {failed} of "
                           f"{tests} tests; see {junit}")  # fmt: skip
    print(f"'{name}' {version}: {tests} end-to-end tests passed in {seconds} s; JUnit: {junit}")


def _record(ctx: EnvContext, who: str, version: str, outcome: str, detail: dict[str, Any]
            ) -> None:  # fmt: skip
    with ops.database_session(ctx, who) as session:
        ops.ensure_schema(session)
        trail = ops.open_trail(ctx, session, who)
        ops.record(trail, ctx, who, "e2e", version, outcome, detail)
