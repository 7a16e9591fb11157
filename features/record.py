"""A lead's one record: features, score record, learning moments and report marks.

Schema 2 keeps everything the engine knows of a lead in one msgpack array at
``{p}:{tenant:lead}:f`` (one key, one TTL, one SET per lead per batch):

- ``[0]``      :data:`RECORD` (2)
- ``[1:11]``   the features, as schema 1 packs them (:meth:`LeadFeatures.items`), so a
  reader of features (:func:`features.state.unpack`) reads either schema
- ``[11]``     the score record (:meth:`engine.records.ScoreRecord.items`) or nil
- ``[12]``     the learning moments, oldest first (each the msgpack blob
  ``engine/learning.py`` makes), at most ``scoring.max_snapshots``
- ``[13]``     the report marks (:meth:`engine.reporting.aggregates.LeadMark.to_list`) or nil

Schema 1 kept these in four keys (``:f`` features, ``:r`` score record, ``:n`` a list,
``:rp`` a hash), each with its own key and TTL overhead (~1.4 KB a lead at 10 events).
A lead still on that layout is read from those keys (:data:`LEGACY_PARTS`) and written
back as one record, the old keys deleted in the same transaction (``features/store.py``).
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from features.spec import FeatureSpec
from features.state import LeadFeatures, from_items

__all__ = ["LEGACY_PARTS", "RECORD", "LeadRecord", "pack_record", "unpack_record"]

RECORD = 2
#: A lead's keys before schema 2 (1: ``r``, ``n``, ``rp``; 0: ``s`` and ``h e v a x p``).
LEGACY_PARTS = ("r", "s", "n", "rp", "h", "e", "v", "a", "x", "p")


@dataclass(slots=True)
class LeadRecord:
    """A lead's stored parts besides its features (held with them by the feature store)."""

    score: list[Any] | None = None  # ScoreRecord.items(), as stored
    moments: list[bytes] = field(default_factory=list)  # learning moments, oldest first
    marks: list[Any] | None = None  # LeadMark.to_list(), as stored

    @property
    def empty(self) -> bool:
        return self.score is None and not self.moments and self.marks is None


def pack_record(spec: FeatureSpec | None, features: LeadFeatures, rest: LeadRecord) -> bytes:
    """The stored value of schema 2 (trims the features' windows first, given a spec)."""
    return msgpack.packb(
        [RECORD, *features.items(spec), rest.score, rest.moments, rest.marks], use_bin_type=True
    )


def unpack_record(blob: bytes) -> tuple[LeadFeatures, LeadRecord | None]:
    """A stored ``:f`` value: its features, and its other parts (None: schema 1, whose
    other parts are in their own keys). ``ValueError`` if unreadable."""
    try:
        r = msgpack.unpackb(blob, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"unreadable lead record: {exc}") from None
    features = from_items(r)
    if r[0] != RECORD:
        return features, None
    if len(r) != 14 or not isinstance(r[12], list):
        raise ValueError("malformed lead record")
    moments = [bytes(m) for m in r[12] if isinstance(m, bytes)]
    score = r[11] if isinstance(r[11], list) else None
    marks = r[13] if isinstance(r[13], list) else None
    return features, LeadRecord(score, moments, marks)
