"""``GET /v1/reports/weekly`` on the gateway, over the simulator month's counters.

A server key gets the same figures ``leadpulse report`` computes; an agent key only
its own rows (no colleague, nothing team-wide); bad periods are 422 with the reason;
another tenant's key sees none of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from engine.gateway.auth import key_digest
from engine.reporting.cli import build_report
from engine.settings import load_settings
from tests.engine.gateway.conftest import SECRET, Gateway
from tests.engine.reporting.conftest import TENANT, SimRun

SERVER = "lpk_test_sim_server_0123456789abcdef"
AGENT = "lpk_agt_test_sim_a003_0123456789"
OTHER = "lpk_test_other_server_0123456789abc"
PERIOD = "since=2025-12-01&until=2026-02-28"


@pytest.fixture(scope="module")
def gw(sim_run: SimRun, redis_url: str) -> Iterator[Gateway]:
    keys = {
        key_digest(SERVER): {"tenant": TENANT, "role": "server"},
        key_digest(AGENT): {"tenant": TENANT, "role": "agent", "agent": "A003"},
        key_digest(OTHER): {"tenant": "other", "role": "server"},
    }
    overrides = {
        "redis": {"key_prefix": sim_run.prefix},
        "gateway": {"contact_hash_key": SECRET, "api_keys": keys},
    }
    g = Gateway(load_settings(overrides=overrides, environ={}), redis_url)
    yield g
    g.close()


def test_a_server_key_gets_the_report(gw: Gateway, sim_run: SimRun) -> None:
    r = gw.get(f"/v1/reports/weekly?{PERIOD}", key=SERVER)
    assert r.status_code == 200, r.text
    body = r.json()
    want = build_report(sim_run.client, sim_run.prefix, TENANT, date(2025, 12, 1),
                        date(2026, 2, 28)).to_dict()  # fmt: skip
    assert body == want
    assert body["total"]["leads"] == 150
    assert {row["name"] for row in body["funnel"]["bucket"]} >= {"P1", "P2", "P3", "none"}
    assert len(body["funnel"]["agent"]) > 3


def test_an_agent_key_sees_only_its_own_row(gw: Gateway) -> None:
    body = gw.get(f"/v1/reports/weekly?{PERIOD}", key=AGENT).json()
    assert body["agent"] == "A003"
    names = {r["name"] for rows in body["speed"].values() for r in rows}
    names |= {r["name"] for rows in body["funnel"].values() for r in rows}
    names |= {r["agent"] for r in body["sla_by_agent"]}
    assert names == {"A003"}
    assert body["optouts"] == {} and body["quality"]["labels"] == 0
    assert set(body["funnel"]) == {"agent"} and set(body["speed"]) == {"agent"}
    assert body["total"] == body["funnel"]["agent"][0]  # its own leads, not the team's


def test_another_tenant_and_no_key_see_nothing(gw: Gateway) -> None:
    body = gw.get(f"/v1/reports/weekly?{PERIOD}", key=OTHER).json()
    assert body["tenant"] == "other" and body["total"]["leads"] == 0
    assert body["notes"] == ["no data for this tenant in the period"]
    assert gw.get(f"/v1/reports/weekly?{PERIOD}", key=None).status_code == 401


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("since=2026-02-01&until=2026-01-01", "since 2026-02-01 is after until 2026-01-01"),
        ("since=2026-02-30", "since '2026-02-30' is not a date"),
        ("since=yesterday", "since"),
        ("since=2020-01-01&until=2026-01-01", "at most 800"),
        ("until=0001-01-03", "until 0001-01-03 leaves no week before it"),
    ],
)
def test_a_bad_period_is_422_with_the_reason(gw: Gateway, query: str, reason: str) -> None:
    r = gw.get(f"/v1/reports/weekly?{query}", key=SERVER)
    assert r.status_code == 422
    assert reason in r.text


def test_the_default_period_is_the_last_seven_days(gw: Gateway) -> None:
    body = gw.get("/v1/reports/weekly", key=SERVER).json()
    assert (date.fromisoformat(body["until"]) - date.fromisoformat(body["since"])).days == 6
