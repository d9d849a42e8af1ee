"""`invoke up` end to end: a real stack under a unique project name, used over HTTP on
127.0.0.1, then `invoke down --volumes --yes`; nothing of the project may remain."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HEAD, invoke, unique_project

pytestmark = pytest.mark.docker


def leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    found = {}
    for kind, argv in {
        "containers": ["docker", "ps", "-aq", "--filter", label],
        "networks": ["docker", "network", "ls", "-q", "--filter", label],
        "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
    }.items():
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()
        found[kind] = out
    return found


def request(method: str, url: str, body: object = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
        url,
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310
        return response.status, json.loads(response.read() or b"null")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, str]]:
    project = unique_project("lorepin-e2e")
    env = {
        "LOREPIN_PROJECT": project,
        "LOREPIN_HTTP_PORT": "0",  # Docker picks free ports: runs beside `local` safely
        "LOREPIN_DB_PORT": "0",
        "LOREPIN_IMAGE_TAG": "e2e",  # never retags the developer's own `dev` images
        "LOREPIN_SECRETS_DIR": str(tmp_path / "secrets"),
    }
    try:
        yield env
    finally:
        invoke("down", "--volumes", "--yes", env=env, timeout=300)
        # Belt and braces when the task itself is what broke.
        files = [
            "-f",
            "compose/compose.yaml",
            "-f",
            "compose/mocks.yaml",
            "-f",
            "compose/local.yaml",
        ]
        if any(leftovers(project).values()):
            subprocess.run(
                ["docker", "compose", "-p", project, *files, "down", "-v"],
                capture_output=True,
                check=False,
                cwd=Path(__file__).resolve().parents[2],
            )


def test_up_serves_pins_then_down_removes_everything(stack: dict[str, str]) -> None:
    up = invoke("up", env=stack, timeout=900)
    assert up.returncode == 0, up.stderr[-4000:]
    assert "is ready" in up.stdout

    status = invoke("status", "--json", env=stack, check=True)
    report = json.loads(status.stdout)
    url = report["url"]
    assert url.startswith("http://127.0.0.1:")
    assert {s["service"]: s["state"] for s in report["services"]} == {
        "db": "running",
        "migrate": "exited",
        "cms": "running",
        "geocoder": "running",  # the mock of the external geocoding API
    }
    assert report["ready"] is True

    code, version = request("GET", f"{url}/version")
    assert code == 200 and isinstance(version, dict)
    assert version["schema_revision"] == version["schema_expected"] == HEAD
    code, created = request(
        "POST",
        f"{url}/api/pins",
        {
            "title": "Stone of the ford",
            "latitude": 51.5,
            "longitude": -0.12,
            "tags": ["river"],
        },
    )
    assert code == 201 and isinstance(created, dict)
    code, read = request("GET", f"{url}/api/pins/{created['id']}")
    assert read == created

    # The database password is a file secret: never in the containers' config.
    inspect = subprocess.run(
        [
            "docker",
            "inspect",
            f"{stack['LOREPIN_PROJECT']}-db-1",
            f"{stack['LOREPIN_PROJECT']}-cms-1",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    secret = (Path(stack["LOREPIN_SECRETS_DIR"]) / "db_password").read_text().strip()
    assert secret and secret not in inspect
    assert secret not in up.stdout + up.stderr

    down = invoke("down", "--volumes", "--yes", env=stack, check=True)
    assert "is down" in down.stdout
    assert leftovers(stack["LOREPIN_PROJECT"]) == {"containers": [], "networks": [], "volumes": []}


def test_down_volumes_refuses_without_confirmation(stack: dict[str, str]) -> None:
    up = invoke("up", env=stack, timeout=900)
    assert up.returncode == 0, up.stderr[-4000:]
    refused = invoke("down", "--volumes", env={**stack, "CI": ""})
    assert refused.returncode == 2
    assert "pass --yes" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert leftovers(stack["LOREPIN_PROJECT"])["volumes"], "the data volume must survive"
    kept = invoke("down", env=stack, check=True)
    assert "data volumes kept" in kept.stdout
    remaining = leftovers(stack["LOREPIN_PROJECT"])
    assert remaining["containers"] == [] and len(remaining["volumes"]) == 1


def test_lost_or_wrong_secret_fails_clearly_and_keeps_the_data(stack: dict[str, str]) -> None:
    assert invoke("up", env=stack, timeout=900).returncode == 0
    invoke("down", env=stack, check=True)  # data kept
    secret = Path(stack["LOREPIN_SECRETS_DIR"]) / "db_password"
    original = secret.read_text()

    secret.unlink()
    lost = invoke("up", env=stack)
    assert lost.returncode == 2
    assert "exists but its secret" in lost.stderr and "is missing" in lost.stderr
    assert not secret.exists(), "no new password may be invented over existing data"
    assert leftovers(stack["LOREPIN_PROJECT"])["containers"] == []

    secret.write_text("not-the-password\n")
    wrong = invoke("up", env=stack, timeout=900)
    assert wrong.returncode == 1
    message = wrong.stderr.strip().splitlines()[-1]
    assert message.startswith("error: service 'migrate' of 'local' exited with code 1")
    assert "password authentication failed" in message

    secret.write_text(original)
    assert invoke("up", env=stack, timeout=900).returncode == 0
    assert len(leftovers(stack["LOREPIN_PROJECT"])["volumes"]) == 1
