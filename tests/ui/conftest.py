"""Fixtures for the dashboard's browser tests (browser_support.py has the helpers): one live service
(`kan-service serve`, authentication on, one local worker) and one headless Chromium, both shared by
the module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from browser_support import Browser, LiveService, Server, create_keys, start_browser


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    data_dir = tmp_path_factory.mktemp("ui-service")
    keys = create_keys(data_dir)
    server = Server(data_dir, workers=1, auth_enabled=True).start()
    try:
        yield LiveService(server, keys)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(live: LiveService) -> Iterator[Browser]:
    browser = start_browser(live.url)
    try:
        yield browser
    finally:
        browser.driver.quit()
