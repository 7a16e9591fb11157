"""Long-lived answers (the SSE feed, ``GET /v1/alerts/stream``): a cap per key, and an end
at shutdown. A pure ASGI middleware, applied by ``create_app``.

- **Cap.** At most ``gateway.sse_max_per_key`` open streams per API key in one gateway
  process, and ``gateway.sse_max_streams`` in all; one more is answered 429
  ``rate_limited`` with ``Retry-After`` before any Redis work. (A leaked or buggy page
  cannot open a thousand feeds, each with its own Redis connection.)
- **Shutdown.** uvicorn's graceful shutdown waits for every open response to finish,
  and a feed never does: on SIGTERM / SIGINT (or :meth:`StreamGuard.close_all`) every
  open stream is ended cleanly (its last chunk sent, the route's task cancelled, which
  closes its Redis connection), so ``serve`` exits at once. ``EventSource`` reconnects
  by itself and resumes from ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from types import FrameType
from typing import Any

from engine.gateway.auth import KeyRing, presented_key

__all__ = ["STREAM_PATH", "StreamGuard", "Streams"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

STREAM_PATH = "/v1/alerts/stream"


class Streams:
    """The open streams of one gateway process: counts per key, and the shutdown switch."""

    def __init__(self, keys: KeyRing, *, per_key: int, total: int) -> None:
        self.keys = keys
        self._per_key = per_key
        self._total = total
        self._open: Counter[str] = Counter()
        self._closing: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def open_streams(self) -> int:
        return sum(self._open.values())

    def close_all(self) -> None:
        """End every open stream now and refuse new ones (thread- and signal-safe)."""
        loop, event = self._loop, self._closing
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def watch_signals(self) -> None:
        """Chain SIGTERM and SIGINT to :meth:`close_all` (main thread only; the server's
        own handlers still run, and restore theirs when it stops)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)

            def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
                self.close_all()
                if callable(previous):
                    previous(signum, frame)

            signal.signal(sig, handler)

    def closing(self) -> asyncio.Event:
        """The shutdown switch, made on the serving loop the first time it is needed."""
        if self._closing is None:
            self._closing, self._loop = asyncio.Event(), asyncio.get_running_loop()
        return self._closing

    def refusal(self, key_id: str) -> str:
        """Why one more stream for ``key_id`` is refused ("" if it is not)."""
        if self.closing().is_set():
            return "the gateway is shutting down; reconnect to another one"
        if self._open[key_id] >= self._per_key:
            return f"this key has {self._per_key} open streams (gateway.sse_max_per_key)"
        if self.open_streams >= self._total:
            return f"{self._total} open streams in this gateway (gateway.sse_max_streams)"
        return ""

    @contextlib.contextmanager
    def opened(self, key_id: str) -> Iterator[None]:
        self._open[key_id] += 1
        try:
            yield
        finally:
            self._open[key_id] -= 1
            if self._open[key_id] <= 0:
                del self._open[key_id]


class StreamGuard:
    """ASGI middleware: the cap and the shutdown above, on ``STREAM_PATH`` only."""

    def __init__(self, app: Any, *, streams: Streams) -> None:
        self._app = app
        self._streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") != STREAM_PATH:
            await self._app(scope, receive, send)
            return
        streams = self._streams
        who = streams.keys.authenticate(presented_key(scope.get("headers", ())))
        if who is None:  # the route answers 401 / 403 itself
            await self._app(scope, receive, send)
            return
        refusal = streams.refusal(who.key_id)
        if refusal:
            await _reply(send, 503 if streams.closing().is_set() else 429, refusal)
            return
        with streams.opened(who.key_id):
            await self._until_closing(scope, receive, send)

    async def _until_closing(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the route; at shutdown cancel it and end its answer properly."""
        started = ended = False

        async def _send(message: Message) -> None:
            nonlocal started, ended
            started = started or message["type"] == "http.response.start"
            ended = ended or (
                message["type"] == "http.response.body" and not message.get("more_body")
            )
            await send(message)

        route = asyncio.ensure_future(self._app(scope, receive, _send))
        closing = asyncio.ensure_future(self._streams.closing().wait())
        try:
            await asyncio.wait({route, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
        if route.done():
            route.result()  # the route's own outcome (or its exception)
            return
        route.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await route
        if started and not ended:
            with contextlib.suppress(OSError, RuntimeError):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif not started:
            await _reply(send, 503, "the gateway is shutting down; reconnect to another one")


async def _reply(send: Send, status: int, detail: str) -> None:
    code = "rate_limited" if status == 429 else "unavailable"
    payload = json.dumps({"error": code, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        (b"retry-after", b"5"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
