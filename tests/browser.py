"""Headless Chromium (Debian's, with its driver) for the tests that look at pages."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import in_ci

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


def browser_problem() -> str | None:
    missing = [b for b in ("chromium", "chromedriver") if shutil.which(b) is None]
    return (
        f"{', '.join(missing)} not installed (scripts/bootstrap.sh installs them)"
        if missing
        else None
    )


def need_browser() -> None:
    """Fail under CI, skip elsewhere, when there is no Chromium to look with."""
    if problem := browser_problem():
        if in_ci():
            pytest.fail(f"CI runs the browser tests: {problem}", pytrace=False)
        pytest.skip(problem)


def screenshots(fallback: Path) -> Path:
    """Kept as a CI artifact when the runner names a place for them (nox does)."""
    shots = Path(os.environ.get("LOREPIN_TEST_ARTIFACTS") or fallback) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    return shots


@contextmanager
def chromium(profile: Path) -> Iterator[WebDriver]:
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1280,1400",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver") or "chromedriver")
    )
    try:
        yield driver
    finally:
        driver.quit()
