"""Gateway fixtures: the app on a real Redis, in process (httpx ASGI) or on a live port.

Two tenants, ``acme`` (a server key and a tracker key) and ``beta`` (a server key).
Rate limits are set out of reach unless a test lowers them.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import msgpack
import pytest
import redis
import uvicorn
import uvloop

from engine.gateway.app import create_app
from engine.gateway.auth import key_digest
from engine.settings import Settings, load_settings

ACME = "lpk_test_acme_server_0123456789"
ACME_TRACKER = "lpk_trk_test_acme_tracker_0123456789"
BETA = "lpk_test_beta_server_0123456789"
SECRET = "test-contact-hash-secret-0123456789abcdef"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def gateway_overrides(prefix: str, **gateway: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "contact_hash_key": SECRET,
        "rate_per_s": 100_000,
        "rate_burst": 100_000,
        "tracker_rate_per_s": 100_000,
        "tracker_burst": 100_000,
        "api_keys": {
            key_digest(ACME): {"tenant": "acme", "role": "server"},
            key_digest(ACME_TRACKER): {"tenant": "acme", "role": "tracker"},
            key_digest(BETA): {"tenant": "beta", "role": "server"},
        },
    }
    section.update(gateway)
    return {"redis": {"key_prefix": prefix}, "gateway": section}


def ev(eid: str, lead: str = "L1", etype: str = "property_view", **kw: Any) -> dict[str, Any]:
    """A valid event at wall time (the validator refuses far-future events)."""
    return {"event_id": eid, "lead_id": lead, "type": etype, "ts": kw.pop("ts", time.time()), **kw}


def encode(events: Any, fmt: str = "json") -> tuple[bytes, str]:
    if fmt == "json":
        return json.dumps(events).encode(), "application/json"
    return msgpack.packb(events, use_bin_type=True), "application/msgpack"


class Gateway:
    """The app in process through httpx's ASGI transport, on one uvloop event loop."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self.settings = settings
        self.app = create_app(settings, redis_url)
        self._runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50_000))
        self._client = httpx.AsyncClient(transport=transport, base_url="http://gateway.test")

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self._runner.run(self._client.request(method, url, **kw))

    def get(self, url: str, key: str | None = ACME, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.request("GET", url, headers=headers, **kw)

    def post_events(
        self, events: Any, key: str | None = ACME, fmt: str = "json", **kw: Any
    ) -> httpx.Response:
        body, content_type = encode(events, fmt)
        headers = {"Content-Type": content_type, **kw.pop("headers", {})}
        if key is not None:
            headers.setdefault("X-Api-Key", key)
        return self.request("POST", "/v1/events", content=body, headers=headers, **kw)

    def post_raw(self, body: bytes, content_type: str, key: str = ACME) -> httpx.Response:
        headers = {"Content-Type": content_type, "Authorization": f"Bearer {key}"}
        return self.request("POST", "/v1/events", content=body, headers=headers)

    def close(self) -> None:
        self._runner.run(self._client.aclose())
        self._runner.run(self.app.state.store.close())
        self._runner.close()


@pytest.fixture
def make_gateway(prefix: str, redis_url: str) -> Iterator[Callable[..., Gateway]]:
    made: list[Gateway] = []

    def make(**gateway: Any) -> Gateway:
        settings = load_settings(overrides=gateway_overrides(prefix, **gateway), environ={})
        gw = Gateway(settings, redis_url)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.close()


@pytest.fixture
def gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


def stream_events(client: redis.Redis, prefix: str, partitions: int = 4) -> list[dict[str, Any]]:
    """Every event on the prefix's partitions, decoded, in stream-id order (ids of two
    partitions can tie within a millisecond: then partition order)."""
    rows = []
    for p in range(partitions):
        for sid, fields in client.xrange(f"{{{prefix}}}:events:{p}"):
            rows.append((sid, msgpack.unpackb(fields[b"e"], raw=False)))
    rows.sort(key=lambda r: tuple(int(x) for x in r[0].decode().split("-")))
    return [e for _, e in rows]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """``app`` on uvicorn (uvloop, httptools) in a thread on a free loopback port."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", ws="none",
        lifespan="on", log_level="warning", access_log=False,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def module_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix for module-scoped servers; its keys are deleted afterwards."""
    p = "g" + uuid.uuid4().hex[:10]
    yield p
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{{{p}}}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()
