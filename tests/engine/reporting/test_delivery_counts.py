"""Delivery's SLA misses reach the report: every miss on delivery's wall clock, the last
escalation step and the pond included, counted for the owner on the tenant's day."""

from __future__ import annotations

from datetime import date
from typing import Any

from engine.delivery.consumer import DeliveryService
from engine.reporting.cli import build_report
from engine.reporting.figures import read_counts
from tests.engine.delivery.conftest import Clock
from tests.engine.delivery.test_sla import _alert, _at, _west


def test_every_miss_is_counted_for_its_owner_on_the_day(make_settings: Any, client: Any) -> None:
    at = _at(2024, 3, 5, 10, 0)  # business hours in Los Angeles
    clock = Clock(at)
    settings = _west(make_settings)
    svc = DeliveryService(settings, client, clock=clock)
    svc.handle(_alert("M1", at, "portal", tenant="west"))
    for _ in range(3):  # cy misses, dee misses, then the pond: no step left
        clock.advance(301)
        svc.tick()
    assert svc.clocks.read("west", "M1")["status"] == "missed"  # type: ignore[index]
    prefix = settings.redis.key_prefix
    day = date(2024, 3, 5)
    counts, days = read_counts(client, prefix, "west", day, day)
    assert days == 1
    assert {k: v for k, v in counts.items() if k.startswith("missed|agent|")} == {
        "missed|agent|cy": 1, "missed|agent|dee": 1, "missed|agent|(pond)": 1,
    }  # fmt: skip
    assert counts["missed|source|unknown"] == 3
    rows = {a.agent: a for a in build_report(client, prefix, "west", day, day).sla_by_agent}
    assert (rows["cy"].missed_on_clock, rows["dee"].missed_on_clock) == (1, 1)
    assert rows["(pond)"].missed_on_clock == 1
    assert 399 * 86_400 < client.ttl(f"{{{prefix}}}:rpt:west:2024-03-05") <= 400 * 86_400
