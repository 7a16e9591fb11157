"""``leadpulse up``: gateway, engine, delivery and the hot-list page in one command.

Without ``REDIS_URL`` the data dir's embedded Valkey holds everything, with AOF
persistence (``engine.redis_client.LocalServer``), so a restart resumes where the last
run stopped. The data dir also holds what a single machine needs to serve:

- ``keys.toml``: the sha256 digests of the API keys made at first start (a server key
  and an agent key, printed once), in config format;
- ``contact_hash_key`` (0600): the secret for keyed hashes of emails and phones.

``serve`` and ``deliver`` read the same files when they use the data dir's server, so
``up`` and the separate commands are interchangeable on one machine.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import socket
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.redis_client import default_data_dir

__all__ = [
    "TENANT",
    "add_data_dir",
    "add_parser",
    "bind",
    "local_overrides",
    "make_keys",
    "run",
    "start_line",
]

TENANT = "default"
_KEYS = "keys.toml"
_SECRET = "contact_hash_key"
#: the engine's and delivery's start lines (and nothing else) print without -v
start_log = logging.getLogger("leadpulse.start")
start_log.setLevel(logging.INFO)


def start_line(what: str, *parts: str) -> None:
    """The one line a service prints when it is ready: what it listens on, which Redis."""
    start_log.info("%s: %s", what, ", ".join(p for p in parts if p))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "up",
        help="gateway, engine, delivery and the hot-list page in one command",
        description="Run the gateway, the engine, alert delivery and the agents' hot-list "
        "page in one process. Without REDIS_URL: an embedded Valkey with its data (AOF) in "
        "--data-dir, so a restart resumes where it stopped. First start: makes a server key "
        "and an agent key and prints them once. Ctrl-C stops everything cleanly.",
    )
    add_data_dir(p)
    p.add_argument("--host", help="listen address (default: gateway.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default: gateway.port, 8080)")
    p.add_argument("--demo", action="store_true", help="also feed simulated IDX traffic")
    p.add_argument("--agent", default="agent", help="agent id of the agent key (first start)")
    p.add_argument(
        "--new-keys", action="store_true", help="replace the keys (old ones stop working)"
    )
    p.add_argument("--redis-url", default="", help="overrides REDIS_URL (no embedded server)")
    p.add_argument("--config", help="TOML file overriding config/default.toml")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    """``--data-dir``: where the embedded server, key digests and hashing secret live when
    no Redis URL is given."""
    p.add_argument(
        "--data-dir", default=default_data_dir(),
        help="without REDIS_URL: the embedded server's data, API key digests and hashing "
        "secret (default ./leadpulse-data, or LEADPULSE_DATA_DIR)",
    )  # fmt: skip


# -- the data dir's keys and secret ---------------------------------------------------------


def make_keys(data_dir: Path, agent: str) -> dict[str, str]:
    """New server and agent keys for tenant ``default``; only their digests are written."""
    from engine.gateway.auth import key_digest, new_key

    if not _ident(agent):
        raise ConfigError(f"--agent {agent!r} must match [A-Za-z0-9_.-]{{1,64}}")
    keys = {"server": new_key("server"), "agent": new_key("agent")}
    lines = [
        "# leadpulse API keys of this data dir: sha256 digests only (the keys were printed",
        "# once, at creation; `leadpulse up --new-keys` replaces them)",
        "[gateway.api_keys]",
        f'"{key_digest(keys["server"])}" = {{ tenant = "{TENANT}", role = "server" }}',
        f'"{key_digest(keys["agent"])}" = '
        f'{{ tenant = "{TENANT}", role = "agent", agent = "{agent}" }}',
    ]
    _write_private(data_dir / _KEYS, "\n".join(lines) + "\n")
    return keys


def _ident(value: str) -> bool:
    import re

    return re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value) is not None


def _write_private(path: Path, text: str) -> None:
    try:
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(text)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}") from None


def _read_keys(data_dir: Path) -> dict[str, Any]:
    path = data_dir / _KEYS
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc} (remove it to make new keys)") from None
    keys = data.get("gateway", {}).get("api_keys", {})
    return keys if isinstance(keys, dict) else {}


def _contact_secret(data_dir: Path) -> str:
    path = data_dir / _SECRET
    try:
        if path.exists():
            return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    secret = secrets.token_urlsafe(32)
    _write_private(path, secret + "\n")
    return secret


def local_overrides(settings: Any, data_dir: str | Path) -> dict[str, Any]:
    """Settings the data dir supplies where config has none: its API key digests, its
    contact-hashing secret, and (tenant ``default`` without groups) routing every lead
    to its agents."""
    path = Path(data_dir)
    keys = _read_keys(path)
    gateway: dict[str, Any] = {"api_keys": keys}
    if not settings.gateway.contact_hash_key.get_secret_value():
        gateway["contact_hash_key"] = _contact_secret(path)
    out: dict[str, Any] = {"gateway": gateway}
    agents = sorted({str(e.get("agent")) for e in keys.values() if e.get("role") == "agent"})
    if agents and not settings.delivery.tenant(TENANT).groups:
        out["delivery"] = {
            "tenants": {TENANT: {"groups": {"agents": agents}, "default_group": "agents"}}
        }
    return out


def bind(host: str, port: int, what: str = "gateway.port") -> socket.socket:
    """A listening socket, or one line saying why not (port busy, address not local)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = (
            "is in use (another leadpulse?)"
            if exc.errno == 98
            else (f"cannot be listened on ({exc.strerror})")
        )
        raise ConfigError(f"{what}: {host}:{port} {why}; pick another with --port") from None
    except (OverflowError, ValueError):
        sock.close()
        raise ConfigError(f"{what}: {port} is not a port (1-65535)") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# -- up ---------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run everything until SIGINT/SIGTERM; bad input raises a one-line LeadpulseError."""
    from engine.redis_client import LocalServer, check_url, redact_url
    from engine.settings import load_settings

    base = load_settings(args.config)
    data_dir = Path(args.data_dir)
    url = args.redis_url or base.redis_url()
    if url:
        check_url(url)
    local = None if url else LocalServer(data_dir)
    try:
        if local is not None:
            local.claim("engine-0", "an engine (leadpulse up, or run --process-id 0)")
        if url and not data_dir.is_dir():
            try:
                data_dir.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise ConfigError(f"cannot create data dir {data_dir}: {exc.strerror}") from None
        if local is not None:
            url, where = local.url, f"embedded valkey, data in {data_dir}"
        else:
            where = redact_url(url)
        return _serve_all(base, url, args, where)
    finally:
        if local is not None:
            local.release()


class _Parts:
    """The threads ``up`` runs beside the gateway, and the first error one of them hit."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.error: BaseException | None = None
        self.on_error: Any = None

    def start(self, name: str, target: Any, *args: Any) -> None:
        def body() -> None:
            try:
                target(*args)
            except BaseException as exc:  # reported by run() after the gateway stops
                if self.error is None and not self.stop.is_set():
                    self.error = exc
                    if self.on_error is not None:
                        self.on_error()

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)


def _serve_all(base: Any, url: str, args: argparse.Namespace, where: str) -> int:
    from engine.migrate_cli import check_layout
    from engine.redis_client import connect
    from engine.settings import load_settings

    client = connect(url, min(base.redis.retries, 2), base.redis.socket_timeout_s)
    check_layout(client, base)
    host, port = args.host or base.gateway.host, args.port or base.gateway.port
    sock = bind(host, port)
    data_dir = Path(args.data_dir)
    fresh = None  # keys are made only once everything they are printed with works
    if args.new_keys or not (data_dir / _KEYS).exists():
        fresh = make_keys(data_dir, args.agent)
    settings = load_settings(args.config, overrides=local_overrides(base, data_dir))
    import uvicorn  # the heavy imports once Redis answered and the port is ours

    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow
    from engine.delivery.consumer import DeliveryService, run_in_thread
    from engine.gateway.app import create_app
    from engine.gateway.cli import uvicorn_config

    config = uvicorn_config(create_app(settings, url), settings.gateway, False, args.verbose)
    server = uvicorn.Server(config)
    parts = _Parts()
    parts.on_error = lambda: setattr(server, "should_exit", True)

    def on_signal(signum: int, frame: Any) -> None:
        server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    flow = build_flow(build_parts(settings, client), stop=parts.stop, drain=False)
    parts.start("engine", run_flow, flow)
    delivery = DeliveryService(settings, client, consumer="up")
    parts.threads.append(run_in_thread(delivery, parts.stop))
    if args.demo:
        parts.start("demo", _feed_demo, client, settings, parts.stop)
    base = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
    _banner(base, where, fresh, args)
    try:
        server.run(sockets=[sock])
    finally:
        parts.join()
        client.close()
        sock.close()
    if parts.error is not None:
        raise parts.error
    print(f"leadpulse up: stopped; the data stays in {args.data_dir}", file=sys.stderr)
    return 0


def _banner(base: str, where: str, fresh: dict[str, str] | None, args: argparse.Namespace) -> None:
    out = sys.stdout
    print(f"leadpulse up: hot list {base}/hotlist (gateway, engine, delivery; Redis: {where})",
          file=out)  # fmt: skip
    if fresh is None:
        print(f"  API keys: as made at first start ({args.data_dir}/{_KEYS} holds their "
              "digests; --new-keys replaces them)", file=out)  # fmt: skip
        key = "$LEADPULSE_KEY"
    else:
        key = fresh["server"]
        print("  keys, shown once (only their digests are kept): store them safely", file=out)
        print(f"  server key: {fresh['server']}", file=out)
        print(f"  agent key ({args.agent}, sign in on the page): {fresh['agent']}", file=out)
    body = (
        '[{\\"event_id\\":\\"try-$(date +%s)\\",\\"lead_id\\":\\"L1\\",\\"type\\":'
        '\\"showing_request\\",\\"ts\\":$(date +%s),\\"property_id\\":\\"P1\\"}]'
    )
    print(f'  try: curl -s {base}/v1/events -H "Authorization: Bearer {key}" '
          f'-H "Content-Type: application/json" -d "{body}"', file=out)  # fmt: skip
    demo = "; simulated traffic is on" if args.demo else ""
    print(f"  Ctrl-C stops everything{demo}", file=out, flush=True)


_AGENT_ACTIONS = frozenset({"assigned", "agent_contact", "call_missed", "call_answered"})


def _feed_demo(client: Any, settings: Any, stop: threading.Event) -> None:
    """Seeded simulated visitors, sent at a few events a second with the wall clock as
    event time, until stopped; the agent's own actions are left to the agent."""
    from benchmarks.simulator import SimConfig, generate
    from engine.streams import Producer, stream_names

    names = stream_names(settings)
    producer = Producer(client, names, settings.streams.maxlen)
    run_id = secrets.token_hex(3)
    events = [
        e for e in generate(SimConfig(seed=int(time.time()), leads=30, tenant=TENANT))
        if e["type"] not in _AGENT_ACTIONS
    ]  # fmt: skip
    for event in events:
        if stop.wait(0.2):
            return
        event = {**event, "event_id": f"demo-{run_id}-{event['event_id']}", "ts": time.time()}
        event.pop("agent_id", None)  # the simulator's agents are not this data dir's
        for field in ("lead_id", "visitor_id"):
            if field in event:
                event[field] = f"demo-{event[field]}"
        producer.send([event])
    logging.getLogger(__name__).info("demo traffic done: %d events", len(events))
