"""`invoke perf --env E [--duration 60s] [--users N] [--i-know] [--json] [--dry-run]`:
a load test of a deployed environment through its proxy, with locust (headless) and the
mix in perf/locustfile.py (list, filter, read, create). Its report is kept per version
(perf/<version>.json in the environment's state directory, across checkouts) and
compared with the previous version's: a regression beyond invoke.yaml's `perf:`
thresholds fails the run and names its endpoint.

Writes need an editor's token: one is made for the run (user `perf-<hex>.td0`, test
data for `data.cleanup`), given to locust in its environment, never on a command line,
and revoked after. Production only with --i-know, and read-only there.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from invoke.context import Context

from lorepin_tasks.errors import LorePinError, Refused
from lorepin_tasks.plans import perf as plan
from lorepin_tasks.runtime import git, security_scan
from lorepin_tasks.tasks._common import (
    DRY_HELP,
    JSON_HELP,
    locked,
    ready_version,
    revoke_token,
    run_token,
    server_env,
    task,
)


@task(
    help={
        "env": "the deployed environment to load (staging; production only with --i-know)",
        "duration": "how long: 30s, 5m (default 60s, at most 30m)",
        "users": f"simultaneous users (default 20, at most {plan.MAX_USERS})",
        "i_know": "load production anyway (read-only: no pins are created there)",
        "json": JSON_HELP,
        "dry_run": DRY_HELP,
    }
)
def perf(
    c: Context, env: str = "", duration: str = "60s", users: str = "20", i_know: bool = False,
    json_: bool = False, dry_run: bool = False,
) -> None:  # fmt: skip
    """Load-test a deployed environment through its proxy (locust, headless: list, filter,
    read, create), keep the report per version and compare it with the previous
    version's; a regression beyond invoke.yaml's `perf:` thresholds fails, naming its
    endpoint."""
    seconds, count = plan.duration(duration), plan.users(users)
    ctx = server_env(c, env, dry_run, what="a load test goes to")
    name = ctx.env.name
    if ctx.env.kind == "production" and not i_know:
        raise Refused(f"'{name}' is production: a load test slows its real users; pass "
                      "--i-know to run it anyway (read-only)")  # fmt: skip
    writes = ctx.env.kind != "production"
    out = ctx.env.state_dir / "perf"  # kept across checkouts: the next version compares
    ca = ctx.env.secrets_dir / "tls.crt"
    if ctx.run.dry_run:
        proxy = f"https://127.0.0.1:<{name}'s proxy>"
        argv = plan.locust_argv(sys.executable, ctx.settings.root, proxy, seconds, count,
                                "<tmp>/perf", writes=writes)  # fmt: skip
        ctx.run.run(argv, env={"LOREPIN_PERF_CA": str(ca)})
        ctx.run.say(f"report: {out}/<version>.json")
        return
    host, port = security_scan.proxy_address(ctx)
    version = ready_version(ctx)
    who = git.who_am_i(ctx.run, ctx.settings.root)
    environ = {**os.environ, "LOREPIN_PERF_CA": str(ca) if ca.is_file() else ""}
    ctx.run.say(f"==> {name}: load test of {version}, {count} users for {seconds} s (locust)")
    started = datetime.now(UTC).isoformat(timespec="seconds")
    key = None
    with locked(ctx, "perf"), tempfile.TemporaryDirectory(prefix="lorepin-perf-") as tmp:
        try:
            if writes:
                token, key = run_token(ctx, who, "perf")
                ctx.run.add_secret(token)
                environ["LOREPIN_PERF_TOKEN"] = token
            argv = plan.locust_argv(sys.executable, ctx.settings.root, f"https://{host}:{port}",
                                    seconds, count, f"{tmp}/perf", writes=writes)  # fmt: skip
            done = ctx.run.run(argv, env=environ, capture=True, check=False,
                               timeout=seconds + 120)  # fmt: skip
            stats = Path(f"{tmp}/perf_stats.csv")
            if not stats.is_file():
                why = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
                raise LorePinError(f"the load test did not finish: {ctx.run.redact(why[0])}")
            try:
                now = plan.report(stats.read_text(), env=name, version=version, at=started,
                                  seconds=seconds, count=count)  # fmt: skip
            except ValueError as exc:
                raise LorePinError(f"{exc}: is '{name}' answering at {host}:{port}?") from None
        finally:
            if key:
                revoke_token(ctx, who, key)
        if ready_version(ctx) != version:
            raise LorePinError(f"'{name}' changed release during the load test: no report kept; "
                               "run it again")  # fmt: skip
    reports, unreadable = plan.load_reports(out)
    for bad in unreadable:
        ctx.run.say(f"    {out / bad} is not a report of this task: left out")
    before = plan.previous(reports, version)
    found = plan.regressions(before, now, ctx.settings.perf)
    now["passed"] = not found
    # A run that failed is kept apart: it never replaces a version's report, nor is it
    # ever the baseline of the next version.
    report = out / (f"{version}.json" if not found else f"{version}.failed.json")
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".{report.name}.partial"
    partial.write_text(json.dumps(now, indent=2) + "\n")
    partial.replace(report)
    if json_:
        print(json.dumps({**now, "compared_with": before["version"] if before else None,
                          "regressions": found, "report": str(report)},
                         indent=2))  # fmt: skip
    else:
        print(plan.table(now, before))
        against = f"compared with {before['version']}" if before else "no earlier version"
        print(f"report: {report}; {against}")
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise LorePinError(f"'{name}' {version} regressed: {found[0]}{more}")
