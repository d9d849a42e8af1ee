"""The admin page in headless Chromium (Debian's, with its driver): the public view, then
signed in with the editor's token, a pin made through the form and listed."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from deployed.conftest import Target


def _spki(ca: str) -> str:
    """The certificate's public-key pin: Chromium trusts this one certificate, no other."""
    cert = x509.load_pem_x509_certificate(Path(ca).read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_the_admin_page_signs_in_and_saves_a_pin(target: Target) -> None:
    missing = [b for b in ("chromium", "chromedriver") if shutil.which(b) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed (scripts/bootstrap.sh installs them)",
                    pytrace=False)  # fmt: skip
    os.environ["SE_OFFLINE"] = "true"  # never let Selenium fetch a driver
    from selenium import webdriver
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-sync",
             "--disable-component-update", "--window-size=1280,1400"]  # fmt: skip
    if target.ca:
        flags.append(f"--ignore-certificate-errors-spki-list={_spki(target.ca)}")
    title = f"e2e admin {uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="lorepin-e2e-chromium-") as profile:
        for flag in (*flags, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
        try:
            step = "opening the page"
            driver.get(f"{target.url}/admin/")
            wait = WebDriverWait(driver, 20)
            wait.until(ec.text_to_be_present_in_element((By.ID, "summary"), "pins"))
            step = "the version"
            assert driver.title == "LorePin admin"
            wait.until(ec.text_to_be_present_in_element((By.ID, "version"), f"v{target.version} "))
            step = "signing in"
            driver.find_element(By.CSS_SELECTOR, "#signin input[name=token]").send_keys(
                target.token
            )
            driver.find_element(By.CSS_SELECTOR, "#signin button").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "session-state"), "Signed in"))
            step = "saving a pin"
            form = driver.find_element(By.ID, "editor")
            for name, value in (("title", title), ("latitude", "43.3"), ("longitude", "5.4"),
                                ("tags", "test-data, e2e")):  # fmt: skip
                form.find_element(By.NAME, name).send_keys(value)
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "aved"))
            step = "finding it by its tag"
            driver.find_element(By.CSS_SELECTOR, "#filters input[name=tag]").send_keys("e2e")
            driver.find_element(By.CSS_SELECTOR, "#filters button").click()
            wait.until(ec.text_to_be_present_in_element((By.ID, "pins"), title))
            assert driver.save_screenshot(str(target.artifacts / "admin.png"))
        except TimeoutException:
            driver.save_screenshot(str(target.artifacts / "admin-failed.png"))
            (target.artifacts / "admin-failed.html").write_text(driver.page_source)
            pytest.fail(f"the admin page: {step} did not happen in 20 s (see "
                        f"{target.artifacts}/admin-failed.png)", pytrace=False)  # fmt: skip
        finally:
            driver.quit()
    status, _, page = target.call("GET", "/api/pins?tag=e2e&status=draft&limit=100",
                                  token=target.token)  # fmt: skip
    made = [p for p in page["items"] if p["title"] == title]
    assert status == 200 and len(made) == 1
    assert target.call("DELETE", f"/api/pins/{made[0]['id']}", token=target.token)[0] == 204
