"""Slow headers (issue 16, item 5): the request line and headers must arrive within
``gateway.header_timeout_s``, on the uvicorn config ``serve`` and ``up`` use; an idle
kept-alive connection is closed after ``KEEP_ALIVE_S``; normal requests are untouched.

The deadline is the HTTP protocol's (engine/gateway/server.py), before any app runs, so a
two-line ASGI app stands in for the gateway's."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from engine.gateway.cli import KEEP_ALIVE_S, uvicorn_config
from engine.settings import load_settings
from tests.engine.gateway.conftest import gateway_overrides

Send = Callable[[dict[str, Any]], Awaitable[None]]

TIMEOUT = 0.5
_GET = b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n"


async def _app(scope: dict[str, Any], receive: Any, send: Send) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", b"16")]})  # fmt: skip
        await send({"type": "http.response.body", "body": b'{"status": "ok"}'})


@contextmanager
def serving(prefix: str) -> Iterator[tuple[str, int]]:
    settings = load_settings(
        overrides=gateway_overrides(prefix, header_timeout_s=TIMEOUT), environ={}
    )
    server = uvicorn.Server(uvicorn_config(_app, settings.gateway, False, False))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _closed_after(conn: socket.socket, started: float, limit: float) -> tuple[float, bytes]:
    """Seconds from ``started`` until the server closed ``conn``, and what it sent."""
    conn.settimeout(limit)
    got = b""
    while chunk := conn.recv(4096):
        got += chunk
    return time.monotonic() - started, got


def _response(conn: socket.socket) -> bytes:
    conn.settimeout(5)
    got = b""
    while b"\r\n\r\n" not in got or not got.rstrip().endswith(b"}"):
        chunk = conn.recv(4096)
        assert chunk, got
        got += chunk
    return got


def test_slow_headers_are_cut_off_and_normal_requests_work(prefix: str) -> None:
    with serving(prefix) as addr:
        idle = socket.create_connection(addr)  # kept alive after one request, then silent
        idle.sendall(_GET)
        assert _response(idle).startswith(b"HTTP/1.1 200")
        idle_since = time.monotonic()

        silent = socket.create_connection(addr)  # connects and sends nothing
        took, got = _closed_after(silent, time.monotonic(), 5)
        assert TIMEOUT * 0.8 <= took < TIMEOUT + 1.0, took
        assert got.startswith(b"HTTP/1.1 408"), got

        drip = socket.create_connection(addr)  # a byte every 0.1 s: never finishes
        started = time.monotonic()
        drip.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
        try:
            for byte in b"X-Slow: " + b"a" * 40:
                drip.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed under us: what we want
        took, got = _closed_after(drip, started, 5)
        assert took < TIMEOUT + 1.0, took

        # a kept-alive connection idle longer than the header deadline still serves the
        # next request: the deadline starts with the request, not with the idle time
        ka = socket.create_connection(addr)
        ka.sendall(_GET)
        assert _response(ka).startswith(b"HTTP/1.1 200")
        time.sleep(TIMEOUT * 1.6)
        ka.sendall(_GET)
        assert _response(ka).startswith(b"HTTP/1.1 200")
        ka.close()
        assert httpx.get(f"http://{addr[0]}:{addr[1]}/healthz").status_code == 200

        took, got = _closed_after(idle, idle_since, KEEP_ALIVE_S + 3)
        assert KEEP_ALIVE_S - 0.5 <= took < KEEP_ALIVE_S + 1.5 and got == b"", (took, got)
        for conn in (silent, drip, idle):
            conn.close()
