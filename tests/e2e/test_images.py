"""Images through a real registry; labels; prune; the admin page in a real browser."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser import chromium, need_browser, screenshots
from tests.conftest import invoke, new_token, request, unique_project
from tests.release_helpers import base_image, clone_project, invoke_in, remove_images

pytestmark = pytest.mark.docker


def docker(*args: str) -> str:
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"lorepin-img-test-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        remove_images(name)


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """Debian's docker-registry, in an image of ours, on 127.0.0.1."""
    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            "docker",
            "build",
            "-q",
            "-t",
            "lorepin/registry:test",
            "--build-arg",
            f"BASE_IMAGE={base_image()}",
            str(root / "compose/images/registry"),
        ],
        capture_output=True,
        check=True,
    )
    name = f"lorepin-registry-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "-p", "127.0.0.1:0:5000", "lorepin/registry:test")
    try:
        address = docker("port", name, "5000").splitlines()[0]
        for _ in range(50):
            try:
                with urllib.request.urlopen(f"http://{address}/v2/", timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        yield address
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True, check=False)


def test_push_delete_pull_matches_the_manifest(tmp_path: Path, prefix: str, registry: str) -> None:
    repo = clone_project(tmp_path)
    env = {"LOREPIN_IMAGE_PREFIX": prefix}
    built = invoke_in(repo, "images.build", env=env)
    assert built.returncode == 0, built.stderr[-3000:]
    root = Path(repo.working_tree_dir or ".")
    manifest = json.loads((root / "dist/build-manifest.json").read_text())
    sha = repo.head.commit.hexsha
    assert manifest["tags"] == [manifest["tags"][0], f"sha-{sha[:7]}"]  # on main: no branch tag
    by_name = {e["name"]: e for e in manifest["images"]}
    assert set(by_name) == {"cms", "postgres", "geocoder-mock", "proxy", "collector"}
    for entry in manifest["images"]:
        assert entry["git_revision"] == sha and entry["base_image"] == base_image()
        assert entry["size"] > 0 and entry["id"].startswith("sha256:")

    cms = f"{prefix}/cms:sha-{sha[:7]}"
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", cms))
    assert config["User"] not in ("", "0", "root") and not config["User"].startswith("0:")
    labels = config["Labels"]
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["org.opencontainers.image.title"] == "lorepin-cms"
    for key in ("version", "created", "source"):
        assert labels[f"org.opencontainers.image.{key}"]

    pushed = invoke_in(repo, "images.push", "--registry", registry, env=env)
    assert pushed.returncode == 0, pushed.stderr[-3000:]
    remove_images(prefix)  # nothing of the version left locally
    assert not [
        r for r in docker("image", "ls", "--format", "{{.Repository}}").split() if prefix in r
    ]

    shutil.rmtree(root / "dist")
    version = manifest["tags"][0]  # pull by version (the sha- tag was pushed too)
    downloaded = invoke_in(
        repo, "artifacts.download", f"v{version}", "--registry", registry, env=env
    )
    assert downloaded.returncode == 0, downloaded.stderr[-3000:]
    assert "5 images match it" in downloaded.stdout
    fetched = json.loads((root / f"dist/artifacts/{version}/build-manifest.json").read_text())
    for entry in fetched["images"]:
        local = docker(
            "image", "inspect", "--format", "{{.Id}}", f"{prefix}/{entry['name']}:{version}"
        )
        assert local == entry["id"] == by_name[entry["name"]]["id"]
        assert entry["digests"], "push recorded the registry digest"


def test_bad_registry_and_missing_manifest(tmp_path: Path) -> None:
    repo = clone_project(tmp_path)
    bad = invoke_in(repo, "images.push", "--registry", "http://nope")
    assert bad.returncode == 2 and "invalid registry 'http://nope'" in bad.stderr
    missing = invoke_in(repo, "images.push", "--registry", "127.0.0.1:5999")
    assert missing.returncode == 2 and "run `invoke images.build` first" in missing.stderr


def tiny_image(ref: str, content: str) -> str:
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        info = tarfile.TarInfo("marker")
        payload = content.encode()
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    proc = subprocess.run(
        ["docker", "import", "--change", 'CMD ["/marker"]', "-", ref],
        input=data.getvalue(),
        capture_output=True,
        check=True,
    )
    return proc.stdout.decode().strip()


def test_prune_keeps_newest_and_in_use(prefix: str, tmp_path: Path) -> None:
    ids = {v: tiny_image(f"{prefix}/cms:{v}", v) for v in ("1.0.0", "1.1.0", "1.2.0", "2.0.0")}
    docker("tag", f"{prefix}/cms:1.1.0", f"{prefix}/cms:sha-1111111")
    docker("tag", f"{prefix}/cms:2.0.0", f"{prefix}/cms:dev")
    container = docker("create", "--name", f"{prefix}-user", f"{prefix}/cms:1.0.0")
    try:
        env = {"LOREPIN_IMAGE_PREFIX": prefix}
        dry = invoke("images.prune", "--keep", "2", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert sorted(ln for ln in dry.stdout.splitlines() if ln.startswith("remove")) == [
            f"remove {prefix}/cms:1.1.0",
            f"remove {prefix}/cms:sha-1111111",
        ]
        assert f"keep   {prefix}/cms:1.0.0 (used by a container)" in dry.stdout
        assert len(set(docker("image", "ls", "-q", f"{prefix}/cms").split())) == 4  # untouched

        pruned = invoke("images.prune", "--keep", "2", "--yes", env=env)
        assert pruned.returncode == 0, pruned.stderr
        left = set(docker("image", "ls", "--format", "{{.Tag}}", f"{prefix}/cms").split())
        assert left == {"1.0.0", "1.2.0", "2.0.0", "dev"}
        assert (
            docker("image", "inspect", "--format", "{{.Id}}", f"{prefix}/cms:1.0.0") == ids["1.0.0"]
        )
    finally:
        docker("rm", container)


def test_admin_page_signs_in_with_a_token_and_shows_text_as_text(  # in a real browser
    tmp_path: Path,
) -> None:
    need_browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    env = {
        "LOREPIN_PROJECT": unique_project("lorepin-e2e-admin"),
        "LOREPIN_HTTP_PORT": "0",
        "LOREPIN_DB_PORT": "0",
        "LOREPIN_IMAGE_TAG": "e2e",
        "LOREPIN_SECRETS_DIR": str(tmp_path / "secrets"),
    }
    try:
        up = invoke("up", env=env, timeout=900)
        assert up.returncode == 0, up.stderr[-3000:]
        url = json.loads(invoke("status", "--json", env=env).stdout)["url"]
        token = new_token(lambda *a: invoke(*a, env=env), "local")
        titles = [f"Admin sees pin {i}" for i in range(3)]  # drafts: for signed-in eyes only
        hostile = "<img src=x onerror=\"document.title='pwned'\"> '); DROP TABLE pins; --"
        for title, status in [*((t, "draft") for t in titles), (hostile, "published")]:
            pin = {"title": title, "latitude": 10, "longitude": 20, "tags": ["admin"],
                   "status": status}  # fmt: skip
            assert request("POST", f"{url}/api/pins", pin, token)[0] == 201

        with chromium(tmp_path / "chromium") as driver:
            driver.get(f"{url}/")
            assert driver.current_url == f"{url}/admin/"
            summary = (By.ID, "summary")
            WebDriverWait(driver, 20).until(ec.text_to_be_present_in_element(summary, "of 1 pins"))
            rows = driver.find_elements(By.CSS_SELECTOR, "#pins tbody tr td:first-child")
            assert [r.text for r in rows] == [hostile]  # the public view, and text as text
            assert not driver.find_elements(By.CSS_SELECTOR, "#pins img")
            assert driver.title == "LorePin admin"

            driver.find_element(By.CSS_SELECTOR, "#signin input[name=token]").send_keys(token)
            driver.find_element(By.CSS_SELECTOR, "#signin button").click()
            WebDriverWait(driver, 20).until(ec.text_to_be_present_in_element(summary, "of 4 pins"))
            assert driver.find_element(By.ID, "session-state").text == "Signed in"
            rows = driver.find_elements(By.CSS_SELECTOR, "#pins tbody tr td:first-child")
            assert sorted(r.text for r in rows) == sorted([*titles, hostile])
            places = driver.find_elements(By.CSS_SELECTOR, "#pins tbody tr td:nth-child(2)")
            assert all(p.text for p in places), "the mock geocoder named every place"
            assert driver.save_screenshot(str(screenshots(tmp_path) / "admin.png"))
    finally:
        invoke("down", "--volumes", "--yes", env=env)
