"""scripts/bootstrap.sh's Compose step: the plugin it installs belongs to no checkout.

Each case sources the script in a fresh bash with a private DOCKER_CONFIG and runs only
its `setup_compose` step; `docker compose version` is a client-side command (no engine).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import ROOT

VENV = ROOT / ".venv"


def setup_compose(config: Path, venv: Path = VENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'source scripts/bootstrap.sh && VENV="{venv}" && setup_compose'],
        cwd=ROOT,
        env={**os.environ, "DOCKER_CONFIG": str(config), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def compose_version(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "compose", "version", "--short"],
        env={**os.environ, "DOCKER_CONFIG": str(config), "PATH": "/usr/local/bin:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_plugin_is_a_copy_of_the_binary_not_a_link_into_the_checkout(tmp_path: Path) -> None:
    done = setup_compose(tmp_path)
    assert done.returncode == 0, done.stderr
    plugin = tmp_path / "cli-plugins" / "docker-compose"
    assert plugin.is_file() and not plugin.is_symlink()
    assert plugin.read_bytes()[:4] == b"\x7fELF"  # the binary itself, no script of the venv
    assert os.access(plugin, os.X_OK)
    assert compose_version(tmp_path).stdout.strip().startswith("2.")


def test_a_link_left_by_an_older_bootstrap_is_replaced(tmp_path: Path) -> None:
    plugins = tmp_path / "cli-plugins"
    plugins.mkdir()
    gone = tmp_path / "deleted-checkout" / ".venv" / "bin" / "docker-compose"
    (plugins / "docker-compose").symlink_to(gone)  # its checkout was deleted
    assert compose_version(tmp_path).returncode != 0
    done = setup_compose(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (plugins / "docker-compose").is_symlink()
    assert compose_version(tmp_path).returncode == 0

    live = plugins / "docker-compose"
    live.unlink()
    live.symlink_to(VENV / "bin" / "docker-compose")  # works today, breaks with the checkout
    assert compose_version(tmp_path).returncode == 0
    done = setup_compose(tmp_path)
    assert done.returncode == 0, done.stderr
    assert not live.is_symlink() and "replaced" in done.stdout
