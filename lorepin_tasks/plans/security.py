"""`invoke security.scan`'s judgement, pure: what a TLS scan (sslyze's figures), the
response headers and the containers' configuration (docker inspect) say, as findings
with a severity, and the report in Markdown and JSON. The tools' results come in as
plain data; nothing here touches the network. docs/security.md."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from lorepin_tasks.errors import ConfigError
from lorepin_tasks.plans.proxy import STRONG_TLS_1_2

if TYPE_CHECKING:
    from lorepin_tasks.plans.ci import Results

SEVERITIES = ("high", "medium", "low")  # worst first

# Protocols a client must not get: SSL 2/3 and TLS 1.0/1.1 (RFC 8996).
REFUSED_PROTOCOLS = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1")
HSTS_MIN_AGE = 180 * 86400  # seconds
# Response headers every page carries (plans/proxy.py sets them), and what each guards.
HEADERS = {
    "strict-transport-security": "browsers keep to HTTPS",
    "content-security-policy": "script injection",
    "x-content-type-options": "MIME sniffing",
    "x-frame-options": "clickjacking",
    "referrer-policy": "URLs leaking to other sites",
}
# Server kinds publish the proxy only; anything else on a host port must stay on loopback.
PUBLIC_SERVICE = "proxy"


@dataclass(frozen=True)
class Finding:
    severity: str  # high, medium or low
    check: str  # tls, headers, containers
    what: str  # one line, the weakness and where


@dataclass(frozen=True)
class TlsScan:
    """What sslyze saw: the suites accepted per protocol, the HSTS max-age (None: no
    header), and the SHA-256 of the leaf certificate served."""

    accepted: Mapping[str, Sequence[str]]  # "tls_1_2" -> ["TLS_ECDHE_..."]
    hsts_max_age: int | None
    leaf_sha256: str | None


def tls(scan: TlsScan, expected_sha256: str | None) -> list[Finding]:
    found = []
    for protocol in REFUSED_PROTOCOLS:
        if scan.accepted.get(protocol):
            name = protocol.replace("_", " ", 1).replace("_", ".").upper()
            found.append(Finding("high", "tls", f"{name} is accepted "
                                 f"({len(scan.accepted[protocol])} suites)"))  # fmt: skip
    weak = sorted(set(scan.accepted.get("tls_1_2", ())) - set(STRONG_TLS_1_2))
    if weak:
        found.append(Finding("high", "tls", f"weak TLS 1.2 suites accepted: {', '.join(weak)}"))
    if not scan.accepted.get("tls_1_2") and not scan.accepted.get("tls_1_3"):
        found.append(Finding("high", "tls", "neither TLS 1.2 nor TLS 1.3 is accepted"))
    elif not scan.accepted.get("tls_1_3"):
        found.append(Finding("low", "tls", "TLS 1.3 is not offered"))
    if scan.hsts_max_age is None:
        found.append(Finding("high", "tls", "no Strict-Transport-Security header"))
    elif scan.hsts_max_age < HSTS_MIN_AGE:
        found.append(Finding("medium", "tls", f"HSTS max-age {scan.hsts_max_age} s is under "
                                              f"{HSTS_MIN_AGE} s (180 days)"))  # fmt: skip
    if expected_sha256 and scan.leaf_sha256 != expected_sha256:
        found.append(Finding("high", "tls", "the certificate served is not the environment's "
                                            "(tls.crt)"))  # fmt: skip
    return found


def headers(got: Mapping[str, str], path: str) -> list[Finding]:
    """The security headers of one response (names in any case)."""
    present = {k.lower(): v for k, v in got.items()}
    found = [Finding("medium", "headers", f"{path}: no {name} header ({why})")
             for name, why in HEADERS.items() if not present.get(name)]  # fmt: skip
    csp = present.get("content-security-policy", "")
    if csp and ("'unsafe-inline'" in csp or "'unsafe-eval'" in csp) and "script-src" in csp:
        found.append(Finding("medium", "headers", f"{path}: the CSP allows inline or eval'd "
                                                   "scripts"))  # fmt: skip
    if "server" in present and any(c.isdigit() for c in present["server"]):
        found.append(Finding("low", "headers", f"{path}: Server header names a version"))
    return found


# Changes the API must refuse without a token. Each probe is a write nothing could apply (an
# empty body, pin 0): an endpoint open to anyone answers it 422 and still changes nothing.
UNGUARDED_PROBES: tuple[tuple[str, str, bytes | None], ...] = (
    ("POST", "/api/pins", b"{}"),
    ("PATCH", "/api/pins/0", b"{}"),
    ("DELETE", "/api/pins/0", None),
)


def access(answers: Mapping[tuple[str, str], int]) -> list[Finding]:
    """What each write answered without a token: anything but 401 is a write open to all."""
    open_to_all = [(m, p, code) for (m, p), code in answers.items() if code != 401]
    return [Finding("high", "access", f"{m} {p} without a token answered {code}, not 401: "
                    "a change anyone can make") for m, p, code in open_to_all]  # fmt: skip


def containers(inspected: Iterable[Mapping[str, Any]]) -> list[Finding]:
    """The configuration of the environment's containers (docker inspect's objects)."""
    found = []
    for c in inspected:
        name = str(c.get("Name", "?")).lstrip("/")
        service = str((c.get("Config") or {}).get("Labels", {}).get(
            "com.docker.compose.service", ""))  # fmt: skip
        host = c.get("HostConfig") or {}
        user = str((c.get("Config") or {}).get("User") or "")
        if host.get("Privileged"):
            found.append(Finding("high", "containers", f"{name}: privileged"))
        for port, bindings in (host.get("PortBindings") or {}).items():
            for b in bindings or []:
                ip = (b or {}).get("HostIp") or "0.0.0.0"  # noqa: S104 (a fact, not a bind)
                if service != PUBLIC_SERVICE and ip not in ("127.0.0.1", "::1"):
                    what = f"{name}: {port} published on {ip}, not loopback"
                    found.append(Finding("high", "containers", what))
        if user in ("", "0", "root") or user.startswith(("0:", "root:")):
            found.append(Finding("medium", "containers", f"{name}: starts as root"))
        if "ALL" not in [str(x).upper() for x in host.get("CapDrop") or []]:
            found.append(Finding("medium", "containers", f"{name}: capabilities not dropped"))
        if not any(str(s).startswith("no-new-privileges") for s in host.get("SecurityOpt") or []):
            found.append(Finding("medium", "containers", f"{name}: no no-new-privileges"))
        if not host.get("ReadonlyRootfs"):
            found.append(Finding("low", "containers", f"{name}: writable root filesystem"))
    return found


# schemathesis's codes for a 5xx answer (`schemathesis explain ST101`); the others are
# answers unlike the schema: a status, content type or body it does not document.
SERVER_ERRORS = {"ST101", "ST102"}


def fuzz(results: Results | None, error: str = "") -> list[Finding]:
    """schemathesis's JUnit results (one test case per API operation): a 5xx is high, a
    response unlike the schema medium; no result at all (the schema did not load) high."""
    if results is None or results.tests == 0:
        return [Finding("high", "api-fuzz", f"no operation was tested: {error or 'no result'}")]
    found = []
    for f in results.failures:
        codes = {c.strip() for c in f.first_line.split(",")}
        severity = "high" if codes & SERVER_ERRORS or "server error" in f.first_line.lower() \
            else "medium"  # fmt: skip
        what = f"{f.test}: {f.first_line[:160] or f.kind} (`schemathesis explain CODE`)"
        found.append(Finding(severity, "api-fuzz", what))
    return found


# detect-secrets' detectors of known credential formats (its entropy and keyword
# detectors flag every hash and test fixture: noise that hides a real leak).
SECRET_DETECTORS = (
    "AWSKeyDetector", "AzureStorageKeyDetector", "BasicAuthDetector", "DiscordBotTokenDetector",
    "GitHubTokenDetector", "GitLabTokenDetector", "JwtTokenDetector", "MailchimpDetector",
    "NpmDetector", "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector",
    "SendGridDetector", "SlackDetector", "SquareOAuthDetector", "StripeDetector",
    "TelegramBotTokenDetector", "TwilioKeyDetector",
)  # fmt: skip
# An image variable whose name says it holds a secret must hold a file's path (*_FILE).
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE_?KEY)", re.I)
ALLOW_LINE = re.compile(r"^([0-9a-f]{40})\s*(#.*)?$")


@dataclass(frozen=True)
class SecretHit:
    where: str  # "path:line (git history)", "image lorepin/cms:1.0.0, its environment"
    kind: str  # detect-secrets' type, e.g. "Slack Webhook"
    sha1: str  # of the value (detect-secrets' secret_hash): how it is allowed, never shown


def allowed(text: str, where: str) -> set[str]:
    """The hashes of values known not to be secrets (a throwaway test password): one SHA-1
    per line with a comment saying why (detect-secrets' hash, as the report shows it)."""
    found = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = ALLOW_LINE.match(line.strip())
        if not match or not match.group(2):
            raise ConfigError(f"{where}:{number}: not '<sha1 of the value> # why'")
        found.add(match.group(1))
    return found


def env_hits(image: str, env: Iterable[str]) -> list[SecretHit]:
    """An image's variables named like a secret and holding a value, not a file's path."""
    hits = []
    for item in env:
        name, _, value = item.partition("=")
        if SECRET_NAME.search(name) and value and not name.endswith("_FILE") \
                and not value.startswith("/"):  # fmt: skip
            digest = hashlib.sha1(value.encode(), usedforsecurity=False).hexdigest()
            hits.append(SecretHit(f"image {image}, variable {name}", "secret-named variable",
                                  digest))  # fmt: skip
    return hits


def secrets(hits: Iterable[SecretHit], allow: set[str]) -> list[Finding]:
    """Each credential found, unless its hash is allowed: where, what kind, and the first
    12 hex digits of its SHA-1 (enough to allow it; never the value)."""
    seen, found = set(), []
    for h in hits:
        if h.sha1 in allow or (h.where, h.sha1) in seen:
            continue
        seen.add((h.where, h.sha1))
        found.append(Finding("high", "secrets", f"{h.where}: {h.kind} (sha1 {h.sha1})"))
    return found


NPM_SEVERITY = {"critical": "high", "high": "high", "moderate": "medium", "low": "low",
                "info": "low"}  # fmt: skip


def pip_audit(report: Mapping[str, Any], where: str) -> list[Finding]:
    """pip-audit's JSON: each known vulnerability of a pinned package is high (it ships in
    the image), with the versions that fix it."""
    found = []
    for dep in report.get("dependencies", []):
        for v in dep.get("vulns", []):
            fix = ", ".join(v.get("fix_versions") or []) or "none yet"
            package = f"{dep.get('name')} {dep.get('version')}"
            what = f"{where}: {package}: {v.get('id')} (fixed in {fix})"
            found.append(Finding("high", "dependencies", what))
    return found


def npm_audit(report: Mapping[str, Any], where: str) -> list[Finding]:
    """npm audit's JSON (v7+): a finding per vulnerable package at npm's severity."""
    found = []
    for name, v in sorted((report.get("vulnerabilities") or {}).items()):
        severity = NPM_SEVERITY.get(str(v.get("severity")), "medium")
        what = f"{where}: {name} ({v.get('severity')}, {v.get('range', '?')})"
        found.append(Finding(severity, "dependencies", what))
    return found


def worst(findings: Iterable[Finding]) -> str | None:
    seen = {f.severity for f in findings}
    return next((s for s in SEVERITIES if s in seen), None)


def fails(findings: Iterable[Finding], fail_on: str) -> bool:
    """Whether any finding is at `fail_on` or worse."""
    limit = SEVERITIES.index(fail_on)
    return any(SEVERITIES.index(f.severity) <= limit for f in findings)


def report(env: str, url: str, at: str, findings: Sequence[Finding], ran: Sequence[str],
           not_run: Mapping[str, str]) -> dict[str, Any]:  # fmt: skip
    ordered = sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.check, f.what))
    return {
        "env": env,
        "url": url,
        "at": at,
        "checks": list(ran),
        "not_run": dict(not_run),
        "counts": {s: sum(1 for f in findings if f.severity == s) for s in SEVERITIES},
        "findings": [asdict(f) for f in ordered],
    }


def markdown(rep: Mapping[str, Any]) -> str:
    counts = rep["counts"]
    lines = [
        f"# Security scan of {rep['env']} ({rep['url']})",
        "",
        f"At {rep['at']}. Checks run: {', '.join(rep['checks'])}.",
        "",
        f"**{counts['high']} high, {counts['medium']} medium, {counts['low']} low.**",
        "",
    ]
    if rep["findings"]:
        lines += ["| severity | check | finding |", "| --- | --- | --- |"]
        lines += [f"| {f['severity']} | {f['check']} | {f['what'].replace('|', '/')} |"
                  for f in rep["findings"]]  # fmt: skip
    else:
        lines.append("No finding.")
    if rep["not_run"]:
        lines += ["", "## Not checked", ""]
        lines += [f"- {name}: {why}" for name, why in rep["not_run"].items()]
    return "\n".join(lines) + "\n"
