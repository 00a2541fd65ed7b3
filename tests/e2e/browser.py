"""Headless Chromium driven by Selenium, with Debian's browser and driver (nothing is downloaded).

``Service(executable_path=/usr/bin/chromedriver)`` and ``binary_location=/usr/bin/chromium`` keep Selenium
Manager from running at all. :class:`Browser` adds what the UI tests need: waits by CSS or text, a
screenshot of every step (kept in a directory the test names, so a failure leaves the pictures).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import (
    ElementClickInterceptedException,
    StaleElementReferenceException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: pages took 2-8 s on the shared CI machines; a step waits this long before it fails
STEP_TIMEOUT = 60.0


class Browser:
    """One headless Chromium window.

    :param shots: directory for the step screenshots (created).
    :param base_url: the Airflow UI's base URL.
    """

    def __init__(self, shots: Path, base_url: str) -> None:
        self.shots = shots
        self.base_url = base_url.rstrip("/")
        self.shots.mkdir(parents=True, exist_ok=True)
        self.step = 0
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for argument in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1440,1000",
            "--lang=en-US",
        ):
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(STEP_TIMEOUT)

    def open(self, path: str) -> None:
        """Load ``base_url + path``."""
        self.driver.get(self.base_url + path)

    def shot(self, name: str) -> Path:
        """Save a numbered screenshot of the window; returns its path."""
        self.step += 1
        path = self.shots / f"{self.step:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = STEP_TIMEOUT) -> Any:
        """Poll ``condition`` until it returns something truthy; fail naming ``what`` (and a screenshot)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = condition()
                if value:
                    return value
            except (StaleElementReferenceException, WebDriverException):
                pass
            if time.monotonic() > deadline:
                shot = self.shot("timeout")
                raise AssertionError(f"{what}: not seen after {timeout:.0f} s (screenshot {shot})")
            time.sleep(0.3)

    def visible(self, css: str, text: str | None = None) -> WebElement | None:
        """The first displayed element matching ``css`` (whose text matches regex ``text``), or None."""
        for element in self.driver.find_elements(By.CSS_SELECTOR, css):
            if not element.is_displayed():
                continue
            if text is None or re.search(text, element.text or "", re.IGNORECASE):
                return element
        return None

    def find(self, css: str, text: str | None = None, timeout: float = STEP_TIMEOUT) -> WebElement:
        """Wait for :meth:`visible`."""
        label = f"{css}" + (f" with text {text!r}" if text else "")
        return self.wait(lambda: self.visible(css, text), label, timeout)

    def click(self, css: str, text: str | None = None, timeout: float = STEP_TIMEOUT) -> None:
        """Wait for an enabled element and click it (scrolled into view; retried while covered)."""

        def clicked() -> bool:
            element = self.visible(css, text)
            if element is None or not element.is_enabled():
                return False
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
            try:
                element.click()
            except ElementClickInterceptedException:
                return False
            return True

        self.wait(clicked, f"clickable {css}" + (f" with text {text!r}" if text else ""), timeout)

    def page_text(self) -> str:
        """The visible text of the whole page."""
        return self.driver.find_element(By.TAG_NAME, "body").text

    def close(self) -> None:
        """Quit the browser and its driver."""
        self.driver.quit()
