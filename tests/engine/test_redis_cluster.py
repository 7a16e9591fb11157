"""A ``REDIS_URL`` naming any node of a Redis Cluster: detected, served by the cluster client.

Against a real local cluster (``tests/cluster.py``: 3 masters, 1 replica each). A replay
on the cluster gives the same score records and alerts as on one server; every key of a
deployment lands in its prefix's hash slot (``engine/keys.py``); several deployments (one
prefix each) spread over the masters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from engine.keys import pattern
from engine.migrate_cli import check_layout
from engine.redis_client import connect, is_cluster, without_retry
from engine.replay import replay_file
from tests.cluster import LocalCluster


def _sim_events(n_leads: int) -> list[dict[str, Any]]:
    from benchmarks.simulator import SimConfig, generate

    return list(generate(SimConfig(seed=11, leads=n_leads, days=45.0, tenant="sim")))


def _replay(tmp_path: Path, name: str, events: Path, url: str, settings: Any) -> Any:
    scores, alerts = tmp_path / f"{name}-scores.jsonl", tmp_path / f"{name}-alerts.jsonl"
    code = replay_file(str(events), str(scores), alerts_out=str(alerts), redis_url=url,
                       settings=settings)  # fmt: skip
    assert code == 0
    strip = ("stream_id", "ingest_ms", "emit_ms")
    rows = [json.loads(line) for line in alerts.read_text().splitlines()]
    return (
        [json.loads(line) for line in scores.read_text().splitlines()],
        sorted(
            ({k: v for k, v in a.items() if k not in strip} for a in rows),
            key=lambda a: a["alert_id"],
        ),  # fmt: skip
    )


def _drop(client: Any, prefix: str) -> int:
    keys = list(client.scan_iter(match=pattern(prefix), count=1000))
    for key in keys:
        client.delete(key)
    return len(keys)


def test_connect_gives_the_cluster_client_from_any_node(redis_cluster: LocalCluster) -> None:
    for port in redis_cluster.ports:  # any node, master or replica
        assert redis_cluster.info(port)["cluster_enabled"] == "1"
        client = connect(f"redis://127.0.0.1:{port}/0", retries=0)
        try:
            assert is_cluster(client)
            client.set("{lp-test}:k", b"v")  # routed to the slot's master (MOVED followed)
            assert client.get("{lp-test}:k") == b"v"
            twin = without_retry(client)
            assert isinstance(twin, RedisCluster)
            with twin.pipeline(transaction=True) as pipe:  # one slot: one MULTI/EXEC
                pipe.incr("{lp-test}:n")
                pipe.delete("{lp-test}:k")
                assert pipe.execute()[1] == 1
            twin.close()
            client.delete("{lp-test}:n")
        finally:
            client.close()


def test_connect_gives_the_plain_client_on_a_standalone_server(redis_url: str) -> None:
    client = connect(redis_url, retries=0)
    assert isinstance(client, redis.Redis) and not is_cluster(client)
    client.close()


def test_replay_on_the_cluster_matches_one_server(
    tmp_path: Path, redis_cluster: LocalCluster, redis_url: str, make_settings: Any,
    client: redis.Redis,
) -> None:  # fmt: skip
    """Scores (every field) and alerts identical; outcomes, learning, identity included."""
    events = tmp_path / "events.jsonl"
    sim = _sim_events(40)
    assert any(e["type"] == "appointment_set" for e in sim)
    events.write_text("".join(json.dumps(e) + "\n" for e in sim))
    settings = make_settings(streams={"partitions": 4})
    prefix = settings.redis.key_prefix
    one = _replay(tmp_path, "one", events, redis_url, settings)
    on_cluster = _replay(tmp_path, "cluster", events, redis_cluster.url, settings)
    assert len(one[0]) == 40 and one[1]
    assert on_cluster == one
    cluster = connect(redis_cluster.url, retries=0)
    try:
        keys = list(cluster.scan_iter(match=pattern(prefix), count=1000))
        assert len(keys) > 80  # 40 lead records, report days, streams, model, hot lists
        slots = {cluster.keyslot(k) for k in keys}
        assert len(slots) == 1, "a deployment's keys share its prefix's slot"
        assert _drop(cluster, prefix) == len(keys)
    finally:
        cluster.close()
    _drop(client, prefix)


def test_deployments_spread_over_the_masters(redis_cluster: LocalCluster) -> None:
    """One prefix per deployment (group of tenants): each its own slot, on every master."""
    cluster = connect(redis_cluster.url, retries=0)
    try:
        nodes = {cluster.get_node_from_key(pattern(f"g{i}", "x")).name for i in range(30)}
    finally:
        cluster.close()
    assert len(nodes) == 3


def test_gateway_store_appends_on_the_cluster(redis_cluster: LocalCluster) -> None:
    """The gateway's asyncio client is the cluster one: its append script (idempotency,
    contact index, partition streams) and its reads run on the cluster."""
    import asyncio

    import msgpack

    from engine.gateway.store import GatewayStore, Prepared
    from engine.streams import StreamNames

    prefix = "gwcl"
    store = GatewayStore(
        redis_cluster.url, StreamNames(prefix, 2), maxlen=1_000, idempotency_ms=60_000,
        contact_ttl_s=3_600, retries=0, socket_timeout_s=1.0,
    )  # fmt: skip

    def prepared(i: int, eid: str, partition: int) -> Prepared:
        payload = msgpack.packb({"event_id": eid, "lead_id": f"L{i}"})
        return Prepared(i, eid, f"L{i}", partition, payload, ("h1",))

    async def scenario() -> tuple[list[Any], list[Any], list[str]]:
        try:
            await store.ping()
            first = await store.append("acme", [prepared(0, "a", 0), prepared(1, "b", 1)])
            again = await store.append("acme", [prepared(0, "a", 0)])
            return first, again, await store.find_leads_by_contact_hash("acme", "h1")
        finally:
            await store.close()

    first, again, leads = asyncio.run(scenario())
    assert all(first) and again == [None]
    assert sorted(leads) == ["L0", "L1"]
    cluster = connect(redis_cluster.url, retries=0)
    try:
        assert cluster.xlen("{gwcl}:events:0") == 1 and cluster.xlen("{gwcl}:events:1") == 1
        _drop(cluster, prefix)
    finally:
        cluster.close()


def test_two_run_processes_on_the_cluster_match_one_on_one_server(
    redis_cluster: LocalCluster, redis_url: str, prefix: str
) -> None:
    """``leadpulse run`` x2 (``--process-id``/``--addresses``) against a cluster node give
    the score records and alerts one process gives on one server (tests/engine/test_scale_out)."""
    from tests.engine.test_scale_out import _drain, _result, _workload

    work = _workload()
    single = redis.Redis.from_url(redis_url)
    cluster = connect(redis_cluster.url, retries=0)
    try:
        _drain(single, redis_url, work, prefix, 1)
        one = _result(single, prefix, work)
        _drain(cluster, redis_cluster.url, work, prefix, 2)
        two = _result(cluster, prefix, work)
    finally:
        _drop(cluster, prefix)
        cluster.close()
        single.close()
    assert len(one[0]) == work.leads and len(one[1]) > 10
    assert two == one


def test_delivery_on_the_cluster_sends_each_alert_once(
    redis_cluster: LocalCluster, make_settings: Any
) -> None:
    """Engine then delivery (consumer group, routing, receipts, webhooks) on the cluster."""
    import threading

    from engine.delivery.consumer import DeliveryService, run_in_thread
    from engine.delivery.webhooks import verify
    from tests.engine.delivery.conftest import (
        SECRET,
        Receiver,
        free_port,
        run_engine,
        send,
        wait_for,
    )
    from tests.engine.delivery.test_webhooks import _hand_raises, _pending, _settings

    receiver = Receiver(free_port())
    receiver.start()
    settings = _settings(make_settings, receiver.url)
    cluster = connect(redis_cluster.url, retries=0)
    stop = threading.Event()
    try:
        send(settings, cluster, _hand_raises(3))
        run_engine(settings, cluster)
        svc = DeliveryService(settings, cluster)
        thread = run_in_thread(svc, stop)
        try:
            wait_for(lambda: sum(r.path == "/hook" for r in receiver.got) >= 3, timeout=10)
            wait_for(lambda: _pending(cluster, svc) == 0)
        finally:
            stop.set()
            thread.join(10)
        hooks = [r.json()["alert_id"] for r in receiver.got if r.path == "/hook"]
        assert len(hooks) == len(set(hooks)) == 3
        for got in receiver.got:
            h = {k.lower(): v for k, v in got.headers.items()}
            assert verify(SECRET, got.body, h["x-leadpulse-timestamp"], h["x-leadpulse-signature"])
        receipts = svc.receipts.read(hooks[0])
        assert {r["status"] for r in receipts} == {"delivered"}
    finally:
        _drop(cluster, settings.redis.key_prefix)
        cluster.close()
        receiver.stop()


def _wait_replica_online(port: int, timeout_s: float = 20.0, synced: bool = False) -> None:
    """Until the master on ``port`` has a replica attached (after ``--cluster create``
    replicas attach a few seconds later); ``synced``: and at the master's offset."""
    import time

    master = redis.Redis(port=port, decode_responses=True)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            info = master.info("replication")
            if int(info.get("connected_slaves", 0)) and info["slave0"]["state"] == "online":
                if not synced or int(info["slave0"]["offset"]) == info["master_repl_offset"]:
                    return
            assert time.monotonic() < deadline, f"no replica online for port {port}"
            time.sleep(0.05)
    finally:
        master.close()


@pytest.mark.parametrize("layout", ["deployment", "partition"])
def test_a_master_failing_over_mid_stream_stops_nothing(make_settings: Any, layout: str) -> None:
    """The master holding the deployment's slot is SIGKILLed while the live engine runs;
    its replica is promoted; the engine (batch redone with ``outage_backoff``) and the
    producer (retrying) carry on, and every entry on the stream is committed once."""
    import threading
    import time

    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow
    from engine.keys import processed_key
    from engine.streams import Producer, StreamNames
    from tests.engine.delivery.conftest import wait_for

    settings = make_settings(streams={"partitions": 2}, redis={"outage_backoff_cap_s": 0.5})
    prefix = settings.redis.key_prefix
    settings = make_settings(streams={"partitions": 2}, redis={
        "outage_backoff_cap_s": 0.5, "key_prefix": prefix, "key_layout": layout})  # fmt: skip
    names = StreamNames(prefix, 2, layout)
    slot_key = f"{{{names.shard(0)}}}:x"  # the deployment's slot, or partition 0's
    events = _sim_events(30)
    with LocalCluster(masters=3, replicas=1) as lc:
        cluster = connect(lc.url, retries=2)
        master = cluster.get_node_from_key(slot_key)
        assert master is not None
        _wait_replica_online(int(master.port))  # else there is no replica to promote
        stop = threading.Event()
        flow = build_flow(build_parts(settings, cluster), stop=stop)
        engine = threading.Thread(target=run_flow, args=(flow,), daemon=True)
        engine.start()
        producer = Producer(cluster, names, 10**6)
        sent = 0
        try:
            for i, event in enumerate(events):
                if i == len(events) // 2:  # replication is asynchronous: in sync first, so
                    _wait_replica_online(int(master.port), synced=True)  # loss is ours alone
                    lc.kill(int(master.port))
                deadline = time.monotonic() + 30
                while True:  # a producer retries what was not acknowledged
                    try:
                        producer.send([event])
                        break
                    except redis.RedisError:
                        assert time.monotonic() < deadline, "no master for the slot after 30 s"
                        time.sleep(0.1)
                sent += 1

            def committed() -> bool:
                done = [cluster.hget(processed_key(names.of(p)), str(p)) for p in range(2)]
                return sum(int(v or 0) for v in done) == sum(
                    int(cluster.xinfo_stream(names.events(p))["entries-added"]) for p in range(2)
                )

            wait_for(committed, timeout=60, every=0.2)
        finally:
            stop.set()
            engine.join(60)
        assert not engine.is_alive()
        promoted = cluster.get_node_from_key(slot_key)
        assert promoted is not None and promoted.port != master.port
        total = sum(int(cluster.xinfo_stream(names.events(p))["entries-added"]) for p in range(2))
        assert sent == len(events) and total >= sent  # acknowledged, none lost
        cluster.close()


def test_a_cluster_in_the_one_slot_layout_is_named_at_start(
    redis_cluster: LocalCluster, make_settings: Any, prefix: str,
    caplog: pytest.LogCaptureFixture, client: redis.Redis,
) -> None:  # fmt: skip
    """Everything on one master works, but is not what a cluster is for: say how to spread."""
    one_server, client = client, connect(redis_cluster.url, retries=0)
    try:
        for layout, said in (("deployment", True), ("partition", False)):
            caplog.clear()
            settings = make_settings(redis={"key_prefix": prefix, "key_layout": layout})
            with caplog.at_level(logging.WARNING, logger="engine.migrate_cli"):
                check_layout(client, settings)
            warned = [r.getMessage() for r in caplog.records]
            assert bool(warned) == said, (layout, warned)
            if said:
                assert "redis.key_layout = 'partition'" in warned[0] and prefix in warned[0]
    finally:
        client.close()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="engine.migrate_cli"):  # one server: fine
        check_layout(one_server, make_settings(redis={"key_prefix": prefix}))
    assert not caplog.records
