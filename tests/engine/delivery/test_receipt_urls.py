"""A webhook URL's password or token never reaches a receipt or a dead letter (issue 16,
item 4): receipts show ``public_url`` of engine/redact.py, errors go through
``redact_text``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from engine.delivery.keys import DeliveryKeys
from engine.delivery.metrics import DeliveryMetrics
from engine.delivery.webhooks import Job, Receipts, RetryPolicy, WebhookSender, read_dead_letters
from tests.engine.delivery.conftest import Receiver, free_port

SECRETS = ("hookuser", "pa55word", "t0ken123", "frag9")


def _deliver(client: Any, prefix: str, urls: list[str]) -> list[dict[str, Any]]:
    keys = DeliveryKeys(prefix)

    async def main() -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            sender = WebhookSender(
                http, Receipts(client, keys, 600), client, keys,
                RetryPolicy(max_attempts=2, base_s=0.01, cap_s=0.02, timeout_s=2),
                DeliveryMetrics.create(), max_in_flight=4, dead_letter_maxlen=100,
            )  # fmt: skip
            jobs = [
                Job(alert_id=f"a{i}", delivery_id=f"a{i}", target="tenant", url=url,
                    secret="s" * 32, body=b"{}", ingest_ms=0)
                for i, url in enumerate(urls)
            ]  # fmt: skip
            return list(await asyncio.gather(*(sender.deliver(j) for j in jobs)))

    return asyncio.run(main())


def test_no_password_or_token_in_receipts_or_dead_letters(
    client: Any, prefix: str, receiver: Receiver
) -> None:
    receiver.start()
    secret_part = "hookuser:pa55word@"
    query = "?token=t0ken123&x=1#frag9"
    live = receiver.url.replace("http://", f"http://{secret_part}") + query
    dead = f"http://{secret_part}127.0.0.1:{free_port()}/hook{query}"  # nobody listens
    delivered, failed = _deliver(client, prefix, [live, dead])
    assert delivered["status"] == "delivered" and failed["status"] == "dead"
    assert delivered["url"] == receiver.url  # scheme, host, port and path: nothing else
    assert receiver.got, "the receiver was called with the full URL"
    stored = json.dumps(Receipts(client, DeliveryKeys(prefix), 600).read("a0"))
    stored += json.dumps(Receipts(client, DeliveryKeys(prefix), 600).read("a1"))
    stored += json.dumps(read_dead_letters(client, DeliveryKeys(prefix)))
    assert failed["last_error"] and "/hook" in stored
    for secret in SECRETS:
        assert secret not in stored, secret
