"""Webhooks: signed JSON POSTs with retries, receipts and a dead letter.

Wire format (README "Alert delivery"):

- body: the delivery payload as JSON (UTF-8); ``alert_id`` is stable across replays and
  retries, so a receiver deduplicates on it (``delivery_id`` is ``alert_id`` for the
  first delivery and ``alert_id.e<n>`` for the n-th escalation);
- ``X-Leadpulse-Timestamp``: Unix seconds when this attempt was signed;
- ``X-Leadpulse-Signature``: ``v1=`` + hex HMAC-SHA256 with the tenant's secret over
  ``timestamp + "." + body``. A receiver recomputes it, compares in constant time
  and rejects timestamps older than a few minutes (replays): :func:`verify`;
- ``X-Leadpulse-Alert-Id``, ``X-Leadpulse-Delivery-Id``, ``X-Leadpulse-Attempt``;
- Standard Webhooks (standardwebhooks.com) too: ``webhook-id`` (the delivery id),
  ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256(secret,
  "<id>.<timestamp>." + body)>``, so a receiver's stock verifier works unchanged
  (given the secret as ``whsec_`` + base64 of its UTF-8 bytes).

Other targets (CRM write-back, Slack, Teams: ``targets.py``) are jobs with their own
method, headers and body, unsigned, through the same retries, receipts and order.

A 2xx answer delivers. Network errors, timeouts, 408, 425, 429 and 5xx are retried
with exponential backoff and jitter (attempt n waits ``min(cap, base * 2^(n-1))``
times a random factor in [0.5, 1], or ``Retry-After`` when the receiver says so, up to
the cap); any other status is permanent. After ``max_attempts`` (or a permanent
failure) the delivery goes to the dead-letter stream with the last error. Every
attempt updates the receipt (attempts, status, HTTP status, last error, latency),
readable per alert id; a restarted consumer continues the attempt count from it.

Order and outages: deliveries of one lead to one URL go one at a time, in the order
:meth:`WebhookSender.deliver` was called (the alerts stream's order), so a retried alert
is never overtaken by a later alert for the same lead; the later one waits (without
spending attempts) until the earlier one is delivered or dead-lettered. A 2xx from a
host wakes every retry backing off for that host, so after an outage the backlog goes
out as soon as one request gets through, not when each alert's own backoff ends
(retries that honour a ``Retry-After`` keep waiting).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from base64 import b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, cast
from urllib.parse import urlsplit

import httpx

from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.redact import public_url, redact_text

__all__ = [
    "Job", "Receipts", "RetryPolicy", "WebhookSender", "read_dead_letters", "sign",
    "standard_signature", "verify",
]  # fmt: skip

SIGNATURE_HEADER = "X-Leadpulse-Signature"
TIMESTAMP_HEADER = "X-Leadpulse-Timestamp"
_RETRYABLE = frozenset({408, 425, 429})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def standard_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: ``v1,<base64 HMAC-SHA256(secret, "<id>.<timestamp>." + body)>``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest()).decode()


def verify(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    *,
    tolerance_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """What a receiver does: a fresh timestamp and a matching signature (constant time).

    Never raises on what a sender controls: a timestamp that is not plain ASCII digits
    (or too long to be one) and a signature with non-ASCII characters are just False.
    """
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 20):
        return False
    ts = int(timestamp)
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        return False
    expected = sign(secret, ts, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_s: float
    cap_s: float
    timeout_s: float

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Wait before attempt ``attempt + 1``: exponential, capped, jittered to [0.5, 1]x."""
        d = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        return d * (0.5 + 0.5 * rng())


@dataclass(frozen=True)
class Job:
    """One payload to one endpoint."""

    alert_id: str
    delivery_id: str
    target: str  # "tenant" or "agent:<id>"
    url: str
    secret: str
    body: bytes
    ingest_ms: int
    order_key: str = ""  # "<tenant>/<lead>": one delivery at a time per key and URL
    method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()  # a target's own (auth, content type)
    signed: bool = True  # False: a CRM or chat target (its own auth in ``headers``)
    shown_url: str = ""  # what receipts show, when the URL itself is a secret (Slack)
    pace: Callable[[], Awaitable[None]] | None = None  # a target's rate limit, before sending


def _origin(url: str) -> str:
    """scheme://host:port: a 2xx from a host wakes every retry to it (a CRM's per-person
    URLs share one host)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}:{parts.port or ''}"


class Receipts:
    """Per alert: one JSON receipt per delivery and target."""

    def __init__(self, client: Any, keys: DeliveryKeys, ttl_s: int) -> None:
        self._r = client
        self._keys = keys
        self._ttl = ttl_s

    def get(self, job: Job) -> dict[str, Any] | None:
        raw = self._r.hget(self._keys.receipts(job.alert_id), f"{job.delivery_id}|{job.target}")
        return json.loads(raw) if raw else None

    def put(self, job: Job, receipt: dict[str, Any]) -> None:
        key = self._keys.receipts(job.alert_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(key, f"{job.delivery_id}|{job.target}", json.dumps(receipt))
        pipe.expire(key, self._ttl)
        pipe.execute()

    def read(self, alert_id: str) -> list[dict[str, Any]]:
        raw = cast(dict[bytes, bytes], self._r.hgetall(self._keys.receipts(alert_id)))
        return sorted(
            (json.loads(v) for v in raw.values()), key=lambda r: (r["delivery_id"], r["target"])
        )


class WebhookSender:
    """Delivers jobs; one coroutine per job, bounded by ``max_in_flight``."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        receipts: Receipts,
        client: Any,
        keys: DeliveryKeys,
        policy: RetryPolicy,
        metrics: DeliveryMetrics,
        *,
        max_in_flight: int,
        dead_letter_maxlen: int,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self._receipts = receipts
        self._r = client
        self._keys = keys
        self._policy = policy
        self._m = metrics
        self._slots = asyncio.Semaphore(max_in_flight)
        self._dead_maxlen = dead_letter_maxlen
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        # the last delivery queued per (order key, url): a later one waits for it to finish
        self._tails: dict[tuple[str, str], asyncio.Future[None]] = {}
        # per URL, set (and dropped) by the next 2xx there: wakes the retries backing off
        self._recovered: dict[str, asyncio.Event] = {}

    async def deliver(self, job: Job) -> dict[str, Any]:
        """Deliver until a 2xx, a permanent failure or the last attempt; returns the receipt.

        Jobs with the same ``order_key`` and URL finish in call order: this takes its
        place in the queue before its first ``await``, and tasks start in creation order."""
        if not job.order_key:
            return await self._deliver(job)
        key = (job.order_key, job.url)
        ahead = self._tails.get(key)
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._tails[key] = mine
        try:
            if ahead is not None:
                await asyncio.wait([ahead])  # not ``await ahead``: a cancel must not reach it
            return await self._deliver(job)
        finally:
            mine.set_result(None)
            if self._tails.get(key) is mine:
                del self._tails[key]

    async def _deliver(self, job: Job) -> dict[str, Any]:
        receipt = self._receipts.get(job)
        if receipt and receipt["status"] in ("delivered", "dead"):
            return receipt  # a replayed alert: never send a finished delivery again
        receipt = receipt or {
            "alert_id": job.alert_id, "delivery_id": job.delivery_id, "target": job.target,
            "url": job.shown_url or public_url(job.url), "status": "pending", "attempts": 0,
            "http_status": None, "last_error": "", "first_attempt_ms": None, "done_ms": None,
            "latency_ms": None, "ingest_to_done_ms": None,
        }  # fmt: skip
        p = self._policy
        while True:
            receipt["attempts"] += 1
            now_ms = int(self._clock() * 1000)
            if receipt["first_attempt_ms"] is None:
                receipt["first_attempt_ms"] = now_ms
            ok, permanent, status, error, retry_after = await self._attempt(job, receipt)
            receipt["http_status"] = status
            receipt["last_error"] = error
            done_ms = int(self._clock() * 1000)
            if ok or permanent or receipt["attempts"] >= p.max_attempts:
                receipt["status"] = "delivered" if ok else "dead"
                receipt["done_ms"] = done_ms
                receipt["latency_ms"] = done_ms - receipt["first_attempt_ms"]
                if job.ingest_ms:
                    receipt["ingest_to_done_ms"] = done_ms - job.ingest_ms
                self._receipts.put(job, receipt)
                self._m.deliveries.labels(receipt["status"]).inc()
                if ok and job.ingest_ms:
                    self._m.ingest_to_delivered.observe(max(0, done_ms - job.ingest_ms) / 1000)
                if not ok:
                    self._dead_letter(job, receipt)
                return receipt
            self._receipts.put(job, receipt)
            wait = p.backoff(receipt["attempts"], self._rng)
            if retry_after is not None:
                await self._sleep(min(p.cap_s, max(wait, retry_after)))
            else:
                await self._pause(_origin(job.url), wait)

    async def _pause(self, url: str, seconds: float) -> None:
        """Back off ``seconds``, or less if a request to ``url`` succeeds meanwhile."""
        up = self._recovered.get(url)
        if up is None:
            up = self._recovered[url] = asyncio.Event()
        timer = asyncio.ensure_future(self._sleep(seconds))
        woken = asyncio.ensure_future(up.wait())
        try:
            await asyncio.wait([timer, woken], return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            woken.cancel()

    def _succeeded(self, url: str) -> None:
        up = self._recovered.pop(url, None)
        if up is not None:
            up.set()

    async def _attempt(
        self, job: Job, receipt: dict[str, Any]
    ) -> tuple[bool, bool, int | None, str, float | None]:
        """(ok, permanent, http status, error, retry-after seconds)."""
        headers = self._headers(job, receipt["attempts"])
        if job.pace is not None:
            await job.pace()
        started = time.perf_counter()
        async with self._slots:
            try:
                resp = await self._http.request(
                    job.method, job.url, content=job.body, headers=headers,
                    timeout=self._policy.timeout_s,
                )  # fmt: skip
            except httpx.HTTPError as exc:
                self._m.attempt_seconds.observe(time.perf_counter() - started)
                self._m.attempts.labels("error").inc()
                return False, False, None, redact_text(f"{type(exc).__name__}: {exc}")[:300], None
        self._m.attempt_seconds.observe(time.perf_counter() - started)
        code = resp.status_code
        if 200 <= code < 300:
            self._m.attempts.labels("ok").inc()
            self._succeeded(_origin(job.url))
            return True, False, code, "", None
        text = resp.text[:200].strip()
        error = f"HTTP {code}" + (f": {text}" if text else "")
        retryable = code in _RETRYABLE or code >= 500
        self._m.attempts.labels("retry" if retryable else "failed").inc()
        wait = _retry_after(resp.headers.get("Retry-After"), self._clock())
        return False, not retryable, code, error, wait

    def _headers(self, job: Job, attempt: int) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "leadpulse-delivery/1",
            "X-Leadpulse-Alert-Id": job.alert_id,
            "X-Leadpulse-Delivery-Id": job.delivery_id,
            "X-Leadpulse-Attempt": str(attempt),
        }
        if job.signed:
            ts = int(self._clock())
            headers[TIMESTAMP_HEADER] = str(ts)
            headers[SIGNATURE_HEADER] = sign(job.secret, ts, job.body)
            headers["webhook-id"] = job.delivery_id
            headers["webhook-timestamp"] = str(ts)
            headers["webhook-signature"] = standard_signature(
                job.secret, job.delivery_id, ts, job.body
            )
        headers.update(job.headers)
        return headers

    def _dead_letter(self, job: Job, receipt: dict[str, Any]) -> None:
        self._m.dead_letters.inc()
        self._r.xadd(
            self._keys.dead,
            {
                "alert_id": job.alert_id,
                "delivery_id": job.delivery_id,
                "target": job.target,
                "url": receipt["url"],
                "attempts": receipt["attempts"],
                "last_error": receipt["last_error"],
                "receipt": json.dumps(receipt),
                "body": job.body,
            },
            maxlen=self._dead_maxlen,
            approximate=True,
        )


def _retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait: ``Retry-After`` as seconds or as an HTTP date (RFC 9110)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def read_dead_letters(client: Any, keys: DeliveryKeys, count: int = 100) -> list[dict[str, Any]]:
    """The newest dead letters (for people and tests), newest first."""
    rows = client.xrevrange(keys.dead, count=count)
    out = []
    for sid, fields in rows:
        d = {k.decode(): v for k, v in fields.items()}
        out.append(
            {
                "id": sid.decode(),
                **{k: v.decode() for k, v in d.items() if k != "body"},
                "body": d.get("body", b"").decode(),
            }
        )
    return out
