"""A batch's report counters go in one script call inside its transaction: the same
hashes and TTLs as a HINCRBY per counter, and a counter that cannot be incremented
stops no other and still fails the transaction."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from engine.reporting.batch import ReportDelta


def _keys(prefix: str) -> tuple[str, str, str]:
    return (f"{{{prefix}}}:rpt:acme:2026-01-05", f"{{{prefix}}}:rpt:acme:2026-01-06",
            f"{{{prefix}}}:rpt:tenants")  # fmt: skip


def test_counters_land_with_their_ttl(client: Any, prefix: str) -> None:
    day1, day2, tenants = _keys(prefix)
    client.hset(day1, "leads", 5)
    delta = ReportDelta(
        counts={(day1, "leads"): 2, (day1, "alerts"): 1, (day2, "leads"): -1, (day2, "x"): 0},
        tenants={"acme"}, tenants_key=tenants, ttl_s=1_000,
    )  # fmt: skip
    with client.pipeline(transaction=True) as pipe:
        delta.apply(pipe)
        pipe.execute()
    assert client.hgetall(day1) == {b"leads": b"7", b"alerts": b"1"}
    assert client.hgetall(day2) == {b"leads": b"-1"}  # a zero increment writes nothing
    assert 990 < client.ttl(day1) <= 1_000 and 990 < client.ttl(day2) <= 1_000
    assert client.smembers(tenants) == {b"acme"}


def test_a_counter_that_fails_stops_no_other(client: Any, prefix: str) -> None:
    day1, day2, _ = _keys(prefix)
    client.hset(day1, "bad", "not a number")
    delta = ReportDelta(counts={(day1, "bad"): 1, (day1, "ok"): 2, (day2, "ok"): 3}, ttl_s=500)
    with pytest.raises(redis.ResponseError), client.pipeline(transaction=True) as pipe:
        delta.apply(pipe)
        pipe.execute()
    assert client.hget(day1, "ok") == b"2" and client.hget(day2, "ok") == b"3"
    assert client.hget(day1, "bad") == b"not a number"
    assert client.ttl(day1) > 0 and client.ttl(day2) > 0
