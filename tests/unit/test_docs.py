"""The docs tell the truth: every `invoke` command they show names a real task and real
flags, and where they say state lives is where the settings put it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from invoke.collection import Collection

from lorepin_tasks import settings as settings_mod
from tests.conftest import ROOT

DOCS = sorted(
    [ROOT / "README.md", *ROOT.glob("docs/**/*.md"), ROOT / "invoke.yaml",
     *(p for p in ROOT.glob("scripts/*") if p.is_file())]
)  # fmt: skip
COMMAND = re.compile(r"(?:\.venv/bin/)?\binvoke ([a-z][\w.-]*)([^`\n|;&)]*)")


def collection() -> Collection:
    import tasks

    ns: Collection = tasks.ns
    return ns


def documented() -> list[tuple[str, str, str]]:
    found = []
    for path in DOCS:
        for match in COMMAND.finditer(path.read_text()):
            if match[1].endswith("."):  # `invoke db.*`: a family of tasks
                continue
            found.append((path.relative_to(ROOT).as_posix(), match[1], match[2]))
    return found


def flags_of(ns: Collection, name: str) -> set[str]:
    task: Any = ns[name]
    names: set[str] = set()
    for argument in task.get_arguments():
        names |= {f"--{n}" if len(n) > 1 else f"-{n}" for n in argument.names}
    return names | {"--help", "-h"}


def test_the_docs_show_commands() -> None:
    assert len(documented()) > 40


@pytest.mark.parametrize(("where", "name", "rest"), documented())
def test_every_documented_command_names_a_real_task_and_flags(
    where: str, name: str, rest: str
) -> None:
    ns = collection()
    if name == "--list" or name.startswith("-"):
        return
    assert name in ns.task_names or name in {
        alias for aliases in ns.task_names.values() for alias in aliases
    }, f"{where}: `invoke {name}` is no task"
    words = rest.replace("[", " ").replace("]", " ").split()
    used = {w.split("=")[0] for w in words if re.match(r"^--?[a-z]", w)}
    unknown = used - flags_of(ns, name)
    assert not unknown, f"{where}: `invoke {name}` has no flag {', '.join(sorted(unknown))}"


def test_the_docs_put_secrets_and_dumps_where_the_settings_do() -> None:
    local = settings_mod.load({}, root=ROOT, environ={"HOME": "/home/ana"}).environment("local")
    assert local.secrets_dir == Path("/home/ana/.local/state/lorepin/lorepin-local/secrets")
    assert local.backups_dir == Path("/home/ana/.local/state/lorepin/lorepin-local/backups")
    for path in DOCS:
        text = path.read_text()
        assert ".lorepin/secrets" not in text, f"{path.name} names the old secrets dir"
        assert ".lorepin/backups" not in text, f"{path.name} names the old backups dir"
    readme = (ROOT / "README.md").read_text()
    assert "~/.local/state/lorepin/lorepin-local/secrets/db_password" in readme
