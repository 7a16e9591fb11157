"""HTTP edges of the gateway: which pages may call it (CORS) and what browsers may do with
its answers (security headers). Pure ASGI middlewares, applied by ``create_app``.

- **CORS.** ``POST /v1/events`` is what the tracker calls from IDX pages on other
  origins: open to every origin (no credentials; a tracker key may be limited to page
  origins in its own config entry). Every other route answers CORS only for the origins
  in ``gateway.cors_origins`` (default none: the hot-list page is served by the gateway
  itself, same origin), so a server or agent key used from an unknown page's script
  cannot read the answer.
- **Headers.** Every answer carries ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer`` and ``X-Frame-Options: DENY``; a Content-Security-
  Policy that allows nothing (``default-src 'none'; frame-ancestors 'none'``), except
  the hot-list page, which may load its own script and style and call its own origin,
  and ``/tracker.js``, which other sites embed (no CSP, no frame rule needed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from starlette.middleware.cors import CORSMiddleware

__all__ = ["PAGE_CSP", "SecurityHeaders", "SplitCors"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The tracker's route: callable from any page.
TRACKER_PATH = "/v1/events"
#: The hot-list page: its own script, style and API; nothing else, never in a frame.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_API_CSP = "default-src 'none'; frame-ancestors 'none'"


class SplitCors:
    """CORS open to every origin on the tracker's route, to ``origins`` elsewhere."""

    def __init__(self, app: Any, *, origins: Sequence[str]) -> None:
        self._app = app
        self._tracker = CORSMiddleware(
            app, allow_origins=["*"], allow_methods=["POST"],
            allow_headers=["Content-Type", "X-Api-Key"], expose_headers=["Retry-After"],
            max_age=600,
        )  # fmt: skip
        self._others = (
            CORSMiddleware(
                app,
                allow_origins=list(origins),
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "X-Api-Key", "Content-Type"],
                expose_headers=["Retry-After"],
                max_age=600,
            )  # fmt: skip
            if origins
            else app
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
        elif scope.get("path") == TRACKER_PATH:
            await self._tracker(scope, receive, send)
        else:
            await self._others(scope, receive, send)


class SecurityHeaders:
    """Adds the headers above to every HTTP answer (the route's own win if it set them)."""

    def __init__(self, app: Any, *, page_paths: Sequence[str] = ("/hotlist",)) -> None:
        self._app = app
        self._pages = frozenset(page_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = scope.get("path", "")
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if path != "/tracker.js":
            csp = PAGE_CSP if path in self._pages else _API_CSP
            extra += [(b"x-frame-options", b"DENY"), (b"content-security-policy", csp.encode())]

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                have = {k.lower() for k, _ in headers}
                headers.extend((k, v) for k, v in extra if k not in have)
                message = {**message, "headers": headers}
            await send(message)

        await self._app(scope, receive, _send)
