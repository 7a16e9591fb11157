"""The gateway store on a real Redis: append + idempotency, GCRA limits, lag, contact index."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import msgpack
import pytest
import redis
import uvloop

import engine.gateway.store as store_mod
from engine.errors import StoreError
from engine.gateway.ratelimit import Limit
from engine.gateway.store import GatewayStore, Prepared, find_leads_by_contact_hash
from engine.streams import StreamNames
from tests.engine.gateway.conftest import free_port

_made: list[GatewayStore] = []


@pytest.fixture
def run() -> Iterator[asyncio.Runner]:
    """One uvloop loop; stores made in the test are closed on it even when the test fails
    (uvloop's close waits forever on a connection that is still open)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        yield runner
        while _made:
            runner.run(_made.pop().close())


def _store(url: str, prefix: str, **kw: int) -> GatewayStore:
    store = GatewayStore(
        url, StreamNames(prefix, 2), maxlen=1_000, idempotency_ms=kw.get("idem", 60_000),
        contact_ttl_s=3_600, retries=0, socket_timeout_s=1.0,
    )  # fmt: skip
    _made.append(store)
    return store


def _p(i: int, eid: str, partition: int = 0, hashes: tuple[str, ...] = ()) -> Prepared:
    payload = msgpack.packb({"event_id": eid, "lead_id": f"L{i}"})
    return Prepared(i, eid, f"L{i}", partition, payload, hashes)


def test_append_is_idempotent_and_indexes_contacts(
    run: asyncio.Runner, redis_url: str, client: redis.Redis, prefix: str
) -> None:
    s = _store(redis_url, prefix)
    ids = run.run(s.append("acme", [_p(0, "a"), _p(1, "b", 1, ("h1",)), _p(2, "a")]))
    assert ids[0] and ids[1] and ids[2] is None
    assert client.xlen(f"{{{prefix}}}:events:0") == 1 and client.xlen(f"{{{prefix}}}:events:1") == 1
    assert run.run(s.append("acme", [_p(3, "b")])) == [None]
    assert run.run(s.append("beta", [_p(3, "b")]))[0]  # another tenant's id space
    assert 0 < client.pttl(f"{{{prefix}}}:gw:idem:acme:a") <= 60_000
    assert run.run(s.find_leads_by_contact_hash("acme", "h1")) == ["L1"]
    assert find_leads_by_contact_hash(client, prefix, "acme", "h1") == ["L1"]
    assert run.run(s.append("acme", [])) == []
    run.run(s.close())


def test_gcra_allows_the_burst_then_says_how_long_to_wait(
    run: asyncio.Runner, redis_url: str, prefix: str
) -> None:
    s = _store(redis_url, prefix)
    limit = Limit(rate=10, burst=3)  # one every 100 ms, three at once
    decisions = [run.run(s.rate_limit("k", limit)) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert 0 < decisions[3].wait_ms <= 100
    assert run.run(s.rate_limit("other", limit)).allowed  # buckets are separate
    time.sleep(decisions[3].wait_ms / 1000 + 0.02)
    assert run.run(s.rate_limit("k", limit)).allowed
    run.run(s.close())


def test_lag_is_counted_up_to_a_cap(
    run: asyncio.Runner, redis_url: str, client: redis.Redis, prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setattr(store_mod, "LAG_CAP", 3)
    for _ in range(5):
        client.xadd(f"{{{prefix}}}:events:0", {"e": b"x"})
    s = _store(redis_url, prefix)
    p0, p1 = run.run(s.stream_lag())
    assert (p0.lag, p0.capped, p0.committed) == (3, True, "0-0")
    assert (p1.lag, p1.capped, p1.oldest_age_s) == (0, False, None)
    run.run(s.close())


def test_unreachable_redis_is_a_store_error_without_details(
    run: asyncio.Runner, prefix: str
) -> None:
    s = _store(f"redis://:hunter2@127.0.0.1:{free_port()}/0", prefix)
    for call in (s.ping(), s.append("a", [_p(0, "x")]), s.lead("a", "L"), s.hot_list("a", 3),
                 s.stream_lag(), s.rate_limit("k", Limit(1, 1)),
                 s.find_leads_by_contact_hash("a", "h")):  # fmt: skip
        with pytest.raises(StoreError) as info:
            run.run(call)
        assert "hunter2" not in str(info.value) and "127.0.0.1" not in str(info.value)
    run.run(s.close())


def test_a_new_event_loop_gets_its_own_client(redis_url: str, prefix: str) -> None:
    s = GatewayStore(
        redis_url, StreamNames(prefix, 2), maxlen=1_000, idempotency_ms=1_000, contact_ttl_s=60
    )
    for _ in range(2):  # e.g. two test clients, one after the other
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(s.ping())
            runner.run(s.close())


def test_aliases_follow_chains_and_stop_on_cycles(
    run: asyncio.Runner, redis_url: str, client: redis.Redis, prefix: str
) -> None:
    client.hset(
        f"{{{prefix}}}:alias:acme", mapping={"~v": "A", "A": "B", "B": "C", "X": "Y", "Y": "X"}
    )
    s = _store(redis_url, prefix)
    got = run.run(s.resolve_aliases("acme", ["~v", "A", "Z", "X"]))
    assert got == {"~v": "C", "A": "C", "X": "Y"}
    assert run.run(s.resolve_aliases("beta", ["~v"])) == {}
    assert run.run(s.resolve_aliases("acme", [])) == {}
    run.run(s.close())
