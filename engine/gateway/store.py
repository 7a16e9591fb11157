"""The gateway's Redis access: the only gateway module that imports redis.

Key layout (prefix ``lp``), shared with the engine where it reads engine state:

- ``{lp}:events:{p}``                     the lead's partition (``engine.events.partition_of``),
                                        entry field ``e`` = msgpack of the event (as
                                        ``engine.streams.Producer`` writes it)
- ``{lp}:gw:idem:{tenant}:{event_id}``    idempotency marker, expires after the window
- ``{lp}:gw:contact:{tenant}:{hash}``     set of lead ids seen with that contact hash
- ``{lp}:gw:bound:{tenant}:{lead}``       the lead is known to a server key (it sent an event
                                        for it): tracker events may address it; expires
                                        with the lead (``features.idle_expire_d``)
- ``{lp}:gw:rl:{bucket}``                 rate-limit state (GCRA, ``ratelimit.py``)
- ``{lp}:{tenant:lead}:r`` / ``:f``       score record / feature record (read only, engine's;
                                        ``:s`` / ``:h`` of schema 0 until rewritten)
- ``{lp}:hot:{tenant}``                   hot list (read only, engine's)
- ``{lp}:pos``                            committed stream positions (read only, for lag)
- ``{lp}:alias:{tenant}``                 lead id -> the lead it was folded into (read only:
                                        the engine writes it on identify and merge)

In the slot-per-partition key layout (``redis.key_layout``, engine/keys.py) the engine's
keys above live under their partition's tag: a lead's at its home, the hot list, aliases
and positions in one shard per partition, read and merged here (``engine/shards.py``).

Appending is one script call per request: per event it checks the idempotency
marker, XADDs, *then* sets the marker and indexes contact hashes. An event whose
XADD fails is not marked, so a retry is not mistaken for a duplicate; the worst
case (a marker write failing after its XADD) is a second copy in the stream, which
the feature store ignores by ``event_id``. Like the engine's commit, the
script spans keys of several slots: one Redis primary, not Redis Cluster.

The async client lives on the event loop that first uses it (uvicorn runs one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import StoreError
from engine.gateway.ratelimit import GCRA_LUA, Decision, Limit
from engine.keys import bound_key, contact_index_key, idempotency_key, rate_limit_key
from engine.records import RecordReader
from engine.redis_client import async_client
from engine.settings import load_settings
from engine.shards import merge_aliases, merge_hot, queue_aliases, queue_hot
from engine.streams import StreamNames
from features.state import read_record
from features.store import lead_key

__all__ = [
    "LAG_CAP",
    "GatewayStore",
    "PartitionLag",
    "Prepared",
    "bound_key",
    "contact_index_key",
    "find_leads_by_contact_hash",
    "idempotency_key",
]

#: /healthz counts at most this many unprocessed entries per partition (a bounded scan).
LAG_CAP = 10_000

# One call per request. KEYS, per event: idempotency key, stream, bound marker, its contact
# index sets. ARGV: idempotency ms, stream maxlen, contact index (and bound marker) ttl s,
# then per event: payload, lead id, number of contact keys, bind (1: set the marker).
# Reply: per event the stream id, or nil for a duplicate.
_APPEND_LUA = """
local idem_ms, maxlen, contact_s = ARGV[1], ARGV[2], ARGV[3]
local out, k, a = {}, 1, 4
while a <= #ARGV do
  local idem, stream, n = KEYS[k], KEYS[k + 1], tonumber(ARGV[a + 2])
  if ARGV[a + 3] == '1' then  -- a server key vouches for the lead, duplicate or not
    redis.call('SET', KEYS[k + 2], '1', 'EX', contact_s)
  end
  if redis.call('EXISTS', idem) == 1 then
    out[#out + 1] = false
  else
    if tonumber(maxlen) > 0 then
      out[#out + 1] = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', ARGV[a])
    else  -- no cap: the engine trims what it has committed (never an unprocessed event)
      out[#out + 1] = redis.call('XADD', stream, '*', 'e', ARGV[a])
    end
    redis.call('SET', idem, '1', 'PX', idem_ms)
    for c = 1, n do
      redis.call('SADD', KEYS[k + 2 + c], ARGV[a + 1])
      redis.call('EXPIRE', KEYS[k + 2 + c], contact_s)
    end
  end
  k, a = k + 3 + n, a + 4
end
return out
"""

# KEYS[1] positions hash, KEYS[2..] partitions' streams; ARGV[1] cap, ARGV[2..] the
# partitions (their fields in the positions hash), in the order of KEYS[2..].
# Returns {now_ms, {committed, entries after it (capped), first id after it or ''}...}
_LAG_LUA = """
local t = redis.call('TIME')
local out = {tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)}
for i = 2, #KEYS do
  local pos = redis.call('HGET', KEYS[1], ARGV[i]) or '0-0'
  local rows = redis.call('XRANGE', KEYS[i], '(' .. pos, '+', 'COUNT', ARGV[1])
  local first = ''
  if #rows > 0 then first = rows[1][1] end
  out[#out + 1] = {pos, #rows, first}
end
return out
"""


def find_leads_by_contact_hash(
    client: redis.Redis, prefix: str, tenant: str, contact_hash: str
) -> list[str]:
    """Lead ids of ``tenant`` seen with ``contact_hash``, sorted (sync: for the engine's merge).

    Anonymous visitors appear as ``~<visitor_id>``. Never crosses tenants: the hash
    itself is tenant-keyed and the index is per tenant.
    """
    members = cast(set[bytes], client.smembers(contact_index_key(prefix, tenant, contact_hash)))
    return sorted(_text(m) for m in members)


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


@dataclass(frozen=True, slots=True)
class Prepared:
    """A valid, scrubbed event ready to append."""

    index: int
    event_id: str
    lead_id: str
    partition: int
    payload: bytes
    contact_hashes: tuple[str, ...] = ()
    bind: bool = False  # sent with a server key: mark the lead as known (``bound_key``)


@dataclass(frozen=True, slots=True)
class PartitionLag:
    partition: int
    committed: str
    lag: int
    capped: bool
    oldest_age_s: float | None


class GatewayStore:
    """Async Redis access for one gateway process."""

    def __init__(
        self,
        url: str,
        names: StreamNames,
        *,
        maxlen: int,
        idempotency_ms: int,
        contact_ttl_s: int,
        retries: int = 2,
        socket_timeout_s: float = 5.0,
        records: RecordReader | None = None,
    ) -> None:
        self._url = url
        self._records = records or RecordReader(load_settings(environ={}), names=names)
        self._names = names
        self._prefix = names.prefix
        self._maxlen = maxlen
        self._idem_ms = idempotency_ms
        self._contact_ttl = contact_ttl_s
        self._retries = retries
        self._timeout = socket_timeout_s
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._append: Any = None
        self._gcra: Any = None
        self._lag: Any = None

    @property
    def prefix(self) -> str:
        return self._prefix

    def _r(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # a short retry budget: a caller waiting on a dead Redis gets a 503 quickly
            retry = AsyncRetry(ExponentialBackoff(cap=0.25, base=0.02), self._retries)
            self._client = async_client(
                self._url,
                socket_timeout=self._timeout,
                socket_connect_timeout=self._timeout,
                retry=retry,
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
                health_check_interval=30,
            )
            self._loop = loop
            self._append = self._client.register_script(_APPEND_LUA)
            self._gcra = self._client.register_script(GCRA_LUA)
            self._lag = self._client.register_script(_LAG_LUA)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._loop = None

    async def ping(self) -> None:
        try:
            await self._r().ping()
        except RedisError as exc:
            raise StoreError(f"Redis unreachable: {exc.__class__.__name__}") from None

    async def append(self, tenant: str, events: Sequence[Prepared]) -> list[str | None]:
        """Append each event unless its id was seen in the window: stream id, or None.

        One script call for the whole request (atomic: a few ms of Redis time for the
        largest request). If it fails part-way, the events before the failure are in
        the stream and marked: the client's retry gets them back as duplicates.
        """
        if not events:
            return []
        self._r()  # binds the scripts to this loop's client
        keys: list[str] = []
        args: list[Any] = [self._idem_ms, self._maxlen, self._contact_ttl]
        for ev in events:
            keys.append(idempotency_key(self._prefix, tenant, ev.event_id))
            keys.append(self._names.events(ev.partition))
            keys.append(bound_key(self._prefix, tenant, ev.lead_id))
            keys.extend(contact_index_key(self._prefix, tenant, h) for h in ev.contact_hashes)
            args.extend((ev.payload, ev.lead_id, len(ev.contact_hashes), int(ev.bind)))
        try:
            replies = await self._append(keys=keys, args=args)
        except RedisError as exc:
            raise StoreError(f"append failed: {exc.__class__.__name__}") from None
        return [None if r is None else _text(r) for r in replies]

    async def resolve_aliases(self, tenant: str, lead_ids: Sequence[str]) -> dict[str, str]:
        """Leads that were folded into another (identify, merge) -> the lead they live on now.

        Follows chains (a visitor identified as a lead later merged into another) up to
        four hops; ids without an alias are left out. One round trip when none has one.
        """
        direct: dict[str, str] = {}
        asked: set[str] = set()
        pending = sorted(set(lead_ids))
        for _ in range(4):
            if not pending:
                break
            asked.update(pending)
            hops = await self._alias_hops(tenant, pending)
            direct.update(hops)
            pending = sorted(set(hops.values()) - asked)
        out: dict[str, str] = {}
        for src in set(lead_ids):
            dst, seen = src, {src}
            while dst in direct and direct[dst] not in seen:  # a cycle stops where it closes
                dst = direct[dst]
                seen.add(dst)
            if dst != src:
                out[src] = dst
        return out

    async def _alias_hops(self, tenant: str, pending: list[str]) -> dict[str, str]:
        """The alias of each lead of ``pending`` that has one (every shard's alias hash
        asked in one round trip: ``engine/shards.py``)."""
        pipe = self._r().pipeline(transaction=False)
        queue_aliases(pipe, self._names, tenant, pending)
        try:
            replies = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"read failed: {exc.__class__.__name__}") from None
        return merge_aliases(self._names, tenant, pending, replies)

    async def bound(self, tenant: str, lead_ids: Sequence[str]) -> set[str]:
        """The ids among ``lead_ids`` a server key has sent events for (``bound_key``)."""
        ids = sorted(set(lead_ids))
        if not ids:
            return set()
        keys = [bound_key(self._prefix, tenant, lead) for lead in ids]
        try:
            found = await cast(Awaitable[list[Any]], self._r().mget(keys))
        except RedisError as exc:
            raise StoreError(f"read failed: {exc.__class__.__name__}") from None
        return {lead for lead, hit in zip(ids, found, strict=True) if hit is not None}

    async def rate_limit(self, bucket: str, limit: Limit) -> Decision:
        self._r()  # binds the scripts to this loop's client
        try:
            allowed, wait = await self._gcra(
                keys=[rate_limit_key(self._prefix, bucket)], args=[limit.interval_ms, limit.burst]
            )
        except RedisError as exc:
            raise StoreError(f"rate limit unavailable: {exc.__class__.__name__}") from None
        return Decision(bool(allowed), int(wait))

    async def lead(self, tenant: str, lead_id: str) -> tuple[dict[str, str], dict[str, str]]:
        """The lead's score hash and its feature record's fields (both empty if unknown)."""
        lead = [(tenant, lead_id)]
        pipe = self._r().pipeline(transaction=False)
        self._records.queue(pipe, lead)  # GET :r, GET :f
        pipe.hgetall(self._records.legacy_keys(lead)[0])  # schema 0's score hash
        home = self._names.home(tenant, lead_id)
        pipe.hgetall(lead_key(home, tenant, lead_id, "h"))  # schema 0, until migrated
        try:
            packed, record, old_score, legacy = await pipe.execute()
        except RedisError as exc:
            raise StoreError(f"read failed: {exc.__class__.__name__}") from None
        score = self._records.hashes(lead, [packed, record])[0] or _texts(old_score)
        if record is None:
            return score, _texts(legacy)
        return score, read_record(record).legacy_view()

    async def hot_list(self, tenant: str, limit: int) -> list[dict[str, str]]:
        """Score hashes of the tenant's top ``limit`` leads, best first (expired ones skipped)."""
        r = self._r()
        try:
            pipe = r.pipeline(transaction=False)
            queue_hot(pipe, self._names, tenant, limit)  # every shard's top (engine/shards.py)
            ids = merge_hot(await pipe.execute(), limit)
            leads = [(tenant, lead) for lead in ids]
            pipe = r.pipeline(transaction=False)
            self._records.queue(pipe, leads)
            rows = self._records.hashes(leads, await pipe.execute()) if ids else []
            old = [leads[i] for i, row in enumerate(rows) if row is None]  # schema 0
            if old:
                pipe = r.pipeline(transaction=False)
                for key in self._records.legacy_keys(old):
                    pipe.hgetall(key)
                found = iter(await pipe.execute())
                rows = [row if row is not None else _texts(next(found)) for row in rows]
        except RedisError as exc:
            raise StoreError(f"read failed: {exc.__class__.__name__}") from None
        return [h for h in rows if h]

    async def stream_lag(self) -> list[PartitionLag]:
        """Per partition: entries after the committed position (capped) and the oldest's age.

        One script call per positions hash (one in the deployment layout; a partition's own
        in the slot-per-partition layout: a script's keys share a slot), run together."""
        groups: dict[str, list[int]] = {}
        for p in range(self._names.partitions):
            groups.setdefault(self._names.of(p).positions, []).append(p)
        self._r()  # binds the scripts to this loop's client
        calls = [
            self._lag(keys=[pos, *(self._names.events(p) for p in parts)], args=[LAG_CAP, *parts])
            for pos, parts in groups.items()
        ]
        try:
            replies = await asyncio.gather(*calls)
        except RedisError as exc:
            raise StoreError(f"Redis unreachable: {exc.__class__.__name__}") from None
        out = []
        for parts, reply in zip(groups.values(), replies, strict=True):
            now_ms = int(reply[0])
            for p, (pos, n, first) in zip(parts, reply[1:], strict=True):
                out.append(_lag_of(p, _text(pos), int(n), _text(first), now_ms))
        return sorted(out, key=lambda lag: lag.partition)

    async def find_leads_by_contact_hash(self, tenant: str, contact_hash: str) -> list[str]:
        """Async twin of :func:`find_leads_by_contact_hash`."""
        key = contact_index_key(self._prefix, tenant, contact_hash)
        try:
            members = await cast(Awaitable[set[bytes]], self._r().smembers(key))
        except RedisError as exc:
            raise StoreError(f"read failed: {exc.__class__.__name__}") from None
        return sorted(_text(m) for m in members)


def _lag_of(partition: int, committed: str, n: int, first_id: str, now_ms: int) -> PartitionLag:
    age = None
    if first_id:
        age = max(0.0, (now_ms - int(first_id.split("-", 1)[0])) / 1000)
    return PartitionLag(partition, committed, n, n >= LAG_CAP, age)


def _texts(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}
