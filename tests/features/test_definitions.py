"""Feature definitions: the compact copy of a feature vector a learning moment keeps."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from features.definitions import NUMERIC, PROFILE_BUILTIN, pack_features, unpack_features


def _packed_as_it_was(features: Mapping[str, Any]) -> list[Any]:
    """``pack_features`` before it read the numbers at once (the reference for the bytes)."""
    out: list[Any] = []
    for n in NUMERIC:
        v = float(features.get(n, 0.0))
        out.append(int(v) if v.is_integer() and -(2**31) < v < 2**31 else v)
    out += [str(features.get(c) or "unknown") for c in PROFILE_BUILTIN]
    props = {k: str(v) for k, v in features.items() if k.startswith("props.")}
    if props:
        out.append(props)
    return out


_NUMBER = st.one_of(
    st.integers(-3, 50), st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 2.0**31, -(2.0**31), 2.0**31 - 1, 1e300, float("inf")]),
)  # fmt: skip


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.dictionaries(st.sampled_from(NUMERIC), _NUMBER, min_size=len(NUMERIC) - 2),
    st.dictionaries(st.sampled_from(PROFILE_BUILTIN), st.sampled_from(["", "x", "unknown"])),
    st.dictionaries(st.sampled_from(["props.a", "props.b", "propsx", "other"]), st.text()),
    st.booleans(),
)
def test_a_moment_keeps_the_bytes_it_kept(
    numbers: dict[str, Any], profile: dict[str, str], props: dict[str, str], proxy: bool
) -> None:
    """Every number present (the engine's vectors) or not, a dict or another mapping."""
    features: Mapping[str, Any] = {**numbers, **profile, **props}
    if proxy:
        features = MappingProxyType(dict(features))
    packed = pack_features(features)
    assert msgpack.packb(packed) == msgpack.packb(_packed_as_it_was(features))
    assert unpack_features(packed).keys() >= set(NUMERIC)
