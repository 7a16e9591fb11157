"""Stage 1: stream entries -> validated events; bad ones become dead letters with a reason."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine import identity
from engine.events import Event
from engine.settings import ValidationSettings
from engine.sinks import BatchEffects
from engine.stages.batch import Entry
from engine.streams import CONTROL
from engine.validate import Rejection, Validator

__all__ = ["Decoder", "dead_letter"]


def dead_letter(reason: str, entry: Entry) -> dict[str, Any]:
    """A dead-letter entry: the reason and (the first 4 KB of) what was sent."""
    partition, sid, fields = entry
    payload = fields.get(b"e") or fields.get(b"j") or b""
    return {"reason": reason, "payload": payload[:4096], "partition": partition, "id": sid}


class Decoder:
    """Validates the stream's payloads (msgpack ``e`` or JSON ``j``) against the contract."""

    def __init__(self, settings: ValidationSettings) -> None:
        self._validator = Validator(settings)

    def decode(self, fields: dict[bytes, bytes]) -> Event | Rejection:
        if b"e" in fields:
            return self._validator.check_bytes(fields[b"e"], "msgpack")
        if b"j" in fields:
            return self._validator.check_bytes(fields[b"j"], "json")
        if CONTROL in fields:  # an identity hand-over step (engine/identity.py)
            return identity.decode(fields[CONTROL])
        return Rejection("malformed_entry: no event field")

    def decode_all(
        self, entries: Sequence[Entry], fx: BatchEffects
    ) -> tuple[list[Event], list[Entry], int]:
        """Valid events with the entries they came from; bad ones become dead letters. The
        batch's positions move past every entry, good or bad."""
        events: list[Event] = []
        origin: list[Entry] = []
        rejected = 0
        positions, processed = fx.positions, fx.processed
        check_bytes = self._validator.check_bytes
        for entry in entries:
            partition, sid, fields = entry
            if not sid:  # a clock tick (engine/dataflow.py, cadences): not an event
                continue
            positions[partition] = sid.decode() if isinstance(sid, bytes) else sid
            processed[partition] = processed.get(partition, 0) + 1
            payload = fields.get(b"e")  # the usual field first (:meth:`decode`'s order)
            checked = self.decode(fields) if payload is None else check_bytes(payload, "msgpack")
            if isinstance(checked, Rejection):
                rejected += 1
                fx.dead_letters.append(dead_letter(checked.reason, entry))
            else:
                events.append(checked)
                origin.append(entry)
        return events, origin, rejected
