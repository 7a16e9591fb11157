"""The tracker in Debian's headless Chromium, end to end.

A local IDX-like site (its own loopback port: the gateway is cross-origin, as in
production) embeds the README snippet. The browser searches, clicks through three
property pages, saves the third and registers (``leadpulse.identify``). The events
must be in the stream as the contract says, and after the engine has run (the same
dataflow as ``run``), the lead has a score, and the anonymous history is accounted
for exactly once between the lead and ``~<visitor_id>`` (see the test's last comment).

Needs ``apt-get install chromium chromium-driver``; skipped, saying so, without them.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from engine.app import build_parts
from engine.dataflow import run_bounded
from engine.gateway.app import create_app
from engine.settings import load_settings
from features.state import read_record
from features.store import alias_key, lead_key
from tests.engine.gateway.conftest import (
    ACME,
    ACME_TRACKER,
    gateway_overrides,
    live_server,
    stream_events,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed "
    "(apt-get install -y chromium chromium-driver)",
)

#: The README's copy-paste snippet (a queue until the script has loaded).
SNIPPET = """<script>
  window.leadpulse = window.leadpulse || [];
  ["identify", "track", "search", "propertyView", "flush", "optOut", "optIn"].forEach(function (m) {
    leadpulse[m] = leadpulse[m] || function () {
      leadpulse.push([m].concat([].slice.call(arguments)));
    };
  });
</script>
<script async src="GATEWAY/tracker.js" data-key="TRACKER_KEY"></script>"""

PROPERTIES = [("P1", "$450,000", "94110"), ("P2", "$475,000", "94110"), ("P3", "$499,000", "94112")]


def _page(title: str, body: str, snippet: str) -> str:
    head = f"<title>{title}</title>{snippet}"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def _site(root: Path, snippet: str) -> None:
    (root / "index.html").write_text(_page("Search", """
      <form data-lp-search action="results.html" method="get" id="search">
        <input name="area" id="area"> <input name="max_price" id="max_price">
        <select name="beds" id="beds"><option value="">any</option><option>3</option></select>
        <input type="email" name="email" id="email">
        <button type="submit" id="go">Search</button>
      </form>""", snippet))  # fmt: skip
    cards = "".join(
        f'<a id="{pid}" data-lp-property-id="{pid}" href="{pid.lower()}.html">{pid}</a>'
        for pid, _, _ in PROPERTIES
    )
    (root / "results.html").write_text(_page("Results", cards, snippet))
    for i, (pid, price, area) in enumerate(PROPERTIES):
        nxt = (
            f'<a id="next" href="{PROPERTIES[i + 1][0].lower()}.html">next</a>'
            if i + 1 < len(PROPERTIES) else
            '<button id="save" data-lp-save>Save</button>'
            "<button id=\"register\" onclick=\"leadpulse.identify('lead-42', "
            "{email: 'Buyer.One@example.com'})\">Register</button>"
        )  # fmt: skip
        main = (
            f'<main data-lp-view data-lp-property-id="{pid}" data-lp-price="{price}" '
            f'data-lp-area="{area}"><h1>{pid}</h1>{nxt}</main>'
        )
        (root / f"{pid.lower()}.html").write_text(_page(pid, main, snippet))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-dev-shm-usage"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def _wait_for(client: redis.Redis, prefix: str, n: int, timeout: float = 20) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        events = stream_events(client, prefix)
        if len(events) >= n or time.monotonic() > deadline:
            return events
        time.sleep(0.1)


def test_tracker_in_chromium_events_then_a_score(
    browser: Any, site: tuple[str, Path], redis_url: str, client: redis.Redis, prefix: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings = load_settings(overrides=gateway_overrides(prefix), environ={})
    with live_server(create_app(settings, redis_url)) as gateway:
        base, root = site
        _site(root, SNIPPET.replace("GATEWAY", gateway).replace("TRACKER_KEY", ACME_TRACKER))
        wait = WebDriverWait(browser, 10)

        def click(element_id: str, then_url: str | None = None) -> None:
            wait.until(ec.element_to_be_clickable((By.ID, element_id))).click()
            if then_url:
                wait.until(ec.url_contains(then_url))

        def loaded() -> None:  # the tracker has replaced the stub
            wait.until(lambda d: d.execute_script("return !!(window.leadpulse||{}).version"))

        browser.get(f"{base}/index.html")
        loaded()
        browser.find_element(By.ID, "area").send_keys("94110")
        browser.find_element(By.ID, "max_price").send_keys("500000")
        browser.find_element(By.ID, "beds").send_keys("3")
        browser.find_element(By.ID, "email").send_keys("never.sent@example.com")
        click("go", "results.html")
        loaded()
        click("P1", "p1.html")
        loaded()
        click("next", "p2.html")
        loaded()
        click("next", "p3.html")
        loaded()
        click("save")
        # registration: the site's server creates the lead with its server key, which binds
        # lead-42 (a tracker key alone cannot make a lead id an agent's lead)
        created = {"event_id": "c42", "lead_id": "lead-42", "type": "lead_created",
                   "ts": time.time(), "source": "website"}  # fmt: skip
        r = httpx.post(f"{gateway}/v1/events", json=[created], headers={"X-Api-Key": ACME})
        assert r.json()["accepted"] == 1
        click("register")
        visitor = browser.get_cookie("lp_vid")["value"]
        assert browser.get_cookie("lp_lid")["value"] == "lead-42"

        # in event-time order: the stream ids of two partitions can tie within a millisecond
        events = sorted(_wait_for(client, prefix, 12), key=lambda e: e["ts"])
        events = [e for e in events if e["type"] != "lead_created"]
        kinds = [e["type"] for e in events]
        assert kinds == [
            "page_view", "search", "page_view",
            "page_view", "property_view", "page_view", "property_view",
            "page_view", "property_view", "property_save", "identify",
        ], kinds  # fmt: skip
        assert {e["tenant"] for e in events} == {"acme"}
        assert {e["visitor_id"] for e in events} == {visitor}
        before, identify = events[:-1], events[-1]
        assert {e["lead_id"] for e in before} == {f"~{visitor}"}  # anonymous until identify
        assert (identify["lead_id"], identify["visitor_id"]) == ("lead-42", visitor)
        assert [e["props"]["path"] for e in events if e["type"] == "page_view"] == [
            "/index.html", "/results.html", "/p1.html", "/p2.html", "/p3.html",
        ]  # fmt: skip
        views = [
            (e["property_id"], e["price"], e["area"])
            for e in events
            if e["type"] == "property_view"
        ]
        assert views == [
            (p, float(price.strip("$").replace(",", "")), a) for p, price, a in PROPERTIES
        ]
        (search,) = [e for e in events if e["type"] == "search"]
        assert search["props"]["filters"] == {"area": "94110", "max_price": "500000", "beds": "3"}
        assert search["area"] == "94110"
        (save,) = [e for e in events if e["type"] == "property_save"]
        assert (save["property_id"], save["price"]) == ("P3", 499_000.0)
        assert "email" not in identify["props"] and len(identify["props"]["email_hash"]) == 32
        raw = b"".join(
            f[b"e"] for p in range(4) for _, f in client.xrange(f"{{{prefix}}}:events:{p}")
        )
        assert b"example.com" not in raw.lower()  # neither the form's email nor the trait
        assert len({e["event_id"] for e in events}) == 11

        # the engine: the same dataflow as `run`, bounded to what is in the streams now
        run_bounded(build_parts(settings, client))  # identity hand-overs included
        r = httpx.get(f"{gateway}/v1/leads/lead-42", headers={"Authorization": f"Bearer {ACME}"})
        assert r.status_code == 200
        lead = r.json()
        assert lead["score"] is not None and 0 <= lead["score"]["score"] <= 100
        # scored last at the identify: itself when the visitor's state was on the lead's
        # partition, else the identify's hand-over (engine/identity.py), history folded in
        eid = identify["event_id"]
        assert lead["score"]["last_event_id"] in (eid, f"handover:identify:{eid}")
        # identity (engine): identify folds the anonymous history into the lead and leaves a
        # pointer. The anonymous events and the identify sit on two partitions: the lead's
        # worker asks the visitor's for its state, which hands it over through the streams
        # (engine/identity.py), so the whole history ends on the lead, exactly once.
        anon = f"~{visitor}"
        assert client.hget(alias_key(prefix, "acme"), anon) == b"lead-42"
        assert not client.exists(lead_key(prefix, "acme", anon, "f"))
        state = read_record(client.get(lead_key(prefix, "acme", "lead-42", "f")))
        assert (state.counts["saves"], state.counts["searches"], len(state.views)) == (1, 1, 3)


def _quiet_for(client: redis.Redis, prefix: str, seconds: float = 3.0) -> list[Any]:
    """What reached the stream within ``seconds`` (the tracker flushes every 2 s)."""
    time.sleep(seconds)
    return stream_events(client, prefix)


def test_global_privacy_control_is_honoured_by_default(
    browser: Any, site: tuple[str, Path], redis_url: str, client: redis.Redis, prefix: str
) -> None:
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": (
        "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', "
        "{get: () => true})"
    )})  # fmt: skip
    settings = load_settings(overrides=gateway_overrides(prefix), environ={})
    with live_server(create_app(settings, redis_url)) as gateway:
        base, root = site
        _site(root, SNIPPET.replace("GATEWAY", gateway).replace("TRACKER_KEY", ACME_TRACKER))
        browser.get(f"{base}/p3.html")
        assert browser.execute_script("return navigator.globalPrivacyControl") is True
        assert browser.execute_script("return leadpulse.optedOut()") is True
        browser.execute_script("leadpulse.track('share', {property_id: 'P3'}); leadpulse.flush()")
        assert _quiet_for(client, prefix) == []
        assert browser.get_cookie("lp_vid") is None
        browser.execute_script("leadpulse.optIn()")  # the browser's signal still wins
        assert browser.execute_script("return leadpulse.optedOut()") is True


def test_opt_out_stops_tracking_and_is_remembered(
    browser: Any, site: tuple[str, Path], redis_url: str, client: redis.Redis, prefix: str
) -> None:
    settings = load_settings(overrides=gateway_overrides(prefix), environ={})
    with live_server(create_app(settings, redis_url)) as gateway:
        base, root = site
        _site(root, SNIPPET.replace("GATEWAY", gateway).replace("TRACKER_KEY", ACME_TRACKER))
        browser.get(f"{base}/p1.html")
        browser.execute_script("leadpulse.optOut()")  # before the first flush
        assert browser.get_cookie("lp_optout")["value"] == "1"
        assert browser.get_cookie("lp_vid") is None
        browser.get(f"{base}/p2.html")  # remembered across pages
        assert browser.execute_script("return leadpulse.optedOut()") is True
        assert _quiet_for(client, prefix) == []
        browser.execute_script("leadpulse.optIn(); leadpulse.flush()")
        assert browser.get_cookie("lp_optout") is None
        browser.execute_script("leadpulse.track('share', {property_id: 'P2'}); leadpulse.flush()")
        (event,) = _wait_for(client, prefix, 1)
        assert event["type"] == "share" and event["lead_id"] == f"~{event['visitor_id']}"
