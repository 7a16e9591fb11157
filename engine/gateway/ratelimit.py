"""Per-key rate limit: GCRA (generic cell rate algorithm) in one Redis script.

One key per limited bucket holds the bucket's *theoretical arrival time*; a request
is allowed when it arrives no earlier than ``TAT - burst * interval``. State is one
integer per active key that expires when the bucket is full again, so idle keys
cost nothing, and every gateway process shares the same limit (the clock is the
Redis server's, so gateway hosts need not agree on time). A refused request gets
the exact wait until it would be allowed, which becomes ``Retry-After``.

Buckets: a server key is limited per key; a tracker key (shared by every visitor of
a site) per key *and* client address, so one busy site is not throttled as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.gateway.auth import Principal
from engine.settings import GatewaySettings

__all__ = ["GCRA_LUA", "Decision", "Limit", "limit_for"]

#: KEYS[1] bucket; ARGV[1] emission interval (ms, float), ARGV[2] burst (requests).
#: Returns {allowed (1/0), wait_ms}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if allow_at > now then
  return {0, math.ceil(allow_at - now)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil(new_tat - now) + 1)
return {1, 0}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` requests per second on average, ``burst`` at once."""

    rate: float
    burst: int

    @property
    def interval_ms(self) -> float:
        return 1000.0 / self.rate


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    wait_ms: int

    @property
    def retry_after_s(self) -> int:
        """Whole seconds for ``Retry-After`` (at least 1: HTTP has no fractions)."""
        return max(1, math.ceil(self.wait_ms / 1000))


def limit_for(
    principal: Principal, settings: GatewaySettings, client_addr: str
) -> tuple[str, Limit]:
    """The bucket name (never the key itself) and the limit that applies to a request."""
    if principal.is_tracker:
        return (
            f"{principal.key_id}:{client_addr}",
            Limit(settings.tracker_rate_per_s, settings.tracker_burst),
        )
    return principal.key_id, Limit(settings.rate_per_s, settings.rate_burst)
