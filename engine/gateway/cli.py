"""``leadpulse serve``: the gateway on uvicorn + uvloop; ``--new-key`` makes API keys.

Wired into ``engine/cli.py`` with::

    from engine.gateway import cli as gateway_cli
    gateway_cli.add_parser(sub)                       # in _parser()
    if args.command == "serve":                       # in main()
        return gateway_cli.run(args)
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
from typing import Any

from engine.errors import ConfigError
from engine.up import add_data_dir

__all__ = ["KEEP_ALIVE_S", "RedactQuery", "add_parser", "log_config", "run", "uvicorn_config"]

KEEP_ALIVE_S = 5  # an idle kept-alive connection is closed after this (uvicorn's default)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``serve`` subcommand to ``subparsers`` (from ``add_subparsers``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="HTTP gateway: batch ingest API, IDX tracker script, lead and hot-list reads",
        description="Serve POST /v1/events, GET /v1/leads/{id}, GET /v1/hotlist, /healthz, "
        "/metrics, /tracker.js, /openapi.json and alert delivery (the agents' page at "
        "/hotlist, /v1/board, /v1/alerts/stream) against REDIS_URL (or --redis-url), on "
        "uvloop. Without a Redis URL: the data dir's embedded server, API keys and hashing "
        "secret (made, and the keys printed once, on first use, as `leadpulse up` does). "
        "With one: needs gateway.contact_hash_key and at least one key in "
        "gateway.api_keys. --new-key prints a key and its config line and exits.",
    )
    p.add_argument("--host", help="listen address (default: gateway.host)")
    p.add_argument("--port", type=int, help="listen port (default: gateway.port)")
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL")
    add_data_dir(p)
    p.add_argument("--access-log", action="store_true", help="log every request (off: fast)")
    p.add_argument(
        "--new-key", metavar="TENANT", help="print a new API key for TENANT and its config line"
    )
    p.add_argument(
        "--role", choices=("server", "tracker", "agent"), default="server",
        help="with --new-key: server (back office: read + write), tracker (public, browser "
        "events only) or agent (one agent's hot list: sees and acts only as --agent)",
    )  # fmt: skip
    p.add_argument(
        "--agent", default="", metavar="AGENT_ID",
        help="with --new-key --role agent: the agent id the key is bound to (required)",
    )  # fmt: skip
    p.add_argument(
        "--origin", action="append", default=[],
        help="with --new-key --role tracker: a page origin allowed to use the key (repeatable)",
    )  # fmt: skip
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``serve`` (or ``--new-key``); raises :class:`~engine.errors.LeadpulseError` on bad
    config or an unreachable Redis, which ``engine/cli.py`` prints."""
    if args.new_key:
        return _new_key(args.new_key, args.role, args.origin, args.agent)
    from engine.redis_client import redis_for
    from engine.settings import load_settings

    settings = load_settings(args.config)
    url, local = redis_for(args.redis_url or settings.redis_url(), args.data_dir)
    if local is not None:
        settings = _local_settings(args, settings)
    try:
        return _serve(args, settings, url, local is not None)
    finally:
        if local is not None:
            local.release()


def _local_settings(args: argparse.Namespace, settings: Any) -> Any:
    """The data dir's keys and hashing secret; on first use make and print the keys."""
    from pathlib import Path

    from engine.settings import load_settings
    from engine.up import local_overrides, make_keys

    data_dir = Path(args.data_dir)
    if not (data_dir / "keys.toml").exists() and not settings.gateway.api_keys:
        keys = make_keys(data_dir, "agent")
        print("API keys for tenant default, shown once (only their digests are kept):\n"
              f"  server key: {keys['server']}\n  agent key (agent): {keys['agent']}",
              flush=True)  # fmt: skip
    return load_settings(args.config, overrides=local_overrides(settings, data_dir))


def _serve(args: argparse.Namespace, settings: Any, url: str, local: bool) -> int:
    import signal

    from engine.migrate_cli import check_layout
    from engine.redis_client import connect, redact_url
    from engine.up import bind, start_line

    # fail at start-up with what is wrong (unreachable, Redis < 7), not at the first request
    probe = connect(url, settings.redis.retries, settings.redis.socket_timeout_s)
    check_layout(probe, settings)
    probe.close()
    gw = settings.gateway
    host, port = args.host or gw.host, args.port or gw.port
    sock = bind(host, port)
    import uvicorn

    from engine.gateway.app import create_app

    try:
        app = create_app(settings, url)
    except BaseException:
        sock.close()
        raise
    server = uvicorn.Server(uvicorn_config(app, gw, args.access_log, args.verbose))

    def stop(signum: int, frame: Any) -> None:  # uvicorn re-raises the signal after it stops
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    where = f" (embedded, data in {args.data_dir})" if local else ""
    start_line(
        "leadpulse serve", f"http://{host}:{port} (hot list at /hotlist)",
        f"Redis {redact_url(url)}{where}", f"{len(gw.api_keys)} API key(s)",
    )  # fmt: skip
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0


class RedactQuery(logging.Filter):
    """Drop query strings from uvicorn's access log lines.

    The access log prints each request's path with its query: a tracker key arrives in
    ``?key=`` (sendBeacon cannot set headers), and a server key put in a URL by mistake
    is refused but would still be printed. Neither belongs in a log file.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and "?" in str(args[2]):
            record.args = (*args[:2], str(args[2]).split("?", 1)[0] + "?[redacted]", *args[3:])
        return True


def uvicorn_config(app: Any, gw: Any, access_log: bool, verbose: bool) -> Any:
    """The uvicorn config of ``serve`` and ``up``: uvloop, httptools with the header
    deadline (``gateway.header_timeout_s``, :mod:`engine.gateway.server`), idle
    keep-alive connections closed after :data:`KEEP_ALIVE_S`."""
    import uvicorn

    from engine.gateway.server import header_timeout_protocol

    return uvicorn.Config(
        app, loop="uvloop", http=header_timeout_protocol(gw.header_timeout_s), ws="none",
        lifespan="on", proxy_headers=True, forwarded_allow_ips=gw.forwarded_allow_ips,
        access_log=access_log, log_config=log_config(), server_header=False,
        log_level="info" if verbose else "warning", timeout_keep_alive=KEEP_ALIVE_S,
    )  # fmt: skip


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with :class:`RedactQuery` on the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_query"] = {"()": RedactQuery}
    config["handlers"]["access"]["filters"] = ["redact_query"]
    return config


def _new_key(tenant: str, role: str, origins: list[str], agent: str = "") -> int:
    import re

    from engine.gateway.auth import key_digest, new_key

    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", tenant):
        raise ConfigError(f"--new-key: tenant {tenant!r} must match [A-Za-z0-9_.-]{{1,64}}")
    if role == "agent" and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", agent):
        raise ConfigError(
            f"--new-key --role agent: --agent {agent!r} must be the agent id the key acts "
            "as ([A-Za-z0-9_.-]{1,64})"
        )
    if role != "agent" and agent:
        raise ConfigError(f"--agent: only agent keys name an agent (this is a {role} key)")
    key = new_key(role)
    digest = key_digest(key)
    entry = f'tenant = "{tenant}", role = "{role}"'
    if agent:
        entry += f', agent = "{agent}"'
    if origins:
        entry += ", origins = [" + ", ".join(f'"{o}"' for o in origins) + "]"
    out = sys.stdout
    who = f", agent {agent}" if agent else ""
    print(
        f"API key ({role}, tenant {tenant}{who}); shown once, store it safely:\n\n  {key}\n",
        file=out,
    )
    print("Add to your config file:\n\n  [gateway.api_keys]", file=out)
    print(f'  "{digest}" = {{ {entry} }}\n', file=out)
    env = f"LEADPULSE__GATEWAY__API_KEYS__{digest}='{{ {entry} }}'"
    print(f"or to the environment:\n\n  {env}", file=out)
    return 0
