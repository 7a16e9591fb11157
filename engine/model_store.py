"""Where models live in Redis: the trainer's working copy and published versions.

Keys (prefix ``lp``):

- ``lp:model:work``      the trainer's working copy (models, learned ids, labels position);
                         written in the same transaction as the batch that taught it
- ``lp:model:v:<n>``     published version ``n`` (what scorers load)
- ``lp:model:versions``  hash ``n`` -> JSON metadata (River version, labels seen, quality
                         at publish time, publish time)
- ``lp:model:meta``      hash: ``current`` (newest published), ``pinned`` (rollback)
- ``lp:labels``          stream of labelled examples (audit, and transport to the trainer)

Exactly one process is the trainer; every other process scores with the newest
published version (or the pinned one) and checks for a new one every
``scoring.model_check_s`` seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import redis

from engine.keys import ModelKeys

__all__ = ["ModelKeys", "ModelStore", "VersionInfo"]

#: Labelled examples read at once by a catch-up (the rest in the next read).
LABELS_READ = 1_000

KEEP_VERSIONS = 50  # published versions kept for rollback


@dataclass(frozen=True)
class VersionInfo:
    current: int
    pinned: int | None

    @property
    def serving(self) -> int:
        """The version scorers use: the pinned one if any, else the newest."""
        return self.pinned if self.pinned is not None else self.current


class ModelStore:
    """Reads and administrative writes (pin/unpin); batch writes go through the sinks."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._r = client
        self.keys = ModelKeys(prefix)

    def working_copy(self) -> bytes | None:
        return cast(bytes | None, self._r.get(self.keys.work))

    def info(self) -> VersionInfo:
        current, pinned = cast(list[Any], self._r.hmget(self.keys.meta, ["current", "pinned"]))
        return VersionInfo(int(current or 0), int(pinned) if pinned else None)

    def version_blob(self, n: int) -> bytes | None:
        return cast(bytes | None, self._r.get(self.keys.version(n)))

    def versions(self) -> dict[int, dict[str, Any]]:
        raw = cast(dict[bytes, bytes], self._r.hgetall(self.keys.versions))
        return {int(k): json.loads(v) for k, v in sorted(raw.items(), key=lambda kv: int(kv[0]))}

    def pin(self, n: int) -> None:
        """Roll back: every scorer uses version ``n`` until :meth:`unpin`."""
        if not self._r.exists(self.keys.version(n)):
            raise KeyError(n)
        self._r.hset(self.keys.meta, "pinned", str(n))

    def unpin(self) -> None:
        self._r.hdel(self.keys.meta, "pinned")

    def labels_after(self, position: str, count: int = LABELS_READ) -> list[tuple[str, bytes]]:
        """Labelled examples appended after ``position`` (exclusive), oldest first."""
        return label_rows(queue_labels_after(self._r, self.keys, position, count))


def queue_labels_after(pipe: Any, keys: ModelKeys, position: str, count: int = LABELS_READ) -> Any:
    """XRANGE of the labels after ``position`` (exclusive): on a client, its reply; on a
    pipeline, queued (the batch's transaction reads them too: ``Committer.commit``)."""
    return pipe.xrange(keys.labels, min=f"({position}", count=count)


def label_rows(rows: Any) -> list[tuple[str, bytes]]:
    """(stream id, example) of each row of :func:`queue_labels_after`'s reply (a cluster
    pipeline hands a row's fields back unparsed: a flat list of names and values)."""
    out = []
    for sid, fields in cast(list[Any], rows):
        if isinstance(fields, list):
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        out.append((sid.decode(), fields[b"l"]))
    return out


def publish_commands(
    pipe: Any, keys: ModelKeys, version: int, blob: bytes, meta: dict[str, Any]
) -> None:
    """Queue the writes that publish ``version`` (inside the batch transaction)."""
    pipe.set(keys.version(version), blob)
    pipe.hset(keys.versions, str(version), json.dumps(meta, default=str))
    pipe.hset(keys.meta, "current", version)
    old = version - KEEP_VERSIONS
    if old > 0:
        pipe.delete(keys.version(old))
        pipe.hdel(keys.versions, str(old))


__all__ += ["LABELS_READ", "label_rows", "publish_commands", "queue_labels_after"]
