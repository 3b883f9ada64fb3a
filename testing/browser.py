"""A real headless Chromium driven by Selenium, for the dashboard tests.

Debian's ``chromium`` and ``chromium-driver`` (scripts/install.sh); both
paths are given so Selenium never tries to download a driver.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from measure_common.settings import get_setting
from testing.procs import wait_until

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTEFACTS: str = get_setting("MEASURE_TEST_ARTEFACTS")


@contextmanager
def chrome(width: int = 1400, height: int = 1000) -> Iterator[WebDriver]:
    """A headless Chromium session; quit afterwards, pass or fail."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--disable-background-networking", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver: WebDriver, base_url: str, token: str) -> None:
    """Open the dashboard and give it the token once."""
    from selenium.webdriver.common.by import By

    driver.get(f"{base_url}/dashboard/")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()
    field = wait_until(lambda: visible(driver, "#token"), timeout=15, message="token prompt")
    field.send_keys(token)
    driver.find_element(By.ID, "login-button").click()
    wait_until(lambda: driver.find_element(By.ID, "login").get_attribute("hidden") is not None,
               timeout=15, message="token accepted")


def visible(driver: WebDriver, css: str) -> WebElement | None:
    """The first element matching ``css`` if it is displayed, else None."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found and found[0].is_displayed() else None


def texts(driver: WebDriver, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def wait_for(driver: WebDriver, predicate: Callable[..., T | None], timeout: float,
             message: str) -> T:
    """``wait_until`` that adds the browser's console log to the failure."""
    try:
        return wait_until(predicate, timeout=timeout, interval=0.25, message=message)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\nbrowser console: {json.dumps(console(driver))[:3000]}"
                             ) from None


def console(driver: WebDriver) -> list[dict]:
    try:
        return driver.get_log("browser")
    except Exception as exc:  # noqa: BLE001 - only for failure messages, which must still come
        return [{"level": "UNKNOWN", "message": f"browser console unavailable: {exc!r}"}]


def screenshot(driver: WebDriver, name: str, also: str | None = None) -> str:
    """Save a PNG under the artefacts directory (and at ``also``, e.g. docs/)."""
    os.makedirs(ARTEFACTS, exist_ok=True)
    path = os.path.join(ARTEFACTS, name)
    driver.save_screenshot(path)
    if also is not None:
        driver.save_screenshot(also)
    return path
