"""A local CRM on loopback that checks what Follow Up Boss, Slack or Teams would check.

Nothing is faked on leadpulse's side: delivery sends real HTTP to this server. The
server answers like the service it stands for: 401 without the right credentials, 400
for a body the service would refuse, scripted 429 (with ``Retry-After``) or 503 answers
first when a test asks for them.
"""

from __future__ import annotations

import json
import threading
import time
from base64 import b64decode
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FUB_KEY = "fka_0123456789abcdef0123456789abcdef"
SYSTEM = "leadpulse"
SYSTEM_KEY = "sys-0123456789abcdef0123456789"


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    def json(self) -> Any:
        return json.loads(self.body)


def fub_problem(method: str, path: str, h: dict[str, str], body: bytes) -> str:
    """What Follow Up Boss would refuse, in words ("" = accepted)."""
    auth = h.get("authorization", "")
    if not auth.startswith("Basic "):
        return "401 no Basic auth"
    user, _, _ = b64decode(auth[6:]).decode().partition(":")
    if user != FUB_KEY:
        return "401 wrong API key"
    if h.get("x-system") != SYSTEM or h.get("x-system-key") != SYSTEM_KEY:
        return "401 unregistered system"
    if method != "PUT" or not path.startswith("/v1/people/") or not path[11:].isdigit():
        return "404 not a person"
    try:
        data = json.loads(body)
    except ValueError:
        return "400 not JSON"
    if not isinstance(data, dict) or not data or any(not k.startswith("custom") for k in data):
        return "400 only custom fields are written"
    return ""


def slack_problem(method: str, path: str, h: dict[str, str], body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return "400 invalid_payload"
    if not isinstance(data.get("text"), str) or not isinstance(data.get("blocks"), list):
        return "400 invalid_blocks"
    for block in data["blocks"]:
        if block.get("type") not in ("header", "section", "actions", "context", "divider"):
            return "400 invalid_blocks"
    return ""


def teams_problem(method: str, path: str, h: dict[str, str], body: bytes) -> str:
    try:
        data = json.loads(body)
        (att,) = data["attachments"]
        card = att["content"]
    except (ValueError, KeyError, TypeError):
        return "400 Bad payload"
    if att.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return "400 not an adaptive card"
    if card.get("type") != "AdaptiveCard" or not card.get("body"):
        return "400 card without body"
    return ""


@dataclass
class CrmReceiver:
    """``check(method, path, headers, body) -> problem`` decides; ``script`` answers first."""

    port: int
    check: Any = fub_problem
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    hits: list[Hit] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def accepted(self) -> list[Hit]:
        with self._lock:
            return [h for h in self.hits if 200 <= h.status < 300]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                h = {k.lower(): v for k, v in self.headers.items()}
                status, extra = receiver.answer(self.command, self.path, h, body)
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"no")

            do_PUT = do_POST = do_PATCH = _any  # noqa: N815 (http.server's names)

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def answer(
        self, method: str, path: str, h: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str]]:
        with self._lock:
            if self.script:
                status, extra = self.script.pop(0)
            else:
                problem = self.check(method, path, h, body)
                status, extra = (int(problem[:3]), {}) if problem else (200, {})
            self.hits.append(Hit(method, path, h, body, time.time(), status))
            return status, extra

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
