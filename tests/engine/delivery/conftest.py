"""Delivery test helpers: a real HTTP receiver, a real uvicorn server, the real engine.

Nothing is faked: webhooks go over loopback HTTP to a ``ThreadingHTTPServer``, routers
are served by uvicorn, alerts come from the engine's own dataflow on the real Redis.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import uvicorn
from fastapi import FastAPI

from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.delivery.consumer import DeliveryService
from engine.delivery.web import routers
from engine.settings import Settings
from engine.streams import Producer, stream_names

SECRET = "test-secret-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver on loopback; ``status`` decides the answer; start/stop at will."""

    port: int
    status: int = 200
    got: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                receiver.got.append(
                    Received(self.path, dict(self.headers.items()), body, time.time())
                )
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                text = b"ok" if receiver.status < 300 else b"receiver says no"
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(free_port())
    yield r
    r.stop()


class Server:
    """A uvicorn server on a free loopback port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off",
            ws="none",
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def make_app(settings: Settings, client: redis.Redis) -> FastAPI:
    """A minimal app of our own: the routers the gateway will mount."""
    app = FastAPI()
    for router in routers(settings, client):
        app.include_router(router)
    return app


def send(settings: Settings, client: redis.Redis, events: list[dict[str, Any]]) -> list[bytes]:
    names = stream_names(settings)
    return Producer(client, names, settings.streams.maxlen).send(events)


@contextmanager
def live_pipeline(settings: Settings, client: redis.Redis) -> Iterator[DeliveryService]:
    """The engine (live dataflow) and the delivery service on threads, stopped after."""
    from engine.delivery.consumer import run_in_thread

    engine_stop, delivery_stop = threading.Event(), threading.Event()
    engine = threading.Thread(
        target=run_flow, args=(build_flow(build_parts(settings, client), stop=engine_stop),),
        daemon=True,
    )  # fmt: skip
    engine.start()
    svc = DeliveryService(settings, client)
    delivery = run_in_thread(svc, delivery_stop)
    try:
        yield svc
    finally:
        delivery_stop.set()
        engine_stop.set()
        delivery.join(15)
        engine.join(30)


def run_engine(settings: Settings, client: redis.Redis) -> None:
    """Everything on the events streams through the real engine, bounded."""
    run_flow(build_flow(build_parts(settings, client), bounded=True))


class Clock:
    """A clock tests move by hand (no sleeping)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def handle_all(svc: DeliveryService) -> list[dict[str, Any]]:
    """Read every alert now on the stream, handle it, ack it; the delivered payloads."""
    svc.ensure_group()
    svc.drain_events()
    out: list[dict[str, Any]] = []
    while True:
        batch = svc.read_alerts(None)
        if not batch:
            return out
        for sid, alert in batch:
            prepared = svc.handle(alert)
            if prepared.payload is not None:
                out.append(prepared.payload)
            svc.ack([sid])


def wait_for(check: Callable[[], Any], timeout: float = 5.0, every: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def business_now() -> float:
    """A whole-second wall time inside the default tenant's business hours: 11:00 in New York
    on the latest weekday at or before now. SLA deadlines stretch out of hours, so a test
    that expects a 5-minute deadline must not depend on the hour it runs at."""
    ny = datetime.now(ZoneInfo("America/New_York"))
    day = ny if ny.hour >= 11 else ny - timedelta(days=1)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    return float(int(day.replace(hour=11, minute=0, second=0, microsecond=0).timestamp()))


def tenant_config(**extra: Any) -> dict[str, Any]:
    """A tenant with listing specialists, two buyer groups by area, and a pond default."""
    cfg: dict[str, Any] = {
        "groups": {
            "listing": ["ava", "ben"],
            "north": ["cy", "dee", "eli"],
            "luxury": ["fay"],
        },
        "rules": [
            {"group": "listing", "sides": ["seller", "both"]},
            {"group": "luxury", "sides": ["buyer"], "price_min": 1_000_000},
            {"group": "north", "areas": ["02139", "02140"]},
        ],
        "default_group": "pond",
    }
    cfg.update(extra)
    return cfg
