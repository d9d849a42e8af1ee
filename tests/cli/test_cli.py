"""The invoke CLI as a user meets it: bad input is one line and exit 2, changes nothing;
dry runs print the exact commands. Runs `invoke` as a subprocess; no stack is started."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, invoke, unique_project
from tests.release_helpers import clone_project, invoke_in

TASKS_WITH_ENV = [
    "up",
    "down",
    "status",
    "logs",
    "build",
    "db.migrate",
    "db.downgrade",
    "db.current",
    "db.history",
    "db.revision",
    "db.sql",
    "db.check",
    "images.build",
    "images.prune",
    "release",
    "deploy",
    "rollback",
    "deploy.history",
    "deploy.lock",
    "audit.verify",
    "audit.report",
    "logs.search",
    "db.report",
    "db.maintain",
    "activity.report",
    "db.rotate-password",
    "data.generate",
]


def one_line_error(proc: object, code: int = 2) -> str:
    out, err, rc = proc.stdout, proc.stderr, proc.returncode  # type: ignore[attr-defined]
    assert rc == code, (rc, out, err)
    assert "Traceback" not in err + out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return str(lines[0])


def test_unknown_environment_is_one_line_and_exit_2() -> None:
    proc = invoke("up", "--env", "nope")
    assert one_line_error(proc) == (
        "error: unknown environment 'nope'; valid environments: local, production, staging, swarm"
    )
    assert proc.stdout == ""


@pytest.mark.parametrize("name", TASKS_WITH_ENV)
def test_every_task_refuses_a_bad_env_before_doing_anything(name: str) -> None:
    extra = {"db.downgrade": ["--to", "base"], "db.revision": ["-m", "x"],
             "data.generate": ["--pins", "1"]}.get(name, [])  # fmt: skip
    proc = invoke(name, *extra, "--env", "../nope", "--dry-run")
    assert one_line_error(proc).startswith("error: unknown environment '../nope'")
    assert "+ " not in proc.stderr  # not one command ran


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["logs", "--tail", "many"], "error: --tail (a number or 'all') must be a whole number"),
        (["db.downgrade"], "error: say which revision to go back to: --to REV"),
        (["db.downgrade", "--to", ""], "error: say which revision to go back to: --to REV"),
        (["db.downgrade", "--to", "0003;x"], "error: invalid revision '0003;x'"),
        (["db.revision", "-m", ""], "error: a revision needs a message"),
        (["db.revision", "-m", "   "], "error: a revision needs a message"),
        (["db.history", "--limit", "x"], "error: --limit must be a whole number"),
        (["db.sql", "--to", "9999"], "error: no SQL for 9999"),
        (["db.sql", "--to", "base"], "error: no revision to upgrade in base"),
        (
            ["db.sql", "--from", "0004", "--to", "0002"],
            "error: no revision to upgrade in 0004:0002",
        ),
        (["images.prune", "--keep", "abc"], "error: --keep (the newest version always stays)"),
        (["images.prune", "--keep", "0"], "error: --keep (the newest version always stays)"),
        (
            ["artifacts.download", "../../etc", "--registry", "127.0.0.1:5999"],
            "error: invalid version '../../etc'",
        ),
        (
            ["artifacts.download", "", "--registry", "127.0.0.1:5999"],
            "error: invalid version ''",
        ),
        (
            ["artifacts.download", "1.2.0+build.5", "--registry", "127.0.0.1:5999"],
            "error: invalid version '1.2.0+build.5'",
        ),
        (
            ["images.pull", "--registry", "127.0.0.1:5999", "--version", "latest"],
            "error: invalid version 'latest'",
        ),
        (["images.push", "--registry", "http://x"], "error: invalid registry 'http://x'"),
        (["images.push", "--registry", "127.0.0.1:99999"], "error: invalid registry"),
        (
            ["images.pull", "--registry", "a..b:5000", "--version", "1.0.0"],
            "error: invalid registry 'a..b:5000'",
        ),
        (["build", "--service", "nosuch"], "error: unknown service 'nosuch' in 'local'"),
        (["build", "--service", "migrate"], "error: service migrate of 'local' builds no image"),
        (["logs", "--service", "nosuch"], "error: unknown service 'nosuch' in 'local'"),
        (["feature.up", "--ttl", "forever"], "error: invalid ttl 'forever'"),
        (["feature.up", "--branch", "bad..name"], "error: invalid branch name 'bad..name'"),
        (["feature.prune", "--as-of", "someday"], "error: invalid --as-of 'someday'"),
        (["release.status", "not-a-version"], "error: invalid version 'not-a-version'"),
        (["deploy", "--env", "staging"], "error: say which release: --version 1.4.0"),
        (["deploy", "--env", "staging", "--version", "../x"], "error: invalid version '../x'"),
        (["deploy", "--env", "staging", "--version", "9.9.9"], "error: no release v9.9.9"),
        (
            ["deploy", "--env", "local", "--version", "1.0.0"],
            "error: 'local' is a local environment",
        ),
        (["rollback", "--env", "staging", "--to", "latest"], "error: invalid version 'latest'"),
        (["deploy.history", "--env", "local"], "error: 'local' is a local environment"),
        (["deploy", "--version", "1.0.0"], "error: say which environment: --env staging"),
        (["rollback"], "error: say which environment: --env staging"),
        (["deploy.lock"], "error: say which environment: --env staging"),
        (["monitor.up"], "error: say which environment: --env staging, --env production or"),
        (["incident.ack", "x", "--env", "local"], "error: invalid incident id 'x'"),
        (["logs.search"], "error: say which environment: --env staging"),
        (["logs.search", "--env", "local"], "error: 'local' is a local environment"),
        (["logs.search", "--env", "staging", "--since", "yesterday"], "error: --since: invalid"),
        (["logs.search", "--env", "staging", "--level", "loud"], "error: --level must be one"),
        (["logs.search", "--env", "staging", "-r", "a'*/"], 'error: --request-id: "a\'*/" is not'),
        (["audit.report", "--env", "staging", "--format", "pdf"], "error: --format must be md"),
        (["audit.report", "--env", "staging", "--since", "1h", "--until", "2h"], "error: --since"),
        (["audit.report", "--env", "local"], "error: 'local' is a local"),
        (["activity.report", "--since", "last week"], "error: --since: invalid"),
        (["activity.report", "--top", "0"], "error: --top must be between 1 and 1000"),
        (["activity.report", "--top", "x"], "error: --top"),
        (["data.generate"], "error: say what to generate: --pins N and/or --users M"),
        (["data.anonymize"], "error: say which environment: --env staging (never production)"),
        (
            ["perf", "--env", "staging", "--duration", "1h"],
            "error: --duration must look like 60s or 5m, got '1h'",
        ),
        (
            ["perf", "--env", "staging", "--users", "9999"],
            "error: --users must be a whole number from 1 to 500, got '9999'",
        ),
        (["perf"], "error: say which environment: --env staging or --env production"),
        (["e2e"], "error: say which environment: --env staging or --env production"),
        (
            ["data.cleanup", "--older-than", "forever"],
            "error: --older-than must look like 30m, 24h, 7d or 2w, got 'forever'",
        ),
        (["data.cleanup", "--older-than", "0d"], "error: --older-than must look like"),
        (["data.generate", "--pins", "-3"], "error: --pins must be between 0 and 10,000,000"),
        (["data.generate", "--pins", "abc"], "error: --pins must be a whole number, got 'abc'"),
        (["data.generate", "--users", "2000000"], "error: --users must be between 0 and"),
        (["data.generate", "--pins", "1", "--seed", "-1"], "error: --seed must be between"),
        (
            ["audit.report", "--env", "staging", "--since", "0001-01-01"],
            "error: the window is over",
        ),
        (
            ["rollback", "--env", "staging", "--to", "sha-deadbeef"],
            "error: invalid version 'sha-deadbeef': a released version",
        ),
        (
            ["scale", "--env", "swarm", "--replicas", "9"],
            "error: 9 replicas is outside the bounds of 'swarm', 1..4 (invoke.yaml's swarm.min",
        ),
        (["scale", "--env", "swarm", "--replicas", "x"], "error: --replicas must be a whole"),
        (["scale", "--env", "swarm"], "error: say how many: --replicas 1..4"),
        (
            ["scale", "--env", "staging", "--replicas", "2"],
            "error: 'staging' runs on one engine (backend: compose): scaling is for",
        ),
        (
            ["down", "--env", "swarm"],
            "error: 'swarm' runs on Docker Swarm (backend: swarm), and this task drives Compose "
            "on one engine: on Swarm, use deploy, rollback, scale, deploy.history and db.report",
        ),
        (["db.migrate", "--env", "swarm"], "error: 'swarm' runs on Docker Swarm (backend: swarm)"),
        (["db.report", "--env", "swarm"], "error: the swarm of 'swarm' (lab 'lab') is not up"),
        (["swarm.lab.up", "--name", "Bad Lab"], "error: invalid lab name 'Bad Lab': lowercase"),
        (["swarm.lab.up", "--port", "0"], "error: --port must be between 1 and 65535, got '0'"),
        (["swarm.lab.down", "--name", "x-y"], "error: invalid lab name 'x-y'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    assert one_line_error(invoke(*args, "--dry-run")).startswith(message)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("LOREPIN_HTTP_PORT", "abc", "error: LOREPIN_HTTP_PORT must be a whole number"),
        ("LOREPIN_PROJECT", "Bad Name", "error: LOREPIN_PROJECT: invalid Compose project name"),
        ("LOREPIN_IMAGE_PREFIX", "a b", "error: image prefix 'a b' is not a repository path"),
        ("LOREPIN_IMAGE_PREFIX", "UPPER", "error: image prefix 'UPPER' is not a repository"),
        ("LOREPIN_SECRETS_DIR", "relative/dir", "error: LOREPIN_SECRETS_DIR must be an absolute"),
        ("LOREPIN_SECRETS_DIR", f"{ROOT}/plain-secrets", "error: LOREPIN_SECRETS_DIR"),
        ("LOREPIN_BACKUP_DIR", f"{ROOT}/.lorepin/x", "error: LOREPIN_BACKUP_DIR"),
    ],
)
def test_bad_overrides_are_one_line_and_exit_2(variable: str, value: str, message: str) -> None:
    assert one_line_error(invoke("up", "--dry-run", env={variable: value})).startswith(message)
    assert not (ROOT / "relative").exists() and not (ROOT / "plain-secrets").exists()


def test_a_secrets_dir_that_is_a_file_or_open_to_others_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for secrets_dir, message in (
        (a_file, f"error: the secrets directory {a_file} is a file, not a directory"),
        (shared, f"error: the secrets directory {shared} is open to other users (mode 1777)"),
    ):
        env = {"LOREPIN_PROJECT": unique_project(), "LOREPIN_SECRETS_DIR": str(secrets_dir)}
        assert one_line_error(invoke("up", env=env)).startswith(message)
    assert shared.stat().st_mode & 0o7777 == 0o1777 and not list(shared.iterdir())
    assert a_file.read_text() == "not a directory"


def test_a_broken_invoke_yaml_is_one_line(tmp_path: Path) -> None:
    repo = clone_project(tmp_path)
    config = Path(repo.working_tree_dir or ".") / "invoke.yaml"
    for text, message in (
        ("lorepin:\n  environments: [\n", "error: invoke.yaml is not valid YAML (line 3)"),
        ("lorepin: 5\n", "error: lorepin in invoke.yaml must be a mapping, got 5"),
        ("lorepin:\n  environments:\n    local: 5\n", "error: environment 'local' in"),
        ("lorepin:\n  db: 5\n", "error: lorepin.db in invoke.yaml must be a mapping"),
        ("lorepin:\n  feature: 7\n", "error: lorepin.feature in invoke.yaml must be a"),
        (
            "lorepin:\n  environments:\n    local:\n      http_port: 1.5\n",
            "error: environment 'local': http_port must be a whole number, got 1.5",
        ),
        (
            "lorepin:\n  environments:\n    local:\n      compose_files: compose/compose.yaml\n",
            "error: environment 'local': compose_files must be a list of paths",
        ),
        ("\0\0\0", "error: invoke.yaml is not valid YAML"),
    ):
        config.write_text(text)
        assert one_line_error(invoke_in(repo, "status")).startswith(message), text


def test_a_branch_that_does_not_exist_leaves_no_trace(tmp_path: Path) -> None:
    state = tmp_path / "state"
    refused = invoke("feature.up", "--branch", "no-such-branch", env={"XDG_STATE_HOME": str(state)})
    assert (
        one_line_error(refused)
        == "error: there is no local branch 'no-such-branch' (git branch --list)"
    )
    assert not state.exists()


def test_up_dry_run_prints_the_commands_and_starts_nothing(tmp_path: Path) -> None:
    project = unique_project()
    proc = invoke(
        "up",
        "--dry-run",
        env={
            "LOREPIN_PROJECT": project,
            "LOREPIN_IMAGE_TAG": f"never-built-{project}",
            "LOREPIN_SECRETS_DIR": f"{tmp_path}/secrets",
        },
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    commands = [ln for ln in lines if ln.startswith("+ ")]
    assert len(commands) == 2
    assert f"docker compose --project-name {project} " in commands[0]
    assert commands[0].endswith(" build cms db geocoder")
    assert re.search(r"LOREPIN_BUILD_INPUTS_CMS=[0-9a-f]{32} ", commands[0])
    assert commands[1].endswith(
        "up --detach --wait --wait-timeout 180 --no-build --pull never --remove-orphans"
    )
    assert f"# would create random secret {tmp_path}/secrets/db_password" in lines
    assert "dry run: nothing was built or started" in lines
    assert not (tmp_path / "secrets").exists()


def test_test_data_never_goes_into_production() -> None:
    proc = invoke("data.generate", "--env", "production", "--pins", "10")
    assert one_line_error(proc, 6) == (
        "error: 'production' is production: test data never goes there"
    )
    proc = invoke("perf", "--env", "production")
    assert one_line_error(proc, 6) == (
        "error: 'production' is production: a load test slows its real users; pass --i-know "
        "to run it anyway (read-only)"
    )
    proc = invoke("e2e", "--env", "production")
    assert one_line_error(proc, 6) == (
        "error: 'production' is production: the suite writes pins; run it on staging, with "
        "the same version"
    )
    proc = invoke("data.validate", "--env", "production")
    assert one_line_error(proc, 6) == (
        "error: 'production' is production: its data is the source, not a copy"
    )
    proc = invoke("staging.refresh", "--env", "production", "--yes")
    assert one_line_error(proc, 6) == (
        "error: 'production' is a production environment: a refresh replaces only a staging "
        "environment's data"
    )
    proc = invoke("staging.refresh", "--source", "staging", "--yes")
    assert one_line_error(proc, 2) == (
        "error: --source names a staging environment: a refresh copies a production "
        "environment's data"
    )
    proc = invoke("staging.refresh", "--from-backup", "last-week", "--yes")
    assert one_line_error(proc, 2).startswith("error: invalid backup id 'last-week'")
    proc = invoke("data.anonymize", "--env", "production", "--yes")
    assert one_line_error(proc, 6) == (
        "error: 'production' is production: its data is the original, never anonymized"
    )


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ("tables: [1]\n", "error: anonymize.yml: a `tables:` mapping is required"),
        ("tables:\n  pins:\n    title: shuffle\nsensitive: [x]\n",
         "error: anonymize.yml: pins.title: unknown strategy 'shuffle'"),
        ("tables:\n  pins: {}\n", "error: anonymize.yml: `sensitive:` must list the patterns"),
        ("tables:\n  pins: {}\nsensitive: ['(']\n", "error: anonymize.yml: a `sensitive` pattern"),
        ("tables: {\n", "error: anonymize.yml cannot be read: "),
    ],
)  # fmt: skip
def test_broken_anonymization_rules_are_one_line(tmp_path: Path, rules: str, message: str) -> None:
    repo = clone_project(tmp_path)
    (Path(repo.working_tree_dir or ".") / "staging" / "anonymize.yml").write_text(rules)
    proc = invoke_in(repo, "data.anonymize", "--env", "staging", "--dry-run")
    assert one_line_error(proc).startswith(message)


def test_list_shows_every_area() -> None:
    proc = invoke("--list")
    for name in ("up", "down", "status", "build", "db.migrate", "feature.logs", "logs.search"):
        assert f"\n  {name} " in proc.stdout
    assert "\n  logs.show (logs) " in proc.stdout  # `invoke logs`: the collection's default
    for name in ("release.abort", "images.prune", "artifacts.download"):
        assert f"\n  {name} " in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "usage: "),
        (["--yes"], "usage: "),
        (["nope"], "error: unknown environment 'nope'"),
        (["staging", "latest"], "error: invalid version 'latest'"),
    ],
)
def test_the_on_call_rollback_script_refuses_bad_input(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "rollback.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert one_line_error(proc).startswith(message)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        ([], 2, "usage: "),
        (["local"], 2, "usage: "),
        (["--yes", "x"], 2, "usage: "),
        (["nope", "20261130-141503L"], 2, "error: unknown environment 'nope'"),
        (["local", "latest"], 2, "error: invalid backup id 'latest'"),
        (["local", "20261130-141503L", "--yes"], 1, "error: 'local' has no backup"),
        (["production", "20261130-141503L", "--yes"], 1, "error: 'production' has no backup"),
    ],
)
def test_the_on_call_restore_script_refuses_bad_input(
    args: list[str], code: int, message: str, tmp_path: Path
) -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "restore.sh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "LOREPIN_BACKUP_DIR": str(tmp_path / "none")},
    )
    assert one_line_error(proc, code).startswith(message)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["backup.create", "--type", "weekly"], 2, "error: unknown backup type 'weekly'"),
        (["backup.create", "--type", "full"], 2, "error: physical backups (full) are for server"),
        (
            ["backup.create", "--env", "staging", "--type", "full", "--repo", "3"],
            2,
            "error: invalid --repo",
        ),
        (
            ["backup.restore", "--from", "x", "--to-time", "y"],
            2,
            "error: say --from ID or --to-time",
        ),
        (
            ["backup.restore", "--to-time", "2026-01-01T00:00:00Z"],
            2,
            "error: physical restores are for server",
        ),
        (["backup.schedule"], 2, "error: scheduled backups run on server environments"),
        (["dr.drill"], 2, "error: say which environment"),
        (["dr.drill", "--env", "local"], 2, "error: dr.drill is for server environments"),
        (["dr.drill", "--env", "staging", "--seconds", "2"], 2, "error: --seconds must be between"),
        (["backup.create", "--reason", "Not OK"], 2, "error: invalid backup reason"),
        (["backup.verify", "--id", "x"], 2, "error: invalid backup id 'x'"),
        (["backup.restore"], 2, "error: say which backup"),
        (["backup.list", "--env", "nope"], 2, "error: unknown environment 'nope'"),
        (["backup.approve", "--env", "production"], 2, "error: say which backup"),
        (
            ["backup.approve", "--env", "production", "--to-time", "2026-11-30T14:03:17"],
            2,
            "error: the time '2026-11-30T14:03:17' has no zone",
        ),
        (
            ["backup.approve", "--env", "staging", "--from", "20261130-141503L"],
            3,
            "error: restores of 'staging' need no approval",
        ),
        (["db.failover"], 2, "error: say which environment"),
        (
            ["backup.restore", "--from", "20261130-141503L", "--break-glass", "a\nb"],
            2,
            "error: say the --break-glass reason in one line",
        ),
        (["db.failover", "--env", "staging"], 2, "error: 'staging' has no replica"),
        (["db.rejoin"], 2, "error: say which environment"),
        (["db.rejoin", "--env", "staging"], 2, "error: 'staging' has no replica"),
        (["db.rejoin", "--env", "nope"], 2, "error: unknown environment 'nope'"),
        (["db.replica", "--env", "local"], 2, "error: 'local' is a local environment"),
        (["up", "--env", "production"], 2, "error: 'production' is a production environment"),
    ],
)
def test_backup_tasks_refuse_bad_input_in_one_line(
    args: list[str], code: int, message: str
) -> None:
    proc = invoke(*args)
    assert one_line_error(proc, code).startswith(message)


def test_bad_input_is_named_before_whose_environment_it_is() -> None:
    """A project another checkout made refuses changes, but a mistyped flag is still
    named as such (the input is checked before the engine is asked)."""
    project = unique_project("lorepin-foreign")
    volume = f"{project}_db-data"
    labels = [f"com.docker.compose.project={project}", "dev.lorepin.env=local"]
    labels.append("dev.lorepin.checkout=some-other-checkout")
    made = subprocess.run(
        ["docker", "volume", "create", *[a for label in labels for a in ("--label", label)],
         volume],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    env = {"LOREPIN_PROJECT": project}
    try:
        for args, message in (
            (["backup.create", "--type", "full"], "error: physical backups (full) are for"),
            (["backup.restore", "--to-time", "2026-01-01T00:00:00Z"], "error: physical restores"),
            (["backup.schedule"], "error: scheduled backups run on server environments"),
            (["backup.verify", "--id", "x"], "error: invalid backup id 'x'"),
        ):
            assert one_line_error(invoke(*args, env=env), 2).startswith(message)
        foreign = invoke("backup.create", env=env)
        assert one_line_error(foreign, 6).startswith(f"error: project {project} belongs to")
    finally:
        subprocess.run(["docker", "volume", "rm", volume], capture_output=True, check=False)


def test_a_lab_another_checkout_made_is_never_taken_for_ours() -> None:
    """Two checkouts' lab digests can meet: the lab's record (lab.json) decides whose it
    is, and every lab task refuses another's, changing nothing."""
    from lorepin_tasks import settings as settings_mod
    from lorepin_tasks.plans import swarm as swarm_plan

    settings = settings_mod.load({}, root=ROOT)
    lab = swarm_plan.lab("theirs", settings.checkout.id, settings.checkout.where)
    record = lab.root / "lab.json"
    assert not lab.root.exists()
    lab.root.mkdir(parents=True)
    try:
        record.write_text('{"checkout": "elsewhere:/srv/other", "name": "x"}')
        for args in (["swarm.lab.status"], ["swarm.lab.down", "--yes"], ["swarm.lab.up"]):
            done = invoke(*args, "--name", "theirs")
            assert one_line_error(done, code=6).startswith(
                f"error: lab {lab.id} ('theirs') belongs to the checkout elsewhere:/srv/other"
            ), done.stderr
        assert record.read_text().startswith('{"checkout": "elsewhere')
    finally:
        record.unlink(missing_ok=True)
        lab.root.rmdir()


def test_a_lab_once_made_whole_is_never_wiped_by_up() -> None:
    """`swarm.lab.up` removes what a killed `up` left, but a lab it once made whole (its
    floating address configured, its last step) and that is down now holds stacks and
    volumes: it is refused, nothing removed, and said how to look and how to remake it."""
    from lorepin_tasks import settings as settings_mod
    from lorepin_tasks.plans import swarm as swarm_plan

    settings = settings_mod.load({}, root=ROOT)
    lab = swarm_plan.lab("wasup", settings.checkout.id, settings.checkout.where)
    assert not lab.root.exists()
    lab.root.mkdir(parents=True)
    made = [lab.root / "lab.json", *(lab.root / f"keepalived-{n}.conf" for n in swarm_plan.NODES)]
    try:
        made[0].write_text(json.dumps({"name": lab.name, "id": lab.id,
                                       "checkout": lab.checkout}))  # fmt: skip
        for node, conf in zip(swarm_plan.NODES, made[1:], strict=True):
            conf.write_text(swarm_plan.keepalived_conf(lab, node, 8580))
        done = invoke("swarm.lab.up", "--name", "wasup")
        assert one_line_error(done, code=6).startswith("error: lab 'wasup' is there but not up"), (
            done.stderr
        )
        assert "swarm.lab.status --name wasup" in done.stderr
        assert all(p.exists() for p in made)
        status = invoke("swarm.lab.status", "--name", "wasup")
        assert "NOT up" in status.stdout and ":8580" in status.stdout, status.stdout
    finally:
        for path in made:
            path.unlink(missing_ok=True)
        lab.root.rmdir()


def test_version_lists_every_environment_a_swarm_one_too() -> None:
    done = invoke("version", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["environments"]) == {"local", "staging", "production", "swarm"}
