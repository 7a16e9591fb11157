"""The two baselines every report compares the engine with, in the same run.

**Floor** — the least any implementation of this design pays per event: the engine's
own feature update (:meth:`features.store.FeatureStore.apply`: Python state, cached
per lead, one pipelined read per batch for the leads not cached; ``read_count``
events a batch; the records are not written) and model prediction
(:meth:`engine.model.OnlineModel.probability_of`, the engine's own hot path) in a tight loop, with
events already decoded and no dataflow, no validation, no alerts, no commit.

**Naive peer** — what a user writes by hand without the engine: one consumer that
XREADs the same pre-loaded streams, decodes each event, and makes one unpipelined
Redis round trip per feature operation (SADD for dedup, HINCRBY per type counter,
ZADD / ZREMRANGEBYSCORE / three ZCOUNT for the view windows, ZADD + ZCOUNT for
distinct properties, HSET profile, HGETALL to read back, HSET the score, XADD an
alert on a jump), no Lua, no pipelining, and River ``predict_proba_one`` plus
``learn_one`` on every event. It computes fewer features than the engine and gives
no exactly-once guarantee; it is the honest "first version" a team would write.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, cast

import msgpack
import redis
from river import compose, linear_model, optim, preprocessing

from benchmarks.harness import (
    PARTITIONS,
    Workload,
    delete_prefix,
    new_prefix,
    preload,
    settings_for,
)
from engine.events import Event
from engine.model import OnlineModel
from engine.streams import StreamNames
from engine.validate import Rejection, Validator
from features.definitions import input_plan, model_input
from features.store import DUPLICATE, LATE, FeatureStore

__all__ = ["CountingClient", "measure_floor", "measure_naive"]

_DAY = 86_400.0
_HAND_RAISES = frozenset({"inquiry", "showing_request", "valuation_request", "call_request"})
_POSITIVE = frozenset({"appointment_set", "appointment_held", "agreement_signed", "closed"})


def _decode_all(work: Workload, n: int, prefix: str) -> list[Event]:
    validator = Validator(settings_for(prefix).validation)
    out: list[Event] = []
    for payload in work.payloads[:n]:
        checked = validator.check_bytes(payload, "msgpack")
        if not isinstance(checked, Rejection):
            out.append(checked)
    return out


def measure_floor(
    client: redis.Redis,
    work: Workload,
    n: int,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, Any]:
    """Feature update (cached Python state, a read per batch) + model prediction, tight loop."""
    prefix = new_prefix("fl")
    settings = settings_for(prefix)
    batch = settings.streams.read_count
    names = settings.features.model_names  # the inputs the score stage builds
    plan = input_plan(names)  # as the score stage keeps it
    try:
        events = _decode_all(work, n, prefix)
        store = FeatureStore(client, settings.features, prefix)
        model = OnlineModel()
        # warm-up (untimed): script load, and a model that is ready to predict
        warm, _ = store.apply(events[:batch])
        xs = [model_input(r.features, names) for r in warm if r.status not in (DUPLICATE, LATE)]
        for i, x in enumerate(xs[:200]):
            model.learn(f"warm{i}", x, i % 3 == 0)
        rest = events[batch:]
        predictions = 0
        started = time.perf_counter()
        for lo in range(0, len(rest), batch):
            for reply in store.apply(rest[lo : lo + batch])[0]:
                if reply.status in (DUPLICATE, LATE):
                    continue
                if model.probability_of(reply.features, plan) is not None:
                    predictions += 1
            if progress is not None:
                progress(min(len(rest), lo + batch), len(rest))
        seconds = time.perf_counter() - started
        return {
            "events": len(rest),
            "seconds": round(seconds, 3),
            "events_per_s": round(len(rest) / seconds, 1),
            "predictions": predictions,
            "batch": batch,
        }
    finally:
        delete_prefix(client, prefix)


class CountingClient:
    """A client proxy that counts the commands it sends (one round trip each here)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*a: Any, **kw: Any) -> Any:
            self.calls += 1
            return method(*a, **kw)

        return call


class _Naive:
    """The hand-written consumer: one round trip per feature operation."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.counter = CountingClient(client)
        self.r: Any = self.counter
        self.prefix = prefix
        self.model = compose.Pipeline(
            preprocessing.StandardScaler(),
            linear_model.LogisticRegression(optimizer=optim.SGD(0.05)),
        )
        self.alerts = 0

    def handle(self, ev: dict[str, Any]) -> None:
        r = self.r
        who = ev.get("lead_id") or ev.get("visitor_id")
        lead = f"{self.prefix}:{ev.get('tenant', 'default')}:{who}"
        if not r.sadd(f"{lead}:seen", ev["event_id"]):
            return  # duplicate
        etype, ts = ev["type"], float(ev["ts"])
        r.hincrby(f"{lead}:counts", etype, 1)
        if etype == "property_view" and ev.get("property_id"):
            views, props = f"{lead}:views", f"{lead}:props"
            r.zadd(views, {f"{ev['event_id']}|{ev['property_id']}": ts})
            r.zremrangebyscore(views, "-inf", ts - 30 * _DAY)
            v24 = r.zcount(views, ts - _DAY, "+inf")
            v7 = r.zcount(views, ts - 7 * _DAY, "+inf")
            v30 = r.zcount(views, ts - 30 * _DAY, "+inf")
            r.zadd(props, {ev["property_id"]: ts})
            distinct = r.zcount(props, ts - 30 * _DAY, "+inf")
            r.hset(
                f"{lead}:counts",
                mapping={"views_24h": v24, "views_7d": v7, "views_30d": v30, "distinct": distinct},
            )
        profile = {k: ev[k] for k in ("source", "side", "timeline") if ev.get(k)}
        if profile:
            r.hset(f"{lead}:profile", mapping=profile)
        raw = cast(dict[bytes, bytes], r.hgetall(f"{lead}:counts"))
        x = {k.decode(): math.log1p(float(v)) for k, v in raw.items()}
        p = self.model.predict_proba_one(x).get(True, 0.0)
        self.model.learn_one(x, etype in _POSITIVE or etype in _HAND_RAISES)
        score = round(100 * p)
        before = cast(bytes | None, r.hget(f"{lead}:score", "score"))
        r.hset(f"{lead}:score", mapping={"score": score, "ts": ts})
        if before is not None and score - int(before) >= 15:
            r.xadd(f"{self.prefix}:alerts", {"lead": lead, "score": score})
            self.alerts += 1


def measure_naive(
    client: redis.Redis,
    work: Workload,
    n: int,
    progress: Callable[[int, int], object] | None = None,
) -> dict[str, Any]:
    """One consumer over the pre-loaded streams, unpipelined, predict+learn per event."""
    prefix = new_prefix("nv")
    names = StreamNames(prefix, PARTITIONS)
    try:
        loaded = preload(client, names, work, n)
        total = loaded.total
        naive = _Naive(client, prefix)
        pos = {p: "0-0" for p in range(PARTITIONS)}
        done = 0
        started = time.perf_counter()
        while done < total:
            reply = cast(list[Any], client.xread({names.events(p): pos[p] for p in pos}, count=500))
            if not reply:
                break
            for stream, rows in reply:
                p = int(stream.decode().rsplit(":", 1)[1])
                for sid, fields in rows:
                    naive.handle(msgpack.unpackb(fields[b"e"], raw=False))
                    pos[p] = sid.decode()
                    done += 1
            if progress is not None:
                progress(done, total)
        seconds = time.perf_counter() - started
        calls = naive.counter.calls
        return {
            "events": done,
            "seconds": round(seconds, 3),
            "events_per_s": round(done / seconds, 1),
            "alerts": naive.alerts,
            "redis_round_trips_per_event": round(calls / done, 2) if done else None,
        }
    finally:
        delete_prefix(client, prefix)
