"""The edge check of the hot list's actions: ``POST /v1/leads/{lead_id}/claim|ack|contact``.

Those routes (``engine.delivery.page``) write events too, so they pass the same checks
as ``POST /v1/events`` before the route sees the request (an ASGI middleware, so the
route's own body model is untouched):

- the lead id must be a valid id (``engine.validate.id_problem``: the id alphabet)
  that does not look like contact data (``privacy.contact_like_id``): 422 otherwise,
  with the reason, and nothing is written;
- the body is read with a cap (``MAX_ACTION_BYTES``: 413 beyond);
- free text (``note``) is scrubbed by the same :class:`~engine.gateway.privacy.
  ContactHasher` as event props: an email or formatted phone becomes ``[email:<hash>]``;
- with an agent key, a missing ``agent_id`` is the key's agent (a different one is
  still refused by the route: an agent acts only as itself).

Who the caller is comes from the same key ring as the routes' own authentication; the
key is only looked at here to fill in ``agent_id``, never to let a request through.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from engine.gateway.auth import KeyRing, presented_key
from engine.gateway.ingest import contact_reason
from engine.gateway.privacy import ContactHasher, contact_like_id
from engine.validate import id_problem

__all__ = ["MAX_ACTION_BYTES", "ActionGuard", "lead_id_problem"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: An action body is a few short fields; anything bigger is refused before parsing.
MAX_ACTION_BYTES = 4_096
_ACTION = re.compile(r"^/v1/leads/(?P<lead>[^/]*)/(?:claim|ack|contact)/?$")


def lead_id_problem(lead: str, max_len: int) -> str | None:
    """Why ``lead`` cannot be a lead id at the edge (length, alphabet, contact data)."""
    if not lead:
        return "missing_field:lead_id"
    if len(lead) > max_len:
        return f"too_long:lead_id is {len(lead)} chars > {max_len}"
    problem = id_problem(lead, "lead_id")
    if problem:
        return problem
    kind = contact_like_id(lead)
    return contact_reason("lead_id", kind) if kind else None


class ActionGuard:
    """ASGI middleware: the checks above on the action routes; other requests pass."""

    def __init__(
        self,
        app: Any,
        *,
        keys: KeyRing,
        hasher: ContactHasher,
        max_id_len: int,
        timeout_s: float = 10.0,
    ) -> None:
        self._app = app
        self._timeout_s = timeout_s
        self._keys = keys
        self._hasher = hasher
        self._max_id_len = max_id_len

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self._app(scope, receive, send)
            return
        m = _ACTION.match(scope.get("path", ""))
        if m is None:
            await self._app(scope, receive, send)
            return
        problem = lead_id_problem(m["lead"], self._max_id_len)
        if problem:
            await _reply(send, 422, "bad_request", f"lead_id: {problem}")
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                body = await _read(receive, MAX_ACTION_BYTES)
        except TimeoutError:
            await _reply(send, 408, "timeout", f"no body data for {self._timeout_s:g} s")
            return
        if body is None:
            await _reply(send, 413, "too_large", f"an action body is at most {MAX_ACTION_BYTES} B")
            return
        if body is _GONE:  # the client went away mid-body: nobody to answer
            return
        body = self._rewrite(body, scope)
        headers = [(k, v) for k, v in scope.get("headers", ()) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await self._app({**scope, "headers": headers}, _replay(body, receive), send)

    def _rewrite(self, body: bytes, scope: Scope) -> bytes:
        """The body with ``note`` scrubbed and an agent key's ``agent_id`` filled in; the
        bytes as they came if they are not a JSON object (the route answers that)."""
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):
            return body
        if not isinstance(obj, dict):
            return body
        tenant = ""
        agent = ""
        who = self._keys.authenticate(presented_key(scope.get("headers", ())))
        if who is not None:
            tenant, agent = who.tenant, who.agent if who.is_agent else ""
        if agent and obj.get("agent_id") in (None, ""):
            obj["agent_id"] = agent
        if isinstance(obj.get("note"), str) and tenant:
            obj["note"] = self._hasher.scrub(tenant, {"note": obj["note"]}).props["note"]
        elif isinstance(obj.get("note"), str):  # no valid key: the route answers 401
            obj["note"] = ""
        return json.dumps(obj).encode()


_GONE = b"\0gone"  # marker: the client disconnected before its body was complete


async def _read(receive: Receive, limit: int) -> bytes | None:
    """The whole body, None past ``limit`` bytes (the rest is not read), or ``_GONE``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def _receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: the client's disconnect, as usual

    return _receive


async def _reply(send: Send, status: int, code: str, detail: str) -> None:
    payload = json.dumps({"error": code, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
