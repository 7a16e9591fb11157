"""Decode and validate contract-v1 events; never raise on bad input.

``check(payload)`` returns either an :class:`~engine.events.Event` or a
:class:`Rejection` with one stable reason code (``missing_field:lead_id``,
``unknown_type:foo``, ``too_long:event_id`` ...) so a bad event is dead-lettered
with the reason and the flow moves on. ``parse`` is the raising variant for
callers that want an exception (:class:`InvalidEventError`).

Lead and visitor ids end up in Redis key names, URL paths (``/v1/leads/{id}/...``)
and agents' screens, so they have an alphabet (:data:`ID_CHARS`): ASCII letters,
digits and ``_ . : -``, at least one letter or digit, and for ``lead_id`` an optional
leading ``~`` (a visitor-level lead). Anything else (``/``, spaces, ``@``, control,
zero-width, bidi-override or fullwidth characters, a bare ``.`` / ``..``) is refused
with ``bad_value:<field> ...`` saying which character (:func:`id_problem`).
"""

from __future__ import annotations

import json
import math
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgpack

from engine.errors import InvalidEventError
from engine.events import CHANNELS, EVENT_TYPES, SIDES, SOURCES, TIMELINES, Event
from engine.settings import ValidationSettings

__all__ = ["ID_CHARS", "Rejection", "Validator", "decode", "id_problem"]

#: The characters of a lead or visitor id (plus a leading ``~`` on a visitor-level lead).
ID_CHARS = "A-Z a-z 0-9 _ . : -"
_ID = re.compile(r"~?[A-Za-z0-9_.:-]+")
_ALNUM = re.compile(r"[A-Za-z0-9]")
#: A valid id in one match (what :func:`id_problem` accepts; its reasons name the rest)
_VALID_ID = re.compile(r"~?[A-Za-z0-9_.:-]*[A-Za-z0-9][A-Za-z0-9_.:-]*")
_PHONEISH = re.compile(r"\+?[\d ().-]{7,24}")  # refused anyway (space, + or parentheses)
_ID_FIELDS = frozenset({"lead_id", "visitor_id"})

_BAD_CHARS = re.compile(r"[\x00-\x1f\ud800-\udfff]")  # control chars, lone surrogates
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # from JSON "\ud800": not encodable as UTF-8
_TENANT = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_KNOWN = frozenset(
    {
        "event_id", "lead_id", "type", "ts", "tenant", "visitor_id", "property_id", "price",
        "area", "source", "side", "timeline", "channel", "dwell_s", "agent_id", "props",
    }
)  # fmt: skip
_ENUMS: dict[str, frozenset[str]] = {
    "source": SOURCES,
    "side": SIDES,
    "timeline": TIMELINES,
    "channel": CHANNELS,
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """A payload that is not a valid event, and why (a stable, short reason code)."""

    reason: str
    raw: bytes | dict[str, Any] | None = None


def id_problem(value: str, field: str = "lead_id") -> str | None:
    """Why ``value`` is not a valid lead (or visitor) id, or None if it is one.

    ``value`` is non-empty and within the length limit (checked by the caller).
    """
    allow_tilde = field == "lead_id"
    if _ID.fullmatch(value) and (allow_tilde or not value.startswith("~")):
        if _ALNUM.search(value):
            return None
        return f"bad_value:{field} needs a letter or digit (not only dots)"
    if "@" in value or "\uff20" in value or "\ufe6b" in value:
        return (f"bad_value:{field} looks like an email; send an opaque id and put the "
                "email in props.email")  # fmt: skip
    if _PHONEISH.fullmatch(value.strip()):
        return (f"bad_value:{field} looks like a phone number; send an opaque id and put "
                "the number in props.phone")  # fmt: skip
    body = value[1:] if allow_tilde and value.startswith("~") else value
    bad = next((c for c in body if not _ID.fullmatch(c) or c == "~"), None)
    if bad is None:  # "~" alone: a visitor mark with no id after it
        return f"bad_value:{field} needs a letter or digit after '~'"
    what = _describe(bad)
    return f"bad_value:{field} has {what}; ids use only {ID_CHARS}"


def _describe(c: str) -> str:
    """A character in words, safe to echo (never the character itself when invisible)."""
    if c == " ":
        return "a space"
    if c < " " or c == "\x7f":
        return f"a control character (U+{ord(c):04X})"
    category = unicodedata.category(c)
    if category in ("Cf", "Cs", "Co", "Cn", "Zl", "Zp") or c.isspace():
        return f"an invisible or formatting character (U+{ord(c):04X})"
    if not c.isascii():
        name = unicodedata.name(c, "non-ASCII")
        return f"a non-ASCII character (U+{ord(c):04X} {name.lower()})"
    return f"the character {c!r}"


def decode(payload: bytes | str, content_type: str = "msgpack") -> Any:
    """Bytes to a Python object; raises :class:`InvalidEventError` when malformed."""
    if content_type == "json":
        try:
            return json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise InvalidEventError(f"malformed_json: {exc.__class__.__name__}") from None
    if isinstance(payload, str):
        raise InvalidEventError("malformed_msgpack: expected bytes")
    try:
        # strict_map_key: only str/bytes keys; limits default to the payload's length
        return msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
            RecursionError) as exc:  # fmt: skip
        raise InvalidEventError(f"malformed_msgpack: {exc.__class__.__name__}") from None


class Validator:
    """Checks payloads against contract v1 with the configured bounds."""

    def __init__(self, settings: ValidationSettings, now: float | None = None) -> None:
        self._s = settings
        self._now = now  # fixed clock for tests; None means wall time at check
        self._tenants: set[str] = set()

    def check_bytes(self, payload: bytes, content_type: str = "msgpack") -> Event | Rejection:
        """Decode then validate; a size or decode failure is a rejection, not an error."""
        if len(payload) > self._s.max_event_bytes:
            return Rejection(f"too_large: {len(payload)} bytes > {self._s.max_event_bytes}")
        try:
            obj = decode(payload, content_type)
        except InvalidEventError as exc:
            return Rejection(exc.reason, payload)
        return self.check(obj)

    def check(self, obj: Any) -> Event | Rejection:
        """Validate a decoded object; returns the event or the first reason it fails."""
        try:
            return self._quick(obj) or self.parse(obj)
        except InvalidEventError as exc:
            return Rejection(exc.reason, obj if isinstance(obj, dict) else None)
        except RecursionError:
            return Rejection("too_deep: nesting too deep")

    def parse(self, obj: Any) -> Event:
        """Validate a decoded object or raise :class:`InvalidEventError`."""
        if not isinstance(obj, dict):
            raise InvalidEventError(f"not_a_map: got {type(obj).__name__}")
        event_id = self._ident(obj, "event_id", required=True)
        visitor_id = self._ident(obj, "visitor_id")
        lead_id = self._lead_of(obj, visitor_id)
        etype = obj.get("type")
        if etype is None:
            raise InvalidEventError("missing_field:type")
        if not isinstance(etype, str):
            raise InvalidEventError(f"wrong_type:type must be a string, got {type(etype).__name__}")
        if etype not in EVENT_TYPES:
            raise InvalidEventError(f"unknown_type:{_shown(etype)}")
        ts = self._ts(obj.get("ts"))
        tenant = obj.get("tenant")
        if tenant is None or tenant == "":
            tenant = "default"
        if not isinstance(tenant, str) or (
            tenant not in self._tenants and not _TENANT.fullmatch(tenant)
        ):
            raise InvalidEventError("bad_value:tenant must match [A-Za-z0-9_.-]{1,64}")
        if len(self._tenants) < 1_024:  # the valid tenants seen: not matched again
            self._tenants.add(tenant)
        fields = self._fields(obj)  # before props: the first problem found is the one named
        return Event(
            event_id=event_id, lead_id=lead_id, type=etype, ts=ts, tenant=tenant,
            visitor_id=visitor_id, props=self._props(obj), **fields,
        )  # fmt: skip

    def _quick(self, obj: Any) -> Event | None:
        """The common event (known fields, each of its usual type and plainly valid, a
        tenant seen before) in one pass; None sends anything else through :meth:`parse`,
        which gives the same event for what this accepts (and names the problem if any)."""
        if obj.__class__ is not dict or not _KNOWN.issuperset(obj):
            return None
        get: Callable[[str], Any] = obj.get
        ids = self._quick_ids(get("event_id"), get("visitor_id"), get("lead_id"))
        etype, tenant, ts = get("type"), get("tenant"), get("ts")
        if tenant is None or tenant == "":  # (not ``or``: a 0 or a False is no tenant)
            tenant = "default"
        if ids is None or etype.__class__ is not str or etype not in EVENT_TYPES:
            return None
        if tenant.__class__ is not str or tenant not in self._tenants or not self._quick_ts(ts):
            return None
        texts = self._quick_texts(obj)
        price, dwell = get("price"), get("dwell_s")
        if texts is None or not (_plain_number(price, 1e10) and _plain_number(dwell, 86_400.0)):
            return None
        props = self._props(obj) if "props" in obj else {}
        return Event(
            ids[0], ids[2], etype, float(ts), tenant, ids[1], texts[0],
            0.0 if price is None else float(price), texts[1], texts[3], texts[4], texts[5],
            texts[6], 0.0 if dwell is None else float(dwell), texts[2], props,
        )  # fmt: skip

    def _quick_ids(
        self, event_id: Any, visitor_id: Any, lead_id: Any
    ) -> tuple[str, str, str] | None:
        """(event id, visitor id, lead id) when each is plainly valid (an anonymous
        browser's lead is ``~visitor``); None otherwise."""
        short = self._short
        if not short(event_id):
            return None
        if visitor_id is None or visitor_id == "":
            visitor_id = ""
        elif not (short(visitor_id) and visitor_id[0] != "~" and _VALID_ID.fullmatch(visitor_id)):
            return None
        if lead_id is None or lead_id == "":
            if not visitor_id or len(visitor_id) >= self._s.max_id_len:
                return None
            lead_id = f"~{visitor_id}"
        elif not (short(lead_id) and _VALID_ID.fullmatch(lead_id)):
            return None
        return event_id, visitor_id, lead_id

    def _quick_ts(self, ts: Any) -> bool:
        """Epoch seconds (int or float) within [min_ts, now + skew] (NaN is not)."""
        if ts.__class__ is not float and ts.__class__ is not int:
            return False
        now = self._now if self._now is not None else time.time()
        return bool(self._s.min_ts <= ts <= now + self._s.max_future_skew_s)

    def _quick_texts(self, obj: dict[str, Any]) -> list[str] | None:
        """property_id, area, agent_id, then the enums (:data:`_QUICK_TEXT`); None if any
        is not plainly valid (absent or empty reads as ""). Only the fields present are
        looked at (most events carry two or three of the seven)."""
        out = ["", "", "", "", "", "", ""]
        for name in obj.keys() & _QUICK_INDEX.keys():
            value = obj[name]
            if value is None or value == "":
                continue
            i, allowed = _QUICK_INDEX[name]
            if value.__class__ is str and (value in allowed if allowed else self._short(value)):
                out[i] = value
            else:
                return None
        return out

    def _short(self, value: Any) -> bool:
        """A non-empty string of printable ASCII within the id length (no further check)."""
        return (
            value.__class__ is str
            and 0 < len(value) <= self._s.max_id_len
            and value.isascii()
            and value.isprintable()
        )

    def _lead_of(self, obj: dict[str, Any], visitor_id: str) -> str:
        """The lead id, or ``~visitor`` for an anonymous browser (its own lead until
        ``identify``)."""
        lead_id = self._ident(obj, "lead_id")
        if lead_id:
            return lead_id
        if not visitor_id:
            raise InvalidEventError("missing_field:lead_id (or visitor_id)")
        if len(visitor_id) + 1 > self._s.max_id_len:
            raise InvalidEventError(f"too_long:visitor_id is over {self._s.max_id_len - 1} chars")
        return f"~{visitor_id}"

    def _fields(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The optional typed fields: ids, enums, numbers."""
        fields: dict[str, Any] = {}
        for name in ("property_id", "area", "agent_id"):
            fields[name] = self._ident(obj, name)
        for name, allowed in _ENUMS.items():
            value = obj.get(name)
            if value is None or value == "":
                fields[name] = ""
            elif not isinstance(value, str):
                raise InvalidEventError(f"wrong_type:{name} must be a string")
            elif value not in allowed:
                raise InvalidEventError(f"bad_value:{name} must be one of {sorted(allowed)}")
            else:
                fields[name] = value
        fields["price"] = self._number(obj, "price", 0.0, 1e10)
        fields["dwell_s"] = self._number(obj, "dwell_s", 0.0, 86_400.0)
        return fields

    def _props(self, obj: dict[str, Any]) -> dict[str, Any]:
        """``props`` plus unknown top-level fields (kept, ignored by scoring), bounded."""
        s = self._s
        props = obj.get("props", {})
        if props is None:
            props = {}
        if not isinstance(props, dict):
            raise InvalidEventError("wrong_type:props must be a map")
        extras = {} if _KNOWN.issuperset(obj) else {k: v for k, v in obj.items() if k not in _KNOWN}
        if extras:
            props = {**props, **extras}
        if len(props) > s.max_props:
            raise InvalidEventError(f"too_many:props has {len(props)} keys > {s.max_props}")
        for key, value in props.items():
            self._prop(key, value)
        return props

    def _prop(self, key: Any, value: Any) -> None:
        """One ``props`` entry: a short valid key; a string value within bounds and valid
        Unicode; a finite float."""
        if not isinstance(key, str) or len(key) > self._s.max_id_len:
            raise InvalidEventError("bad_value:props keys must be short strings")
        if not key.isascii() and _SURROGATE.search(key):
            raise InvalidEventError("bad_value:props keys must be valid Unicode")
        if isinstance(value, str):
            if len(value) > self._s.max_string_len:
                raise InvalidEventError(f"too_long:props.{_shown(key)}")
            if not value.isascii() and _SURROGATE.search(value):
                raise InvalidEventError(f"bad_value:props.{_shown(key)} is not valid Unicode")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEventError(f"bad_value:props.{_shown(key)} must be finite")

    def _ident(self, obj: dict[str, Any], name: str, required: bool = False) -> str:
        value = obj.get(name)
        if (
            value.__class__ is str
            and value
            and len(value) <= self._s.max_id_len
            and value.isascii()
            and value.isprintable()  # printable ASCII: no control character, no surrogate
        ):  # the common case, decided at once (anything else: the checks below)
            if name not in _ID_FIELDS or (
                _VALID_ID.fullmatch(value) and (name == "lead_id" or value[0] != "~")
            ):
                return value
            problem = id_problem(value, name)
            if problem:
                raise InvalidEventError(problem)
            return value
        if value is None or value == "":
            if required:
                raise InvalidEventError(f"missing_field:{name}")
            return ""
        return self._ident_checked(value, name)

    def _ident_checked(self, value: Any, name: str) -> str:
        """An id field that is not plainly valid: a string or an int as text, or the problem."""
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise InvalidEventError(f"wrong_type:{name} must be a string")
        try:
            value = str(value)
        except ValueError:  # an int of more than sys.get_int_max_str_digits() digits
            raise InvalidEventError(f"too_long:{name} is over {self._s.max_id_len} chars") from None
        if len(value) > self._s.max_id_len:
            raise InvalidEventError(f"too_long:{name} is {len(value)} chars > {self._s.max_id_len}")
        bad = _BAD_CHARS.search(value)
        if bad:
            what = "control characters" if bad[0] < " " else "a lone surrogate (not Unicode)"
            raise InvalidEventError(f"bad_value:{name} has {what}")
        if name in _ID_FIELDS:
            problem = id_problem(value, name)
            if problem:
                raise InvalidEventError(problem)
        return value

    def _number(self, obj: dict[str, Any], name: str, lo: float, hi: float) -> float:
        value = obj.get(name)
        if value is None:
            return 0.0
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidEventError(f"wrong_type:{name} must be a number")
        try:
            value = float(value)
        except OverflowError:  # a JSON integer too big for a float
            raise InvalidEventError(f"bad_value:{name} must be within [{lo:g}, {hi:g}]") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise InvalidEventError(f"bad_value:{name} must be within [{lo:g}, {hi:g}]")
        return value

    def _ts(self, value: Any) -> float:
        """Event time in epoch seconds: finite, not before ``min_ts``, not in the future
        beyond the allowed skew."""
        ts = self._ts_value(value)
        if not math.isfinite(ts):
            raise InvalidEventError("bad_value:ts must be finite")
        if ts < self._s.min_ts:
            raise InvalidEventError("bad_value:ts is too far in the past")
        now = self._now if self._now is not None else time.time()
        if ts > now + self._s.max_future_skew_s:
            raise InvalidEventError("bad_value:ts is in the future")
        return ts

    @staticmethod
    def _ts_value(value: Any) -> float:
        """``ts`` as epoch seconds: a number, or ISO-8601 text with a UTC offset."""
        if value is None:
            raise InvalidEventError("missing_field:ts")
        if isinstance(value, bool):
            raise InvalidEventError("wrong_type:ts must be ISO-8601 or epoch seconds")
        if isinstance(value, int | float):
            try:
                ts = float(value)
            except OverflowError:
                raise InvalidEventError("bad_value:ts is out of range") from None
        elif isinstance(value, str):
            if len(value) > 40:
                raise InvalidEventError("bad_value:ts is not ISO-8601")
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                raise InvalidEventError("bad_value:ts is not ISO-8601") from None
            if parsed.tzinfo is None:
                raise InvalidEventError("bad_value:ts needs a UTC offset")
            ts = parsed.timestamp()
        else:
            raise InvalidEventError("wrong_type:ts must be ISO-8601 or epoch seconds")
        return ts


#: The optional text fields :meth:`Validator._quick` reads: ids, then the enums in
#: :data:`_ENUMS` order (``Event``'s own order is kept where it is built).
_QUICK_TEXT: tuple[tuple[str, frozenset[str]], ...] = (
    ("property_id", frozenset()), ("area", frozenset()), ("agent_id", frozenset()),
    *_ENUMS.items(),
)  # fmt: skip
#: name -> (its place in :data:`_QUICK_TEXT`, the values allowed; empty: an id-like text)
_QUICK_INDEX = {name: (i, allowed) for i, (name, allowed) in enumerate(_QUICK_TEXT)}


def _plain_number(value: Any, hi: float) -> bool:
    """None, or an int or float (never a bool) within [0, hi]: what ``_number`` accepts as is."""
    if value is None:
        return True
    cls = value.__class__
    return (cls is float or cls is int) and 0.0 <= value <= hi


def _shown(text: str) -> str:
    """At most 40 characters of a caller's string for a reason code, always UTF-8 encodable
    (a lone surrogate from a JSON ``\\ud800`` escape becomes ``?``)."""
    return text[:40].encode("utf-8", "replace").decode()
