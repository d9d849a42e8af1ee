"""The GitHub Actions workflows, read as data: every `run:` is a command of this project
(an invoke task, a nox session or a script), the required checks are the CI jobs' names,
production is deployed only through its GitHub Environment, actions are pinned by commit,
and each job asks for its own permissions. docs/ci-cd.md."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
PROTECTION = ROOT / ".github" / "settings" / "branch-protection.json"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def load(path: Path) -> dict[str, Any]:
    doc: dict[Any, Any] = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def jobs() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            yield path.name, job_id, job


def pending(job: dict[str, Any]) -> bool:
    """A job for a task not built yet: never runs, and says so in its name."""
    return job.get("if") is False and str(job.get("name", "")).startswith("PENDING")


def runnable_tasks() -> set[str]:
    import tasks

    names = set(tasks.ns.task_names)
    for name, collection in tasks.ns.collections.items():
        if collection.default:  # `invoke deploy` runs the collection's default task
            names.add(name)
    return names


def flags_of(name: str) -> set[str]:
    import tasks
    from tests.unit.test_docs import flags_of as flags

    collection = tasks.ns.collections.get(name)
    return flags(tasks.ns, f"{name}.{collection.default}" if collection else name)


def nox_sessions() -> set[str]:
    import nox.registry

    import noxfile  # noqa: F401 (registers the sessions)

    return set(nox.registry.get())


def commands(run: str) -> Iterator[list[str]]:
    for line in run.replace("\\\n", " ").splitlines():
        if line.strip() and not line.strip().startswith("#"):
            yield shlex.split(line)


def test_there_is_a_workflow_per_stage() -> None:
    assert [p.name for p in WORKFLOWS] == [
        "ci.yml", "deploy-production.yml", "deploy-staging.yml", "feature-env.yml",
        "release.yml", "scheduled.yml",
    ]  # fmt: skip


def run_problems(found: Iterator[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Each `run:` of the jobs that is not a task (with its flags), a nox session or an
    executable script of this project; a pending job whose task exists now is one too."""
    tasks_, sessions, wrong = runnable_tasks(), nox_sessions(), []
    for workflow, job_id, job in found:
        for step in job.get("steps", []):
            for argv in commands(step.get("run", "")):
                where = f"{workflow} {job_id}: {' '.join(argv)}"
                if argv[0] == ".venv/bin/invoke":
                    known = argv[1] in tasks_
                    if pending(job):
                        if known:
                            wrong.append(f"{where}: {argv[1]} exists now: turn its job on")
                    elif not known:
                        wrong.append(f"{where}: no task {argv[1]!r}")
                    else:
                        used = {a.split("=")[0] for a in argv[2:] if a.startswith("-")}
                        unknown = sorted(used - flags_of(argv[1]))
                        wrong += [f"{where}: no flag {f}" for f in unknown]
                elif argv[0] == ".venv/bin/nox":
                    chosen = argv[argv.index("-s") + 1 :]
                    wrong += [f"{where}: no session {s!r}" for s in chosen if s not in sessions]
                elif argv[0].startswith("./scripts/"):
                    script = ROOT / argv[0]
                    if not (script.is_file() and script.stat().st_mode & 0o111):
                        wrong.append(f"{where}: no executable {argv[0]}")
                else:
                    wrong.append(f"{where}: pipeline logic in YAML (call invoke, nox or scripts/)")
    return wrong


def test_every_run_is_a_task_a_session_or_a_script_of_this_project() -> None:
    assert run_problems(jobs()) == []


def test_a_run_that_is_not_a_command_of_this_project_is_caught_by_name() -> None:
    steps = [{"run": ".venv/bin/invoke deploy.everywhere --env staging"},
             {"run": ".venv/bin/invoke deploy --env staging --force"},
             {"run": ".venv/bin/nox -s lint tests"},
             {"run": "./scripts/nope.sh"},
             {"run": "curl -X POST https://example.invalid/deploy"}]  # fmt: skip
    pending_but_built = {"name": "PENDING (issue 0): x", "if": False,
                         "steps": [{"run": ".venv/bin/invoke db.check"}]}  # fmt: skip
    found = run_problems(iter([("w.yml", "a", {"steps": steps}),
                               ("w.yml", "b", pending_but_built)]))  # fmt: skip
    assert [p.split(": ", 2)[-1] for p in found] == [
        "no task 'deploy.everywhere'",
        "no flag --force",
        "no session 'tests'",
        "no executable ./scripts/nope.sh",
        "pipeline logic in YAML (call invoke, nox or scripts/)",
        "db.check exists now: turn its job on",
    ]


def test_the_required_checks_are_the_ci_jobs() -> None:
    protection = json.loads(PROTECTION.read_text())
    ci = load(ROOT / ".github/workflows/ci.yml")
    # Every job a pull request runs (the dashboard runs on pushes to main only).
    names = sorted(job["name"] for job in ci["jobs"].values()
                   if "github.event_name == 'push'" not in str(job.get("if", "")))  # fmt: skip
    assert sorted(protection["required_status_checks"]["contexts"]) == names
    assert protection["required_linear_history"] is True
    assert protection["allow_force_pushes"] is False
    assert protection["required_pull_request_reviews"]["required_approving_review_count"] >= 1


def test_production_is_deployed_only_by_hand_through_its_environment() -> None:
    production = load(ROOT / ".github/workflows/deploy-production.yml")
    assert list(production["on"]) == ["workflow_dispatch"]
    assert production["concurrency"]["cancel-in-progress"] is False
    for workflow, job_id, job in jobs():
        runs = " ".join(s.get("run", "") for s in job.get("steps", []))
        if re.search(r"\bproduction\b", runs) and ("deploy" in runs or "rollback" in runs):
            assert job.get("environment") == "production", f"{workflow} {job_id}"
            assert workflow == "deploy-production.yml", f"{workflow} {job_id} deploys production"


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_and_permissions_are_per_job(workflow: Path) -> None:
    doc = load(workflow)
    assert doc.get("permissions") == {}, "no default permissions for the whole workflow"
    for job_id, job in doc["jobs"].items():
        assert "permissions" in job, f"{job_id} asks for no permissions of its own"
        for step in job.get("steps", []):
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"{job_id}: {step['uses']} is not pinned"
            if "actions/checkout@" in step.get("uses", ""):
                assert "persist-credentials" in step.get("with", {}), job_id
    assert "pull_request_target" not in doc["on"]
