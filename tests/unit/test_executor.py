from __future__ import annotations

import io
from pathlib import Path

import pytest

from lorepin_tasks.errors import CommandFailed, ConfigError
from lorepin_tasks.runtime.executor import Executor, shown


def test_dry_run_prints_the_exact_command_and_runs_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    target = tmp_path / "made by the command"
    result = Executor(dry_run=True, out=out).run(["touch", str(target)], env={"A": "b c"})
    assert out.getvalue() == f"+ A='b c' touch '{target}'\n"
    assert result.ok
    assert not target.exists()


def test_read_only_commands_still_run_in_dry_run() -> None:
    result = Executor(dry_run=True, out=io.StringIO()).run(
        ["echo", "state"], capture=True, mutates=False
    )
    assert result.stdout == "state\n"


def test_runs_and_captures() -> None:
    out = io.StringIO()
    result = Executor(out=out).run(
        ["sh", "-c", "echo $GREETING"], env={"GREETING": "hi"}, capture=True
    )
    assert result.stdout == "hi\n"
    assert out.getvalue() == "+ sh -c 'echo $GREETING'\n"  # env shown in dry runs only


def test_secrets_are_redacted_in_echo_and_errors() -> None:
    out = io.StringIO()
    run = Executor(out=out, secrets=["hunter2"])
    with pytest.raises(CommandFailed) as info:
        run.run(["sh", "-c", "echo token hunter2 >&2; exit 3", "hunter2"], capture=True)
    assert "hunter2" not in out.getvalue()
    assert "hunter2" not in str(info.value)
    assert "exit code 3" in str(info.value)
    assert "token ******" in str(info.value)


def test_missing_binary_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="'no-such-binary-xyz' is not installed"):
        Executor(out=io.StringIO()).run(["no-such-binary-xyz"])


def test_failure_without_check_returns_the_code() -> None:
    result = Executor(out=io.StringIO()).run(["sh", "-c", "exit 5"], check=False, quiet=True)
    assert result.returncode == 5


def test_shown_quotes_for_the_shell() -> None:
    assert shown(["echo", "a b", "$HOME"]) == "echo 'a b' '$HOME'"


def test_a_long_steps_stderr_is_shown_as_it_comes_and_kept_for_the_error() -> None:
    out = io.StringIO()
    run = Executor(out=out, secrets=["hunter2"])
    result = run.run(
        ["sh", "-c", "echo step 1 of 2 hunter2 >&2; echo step 2 of 2 >&2; exit 3"],
        capture_stderr=True,
        check=False,
    )
    assert result.returncode == 3
    assert result.stderr == "step 1 of 2 hunter2\nstep 2 of 2\n"
    assert "step 1 of 2 ******\nstep 2 of 2\n" in out.getvalue()  # shown, redacted
    with pytest.raises(CommandFailed, match=r"exit code 3: .*: step 2 of 2$"):
        run.run(["sh", "-c", "echo step 2 of 2 >&2; exit 3"], capture_stderr=True)


@pytest.mark.parametrize("url", ["not a url", "http://", "ftp://hooks.example.invalid/x"])
def test_a_malformed_webhook_only_warns(url: str) -> None:
    from lorepin_tasks.runtime.notify import notify

    said: list[str] = []
    assert notify(url, "deployed", say=said.append) is False
    assert len(said) == 1 and said[0].startswith("warning: ")


def test_pipe_streams_bytes_out_of_and_into_a_command() -> None:
    run = Executor(out=io.StringIO())
    got: list[bytes] = []
    run.pipe(["head", "-c", "300000", "/dev/zero"], read=lambda out: got.append(out.read()))
    assert len(got[0]) == 300_000

    def feed(stdin: object) -> None:
        stdin.write(b"x" * 200_000)  # type: ignore[attr-defined]

    result = run.pipe(["bash", "-c", "wc -c >&2"], write=feed)
    assert result.ok and result.stderr.strip() == "200000"


def test_pipe_judges_a_command_that_stops_reading_by_its_exit_code() -> None:
    run = Executor(out=io.StringIO())

    def endless(stdin: object) -> None:
        while True:
            stdin.write(b"y" * 65536)  # type: ignore[attr-defined]

    assert run.pipe(["head", "-c", "10"], write=endless).ok
    with pytest.raises(CommandFailed):
        run.pipe(["bash", "-c", "head -c 10 >/dev/null; exit 3"], write=endless)


def test_pipe_kills_the_command_when_the_reader_fails() -> None:
    def broken(out: object) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        Executor(out=io.StringIO()).pipe(["cat", "/dev/zero"], read=broken)


def test_pipe_in_a_dry_run_prints_and_runs_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    target = tmp_path / "x"
    Executor(dry_run=True, out=out).pipe(["touch", str(target)], read=lambda o: None)
    assert out.getvalue() == f"+ touch {target}\n" and not target.exists()
