"""The contract in the repository: config/event.schema.json and the README's "Event
contract v1" section never drift from engine/events.py, and the schema accepts what
the validator accepts (checked with ``jsonschema`` when installed, otherwise by a small
checker of the keywords the schema uses)."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import contract
from engine import events as ev
from engine.events import Event
from engine.settings import ValidationSettings, load_settings
from engine.validate import Validator

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "event.schema.json"
NOW = 1_767_607_200.0  # 2026-01-05 10:00 UTC


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else len(text)]


def test_the_committed_schema_is_the_generated_one() -> None:
    committed = SCHEMA.read_text()
    generated = json.dumps(contract.schema(), indent=2, ensure_ascii=False) + "\n"
    assert committed == generated, "run: python -m engine.contract > config/event.schema.json"


def test_the_schema_covers_every_field_type_and_enum_of_events_py() -> None:
    s = json.loads(SCHEMA.read_text())
    names = [f.name for f in dataclasses.fields(Event)]
    assert list(s["properties"]) == names
    assert set(contract.FIELDS) == set(names)
    assert set(s["properties"]["type"]["enum"]) == ev.EVENT_TYPES
    grouped = [t for types in s["x-type-groups"].values() for t in types]
    assert sorted(grouped) == sorted(ev.EVENT_TYPES)  # every type in exactly one group
    for name, allowed in (("source", ev.SOURCES), ("side", ev.SIDES),
                          ("timeline", ev.TIMELINES), ("channel", ev.CHANNELS)):  # fmt: skip
        assert set(s["properties"][name]["enum"]) == allowed | {""}
    shipped = load_settings(environ={}).validation  # config/default.toml's bounds
    assert s["properties"]["event_id"]["maxLength"] == shipped.max_id_len
    assert s["properties"]["props"]["maxProperties"] == shipped.max_props
    assert s["properties"]["ts"]["oneOf"][1]["minimum"] == shipped.min_ts


def test_the_readme_lists_every_type_and_field_and_stands_alone() -> None:
    section = _section("Event contract v1")
    for name in [f.name for f in dataclasses.fields(Event)] + sorted(ev.EVENT_TYPES):
        assert f"`{name}`" in section, name
    for key in contract.PROPS:
        assert f"`{key}`" in section, key
    assert contract.markdown() in section  # the tables are the generated ones
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme and "DESIGN.md" not in readme


# -- the schema accepts what the validator accepts ------------------------------------------


def _types_ok(value: Any, want: str | list[str]) -> bool:
    kinds = {"string": str, "integer": int, "number": (int, float), "object": dict,
             "array": list, "boolean": bool}  # fmt: skip
    wanted = [want] if isinstance(want, str) else want
    if isinstance(value, bool):
        return "boolean" in wanted
    return any(isinstance(value, kinds[w]) for w in wanted)  # type: ignore[arg-type]


def _errors(value: Any, s: dict[str, Any] | bool) -> list[str]:
    """A checker for the keywords config/event.schema.json uses (when jsonschema is not
    installed); returns what fails."""
    if s is True or s is False:
        return [] if s else ["false schema"]
    out: list[str] = []
    if "type" in s and not _types_ok(value, s["type"]):
        return [f"type {s['type']}"]
    if "enum" in s and value not in s["enum"]:
        out.append("enum")
    out += _scalar_errors(value, s)
    if "oneOf" in s and sum(not _errors(value, x) for x in s["oneOf"]) != 1:
        out.append("oneOf")
    if "anyOf" in s and not any(not _errors(value, x) for x in s["anyOf"]):
        out.append("anyOf")
    if "not" in s and not _errors(value, s["not"]):
        out.append("not")
    if isinstance(value, dict):
        out += _object_errors(value, s)
    return out


def _scalar_errors(value: Any, s: dict[str, Any]) -> list[str]:
    """A string's length and pattern; a number's range."""
    out: list[str] = []
    if isinstance(value, str):
        if len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", 1 << 30):
            out.append("length")
        if "pattern" in s and not re.search(s["pattern"], value):
            out.append("pattern")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < s.get("minimum", float("-inf")) or value > s.get("maximum", float("inf")):
            out.append("range")
    return out


def _object_errors(value: dict[str, Any], s: dict[str, Any]) -> list[str]:
    out = [f"required {k}" for k in s.get("required", []) if k not in value]
    if len(value) > s.get("maxProperties", 1 << 30):
        out.append("maxProperties")
    props = s.get("properties", {})
    for k, v in value.items():
        if "propertyNames" in s:
            out += _errors(k, s["propertyNames"])
        sub = props.get(k, s.get("additionalProperties", True))
        out += [f"{k}: {e}" for e in _errors(v, sub)]
    return out


def _check(value: Any) -> list[str]:
    s = json.loads(SCHEMA.read_text())
    try:
        import jsonschema  # only if already installed
    except ImportError:
        return _errors(value, s)
    return [e.message for e in jsonschema.Draft202012Validator(s).iter_errors(value)]


GOOD = [
    {"event_id": "e1", "lead_id": "L1", "type": "property_view", "ts": "2026-01-05T10:00:00Z",
     "property_id": "P1", "price": 450_000, "area": "94110", "dwell_s": 35.5},
    {"event_id": 7, "visitor_id": "v-9", "type": "page_view", "ts": NOW - 60},
    {"event_id": "e2", "lead_id": "~v-9", "type": "showing_request", "ts": "2026-01-05 09:00+01:00",
     "source": "portal", "side": "buyer", "timeline": "0-3m", "tenant": "acme",
     "props": {"address": "12 Elm St", "title": "Sunny 3-bed", "utm": "x"}},
    {"event_id": "e3", "lead_id": "L1", "type": "reply", "ts": NOW, "channel": "sms",
     "props": {"text": "STOP"}, "campaign": "spring"},
    {"event_id": "e4", "lead_id": "L1", "type": "agent_contact", "ts": NOW, "agent_id": "cy",
     "channel": "call", "side": "", "source": None},
]  # fmt: skip
BAD = [
    {"lead_id": "L1", "type": "property_view", "ts": NOW},  # no event_id
    {"event_id": "e", "type": "property_view", "ts": NOW},  # neither lead nor visitor
    {"event_id": "e", "lead_id": "L1", "type": "teleport", "ts": NOW},
    {"event_id": "e", "lead_id": "L1", "type": "search", "ts": "2026-01-05T10:00:00"},
    {"event_id": "e", "lead_id": "L 1", "type": "search", "ts": NOW},
    {"event_id": "e", "lead_id": "L1", "type": "search", "ts": NOW, "side": "renter"},
    {"event_id": "e", "lead_id": "L1", "type": "search", "ts": NOW, "price": -1},
    {"event_id": "e", "lead_id": "L1", "type": "search", "ts": 12},
    {"event_id": "e", "lead_id": "L1", "type": "search", "ts": NOW, "props": {"a": "x" * 300}},
    {"event_id": "x" * 129, "lead_id": "L1", "type": "search", "ts": NOW},
    {"event_id": "e", "lead_id": "L1", "type": "search", "ts": NOW, "tenant": "a b"},
]


def _validator() -> Validator:
    return Validator(ValidationSettings.model_validate({}), now=NOW)


@pytest.mark.parametrize("event", GOOD)
def test_valid_events_pass_the_schema_and_the_validator(event: dict[str, Any]) -> None:
    clean = {k: v for k, v in event.items() if v is not None}
    assert isinstance(_validator().check(event), Event)
    assert _check(clean) == []


@pytest.mark.parametrize("event", BAD)
def test_invalid_events_fail_both(event: dict[str, Any]) -> None:
    assert not isinstance(_validator().check(event), Event)
    assert _check(event) != []


_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,40}", fullmatch=True)
_TS = st.one_of(
    st.floats(min_value=946_684_800, max_value=NOW, allow_nan=False),
    st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2025, 12, 31)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "+02:00"
    ),
)


@st.composite
def _events(draw: st.DrawFn) -> dict[str, Any]:
    e: dict[str, Any] = {"event_id": draw(_ID), "lead_id": draw(_ID), "ts": draw(_TS),
                         "type": draw(st.sampled_from(sorted(ev.EVENT_TYPES)))}  # fmt: skip
    for name, allowed in (("source", ev.SOURCES), ("side", ev.SIDES),
                          ("timeline", ev.TIMELINES), ("channel", ev.CHANNELS)):  # fmt: skip
        if draw(st.booleans()):
            e[name] = draw(st.sampled_from(sorted(allowed)))
    if draw(st.booleans()):
        e["price"] = draw(st.floats(min_value=0, max_value=1e10))
    if draw(st.booleans()):
        e["props"] = draw(st.dictionaries(st.text(max_size=20), st.text(max_size=300), max_size=40))
    return e


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events())
def test_the_schema_and_the_validator_agree_on_generated_events(event: dict[str, Any]) -> None:
    accepted = isinstance(_validator().check(event), Event)
    if accepted:
        assert _check(event) == [], event
    else:  # the validator's reasons the schema can state: too many props, too long a value
        props = event.get("props", {})
        too_long = any(len(v) > 256 or len(k) > 128 for k, v in props.items())
        surrogate = any(re.search(r"[\ud800-\udfff]", k + v) for k, v in props.items())
        assert len(props) > 32 or too_long or surrogate, event
        if not surrogate:
            assert _check(event) != [], event


def test_the_readme_example_is_a_valid_event() -> None:
    block = _section("Event contract v1").split("```json", 1)[1].split("```", 1)[0]
    example = json.loads(block)
    assert isinstance(_validator().check(example), Event)
    assert _check(example) == []
