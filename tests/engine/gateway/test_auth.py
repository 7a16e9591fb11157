"""API keys: hashed in config, constant-time comparison, roles; and rate-limit buckets."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from engine.gateway.auth import KeyRing, key_digest, new_key
from engine.gateway.ratelimit import Decision, limit_for
from engine.settings import ApiKeyEntry, GatewaySettings


def test_new_keys_are_random_and_marked_by_role() -> None:
    a, b, t = new_key(), new_key(), new_key("tracker")
    assert a != b and a.startswith("lpk_") and t.startswith("lpk_trk_")
    assert len(a) >= 40
    assert key_digest(a) == hashlib.sha256(a.encode()).hexdigest()


def test_keyring_maps_keys_to_principals() -> None:
    ring = KeyRing(
        {
            key_digest("k-acme"): ApiKeyEntry(tenant="acme"),
            key_digest("k-trk"): ApiKeyEntry(
                tenant="acme", role="tracker", origins=("https://a.example",)
            ),
        }
    )
    who = ring.authenticate("k-acme")
    assert who is not None and (who.tenant, who.role, who.is_tracker) == ("acme", "server", False)
    assert who.key_id == key_digest("k-acme")[:12]
    trk = ring.authenticate("k-trk")
    assert trk is not None and trk.is_tracker and trk.origins == ("https://a.example",)
    for bad in ("", "k-acm", "k-acme ", "x" * 600, key_digest("k-acme")):
        assert ring.authenticate(bad) is None  # the digest itself is not a key
    assert len(ring) == 2


def test_every_digest_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bool] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(real(a, b))
        return calls[-1]

    ring = KeyRing({key_digest(f"k{i}"): ApiKeyEntry(tenant="t") for i in range(5)})
    monkeypatch.setattr(hmac, "compare_digest", counting)
    assert ring.authenticate("k0") is not None
    assert calls == [True, False, False, False, False]  # no early exit after the match


def test_rate_limit_buckets() -> None:
    s = GatewaySettings.model_validate({"rate_per_s": 5, "rate_burst": 7, "tracker_rate_per_s": 1,
                                        "tracker_burst": 3})  # fmt: skip
    ring = KeyRing({key_digest("s"): ApiKeyEntry(tenant="a"),
                    key_digest("t"): ApiKeyEntry(tenant="a", role="tracker")})  # fmt: skip
    server, tracker = ring.authenticate("s"), ring.authenticate("t")
    assert server is not None and tracker is not None
    bucket, limit = limit_for(server, s, "10.1.1.1")
    assert (bucket, limit.rate, limit.burst) == (server.key_id, 5, 7)
    bucket, limit = limit_for(tracker, s, "10.1.1.1")  # a tracker key: per visitor address
    assert (bucket, limit.rate, limit.burst) == (f"{tracker.key_id}:10.1.1.1", 1, 3)
    assert limit.interval_ms == 1000
    assert Decision(False, 1).retry_after_s == 1 and Decision(False, 2001).retry_after_s == 3
