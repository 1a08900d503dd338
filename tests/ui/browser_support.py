"""Helpers for the dashboard's browser tests: the live service and its keys, a headless Chromium
(Debian's `chromium` + `chromium-driver`, driven by Selenium; nothing is downloaded) whose every
request is recorded from Chrome's performance log, so a test can check that none left the service.

Screenshots go to build/ui-screenshots/ (git-ignored); docs/img/dashboard.png is copied from there.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "service"))  # e2e_support, jobs_support: the live-server helpers

from e2e_support import Server  # noqa: E402
from jobs_support import wait_for  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "build" / "ui-screenshots"
WAIT_S = 300  # generous: the machine is shared and may be loaded; a wait ends as soon as its condition holds
HAVE_BROWSER = CHROMIUM.exists() and CHROMEDRIVER.exists()


class LiveService:
    """The server and a key per role: `write` and `read` in tenant `acme`, `other` (write) in `globex`."""

    def __init__(self, server: Server, keys: dict[str, str]):
        self.server = server
        self.url = server.url
        self.keys = keys

    def http(self, role: str = "write"):
        client = self.server.client()
        client.headers["Authorization"] = f"Bearer {self.keys[role]}"
        return client


def create_keys(data_dir: Path) -> dict[str, str]:
    from service import migrate
    from service.auth import create_key
    from service.config import Settings
    from service.db import make_engine, make_session_factory
    from service.models import Scope

    settings = Settings(_env_file=None, data_dir=data_dir, database_url=None)
    engine = make_engine(settings)
    migrate.upgrade(engine)
    keys = {}
    with make_session_factory(engine)() as session:
        for role, scope, tenant in (("write", Scope.write, "acme"), ("read", Scope.read, "acme"),
                                    ("other", Scope.write, "globex")):
            keys[role] = create_key(session, scope=scope, tenant=tenant, name=f"ui-{role}")[1]
    engine.dispose()
    return keys


class Browser:
    """A headless Chromium page plus helpers: wait on DOM conditions, log in, take screenshots, and
    every URL the browser requested so far (`requested()`)."""

    def __init__(self, driver, base_url: str):
        self.driver = driver
        self.base_url = base_url
        self._urls: list[str] = []

    def get(self, path: str) -> None:
        self.driver.get(self.base_url + path)
        self.wait_js("return document.readyState === 'complete'")

    def wait(self, condition, what: str, timeout: float = WAIT_S):
        return wait_for(lambda: condition(self.driver), timeout, 0.1, what)

    def wait_js(self, script: str, timeout: float = WAIT_S):
        return self.wait(lambda d: d.execute_script(script), script, timeout)

    def find(self, css: str):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def one(self, css: str, timeout: float = WAIT_S):
        return self.wait(lambda d: (self.find(css) or [None])[0], f"an element {css!r}", timeout)

    def login(self, key: str, path: str = "/ui/datasets") -> None:
        self.driver.delete_all_cookies()
        self.get(path)
        self.one("#key").send_keys(key)
        self.one("#login-form button[type=submit]").click()
        self.wait(lambda d: d.current_url.split("?")[0].endswith(path) and self.find("#whoami"), f"{path} after login")

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def requested(self) -> list[str]:
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message.get("method") == "Network.requestWillBeSent":
                self._urls.append(message["params"]["request"]["url"])
        return list(self._urls)


def start_browser(base_url: str) -> Browser:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never look for a browser to download
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--no-first-run", "--disable-extensions", "--disable-gpu"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(WAIT_S)
    return Browser(driver, base_url)


def publish_screenshot(name: str) -> None:
    """Copy a screenshot the tests took to docs/img/ (run by hand: `KAN_UI_PUBLISH=1 pytest tests/ui`)."""
    if os.environ.get("KAN_UI_PUBLISH") == "1":
        (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(SCREENSHOTS / f"{name}.png", REPO / "docs" / "img" / "dashboard.png")
