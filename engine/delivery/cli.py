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
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from engine.up import add_data_dir

__all__ = ["add_parser", "backlog", "health", "run"]

log = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "deliver",
        help="deliver alerts: webhooks, SSE feed, routing and SLA clocks, until stopped",
        description="Consume the alerts stream in a consumer group against REDIS_URL (or "
        "redis.url in config; without either, the data dir's embedded server and its "
        "agents, as `leadpulse up` makes them): route each alert to an agent, gate "
        "consent, attach the script, publish it to the tenant's SSE feed, send signed "
        "webhooks with retries (ACK after delivery), and run SLA clocks and claim "
        "timeouts with escalation. "
        "Serves Prometheus metrics and a JSON /healthz on delivery.metrics_port.",
    )
    p.add_argument(
        "--consumer",
        default="",
        help="consumer name in the group (default: host-pid; reuse a name to take over "
        "its pending alerts after a crash)",
    )
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    add_data_dir(p)
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def run(args: argparse.Namespace) -> int:
    from engine.redis_client import redis_for
    from engine.settings import load_settings

    settings = load_settings(args.config)
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir)
    try:
        if local is not None:
            from engine.up import local_overrides

            settings = load_settings(
                args.config, overrides=local_overrides(settings, args.data_dir)
            )
        return _deliver(args, settings, url, local is not None)
    finally:
        if local is not None:
            local.release()


def health(client: Any) -> Callable[[], tuple[bool, dict[str, Any]]]:
    """``/healthz`` of deliver: Redis answers a PING (200), or why not (503)."""

    def report() -> tuple[bool, dict[str, Any]]:
        try:
            client.ping()
        except RedisError as exc:
            return False, {"status": "unavailable", "redis": type(exc).__name__}
        return True, {"status": "ok", "redis": "ok"}

    return report


def backlog(client: Any, streams: Sequence[str], group: str) -> Callable[[], float]:
    """``leadpulse_delivery_consumer_lag`` read at scrape time: the group's ``lag`` from
    XINFO GROUPS (alerts not read yet), summed over the alerts streams (one per shard in
    the slot-per-partition key layout); a stream's last known value while Redis does not
    say."""
    last = dict.fromkeys(streams, 0.0)

    def sample() -> float:
        for stream in streams:
            try:
                for g in client.xinfo_groups(stream):
                    name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
                    if name == group and g.get("lag") is not None:
                        last[stream] = float(g["lag"])
            except RedisError:
                pass
        return sum(last.values())

    return sample


def _deliver(args: argparse.Namespace, settings: Any, url: str, local: bool) -> int:
    from engine.migrate_cli import check_layout
    from engine.redis_client import connect, redact_url
    from engine.up import start_line

    client = connect(url, settings.redis.retries, settings.redis.socket_timeout_s)
    check_layout(client, settings)
    from engine.delivery.consumer import DeliveryService
    from engine.delivery.metrics import DeliveryMetrics
    from engine.metrics import serve_http
    from engine.shards import alert_streams

    metrics = DeliveryMetrics.create()
    port = settings.delivery.metrics_port
    if port:
        probe = connect(url, 0, 1.0)  # its own short-timeout client: /healthz never hangs
        serve_http(metrics.registry, port, health(probe), settings.metrics.host,
                   what="delivery.metrics_port")  # fmt: skip
    consumer = args.consumer or f"{socket.gethostname()}-{os.getpid()}"
    service = DeliveryService(settings, client, metrics, consumer=consumer)
    if port:  # the backlog as of each scrape, not as of the last reclaim pass
        metrics.consumer_lag.set_function(
            backlog(probe, alert_streams(service.names), settings.delivery.consumer_group)
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        where = f" (embedded, data in {args.data_dir})" if local else ""
        start_line(
            "leadpulse deliver",
            f"metrics and /healthz on http://127.0.0.1:{port}" if port else "no metrics port",
            f"Redis {redact_url(url)}{where}",
            f"consumer {consumer} in group {settings.delivery.consumer_group}",
        )
        await service.run(stop)

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(main())
    return 0
