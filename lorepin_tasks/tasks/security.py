"""`invoke security.scan --env E`: how a deployed environment scores against known
weaknesses, from real tools, as a report an operator can hand to an auditor
(dist/security/, Markdown and JSON); `invoke security.firewall --env E [--apply]`: the
host's nftables ruleset. docs/security.md."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import UTC, datetime

from invoke.collection import Collection
from invoke.context import Context

from lorepin_tasks.errors import ConfigError, LorePinError, Refused
from lorepin_tasks.plans import deploy as deploy_plan
from lorepin_tasks.plans import firewall as fw_plan
from lorepin_tasks.plans import security as plan
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.prompt import confirm
from lorepin_tasks.tasks._common import DRY_HELP, JSON_HELP, SERVER_ENV_HELP, server_env, task

# Pages whose headers are checked: the API, a missing page (the error path), the admin page.
PATHS = ("/version", "/api/pins", "/no-such-page", "/admin/")
# What issue 15 still has to add to the scan: said in every report, never passed silently.
NOT_RUN = {
    "api-fuzz of writes": "a scan sends no write to a deployed environment (it would leave "
    "data behind); the contract tests fuzz every operation against a throwaway database",
}


ALLOW = ".secrets-allow"  # hashes of values known not to be secrets (docs/security.md)


def _allowed(ctx: EnvContext) -> set[str]:
    path = ctx.settings.root / ALLOW
    try:
        return plan.allowed(path.read_text(), ALLOW) if path.is_file() else set()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {ALLOW}: {exc}") from None


@task(
    help={
        "env": SERVER_ENV_HELP,
        "json": JSON_HELP,
        "fail_on": "the severity that fails the scan (exit 1): high (default), medium or low",
        "examples": "generated requests per API operation (schemathesis; default 25)",
        "dry_run": DRY_HELP,
    }
)
def scan_(c: Context, env: str = "", json_: bool = False, fail_on: str = "high",
          examples: int = 25, dry_run: bool = False) -> None:  # fmt: skip
    """Scan a deployed environment: TLS (sslyze: protocols, suites, HSTS, the
    certificate), security headers, the API's changes without a token (each must be a
    401), the API's read operations fuzzed against its OpenAPI
    schema (schemathesis: no 5xx, answers as documented), and its containers'
    configuration (root, capabilities, no-new-privileges, read-only, what is published),
    credentials in the git history and the images (detect-secrets), and known
    vulnerabilities of the dependencies (pip-audit, npm audit; a service that does not
    answer is said in the report).
    Writes dist/security/; exit 1 when a finding is at --fail-on or worse."""
    if fail_on not in plan.SEVERITIES:
        raise ConfigError(f"--fail-on must be one of {', '.join(plan.SEVERITIES)}, got {fail_on!r}")
    if not 1 <= examples <= 1000:
        raise ConfigError(f"--examples must be 1 to 1000, got {examples}")
    ctx = server_env(c, env, dry_run, what="scans look at")
    from lorepin_tasks.runtime import security_scan as scan  # here: `invoke --list` stays quick

    if dry_run:
        print(f"# would scan the proxy of '{ctx.env.name}' with sslyze (TLS), request "
              f"{', '.join(PATHS)} for their headers, send "
              f"{', '.join(f'{m} {p}' for m, p, _ in plan.UNGUARDED_PROBES)} without a token, "
              "fuzz its API's GET operations with "
              f"schemathesis ({examples} examples each), docker inspect its containers, and "
              "write dist/security/")  # fmt: skip
        return
    host, port = scan.proxy_address(ctx)
    ctx.run.say(f"==> {ctx.env.name}: TLS scan of {host}:{port} (sslyze)")
    expected = scan.certificate_sha256(ctx.env.secrets_dir / "tls.crt")
    findings = plan.tls(scan.tls(host, port, deploy_plan.server_name(ctx.env)), expected)
    ctx.run.say(f"==> {ctx.env.name}: security headers of {len(PATHS)} pages")
    for path in PATHS:
        findings += plan.headers(scan.answer(host, port, path)[1], path)
    ctx.run.say(f"==> {ctx.env.name}: the API's changes without a token (must be 401)")
    findings += plan.access({(method, path): scan.answer(host, port, path, method, body)[0]
                             for method, path, body in plan.UNGUARDED_PROBES})  # fmt: skip
    ctx.run.say(f"==> {ctx.env.name}: API fuzz of the read operations (schemathesis, "
                f"{examples} examples each)")  # fmt: skip
    out = ctx.settings.root / "dist" / "security"
    out.mkdir(parents=True, exist_ok=True)
    fuzzed, why = scan.api_fuzz(f"https://{host}:{port}", out / f"{ctx.env.name}-api-fuzz.xml",
                                examples, timeout=600)  # fmt: skip
    findings += plan.fuzz(fuzzed, why)
    ctx.run.say(f"==> {ctx.env.name}: containers' configuration (docker inspect)")
    inspected = scan.inspected(ctx)
    if not inspected:
        raise LorePinError(f"'{ctx.env.name}' has no container: nothing to scan")
    findings += plan.containers(inspected)
    ctx.run.say(f"==> {ctx.env.name}: credentials in the git history and the images' "
                "variables and build history (detect-secrets)")  # fmt: skip
    images = [str((c.get("Config") or {}).get("Image") or "") for c in inspected]
    running = [i for i in images if i]
    hits = (scan.history_secrets(ctx.settings.root) + scan.image_secrets(ctx, running)
            + scan.image_file_secrets(ctx, running, out / "image-files.json"))  # fmt: skip
    findings += plan.secrets(hits, _allowed(ctx))
    ctx.run.say(f"==> {ctx.env.name}: known vulnerabilities of the CMS's and the admin "
                "page's dependencies (pip-audit, npm audit)")  # fmt: skip
    audited, unaudited = scan.dependency_audit(ctx.settings.root)
    findings += audited
    at = datetime.now(UTC)
    rep = plan.report(ctx.env.name, f"https://{host}:{port}", at.isoformat(timespec="seconds"),
                      findings, ["tls", "headers", "access", "api-fuzz", "containers",
                                 "secrets", "dependencies"], {**NOT_RUN, **unaudited})  # fmt: skip
    stem = out / f"{ctx.env.name}-{at:%Y%m%dT%H%M%SZ}"
    stem.with_suffix(".json").write_text(json.dumps(rep, indent=2) + "\n")
    stem.with_suffix(".md").write_text(plan.markdown(rep))
    print(json.dumps(rep, indent=2) if json_ else plan.markdown(rep), end="\n" if json_ else "")
    ctx.run.say(f"report: {stem}.md and .json")
    if plan.fails(findings, fail_on):
        counts = rep["counts"]
        raise LorePinError(f"the scan of '{ctx.env.name}' found {counts['high']} high, "
                           f"{counts['medium']} medium, {counts['low']} low (fails on "
                           f"{fail_on} and worse)")  # fmt: skip


@task(
    help={
        "env": SERVER_ENV_HELP,
        "apply": "apply it to this host (root; nft checks it first, then swaps it in at once)",
        "yes": "apply without asking",
        "dry_run": DRY_HELP,
    }
)
def firewall(c: Context, env: str = "", apply: bool = False, yes: bool = False,
             dry_run: bool = False) -> None:  # fmt: skip
    """The host's nftables ruleset for a server environment: only the proxy's ports are
    public, SSH only from firewall.admin_networks, everything else dropped; Docker's
    published ports are held to the public ones (DOCKER-USER's job). Printed; applied with
    --apply. A ruleset that would lock SSH out is refused."""
    ctx = server_env(c, env, dry_run, what="firewalls guard")
    # The ports as invoke.yaml says, never a shell's LOREPIN_HTTP_PORT meant for `local`.
    configured = ctx.settings.environments[ctx.env.name]
    wall = fw_plan.Firewall(
        env=ctx.env.name,
        public_ports=tuple(p for p in (configured.http_port, configured.https_port) if p),
        admin_networks=ctx.env.firewall_admin_networks,
        ssh_port=ctx.env.firewall_ssh_port,
    )
    # Who is applying it over SSH, and to which port: they must stay let in.
    session = os.environ.get("SSH_CONNECTION") if apply else None
    if why := fw_plan.refusal(wall, session):
        raise Refused(why)
    rules = fw_plan.ruleset(wall)
    if not apply or dry_run:
        print(rules, end="")
    if not apply:
        return
    fw_plan.refuse_remote(ctx.env.name, ctx.env.docker_host or ctx.env.docker_context)
    if not dry_run and shutil.which("nft") is None:
        raise ConfigError("no `nft` here: install nftables (Debian: apt-get install nftables)")
    with tempfile.NamedTemporaryFile("w", prefix="lorepin-", suffix=".nft") as script:
        script.write(rules)
        script.flush()
        check, load = fw_plan.apply(script.name)
        checked = ctx.run.run(check, capture=True, capture_stderr=True, check=False)
        if not checked.ok:  # a ruleset nft refuses changes nothing
            said = [ln for ln in checked.stderr.splitlines() if "Error:" in ln] or ["?"]
            raise LorePinError(f"nft refuses the ruleset: {said[0].split('Error: ')[-1]}")
        if not dry_run:
            confirm(f"Replace this host's `inet {fw_plan.TABLE}` table with the ruleset of "
                    f"'{ctx.env.name}' (public: {', '.join(map(str, wall.public_ports))}; SSH "
                    f"from {', '.join(wall.admin_networks)})?", yes=yes)  # fmt: skip
        ctx.run.run(load)
        if dry_run:
            return
        listed = json.loads(ctx.run.run(fw_plan.LIST, capture=True).stdout)
    chains = {i["chain"]["name"] for i in listed.get("nftables", []) if "chain" in i}
    if chains != {"input", "forward"}:
        raise LorePinError(f"nft applied the ruleset, yet table inet {fw_plan.TABLE} has "
                           f"chains {sorted(chains)}")  # fmt: skip
    ctx.run.say(f"applied: table inet {fw_plan.TABLE} guards this host for '{ctx.env.name}'")


ns = Collection("security")
ns.add_task(scan_, name="scan")
ns.add_task(firewall)
