"""The [delivery] section: defaults load, bad values are refused with the key, secrets hidden."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from engine.delivery import cli
from engine.errors import ConfigError
from engine.settings import load_settings


def test_defaults_load_and_an_unknown_tenant_gets_no_webhook() -> None:
    s = load_settings(environ={})
    assert s.delivery.consumer_group == "delivery"
    t = s.delivery.tenant("someone-else")
    assert t.webhook_url == "" and t.default_group == "pond"


@pytest.mark.parametrize(
    ("tenant", "message"),
    [
        ({"webhook_url": "http://x/h", "secret": "short-secret"},
         "delivery.tenants.acme.webhook_url: Value error, a webhook needs the tenant's secret"),
        ({"groups": {"a": ["x"]}, "rules": [{"group": "b"}]},
         "delivery.tenants.acme.rules: Value error, rules[0].group 'b' is not in groups"),
        ({"default_group": "nobody"}, "delivery.tenants.acme.default_group"),
        ({"groups": {"pond": ["x"]}}, "delivery.tenants.acme.groups"),
        ({"timezone": "Mars/Olympus"}, "unknown IANA time zone"),
        ({"rules": [{"group": "pond", "sources": ["tv"]}]}, "unknown source 'tv'"),
        ({"escalation": ["fire_everyone"]}, "delivery.tenants.acme.escalation.0"),
        ({"webhok_url": "http://x"}, "delivery.tenants.acme.webhok_url: unknown setting"),
    ],
)  # fmt: skip
def test_bad_tenant_config_is_refused_with_its_name(tenant: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(overrides={"delivery": {"tenants": {"acme": tenant}}}, environ={})
    assert message in str(err.value)


def test_a_secret_never_appears_in_an_error_or_a_repr() -> None:
    secret = "super-secret-value-0123"
    with pytest.raises(ConfigError) as err:
        load_settings(
            overrides={"delivery": {"tenants": {"acme": {
                "secret": secret, "webhook_url": "ftp://nope", "groups": {"g": []}}}}},
            environ={},
        )  # fmt: skip
    assert secret not in str(err.value)
    ok = load_settings(
        environ={"LEADPULSE__DELIVERY__TENANTS__ACME__SECRET": f'"{secret}"',
                 "LEADPULSE__DELIVERY__TENANTS__ACME__WEBHOOK_URL": '"https://crm.example/h"'}
    )  # fmt: skip
    assert ok.delivery.tenant("acme").secret.get_secret_value() == secret
    assert secret not in repr(ok.delivery)


def test_deliver_subcommand_parser_and_missing_redis() -> None:
    parser = argparse.ArgumentParser(prog="leadpulse")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    args = parser.parse_args(["deliver", "--consumer", "d1"])
    assert args.command == "deliver" and args.consumer == "d1"
    help_text = sub.choices["deliver"].format_help()
    assert "--redis-url" in help_text and "consumer group" in help_text


def test_deliver_without_redis_uses_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    args = argparse.Namespace(
        config=None, redis_url="", consumer="", verbose=False, data_dir=str(not_a_dir / "d")
    )
    with pytest.raises(ConfigError, match="cannot create data dir"):
        cli.run(args)
