"""Reports in both key layouts (issue 13): the engine's day counters of a deployment-layout
run, split over the partition shards of a slot-per-partition copy with a share left under
the deployment prefix (where delivery counts its SLA misses), sum to the same report; the
tenants are the union of the shards' and the deployment's sets.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest

from engine.keys import day_key, tenants_key
from engine.reporting.cli import _tenant, build_report, known_tenants
from engine.reporting.figures import read_counts
from engine.shards import report_prefixes
from engine.streams import StreamNames
from tests.layouts import PARTITIONS, Layouts, both_layouts

SINCE, UNTIL = date(2020, 1, 1), date(2030, 12, 31)


@pytest.fixture
def layouts(client: Any, make_settings: Any) -> Iterator[Layouts]:
    yield from both_layouts(client, make_settings)


def _split_counters(client: Any, src: StreamNames, dst: StreamNames) -> int:
    """Every day hash of ``src`` spread over ``dst``'s report prefixes (each field's count
    in shares, the deployment prefix's too); the tenant sets likewise. Days copied."""
    shares = report_prefixes(dst)
    assert len(shares) == PARTITIONS + 1 and shares[-1] == dst.prefix
    tenants = sorted(t.decode() for t in client.smembers(tenants_key(src.prefix)))
    days = 0
    for tenant in tenants:
        for day in _days(client, src.prefix, tenant):
            days += 1
            for n, (name, value) in enumerate(
                client.hgetall(day_key(src.prefix, tenant, day)).items()
            ):
                left = int(value)
                for i, prefix in enumerate(shares):  # uneven shares, some of them zero
                    share = left if i == len(shares) - 1 else left * ((i + n) % 3) // 3
                    if share:
                        client.hincrby(day_key(prefix, tenant, day), name, share)
                    left -= share
    for i, tenant in enumerate(tenants):  # each tenant known in one place only
        client.sadd(tenants_key(shares[i % len(shares)]), tenant)
    return days


def _days(client: Any, prefix: str, tenant: str) -> list[str]:
    head = day_key(prefix, tenant, "")
    return sorted(k.decode()[len(head) :] for k in client.scan_iter(match=head + "*"))


def test_reports_read_the_same_in_both_layouts(client: Any, layouts: Layouts) -> None:
    d, p = layouts.names
    assert _split_counters(client, d, p) > 10
    assert known_tenants(client, p) == known_tenants(client, d) == ["t", "u"]
    assert known_tenants(client, d.prefix) == ["t", "u"]  # a bare prefix: deployment layout
    for tenant in ("t", "u"):
        counts = read_counts(client, d, tenant, SINCE, UNTIL)
        assert counts == read_counts(client, p, tenant, SINCE, UNTIL) and counts[0]
        assert counts == read_counts(client, d.prefix, tenant, SINCE, UNTIL)
        one, other = (build_report(client, n, tenant, SINCE, UNTIL) for n in (d, p))
        assert one == other and one.total.leads > 10
    assert read_counts(client, p, "t", SINCE, UNTIL) != read_counts(
        client, p.prefix, "t", SINCE, UNTIL
    )  # the shards hold the engine's counts, not the deployment prefix alone


def test_one_tenant_in_any_shard_is_the_report_tenant(client: Any, prefix: str) -> None:
    names = StreamNames(prefix + "q", PARTITIONS, "partition")
    try:
        client.sadd(tenants_key(names.shard(3)), "acme")
        client.sadd(tenants_key(names.prefix), "acme")
        assert _tenant(client, names, "") == "acme"
    finally:
        client.delete(tenants_key(names.shard(3)), tenants_key(names.prefix))
