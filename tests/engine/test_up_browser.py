"""The ``leadpulse up`` flow in headless Chromium, as a new user goes through it.

A fresh data dir; ``up`` prints an agent key; the agent signs in with it on the page it
printed; a showing request posted with the printed server key appears on the page live;
Acknowledge stops the SLA clock. Everything real: ``up`` is a subprocess on the embedded
Valkey, the browser is Debian's chromium (skipped, saying why, without it).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from tests.browser import chrome, needs_chromium
from tests.engine.test_up import call, free_port, keys_of, no_server_left, up

pytestmark = [pytest.mark.slow, needs_chromium]
__all__ = ["no_server_left"]  # autouse here too: no server outlives a failed test


def test_printed_agent_key_signs_in_sees_a_showing_request_and_acknowledges(
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with up(tmp_path / "data", port) as proc:
        keys = keys_of(proc.out)
        page = next(w for w in proc.out[0].split() if w.endswith("/hotlist"))
        assert page == f"{base}/hotlist"
        driver = chrome()
        try:
            driver.get(page)
            wait = WebDriverWait(driver, 20, poll_frequency=0.05)
            form = driver.find_element(By.ID, "key-form")
            wait.until(lambda d: form.is_displayed())
            driver.find_element(By.ID, "api-key").send_keys(keys["agent"])
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
            wait.until(
                lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live"
            )
            assert driver.find_element(By.ID, "agent").get_attribute("value") == "agent"
            assert not driver.find_elements(By.CSS_SELECTOR, ".lead")

            event = {"event_id": "browser-1", "lead_id": "B1", "type": "showing_request",
                     "ts": time.time(), "property_id": "P77"}  # fmt: skip
            status, reply = call(f"{base}/v1/events", keys["server"], [event])
            assert (status, reply["accepted"]) == (200, 1), reply
            card = wait.until(lambda d: d.find_element(By.ID, "lead-B1"))  # live, no reload
            sla = card.find_element(By.CSS_SELECTOR, ".sla")
            assert sla.get_attribute("data-status") not in ("met", "missed")
            card.find_element(By.CSS_SELECTOR, "button.ack").click()
            wait.until(
                lambda d: (
                    d.find_element(By.CSS_SELECTOR, "#lead-B1 .sla").get_attribute("data-status")
                    == "met"
                )
            )
            assert keys["agent"] not in driver.current_url
        finally:
            driver.quit()
        status, lead = call(f"{base}/v1/leads/B1/delivery", keys["server"])
        assert status == 200 and lead["clock"]["stopped_by"] == "agent", lead
        assert proc.stop(signal.SIGINT) == 0
