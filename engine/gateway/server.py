"""The gateway's HTTP/1.1 protocol on uvicorn: a deadline for the request headers.

uvicorn (0.55) has no header read timeout: a connection that sends nothing, or sends a
request line and headers a byte at a time ("slowloris"), holds a file descriptor for as
long as it likes; ``timeout_keep_alive`` only starts after a response, and every byte
received cancels it. :func:`header_timeout_protocol` is uvicorn's httptools protocol
with one timer more: armed when a connection opens and when a new request's first byte
arrives, disarmed when its headers are complete. If it fires first, the connection gets
``408 Request Timeout`` (when no response is in progress on it) and is closed. The body
has its own deadline (``gateway.body_timeout_s``, answered by the app); an idle
keep-alive connection is closed by uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeaderTimeoutProtocol", "header_timeout_protocol"]


def _response() -> bytes:
    body = b"request headers did not arrive in time"
    return (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
    )


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol; the request line and headers must arrive within
    ``header_timeout_s`` of the connection opening or of the request's first byte."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._headers_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_headers()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._headers_timer is None:  # a later request on a kept-alive connection
            self._arm_headers()

    def on_headers_complete(self) -> None:
        self._disarm_headers()
        super().on_headers_complete()

    def _arm_headers(self) -> None:
        self._disarm_headers()
        self._headers_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm_headers(self) -> None:
        if self._headers_timer is not None:
            self._headers_timer.cancel()
            self._headers_timer = None

    def _headers_late(self) -> None:
        self._headers_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # nothing else being written
            self.transport.write(_response())
        self.transport.close()


def header_timeout_protocol(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class to pass as uvicorn's ``http=``, with its header deadline."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": seconds})
