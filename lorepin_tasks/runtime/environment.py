"""An environment as the runtime sees it: settings, where it runs, the executor."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from lorepin_tasks.domain.revision import Revision
from lorepin_tasks.plans import compose
from lorepin_tasks.plans.secret_store import ROLE_PASSWORDS
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.settings import Environment, Settings


@dataclass(frozen=True, kw_only=True)
class EnvContext:
    settings: Settings
    env: Environment
    run: Executor
    revision: Revision | None = None  # what builds stamp into images; reads need none
    extra: Mapping[str, str] = field(default_factory=dict)  # e.g. a feature's labels
    build_inputs: Mapping[str, str] = field(default_factory=dict)
    # How a person names this environment on the command line (for hints).
    address: tuple[str, ...] = ()
    task_prefix: str = ""

    @property
    def variables(self) -> dict[str, str]:
        """Everything a Compose command of this environment interpolates."""
        values = compose.variables(self.settings, self.env, self.revision, self.build_inputs)
        values["LOREPIN_ROLE_SECRETS"] = self._role_secrets()
        return {**values, **self.extra}

    def _role_secrets(self) -> str:
        """Which files the roles' passwords are (inode and change time, nothing of their
        values): a label of the clients that read them once, so a new password file
        recreates them instead of leaving them with the old one."""
        marks = []
        for name in ROLE_PASSWORDS:
            try:
                found = (self.env.secrets_dir / name).stat()
                marks.append(f"{found.st_ino}.{found.st_mtime_ns}")
            except OSError:
                marks.append("none")
        return "-".join(marks)

    @property
    def engine(self) -> dict[str, str]:
        """What a plain `docker` command needs to reach the environment's engine."""
        return {"DOCKER_HOST": self.env.docker_host} if self.env.docker_host else {}

    def hint(self, task: str, *args: str) -> str:
        """The exact command a person runs next, e.g. `invoke logs migrate --env local`."""
        address = self.address or ("--env", self.env.name)
        return shlex.join(["invoke", f"{self.task_prefix}{task}", *args, *address])
