"""The weekly report view on the hot-list page, in headless Chromium, on the gateway.

The simulator month's counters; the page signs in with a server key (asked for on the
401, as the hot list does) and opens the report view (``?view=report``): the tables
show the same figures as ``GET /v1/reports/weekly``, "too few" where a figure would
mislead. With an agent key the view holds only that agent's rows. A screenshot is
saved under benchmarks/results/tmp/ (its path is printed).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.gateway.app import create_app
from engine.settings import load_settings
from tests.browser import chrome, needs_chromium
from tests.engine.gateway.conftest import SECRET, live_server
from tests.engine.reporting.conftest import SimRun
from tests.engine.reporting.test_api import AGENT, OTHER, PERIOD, SERVER, key_digest

SHOT = Path(__file__).resolve().parents[3] / "benchmarks" / "results" / "tmp"

pytestmark = [pytest.mark.slow, needs_chromium]


@pytest.fixture(scope="module")
def url(sim_run: SimRun, redis_url: str) -> Iterator[str]:
    keys = {
        key_digest(SERVER): {"tenant": "sim", "role": "server"},
        key_digest(AGENT): {"tenant": "sim", "role": "agent", "agent": "A003"},
        key_digest(OTHER): {"tenant": "other", "role": "server"},
    }
    overrides = {
        "redis": {"key_prefix": sim_run.prefix},
        "gateway": {"contact_hash_key": SECRET, "api_keys": keys},
    }
    with live_server(create_app(load_settings(overrides=overrides, environ={}), redis_url)) as u:
        yield u


def _open_report(driver: Any, url: str, key: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(f"{url}/hotlist?view=report&{PERIOD}")
    wait = WebDriverWait(driver, 10, poll_frequency=0.05)
    form = driver.find_element(By.ID, "key-form")
    wait.until(lambda d: form.is_displayed())
    driver.find_element(By.ID, "api-key").send_keys(key)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(lambda d: d.find_element(By.ID, "report").get_attribute("data-loaded") == "1")
    return driver.find_element(By.ID, "report")


def _tables(report: Any) -> dict[str, list[list[str]]]:
    from selenium.webdriver.common.by import By

    out = {}
    for table in report.find_elements(By.CSS_SELECTOR, "table"):
        caption = table.find_element(By.TAG_NAME, "caption").text
        rows = [
            [c.text for c in tr.find_elements(By.CSS_SELECTOR, "th, td")]
            for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")
        ]
        out[caption] = rows
    return out


def test_the_report_view_shows_the_api_figures(url: str, sim_run: SimRun) -> None:
    import httpx

    want = httpx.get(f"{url}/v1/reports/weekly?{PERIOD}",
                     headers={"Authorization": f"Bearer {SERVER}"}).json()  # fmt: skip
    driver = chrome()
    try:
        report = _open_report(driver, url, SERVER)
        tables = _tables(report)
        assert tables["All leads"][0][:2] == ["all", str(want["total"]["leads"])]
        buckets = {row[0]: row for row in tables["Conversion by bucket at first alert"]}
        assert set(buckets) == {"P1", "P2", "P3", "P4", "P5", "none"}
        for row in want["funnel"]["bucket"]:
            conv = row["converted"]
            shown = buckets[row["name"]][4]
            if conv["value"] is None:
                assert shown == f"{conv['num']}/{conv['den']} (too few)"
            else:
                assert shown == f"{100 * conv['value']:.1f} % ({conv['num']}/{conv['den']})"
        everyone = tables["Speed to lead by all leads"][0]
        assert everyone[2] == str(want["speed"]["all"][0]["responses"])
        assert "SLA misses and redistributions by agent" in tables
        assert "Model quality:" in report.text
        SHOT.mkdir(parents=True, exist_ok=True)
        path = SHOT / "report-view.png"
        driver.save_screenshot(str(path))
        print(f"\nscreenshot: {path}")
        assert path.stat().st_size > 10_000
    finally:
        driver.quit()


def test_an_agent_sees_only_its_own_rows(url: str) -> None:
    driver = chrome()
    try:
        tables = _tables(_open_report(driver, url, AGENT))
        names = {row[0] for caption, rows in tables.items() for row in rows}
        assert names == {"A003"}
        assert "All leads" not in tables and "Conversion by bucket at first alert" not in tables
    finally:
        driver.quit()
