"""Settings, resolved once per task into frozen dataclasses.

Order, later wins: built-in defaults -> invoke.yaml (`lorepin:` tree) -> environment
variables -> task flags. Secrets never live here: only where to find them.

Environment variables:
  BASE_IMAGE           base image of every Dockerfile (default: what bootstrap recorded)
  LOREPIN_CA_BUNDLE    CA bundle handed to image builds as a secret (default: the host's)
  LOREPIN_IMAGE_PREFIX repository prefix of the project's images (default: lorepin)
  LOREPIN_PROJECT      Compose project name of the selected environment
  LOREPIN_HTTP_PORT    host port of the CMS (0: Docker picks a free one)
  LOREPIN_DB_PORT      host port of the database, where the environment publishes it
  LOREPIN_IMAGE_TAG    tag of the images the environment builds and runs
  LOREPIN_SECRETS_DIR  directory holding the selected environment's secret files
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lorepin_tasks.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("local", "feature", "staging", "production")
ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
BASE_IMAGE_RECORD = Path(".lorepin/base-image.env")
DEFAULT_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")

DEFAULTS: dict[str, Any] = {
    "image_prefix": "lorepin",
    "wait_timeout": 180,
    "environments": {
        "local": {
            "kind": "local",
            "project": "lorepin-local",
            "compose_files": ["compose/compose.yaml", "compose/mocks.yaml", "compose/local.yaml"],
            "http_port": 8080,
            "db_port": 15432,
            "image_tag": "dev",
        },
    },
}


@dataclass(frozen=True, kw_only=True)
class Environment:
    """One place the CMS runs: which engine, which Compose files, which ports, which policy."""

    name: str
    kind: str
    project: str
    compose_files: tuple[Path, ...]
    http_port: int
    db_port: int | None
    image_tag: str
    secrets_dir: Path
    docker_host: str | None = None
    docker_context: str | None = None
    backup_before_migrate: bool = False

    @property
    def generates_secrets(self) -> bool:
        """Throwaway kinds get random secrets on first use; long-lived ones must be given them."""
        return self.kind in ("local", "feature")


@dataclass(frozen=True, kw_only=True)
class Settings:
    root: Path
    base_image: str | None
    ca_bundle: Path | None
    image_prefix: str
    wait_timeout: int
    environments: Mapping[str, Environment]

    def environment(self, name: str) -> Environment:
        if name not in self.environments:
            valid = ", ".join(sorted(self.environments))
            raise ConfigError(f"unknown environment '{name}'; valid environments: {valid}")
        return self.environments[name]


def _int(value: Any, what: str, *, low: int, high: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a whole number, got {value!r}") from None
    if isinstance(value, bool) or not low <= number <= high:
        raise ConfigError(f"{what} must be between {low} and {high}, got {value!r}")
    return number


def state_home(environ: Mapping[str, str]) -> Path:
    """Per-user state (XDG): where throwaway environments keep their generated secrets."""
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", "~")) / ".local/state")
    return Path(base).expanduser() / "lorepin"


def _environment(
    name: str, raw: Mapping[str, Any], root: Path, environ: Mapping[str, str]
) -> Environment:
    where = f"environment '{name}'"
    if not ENV_NAME.match(name):
        raise ConfigError(f"{where}: names are lowercase letters, digits and '-' (max 31)")
    kind = raw.get("kind", "")
    if kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    project = str(raw.get("project") or f"lorepin-{name}")
    if not PROJECT_NAME.match(project):
        raise ConfigError(f"{where}: invalid Compose project name {project!r}")
    files = tuple(root / f for f in raw.get("compose_files") or ())
    if not files:
        raise ConfigError(f"{where}: compose_files is empty")
    for f in files:
        if not f.is_file():
            raise ConfigError(f"{where}: compose file {f.relative_to(root)} does not exist")
    tag = str(raw.get("image_tag") or name)
    if not IMAGE_TAG.match(tag):
        raise ConfigError(f"{where}: invalid image tag {tag!r}")
    db_port = raw.get("db_port")
    # Keyed by Compose project, like the engine's volumes: every checkout that drives the
    # same project finds the password its database was initialised with.
    secrets_dir = Path(raw.get("secrets_dir") or state_home(environ) / project / "secrets")
    return Environment(
        name=name,
        kind=kind,
        project=project,
        compose_files=files,
        http_port=_int(raw.get("http_port", 8080), f"{where}: http_port", low=0, high=65535),
        db_port=None if db_port is None else _int(db_port, f"{where}: db_port", low=0, high=65535),
        image_tag=tag,
        secrets_dir=secrets_dir,
        docker_host=raw.get("docker_host"),
        docker_context=raw.get("docker_context"),
        # Long-lived environments keep a dump from just before any schema change.
        backup_before_migrate=bool(
            raw.get("backup_before_migrate", kind in ("staging", "production"))
        ),
    )


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _recorded_base_image(root: Path) -> str | None:
    try:
        text = (root / BASE_IMAGE_RECORD).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "BASE_IMAGE" and value.strip():
            return value.strip()
    return None


def _ca_bundle(environ: Mapping[str, str]) -> Path | None:
    for candidate in (
        environ.get("LOREPIN_CA_BUNDLE"),
        environ.get("PIP_CERT"),
        environ.get("SSL_CERT_FILE"),
        *DEFAULT_CA_BUNDLES,
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def load(
    project_config: Mapping[str, Any] | None = None,
    *,
    root: Path = ROOT,
    environ: Mapping[str, str] = os.environ,
) -> Settings:
    """Resolve defaults, invoke.yaml's `lorepin:` tree and environment variables."""
    raw = _merge(DEFAULTS, project_config or {})
    envs = {
        name: _environment(name, spec or {}, root, environ)
        for name, spec in raw["environments"].items()
    }
    return Settings(
        root=root,
        base_image=environ.get("BASE_IMAGE") or raw.get("base_image") or _recorded_base_image(root),
        ca_bundle=_ca_bundle(environ),
        image_prefix=environ.get("LOREPIN_IMAGE_PREFIX") or str(raw["image_prefix"]),
        wait_timeout=_int(raw["wait_timeout"], "wait_timeout", low=10, high=3600),
        environments=envs,
    )


def with_overrides(env: Environment, environ: Mapping[str, str] = os.environ) -> Environment:
    """The selected environment with the LOREPIN_* overrides of the module docstring applied."""
    raw: dict[str, Any] = {
        "kind": env.kind,
        "project": environ.get("LOREPIN_PROJECT", env.project),
        "compose_files": env.compose_files,
        "http_port": environ.get("LOREPIN_HTTP_PORT", env.http_port),
        "db_port": environ.get("LOREPIN_DB_PORT", env.db_port),
        "image_tag": environ.get("LOREPIN_IMAGE_TAG", env.image_tag),
        # A derived (not configured) secrets dir follows the project when it is overridden.
        "secrets_dir": environ.get("LOREPIN_SECRETS_DIR")
        or (
            None
            if env.secrets_dir == state_home(environ) / env.project / "secrets"
            else env.secrets_dir
        ),
        "docker_host": env.docker_host,
        "docker_context": env.docker_context,
        "backup_before_migrate": env.backup_before_migrate,
    }
    # The compose files are absolute already: re-rooting them at "/" leaves them as they are.
    return _environment(env.name, raw, Path("/"), environ)
