"""Agent keys: one agent's hot-list key, bound to that agent id, least privilege.

Tenant ``acme`` routes area 02139 round robin in group ``north`` (cy, dee, eli), offers
area 02140 to ``north`` (first to claim wins), and leaves everything else in the pond.
``CY`` is cy's agent key. It sees and acts only as cy, on cy's leads, offers to cy and
the pond; a server key still does everything; a tracker key still reads nothing.
"""

from __future__ import annotations

import argparse
import json
import re
import time
import tomllib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.delivery.consumer import DeliveryService
from engine.errors import ConfigError
from engine.gateway import cli
from engine.gateway.app import create_app
from engine.gateway.auth import key_digest, new_key
from engine.settings import Settings, load_settings
from tests.engine.delivery.conftest import handle_all, run_engine, send, tenant_config
from tests.engine.delivery.test_web import _sse
from tests.engine.gateway.conftest import (
    ACME,
    ACME_TRACKER,
    BETA,
    ev,
    gateway_overrides,
    live_server,
)

CY = "lpk_agt_test_acme_cy_0123456789"
FAY = "lpk_agt_test_acme_fay_0123456789"  # group luxury, not north
BETA_CY = "lpk_agt_test_beta_cy_0123456789"  # an agent called cy at another brokerage

KEYS: dict[str, dict[str, Any]] = {
    key_digest(ACME): {"tenant": "acme", "role": "server"},
    key_digest(ACME_TRACKER): {"tenant": "acme", "role": "tracker"},
    key_digest(BETA): {"tenant": "beta", "role": "server"},
    key_digest(CY): {"tenant": "acme", "role": "agent", "agent": "cy"},
    key_digest(FAY): {"tenant": "acme", "role": "agent", "agent": "fay"},
    key_digest(BETA_CY): {"tenant": "beta", "role": "agent", "agent": "cy"},
}
RULES = [
    {"group": "north", "areas": ["02140"], "first_to_claim": True},
    {"group": "north", "areas": ["02139"]},
]


def _settings(prefix: str) -> Settings:
    overrides = gateway_overrides(prefix, api_keys=KEYS)
    overrides["delivery"] = {
        "sse_keepalive_s": 0.3,
        "tenants": {"acme": tenant_config(rules=RULES), "beta": tenant_config(rules=RULES)},
    }
    return load_settings(overrides=overrides, environ={})


def _hand_raise(lead: str, area: str, tenant: str = "acme") -> dict[str, Any]:
    return {"event_id": f"h-{lead}-{tenant}", "lead_id": lead, "tenant": tenant,
            "type": "showing_request", "ts": time.time() - 1, "area": area,
            "property_id": f"P-{lead}", "source": "portal"}  # fmt: skip


@pytest.fixture
def served(prefix: str, redis_url: str, client: Any) -> Iterator[tuple[str, dict[str, str]]]:
    """The gateway on a live port; leads routed for real. Yields (url, lead -> holder)."""
    settings = _settings(prefix)
    svc = DeliveryService(settings, client)
    leads = [("N1", "02139"), ("N2", "02139"), ("N3", "02139"), ("OF", "02140"), ("PD", "99999")]
    send(settings, client, [_hand_raise(lead, area) for lead, area in leads])
    send(settings, client, [_hand_raise("B1", "99999", "beta")])
    run_engine(settings, client)
    handle_all(svc)
    holders = {}
    for lead, _ in leads:
        a = {
            k.decode(): v.decode()
            for k, v in client.hgetall(f"{{{prefix}}}:dlv:asg:acme:{lead}").items()
        }
        holders[lead] = a["agent"] if a["state"] == "assigned" else a["state"]
    # round robin in north: one lead each for cy, dee, eli; an offer; the pond
    assert sorted(holders[x] for x in ("N1", "N2", "N3")) == ["cy", "dee", "eli"]
    assert (holders["OF"], holders["PD"]) == ("offered", "pond")
    with live_server(create_app(settings, redis_url)) as url:
        yield url, holders


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _leads(board: dict[str, Any]) -> set[str]:
    return {r["lead_id"] for rows in board["buckets"].values() for r in rows}


def _mine(holders: dict[str, str], agent: str) -> str:
    return next(lead for lead, who in holders.items() if who == agent)


def _refused(resp: httpx.Response) -> None:
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"] == "forbidden"


def test_agent_key_reads_only_as_its_agent(served: tuple[str, dict[str, str]]) -> None:
    url, holders = served
    cy, dee = _mine(holders, "cy"), _mine(holders, "dee")

    # its own board: agent filled in from the key, or named explicitly
    for path in ("/v1/board", "/v1/board?agent=cy"):
        board = httpx.get(f"{url}{path}", headers=_h(CY)).json()
        assert board["agent"] == "cy" and board["tenant"] == "acme"
        assert _leads(board) == {cy, "OF", "PD"}  # its lead, the offer to north, the pond
        assert not {"dee", "eli"} & set(re.findall(r"\w+", json.dumps(board)))  # colleagues
    # its own team (and the pond) yes; another agent's board or another team no
    assert _leads(httpx.get(f"{url}/v1/board?team=north", headers=_h(CY)).json()) == {
        cy, "OF", "PD"
    }  # fmt: skip
    assert httpx.get(f"{url}/v1/board?team=pond", headers=_h(CY)).status_code == 200
    _refused(httpx.get(f"{url}/v1/board?agent=dee", headers=_h(CY)))
    _refused(httpx.get(f"{url}/v1/board?team=luxury", headers=_h(CY)))
    _refused(httpx.get(f"{url}/v1/board?team=north", headers=_h(FAY)))
    _refused(httpx.get(f"{url}/v1/board?agent=cy", headers=_h(FAY)))
    # ?tenant= does not get around the key; the same agent id at beta is another key
    assert _leads(httpx.get(f"{url}/v1/board?tenant=beta", headers=_h(CY)).json()) == {
        cy, "OF", "PD"
    }  # fmt: skip
    assert _leads(httpx.get(f"{url}/v1/board", headers=_h(BETA_CY)).json()) == {"B1"}

    # the feed: as itself only; refusals come before the stream starts
    (first,) = _sse(f"{url}/v1/alerts/stream?last_event_id=0-0", _h(CY))
    assert first["data"]["lead_id"] in {cy, "OF", "PD"}
    seen = _sse(f"{url}/v1/alerts/stream?last_event_id=0-0", _h(CY), want=3)
    assert {e["data"]["lead_id"] for e in seen if e["event"] == "alert"} <= {cy, "OF", "PD"}
    for query in ("agent=dee", "team=luxury"):
        _refused(httpx.get(f"{url}/v1/alerts/stream?{query}", headers=_h(CY)))

    # a lead: its own, the offer and the pond yes; another agent's (or none) no
    for lead in (cy, "OF", "PD"):
        assert httpx.get(f"{url}/v1/leads/{lead}/delivery", headers=_h(CY)).status_code == 200
        assert httpx.get(f"{url}/v1/leads/{lead}", headers=_h(CY)).status_code == 200
    for lead in (dee, "NOPE"):
        _refused(httpx.get(f"{url}/v1/leads/{lead}/delivery", headers=_h(CY)))
        _refused(httpx.get(f"{url}/v1/leads/{lead}", headers=_h(CY)))

    # tenant-wide and manager views: server keys only
    for path in ("/v1/hotlist", "/v1/sla/report", "/v1/delivery/dead", "/v1/alerts/ab12/receipts"):
        _refused(httpx.get(f"{url}{path}", headers=_h(CY)))
        assert httpx.get(f"{url}{path}", headers=_h(ACME)).status_code in (200, 404), path

    # header only, like a server key: in the URL it is refused (and must be rotated)
    assert httpx.get(f"{url}/v1/board?key={CY}").status_code == 401


def test_agent_key_acts_only_as_itself_on_its_leads(
    served: tuple[str, dict[str, str]], client: Any, prefix: str
) -> None:
    url, holders = served
    cy, dee = _mine(holders, "cy"), _mine(holders, "dee")

    def act(lead: str, action: str, agent: str, key: str = CY) -> httpx.Response:
        body = (
            {"agent_id": agent, "channel": "call"} if action == "contact" else {"agent_id": agent}
        )
        return httpx.post(f"{url}/v1/leads/{lead}/{action}", json=body, headers=_h(key))

    before = client.hgetall(f"{{{prefix}}}:dlv:clock:acme:{dee}")
    for action in ("claim", "ack", "contact"):
        _refused(act("PD", action, "dee"))  # as another agent, even on a lead it may see
        _refused(act(dee, action, "cy"))  # as itself, on another agent's lead
        _refused(act(dee, action, "dee"))
        _refused(act("NOPE", action, "cy"))  # a lead nobody routed
    assert (
        client.hgetall(f"{{{prefix}}}:dlv:clock:acme:{dee}") == before
    )  # dee's SLA clock untouched

    # as itself on its own lead, the offer and the pond: works
    assert act(cy, "ack", "cy").status_code == 202
    assert act(cy, "contact", "cy").status_code == 202
    won = act("OF", "claim", "cy")
    assert won.status_code == 200 and won.json()["assignment"]["agent"] == "cy"
    assert act("PD", "claim", "cy").json()["claimed"] is True
    # another north agent's key would now be refused on the offer cy won; the server key
    # (back office) may still act for anyone
    assert httpx.get(f"{url}/v1/board", headers=_h(CY)).json()["agent"] == "cy"
    assert act(dee, "ack", "dee", key=ACME).status_code == 202
    assert act("OF", "claim", "dee", key=ACME).status_code == 409  # cy holds it now

    # no raw events: an agent cannot fake an outcome or a contact
    fake = [ev("agt-fake-1", cy, "agent_contact", agent_id="cy", channel="call")]
    for send_as in ({"Authorization": f"Bearer {CY}"}, {"X-Api-Key": CY}):
        resp = httpx.post(f"{url}/v1/events", json=fake, headers=send_as)
        _refused(resp)
    assert httpx.post(f"{url}/v1/events", json=fake, headers=_h(ACME)).json()["accepted"] == 1


def test_server_and_tracker_keys_keep_their_rights(served: tuple[str, dict[str, str]]) -> None:
    url, holders = served
    dee = _mine(holders, "dee")
    acme = _h(ACME)
    assert len(_leads(httpx.get(f"{url}/v1/board", headers=acme).json())) == 5
    assert _leads(httpx.get(f"{url}/v1/board?agent=dee", headers=acme).json()) >= {dee}
    assert httpx.get(f"{url}/v1/board?team=luxury", headers=acme).status_code == 200
    for path in ("/v1/hotlist", "/v1/sla/report", f"/v1/leads/{dee}", f"/v1/leads/{dee}/delivery"):
        assert httpx.get(f"{url}{path}", headers=acme).status_code == 200, path
    claim = httpx.post(f"{url}/v1/leads/PD/claim", json={"agent_id": "eli"}, headers=acme)
    assert claim.status_code == 200 and claim.json()["claimed"] is True

    trk = _h(ACME_TRACKER)
    for path in ("/v1/board", "/v1/hotlist", f"/v1/leads/{dee}", "/v1/sla/report"):
        _refused(httpx.get(f"{url}{path}", headers=trk))
    _refused(httpx.post(f"{url}/v1/leads/PD/ack", json={"agent_id": "cy"}, headers=trk))
    page = [ev("agt-trk-1", "T1")]
    assert httpx.post(f"{url}/v1/events?key={ACME_TRACKER}", json=page).json()["accepted"] == 1


def test_settings_bind_agent_keys_to_one_agent() -> None:
    def load(entry: dict[str, Any]) -> Settings:
        keys = {key_digest(CY): entry}
        return load_settings(overrides={"gateway": {"api_keys": keys}}, environ={})

    ok = load({"tenant": "acme", "role": "agent", "agent": "cy"})
    assert ok.gateway.api_keys[key_digest(CY)].agent == "cy"
    for entry, words in (
        ({"tenant": "acme", "role": "agent"}, "must name its agent"),
        ({"tenant": "acme", "role": "agent", "agent": ""}, "must name its agent"),
        ({"tenant": "acme", "role": "server", "agent": "cy"}, "only agent keys"),
        ({"tenant": "acme", "role": "tracker", "agent": "cy"}, "only agent keys"),
        ({"tenant": "acme", "role": "agent", "agent": "c y"}, "string should match"),
        ({"tenant": "acme", "role": "manager"}, "role"),
    ):
        with pytest.raises(ConfigError) as err:
            load(entry)
        text = str(err.value)
        assert f"gateway.api_keys.{key_digest(CY)}" in text and words in text.lower(), text
    assert new_key("agent").startswith("lpk_agt_") and not new_key("server").startswith("lpk_agt")


def _serve(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="leadpulse")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["serve", *argv])


def test_new_key_makes_an_agent_key_whose_config_line_loads(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.run(_serve("--new-key", "acme", "--role", "agent", "--agent", "cy")) == 0
    out = capsys.readouterr().out
    key = re.search(r"^\s+(lpk_agt_\S+)$", out, re.M)
    assert key is not None and "agent cy" in out
    digest = key_digest(key.group(1))
    line = next(x.strip() for x in out.splitlines() if x.strip().startswith(f'"{digest}"'))
    entry = tomllib.loads(f"[gateway.api_keys]\n{line}\n")["gateway"]["api_keys"]
    s = load_settings(overrides={"gateway": {"api_keys": entry}}, environ={})
    assert (s.gateway.api_keys[digest].role, s.gateway.api_keys[digest].agent) == ("agent", "cy")
    env = re.search(r"(LEADPULSE__GATEWAY__API_KEYS__\w+)='(.*)'", out)
    assert env is not None
    assert (
        load_settings(environ={env.group(1): env.group(2)}).gateway.api_keys[digest].agent == "cy"
    )

    with pytest.raises(ConfigError, match="--agent"):  # an agent key must name its agent
        cli.run(_serve("--new-key", "acme", "--role", "agent"))
    with pytest.raises(ConfigError, match="--agent"):
        cli.run(_serve("--new-key", "acme", "--role", "agent", "--agent", "no spaces"))
    with pytest.raises(ConfigError, match="only agent keys"):
        cli.run(_serve("--new-key", "acme", "--agent", "cy"))
    assert capsys.readouterr().out == ""  # nothing printed for a refused key


def test_an_agent_key_sees_that_a_lead_went_but_not_to_whom(
    served: tuple[str, dict[str, str]], client: Any, prefix: str
) -> None:
    url, _ = served
    before = client.xrevrange(f"{{{prefix}}}:dlv:feed:acme", count=1)[0][0].decode()
    claim = httpx.post(f"{url}/v1/leads/OF/claim", json={"agent_id": "dee"}, headers=_h(ACME))
    assert claim.status_code == 200 and claim.json()["claimed"] is True
    (seen,) = _sse(f"{url}/v1/alerts/stream?last_event_id={before}", _h(CY))
    assert seen["event"] == "assignment" and seen["data"]["lead_id"] == "OF"
    assert seen["data"]["state"] == "assigned" and seen["data"]["agent"] == "another agent"
    assert "dee" not in json.dumps(seen["data"])  # nor in the reason or the offer list
    (full,) = _sse(f"{url}/v1/alerts/stream?last_event_id={before}", _h(ACME))
    assert full["data"]["agent"] == "dee" and "dee" in full["data"]["reason"]
