"""What `invoke security.scan` looks at, from real tools: sslyze's TLS scan of the
environment's proxy, its response headers, and docker inspect of its containers. The
judgement is plans/security.py's."""

from __future__ import annotations

import hashlib
import ssl
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import LorePinError
from lorepin_tasks.plans import compose
from lorepin_tasks.plans import security as plan
from lorepin_tasks.plans.ci import Results
from lorepin_tasks.runtime import docker
from lorepin_tasks.runtime.environment import EnvContext

PROTOCOLS = ("ssl_2_0", "ssl_3_0", "tls_1_0", "tls_1_1", "tls_1_2", "tls_1_3")


def proxy_address(ctx: EnvContext) -> tuple[str, int]:
    """The proxy's HTTPS address on the host, as Docker published it."""
    from lorepin_tasks.plans import proxy

    address = docker.published(ctx, "proxy", proxy.HTTPS_PORT)
    if not address:
        raise LorePinError(
            f"the proxy of '{ctx.env.name}' is not running: deploy it first "
            f"(`invoke deploy --env {ctx.env.name} --version X.Y.Z`)"
        )
    host, port = address.rsplit(":", 1)
    return ("127.0.0.1" if host in ("0.0.0.0", "") else host), int(port)  # noqa: S104


def tls(host: str, port: int, server_name: str) -> plan.TlsScan:
    """sslyze over every protocol, the certificate and the HSTS header (a few seconds)."""
    from sslyze.plugins.scan_commands import ScanCommand
    from sslyze.scanner.models import ServerScanRequest, ServerScanStatusEnum
    from sslyze.scanner.scanner import Scanner
    from sslyze.server_setting import ServerNetworkLocation

    commands = {getattr(ScanCommand, f"{p.upper()}_CIPHER_SUITES") for p in PROTOCOLS}
    commands |= {ScanCommand.CERTIFICATE_INFO, ScanCommand.HTTP_HEADERS}
    location = ServerNetworkLocation(server_name, port, ip_address=host)
    scanner = Scanner()
    scanner.queue_scans([ServerScanRequest(server_location=location, scan_commands=commands)])
    with warnings.catch_warnings():  # its bundled trust stores' old certificates: noise
        warnings.simplefilter("ignore")
        result = next(iter(scanner.get_results()))
    if result.scan_status != ServerScanStatusEnum.COMPLETED or result.scan_result is None:
        raise LorePinError(f"sslyze could not reach {host}:{port}: "
                           f"{result.connectivity_error_trace or result.scan_status}")  # fmt: skip
    found = result.scan_result
    accepted: dict[str, list[str]] = {}
    for p in PROTOCOLS:
        attempt = getattr(found, f"{p}_cipher_suites")
        if attempt.result is None:
            raise LorePinError(f"sslyze's {p} scan of {host}:{port} failed: {attempt.error_reason}")
        accepted[p] = [s.cipher_suite.name for s in attempt.result.accepted_cipher_suites]
    hsts = None
    if found.http_headers.result and found.http_headers.result.strict_transport_security_header:
        hsts = found.http_headers.result.strict_transport_security_header.max_age
    leaf = None
    if found.certificate_info.result:
        from cryptography.hazmat.primitives import hashes

        chain = found.certificate_info.result.certificate_deployments[0].received_certificate_chain
        leaf = chain[0].fingerprint(hashes.SHA256()).hex()
    return plan.TlsScan(accepted=accepted, hsts_max_age=hsts, leaf_sha256=leaf)


def certificate_sha256(path: Path) -> str | None:
    """The SHA-256 of a PEM certificate's DER form (None: no such file)."""
    if not path.is_file():
        return None
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def answer(
    host: str, port: int, path: str, method: str = "GET", body: bytes | None = None
) -> tuple[int, dict[str, str]]:
    """One response's status and headers (4xx and 5xx too). TLS is sslyze's to judge: here
    the certificate is not checked, and the address is the environment's own on loopback."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        data=body,
        method=method,
        headers={"content-type": "application/json"} if body is not None else {},
    )
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:  # noqa: S310 (https, the environment's own proxy)
            return response.status, dict(response.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers.items())
    except (urllib.error.URLError, OSError) as exc:
        raise LorePinError(f"https://{host}:{port}{path} did not answer: {exc}") from None


def inspected(ctx: EnvContext) -> list[dict[str, Any]]:
    """docker inspect of every container of the environment's project."""
    ids = docker.read(ctx.run, compose.project_containers(ctx.env), env=ctx.engine).stdout.split()
    if not ids:
        return []
    out = docker.read(ctx.run, compose.inspect(ctx.env, *ids), env=ctx.engine).stdout
    return list(docker.decode(out or "[]", "docker inspect"))


FUZZ_CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
               "response_schema_conformance")  # fmt: skip


def api_fuzz(base: str, junit: Path, examples: int, timeout: float) -> tuple[Results | None, str]:
    """schemathesis over the API's read operations (GET) through the proxy, bounded in
    examples per operation and in time: its JUnit results, or None and why."""
    import subprocess
    import sys

    from lorepin_tasks.plans.ci import junit as read_junit

    junit.unlink(missing_ok=True)
    argv = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/openapi.json",
            "--include-method", "GET", "--checks", ",".join(FUZZ_CHECKS),
            "--max-examples", str(examples), "--tls-verify", "false", "--request-timeout", "10",
            "--workers", "1", "--report", "junit", "--report-junit-path", str(junit)]  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"schemathesis did not finish in {timeout:.0f} s"
    except OSError as exc:
        return None, f"schemathesis could not run: {exc}"
    if not junit.is_file():
        return None, (done.stderr or done.stdout).strip()[-300:] or f"exit {done.returncode}"
    results = read_junit(junit.read_text(), str(junit))
    if results.tests == 0:
        failed = "Connection failed" in done.stdout
        return None, f"the schema did not load from {base}/openapi.json" + (
            " (connection failed)" if failed else "")  # fmt: skip
    return results, ""


def _scan_lines(lines: dict[str, str]) -> list[plan.SecretHit]:
    """detect-secrets' credential detectors over each distinct line (keyed: the line,
    valued: where it was first seen)."""
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import transient_settings

    hits = []
    with transient_settings({"plugins_used": [{"name": n} for n in plan.SECRET_DETECTORS]}):
        for line, where in lines.items():
            hits += [plan.SecretHit(where, s.type, s.secret_hash) for s in scan_line(line)]
    return hits


def history_secrets(root: Path) -> list[plan.SecretHit]:
    """Every text blob of every ref's history (under 1 MB), each distinct line once."""
    import subprocess

    def git(*args: str, stdin: bytes = b"") -> bytes:
        done = subprocess.run(["git", "-C", str(root), *args], input=stdin,
                              capture_output=True, check=False)  # fmt: skip
        if done.returncode:
            raise LorePinError(f"git {args[0]} failed: {done.stderr.decode().strip()[-200:]}")
        return done.stdout

    paths: dict[str, str] = {}
    for line in git("rev-list", "--objects", "--all").decode().splitlines():
        sha, _, path = line.partition(" ")
        if path and not path.endswith(".age"):  # age files are encrypted by design
            paths.setdefault(sha, path)
    sizes = git("cat-file", "--batch-check", stdin="\n".join(paths).encode()).decode()
    blobs = [f[0] for f in (ln.split() for ln in sizes.splitlines())
             if len(f) == 3 and f[1] == "blob" and int(f[2]) < 1_000_000]  # fmt: skip
    out = git("cat-file", "--batch", stdin=("\n".join(blobs) + "\n").encode())
    lines: dict[str, str] = {}
    at = 0
    while at < len(out):
        end = out.index(b"\n", at)
        sha, _, size = out[at:end].decode().split()
        body = out[end + 1 : end + 1 + int(size)]
        at = end + 1 + int(size) + 1
        if b"\0" in body[:8000]:
            continue  # binary
        for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), 1):
            lines.setdefault(line, f"{paths[sha]}:{number} (git history)")
    return _scan_lines(lines)


def image_secrets(ctx: EnvContext, images: list[str]) -> list[plan.SecretHit]:
    """What an image carries beside its files: its variables, and the commands of its
    build history (a build argument lands there)."""
    hits: list[plan.SecretHit] = []
    for image in sorted(set(images)):
        out = docker.read(ctx.run, [*compose.docker(ctx.env), "image", "inspect", image],
                          env=ctx.engine).stdout  # fmt: skip
        for found in docker.decode(out or "[]", "docker image inspect"):
            hits += plan.env_hits(image, (found.get("Config") or {}).get("Env") or [])
        history = docker.read(ctx.run, [*compose.docker(ctx.env), "history", "--no-trunc",
                                        "--format", "{{.CreatedBy}}", image],
                              env=ctx.engine).stdout  # fmt: skip
        hits += _scan_lines({ln: f"image {image}, its build history"
                             for ln in history.splitlines() if ln.strip()})  # fmt: skip
    return hits


# Trees a package manager owns (Debian's, pip's, npm's): their files are the packages'
# own, and full of sample keys in test data. Everything else of a layer is read.
PACKAGED = ("bin/", "sbin/", "lib/", "lib64/", "usr/bin/", "usr/sbin/", "usr/lib/",
            "usr/lib64/", "usr/libexec/", "usr/include/", "usr/share/", "usr/local/lib/",
            "var/lib/dpkg/", "var/lib/apt/", "var/cache/", "var/log/", "proc/", "sys/",
            "dev/")  # fmt: skip
PACKAGED_ANYWHERE = ("/site-packages/", "/dist-packages/", "/node_modules/", "/.wh.")


def _layer_lines(layer: Any, image: str, lines: dict[str, str]) -> None:
    """Each distinct line of the layer's text files (under 1 MB) outside PACKAGED."""
    import tarfile

    with tarfile.open(fileobj=layer, mode="r|") as files:
        for member in files:
            name = member.name.removeprefix("./")
            if (not member.isfile() or member.size >= 1_000_000 or name.startswith(PACKAGED)
                    or any(p in f"/{name}" for p in PACKAGED_ANYWHERE)):  # fmt: skip
                continue
            data = files.extractfile(member)
            body = data.read() if data else b""
            if b"\0" in body[:8000]:
                continue  # binary
            for number, line in enumerate(body.decode("utf-8", "replace").splitlines(), 1):
                lines.setdefault(line, f"image {image}, /{name}:{number}")


def image_file_secrets(ctx: EnvContext, images: list[str], cache: Path) -> list[plan.SecretHit]:
    """The files of every layer of the images (`docker save`): a file a later layer deletes
    is still in its layer, and so in every copy of the image. Each layer is read once; an
    image already read (by its id, in `cache`) is not read again."""
    import json
    import os

    try:
        known: dict[str, list[dict[str, str]]] = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    hits: list[plan.SecretHit] = []
    for image in sorted(set(images)):
        out = docker.read(ctx.run, [*compose.docker(ctx.env), "image", "inspect", "--format",
                                    "{{.Id}}", image], env=ctx.engine).stdout.strip()  # fmt: skip
        if out not in known:
            known[out] = [vars(h) for h in _saved_image_hits(ctx, image, os.environ)]
        hits += [plan.SecretHit(**h) for h in known[out]]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(known))
    return hits


def _saved_image_hits(ctx: EnvContext, image: str, environ: Any) -> list[plan.SecretHit]:
    """detect-secrets over the lines of each layer of `docker save IMAGE`, as it streams."""
    import subprocess
    import tarfile

    lines: dict[str, str] = {}
    argv = [*compose.docker(ctx.env), "save", image]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={**environ, **ctx.engine}) as saved:  # fmt: skip
        assert saved.stdout is not None
        with tarfile.open(fileobj=saved.stdout, mode="r|") as archive:
            for entry in archive:
                layer = archive.extractfile(entry) if entry.name.endswith("/layer.tar") else None
                if layer is not None:
                    _layer_lines(layer, image, lines)
        error = saved.stderr.read().decode().strip() if saved.stderr else ""
    if saved.returncode:
        raise LorePinError(f"docker save {image} failed: {error[-200:]}")
    return _scan_lines(lines)


OSV_URL = "LOREPIN_OSV_URL"  # an OSV API of the organisation's own (a mirror), if any


def dependency_audit(root: Path) -> tuple[list[plan.Finding], dict[str, str]]:
    """pip-audit of the CMS image's pinned requirements (OSV) and npm audit of the admin
    page's lock file: findings, and each audit that could not run with why (a service
    that does not answer is said, never taken for a clean result)."""
    import json
    import os
    import subprocess
    import sys

    findings: list[plan.Finding] = []
    not_run: dict[str, str] = {}
    pip = [str(Path(sys.executable).with_name("pip-audit")), "-r", "cms/requirements.txt",
           "--no-deps", "--disable-pip", "--vulnerability-service", "osv", "--format", "json",
           "--progress-spinner", "off", "--timeout", "20"]  # fmt: skip
    if os.environ.get(OSV_URL):
        pip += ["--osv-url", os.environ[OSV_URL]]
    npm = ["npm", "audit", "--json", "--package-lock-only", "--prefix", "cms/admin"]
    audits = (("pip-audit", pip, plan.pip_audit, "dependencies"),
              ("npm audit", npm, plan.npm_audit, "vulnerabilities"))  # fmt: skip
    for name, argv, judge, key in audits:
        try:
            done = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300,
                                  check=False)  # fmt: skip
            report = json.loads(done.stdout or "null")
        except (OSError, subprocess.TimeoutExpired) as exc:
            not_run[name] = f"could not run: {exc}"
            continue
        except ValueError:
            report = None
        if not isinstance(report, dict) or key not in report:
            said = report if isinstance(report, dict) else {}
            error = said.get("error")
            text = said.get("message") or (error.get("summary") if isinstance(error, dict) else "")
            not_run[name] = ("its vulnerability service did not answer: "
                             f"{str(text or _last_line(done.stderr))[:200]}")  # fmt: skip
            continue
        findings += judge(report, "cms/requirements.txt" if name == "pip-audit" else "cms/admin")
    return findings, not_run


def _last_line(text: str) -> str:
    """The gist of a tool's failure: a name that did not resolve, a refused connection, or
    its last line."""
    import re

    gist = re.search(r"Failed to resolve '[^']+'|Connection refused|timed out|HTTP \d{3}", text)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return gist.group(0) if gist else (lines[-1][-200:] if lines else "no output")
