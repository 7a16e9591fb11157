"""``leadpulse deliver``: the alert consumer, webhooks and SLA clocks until SIGINT/SIGTERM.

Wiring (engine/cli.py)::

    from engine.delivery import cli as deliver_cli
    deliver_cli.add_parser(sub)                      # in _parser(), after "replay"
    if args.command == "deliver":                    # in main(), inside the try
        return deliver_cli.run(args)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "deliver",
        help="deliver alerts: webhooks, SSE feed, routing and SLA clocks, until stopped",
        description="Consume the alerts stream in a consumer group against REDIS_URL (or "
        "redis.url in config): route each alert to an agent, gate consent, attach the "
        "script, publish it to the tenant's SSE feed, send signed webhooks with retries "
        "(ACK after delivery), and run SLA clocks and claim timeouts with escalation. "
        "Serves Prometheus metrics on delivery.metrics_port.",
    )
    p.add_argument(
        "--consumer",
        default="",
        help="consumer name in the group (default: host-pid; reuse a name to take over "
        "its pending alerts after a crash)",
    )
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def run(args: argparse.Namespace) -> int:
    from engine.delivery.consumer import DeliveryService
    from engine.delivery.metrics import DeliveryMetrics, serve
    from engine.errors import ConfigError
    from engine.redis_client import connect
    from engine.settings import load_settings

    settings = load_settings(args.config)
    url = args.redis_url or settings.redis_url()
    if not url:
        raise ConfigError("redis.url: `deliver` needs REDIS_URL or --redis-url")
    client = connect(url, settings.redis.retries, settings.redis.socket_timeout_s)
    metrics = DeliveryMetrics.create()
    if settings.delivery.metrics_port:
        serve(metrics, settings.delivery.metrics_port)
    consumer = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
    service = DeliveryService(settings, client, metrics, consumer=consumer)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        log.info("delivering alerts as %s in group %s", consumer, settings.delivery.consumer_group)
        await service.run(stop)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(main())
    return 0
