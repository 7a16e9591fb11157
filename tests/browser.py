"""Headless Debian chromium for the browser tests.

A test tool's own browser download does not work here, so the tests drive Debian's
``chromium`` through its ``chromium-driver`` (``.ci/run`` installs both) and skip,
saying why, where they are missing.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMEDRIVER = Path("/usr/bin/chromedriver")

needs_chromium = pytest.mark.skipif(
    not (shutil.which("chromium") and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed "
    "(apt-get install -y chromium chromium-driver)",
)


def chrome() -> Any:
    """A headless chromium session (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking", "--disable-dev-shm-usage",
                "--window-size=1280,1400"):  # fmt: skip
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
