"""The scan's search of images' files, on a real image: a key written in one layer and
deleted in the next is still found (in its layer, as every copy of the image holds it),
named by where it was and never by its value; a second scan of the same image reads the
cache, not the image."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from lorepin_tasks import settings as settings_mod
from lorepin_tasks.plans import security as plan
from lorepin_tasks.runtime.environment import EnvContext
from lorepin_tasks.runtime.executor import Executor
from lorepin_tasks.runtime.security_scan import image_file_secrets
from tests.conftest import ROOT
from tests.release_helpers import base_image

pytestmark = pytest.mark.docker

# AWS's own documentation example, put together here so this file holds no key of its shape.
KEY = "AKIA" + "IOSFODNN7" + "EXAMPLE"


def test_a_key_deleted_by_a_later_layer_is_still_found_and_the_image_is_read_once(
    tmp_path: Path,
) -> None:
    image = f"lorepin-test-image-secrets-{uuid.uuid4().hex[:8]}:1"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {base_image()}\n"
        "RUN mkdir -p /root/.aws && printf '[default]\\naws_access_key_id = %s\\n' "
        f"{KEY} > /root/.aws/credentials\n"
        "RUN rm /root/.aws/credentials\n"
        "RUN echo 'nothing to see' > /srv/notes.txt\n"
    )
    built = subprocess.run(["docker", "build", "-q", "-t", image, str(tmp_path)],
                           capture_output=True, text=True, check=False)  # fmt: skip
    try:
        assert built.returncode == 0, built.stderr
        gone = subprocess.run(["docker", "run", "--rm", image, "ls", "/root/.aws"],
                              capture_output=True, text=True, check=True)  # fmt: skip
        assert gone.stdout == ""  # the final filesystem has no such file
        config = yaml.safe_load((ROOT / "invoke.yaml").read_text())["lorepin"]
        settings = settings_mod.load(config, root=ROOT)
        ctx = EnvContext(settings=settings, env=settings.environment("staging"), run=Executor())
        cache = tmp_path / "cache.json"

        hits = image_file_secrets(ctx, [image], cache)
        assert [(h.where, h.kind) for h in hits] == [
            (f"image {image}, /root/.aws/credentials:2", "AWS Access Key")
        ]
        [finding] = plan.secrets(hits, allow=set())
        assert finding.severity == "high" and KEY not in finding.what

        cached = json.loads(cache.read_text())
        assert list(cached.values()) == [[vars(h) for h in hits]] and KEY not in cache.read_text()
        subprocess.run(["docker", "tag", image, f"{image}-again"], check=True)
        # The same image under another name: from the cache (a fresh read would name the
        # new tag in `where`).
        assert image_file_secrets(ctx, [f"{image}-again"], cache) == hits
    finally:
        subprocess.run(["docker", "rmi", "-f", image, f"{image}-again"], capture_output=True,
                       check=False)  # fmt: skip
