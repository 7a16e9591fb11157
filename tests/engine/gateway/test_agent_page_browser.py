"""The hot-list page with an agent key, in headless Chromium, engine and delivery live.

The agent opens ``/hotlist`` without naming itself and enters its agent key: the server
says who the agent is, the page adopts it and shows only that agent's leads and the
pond; acknowledging works as that agent. Asking for another agent's page is refused,
and the page says why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine.delivery.consumer import DeliveryService
from engine.gateway.app import create_app
from engine.gateway.auth import key_digest
from tests.browser import chrome, needs_chromium
from tests.engine.delivery.conftest import live_pipeline, send, wait_for
from tests.engine.gateway.conftest import gateway_overrides, live_server

CY = "lpk_agt_test_default_cy_0123456789"

pytestmark = [
    pytest.mark.slow,
    needs_chromium,
]


@pytest.fixture
def live(
    make_settings: Any, client: Any, redis_url: str
) -> Iterator[tuple[DeliveryService, str, dict[str, str]]]:
    tenant = {
        "groups": {"north": ["cy", "dee"]},
        "rules": [{"group": "north", "areas": ["02139"]}],
        "default_group": "pond",
    }
    gateway = gateway_overrides("unused")["gateway"]
    gateway["api_keys"] = {key_digest(CY): {"tenant": "default", "role": "agent", "agent": "cy"}}
    settings = make_settings(
        streams={"idle_poll_ms": 5},
        delivery={"block_ms": 20, "events_poll_ms": 20, "tenants": {"default": tenant}},
        gateway=gateway,
    )
    with live_pipeline(settings, client) as svc:
        now = time.time()
        send(settings, client, [
            {"event_id": f"sr-{lead}", "lead_id": lead, "type": "showing_request", "ts": now,
             "area": area, "property_id": f"{lead}-home", "source": "portal", "side": "buyer"}
            for lead, area in (("H1", "02139"), ("H2", "02139"), ("H3", "90210"))
        ])  # fmt: skip
        holders: dict[str, str] = {}

        def routed() -> bool:
            for lead in ("H1", "H2", "H3"):
                a = svc.assigner.read("default", lead)
                if a is None:
                    return False
                holders[lead] = a.agent if a.state == "assigned" else a.state
            return True

        wait_for(routed, timeout=15)
        with live_server(create_app(settings, redis_url)) as url:
            yield svc, url, holders


def test_agent_key_page_is_the_agents_own(
    live: tuple[DeliveryService, str, dict[str, str]],
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    svc, url, holders = live
    mine = next(lead for lead, who in holders.items() if who == "cy")
    assert sorted(holders.values()) == ["cy", "dee", "pond"]
    driver = chrome()
    try:
        driver.get(f"{url}/hotlist")  # no ?agent=: the key decides
        wait = WebDriverWait(driver, 10, poll_frequency=0.02)
        form = driver.find_element(By.ID, "key-form")
        wait.until(lambda d: form.is_displayed())
        driver.find_element(By.ID, "api-key").send_keys(CY)
        form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded"))
        wait.until(lambda d: d.find_element(By.ID, "conn").get_attribute("data-state") == "live")
        assert driver.find_element(By.ID, "agent").get_attribute("value") == "cy"
        shown = {
            e.get_attribute("data-lead") for e in driver.find_elements(By.CSS_SELECTOR, ".lead")
        }
        assert shown == {mine, "H3"}  # cy's lead and the pond, not dee's

        card = driver.find_element(By.ID, f"lead-{mine}")
        card.find_element(By.CSS_SELECTOR, "button.ack").click()
        wait.until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, f"#lead-{mine} .sla").get_attribute("data-status")
                == "met"
            )
        )
        clock = svc.clocks.read("default", mine)
        assert clock is not None and clock["stopped_by"] == "cy"

        # the same key on another agent's page: refused, and the page says so
        driver.get(f"{url}/hotlist?agent=dee")
        wait.until(lambda d: "cannot view agent dee" in d.find_element(By.ID, "conn").text)
        assert not driver.find_elements(By.CSS_SELECTOR, ".lead")
        assert CY not in driver.current_url
    finally:
        driver.quit()
