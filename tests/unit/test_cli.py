"""The invoke CLI as a user meets it, with no Docker engine involved."""

from __future__ import annotations

from tests.conftest import invoke, unique_project


def test_unknown_environment_is_one_line_and_exit_2() -> None:
    proc = invoke("up", "--env", "nope")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: unknown environment 'nope'; valid environments: local"
    assert proc.stdout == ""


def test_up_dry_run_prints_the_commands_and_starts_nothing(tmp_path: object) -> None:
    project = unique_project()
    proc = invoke(
        "up",
        "--dry-run",
        env={"LOREPIN_PROJECT": project, "LOREPIN_SECRETS_DIR": f"{tmp_path}/secrets"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    commands = [ln for ln in lines if ln.startswith("+ ")]
    assert len(commands) == 2
    assert f"docker compose --project-name {project} " in commands[0]
    assert commands[0].endswith(" build")
    assert commands[1].endswith(
        "up --detach --wait --wait-timeout 180 --no-build --pull never --remove-orphans"
    )
    assert f"# would create random secret {tmp_path}/secrets/db_password" in lines
    assert "dry run: nothing was built or started" in lines
    assert not (tmp_path / "secrets").exists()  # type: ignore[operator]


def test_logs_rejects_a_bad_tail() -> None:
    proc = invoke("logs", "--tail", "many")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: --tail takes a number or 'all', got 'many'"


def test_list_shows_the_developer_tasks() -> None:
    proc = invoke("--list")
    for name in ("up", "down", "status", "logs", "build"):
        assert f"\n  {name} " in proc.stdout
