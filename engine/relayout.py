"""Re-key a deployment from the one-slot layout to a slot per partition (``leadpulse migrate``).

``redis.key_layout = "partition"`` (engine/keys.py) keeps everything a batch writes under
its partition's tag. Data written in the ``deployment`` layout moves there key by key, on
a single server (a cluster cannot rename a key into another slot: migrate on a server,
then copy the keys to the cluster, or replay the history into a fresh one):

- a lead's keys (``{lp}:{tenant:lead}:…``) are renamed to its partition's tag
  (``RENAMENX``: value and TTL move with the key);
- per-partition keys (``events:N``, ``due:N``, ``cad:N``) are renamed to partition N's tag,
  the consumer groups of an events stream with it;
- hot lists, the hot-list index and alias hashes are split: each member goes to the shard
  of its lead's partition; position, processed, watermark and cadence-clock hashes and
  the pacing set are split by partition; the old key is deleted once its members are in;
- the alerts, bucket-change, cadence and dead-letter streams are renamed to partition 0's
  tag, consumer groups and pending entries with them (readers merge every partition's
  streams, so where an old entry sits does not matter);
- everything else stays under ``{lp}``: the model and labels, report counters (readers
  add the deployment's own counters to the partitions'), the gateway's and delivery's keys.

Stop every leadpulse process of the deployment first. Idempotent: a key moved is not
found again; a split interrupted half-way is redone from the old key, which goes last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from engine.errors import LeadpulseError
from engine.keys import StreamNames, pattern, root
from engine.redis_client import is_cluster

__all__ = ["Relayout", "relayout"]

_BY_PARTITION = ("events", "due", "cad")  # NAME:N, renamed to partition N's tag
_PARTITION_HASHES = ("pos", "processed", "wm", "cadwm")  # field N -> partition N's hash
_STREAMS = ("alerts", "buckets", "cadence", "deadletter")  # to partition 0's tag


@dataclass
class Relayout:
    """What one run did (or, dry, would do): keys renamed, keys split, keys left alone
    because their new name was taken."""

    renamed: int = 0
    split: int = 0
    kept: list[str] = field(default_factory=list)


def relayout(client: Any, names: StreamNames, *, dry_run: bool = False) -> Relayout:
    """Move ``names.prefix``'s deployment-layout keys to the partition layout of ``names``."""
    if not names.sharded:
        raise ValueError("relayout needs the names of the partition layout")
    if is_cluster(client):
        raise LeadpulseError(
            "leadpulse migrate re-keys on a single server (a cluster cannot rename a key "
            "into another slot): migrate a copy on one server, then move the keys, or replay "
            "the history into the cluster"
        )
    done = Relayout()
    head = len(root(names.prefix)) + 1
    for raw in client.scan_iter(match=pattern(names.prefix), count=1000):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        move = _plan(names, key[head:])
        if move is not None:
            move(client, key, done, dry_run)
    return done


Move = Callable[[Any, str, Relayout, bool], None]


def _plan(names: StreamNames, rest: str) -> Move | None:
    """How the key ``{prefix}:rest`` moves, or None where it stays."""
    kind, _, arg = rest.partition(":")
    if rest.startswith("{"):  # a lead's key: {tenant:lead}:part
        tenant, _, lead = rest[1 : rest.index("}")].partition(":")
        return _rename(f"{root(names.home(tenant, lead))}:{rest}")
    if kind in _BY_PARTITION and arg.isdigit() and int(arg) < names.partitions:
        return _rename(f"{root(names.shard(int(arg)))}:{rest}")
    if rest in _STREAMS:
        return _rename(f"{root(names.shard(0))}:{rest}")
    if kind == "hot" and arg:
        return _split_zset(lambda m: f"{root(names.home(arg, m))}:{rest}")
    if rest == "hotidx":
        return _split_zset(lambda m: f"{root(names.home(*m.split(chr(31), 1)))}:{rest}")
    if kind == "alias" and arg:
        return _split_hash(lambda f: f"{root(names.home(arg, f))}:{rest}")
    if rest in _PARTITION_HASHES:
        return _split_hash(lambda f: f"{root(names.shard(int(f)))}:{rest}")
    if rest == "lostseen":
        return _split_set(lambda m: f"{root(names.shard(int(m)))}:{rest}")
    return None


def _rename(target: str) -> Move:
    def move(client: Any, key: str, done: Relayout, dry_run: bool) -> None:
        if dry_run:
            done.renamed += 1
            return
        try:
            moved = client.renamenx(key, target)
        except ResponseError:  # gone since SCAN listed it (expired): nothing to move
            return
        if moved:
            done.renamed += 1
        else:
            done.kept.append(key)

    return move


def _split(read: Callable[[Any, str], dict[str, Any]], write: str) -> Callable[
    [Callable[[str], str]], Move
]:  # fmt: skip
    """A move that reads the key's members and writes each under the key its name maps to
    (``write``: the command, ZADD / HSET / SADD), then deletes the old key."""

    def plan(target_of: Callable[[str], str]) -> Move:
        def move(client: Any, key: str, done: Relayout, dry_run: bool) -> None:
            groups: dict[str, dict[str, Any]] = {}
            for member, value in read(client, key).items():
                groups.setdefault(target_of(member), {})[member] = value
            done.split += 1
            if dry_run:
                return
            pipe = client.pipeline(transaction=True)
            for target, members in groups.items():
                _write(pipe, write, target, members)
            pipe.delete(key)
            pipe.execute()

        return move

    return plan


def _write(pipe: Any, command: str, key: str, members: dict[str, Any]) -> None:
    if command == "ZADD":
        pipe.zadd(key, members)
    elif command == "HSET":
        pipe.hset(key, mapping=members)
    else:
        pipe.sadd(key, *members)


def _zset(client: Any, key: str) -> dict[str, Any]:
    return {_s(m): score for m, score in client.zscan_iter(key, count=1000)}


def _hash(client: Any, key: str) -> dict[str, Any]:
    return {_s(f): v for f, v in client.hscan_iter(key, count=1000)}


def _set(client: Any, key: str) -> dict[str, Any]:
    return {_s(m): None for m in client.sscan_iter(key, count=1000)}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_split_zset = _split(_zset, "ZADD")
_split_hash = _split(_hash, "HSET")
_split_set = _split(_set, "SADD")
