"""The CMS started the other ways its image allows (no database needed to import it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_app_imports_with_the_images_metrics_directory_not_made_yet(tmp_path: Path) -> None:
    """The local environment runs uvicorn itself (reloading), not lorepin_cms.serve, with the
    image's PROMETHEUS_MULTIPROC_DIR set: nothing has made that directory."""
    missing = tmp_path / "lorepin-metrics"
    started = subprocess.run(
        [sys.executable, "-c", "import lorepin_cms.app; lorepin_cms.app.metrics.REQUESTS"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(missing)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr[-2000:]
    assert missing.is_dir()
