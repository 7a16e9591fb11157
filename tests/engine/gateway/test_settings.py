"""The [gateway] config section: defaults, hashed keys only, secrets, env-added keys."""

from __future__ import annotations

import tomllib
from typing import Any

import pytest

from engine.errors import ConfigError
from engine.gateway.auth import key_digest
from engine.settings import DEFAULT_CONFIG_PATH, load_settings


def test_defaults_match_default_toml() -> None:
    s = load_settings(environ={}).gateway
    toml = tomllib.loads(DEFAULT_CONFIG_PATH.read_text())["gateway"]
    assert (s.port, s.max_events, s.max_body_bytes) == (
        toml["port"], toml["max_events"], toml["max_body_bytes"],
    )  # fmt: skip
    assert s.api_keys == {} and s.contact_hash_key.get_secret_value() == ""
    assert "SecretStr" in repr(s.contact_hash_key)


def test_api_key_added_from_the_environment() -> None:
    digest = key_digest("lpk_x")
    env = {
        f"LEADPULSE__GATEWAY__API_KEYS__{digest.upper()}": '{ tenant = "acme", role = "tracker" }',
        "LEADPULSE__GATEWAY__CONTACT_HASH_KEY": "Zx8-" + "q" * 40,
    }
    s = load_settings(environ=env).gateway
    assert s.api_keys[digest].tenant == "acme" and s.api_keys[digest].role == "tracker"
    assert s.contact_hash_key.get_secret_value() == "Zx8-" + "q" * 40
    assert "qqqq" not in repr(s) and "qqqq" not in str(s)


@pytest.mark.parametrize(
    "gateway,where",
    [
        ({"api_keys": {"lpk_plain_key": {"tenant": "a"}}}, "gateway.api_keys"),
        ({"api_keys": {key_digest("k"): {"tenant": "a b"}}}, "gateway.api_keys"),
        ({"api_keys": {key_digest("k"): {"tenant": "a", "role": "admin"}}}, "gateway.api_keys"),
        ({"api_keys": {key_digest("k"): {"tenant": "a", "origins": ["evil"]}}}, "origins"),
        ({"api_keys": {key_digest("k"): {"tenant": "a", "scope": "x"}}}, "unknown setting"),
        ({"contact_hash_key": "short"}, "gateway.contact_hash_key"),
        ({"cors_origins": ["not a url"]}, "gateway.cors_origins"),
        ({"cors_origins": ["*"]}, "gateway.cors_origins"),
        ({"max_events": 0}, "gateway.max_events"),
        ({"rate_per_s": 0}, "gateway.rate_per_s"),
        ({"default_country_code": "+1"}, "gateway.default_country_code"),
        ({"port": 70_000}, "gateway.port"),
        ({"typo": 1}, "gateway.typo: unknown setting"),
    ],
)
def test_bad_gateway_values_are_refused_naming_the_key(gateway: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_settings(overrides={"gateway": gateway}, environ={})


def test_plain_key_in_config_says_to_hash_it() -> None:
    with pytest.raises(ConfigError, match="sha256 hex digest"):
        load_settings(overrides={"gateway": {"api_keys": {"lpk_abc": {"tenant": "a"}}}}, environ={})
