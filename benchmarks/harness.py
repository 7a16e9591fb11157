"""What every benchmark shares: a seeded workload, key prefixes, servers, stream loading.

- :class:`Workload`: simulator events (seeded, cached per size), pre-packed as the
  producer would send them (msgpack payload + partition), so loading the streams or
  sending open loop costs the benchmark process as little as possible.
- :class:`Loaded`: the stream ids a load produced, per partition, so the committed
  positions hash (``<prefix>:pos``) can be turned into "events committed so far".
- :class:`DedicatedServer`: a private ``redis-server`` (or the embedded Valkey) on a
  free loopback port with no persistence, for measurements that read server-wide
  ``INFO`` (memory, commandstats) and must not see anybody else's keys or commands.
- :func:`settings_for`: engine settings under a fresh key prefix, environment ignored.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgpack
import redis

from benchmarks.simulator import events_for_count, generate
from engine.events import partition_of
from engine.keys import every_pattern
from engine.settings import Settings, load_settings
from engine.streams import StreamNames, committed_positions

__all__ = [
    "DedicatedServer",
    "Loaded",
    "Workload",
    "delete_prefix",
    "free_port",
    "machine_info",
    "new_prefix",
    "rss_kb",
    "wait_http",
    "settings_for",
]

PARTITIONS = 4  # the default config's stream partitions
_LOAD_CHUNK = 2_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis_server(
    argv: Callable[[int], list[str]],
    timeout_s: float = 10.0,
    tries: int = 5,
    find_port: Callable[[], int] = free_port,
) -> tuple[subprocess.Popen[bytes], int]:
    """A ``redis-server`` started with ``argv(port)`` on a free loopback port, answering:
    (process, port). A port found free can be taken before the server binds it (another
    test's server, an ephemeral port, a cluster bus port): the server then exits, or the
    port answers for another process; it is started again on another port."""
    for _ in range(tries):
        port = find_port()
        proc = subprocess.Popen(argv(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _answers(proc, port, timeout_s):
            return proc, port
        proc.kill()
        proc.wait()
    raise RuntimeError(f"redis-server did not start in {tries} tries")


def _answers(proc: subprocess.Popen[bytes], port: int, timeout_s: float) -> bool:
    """Whether ``proc`` itself answers on ``port`` before it exits or ``timeout_s`` ends."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        while True:
            try:  # (our server, not another test's that took the port first)
                server = cast(dict[str, Any], client.info("server"))
                return int(server["process_id"]) == proc.pid
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    return False
                time.sleep(0.02)
    finally:
        client.close()


def wait_http(
    url: str, procs: Iterable[subprocess.Popen[bytes]] = (), timeout_s: float = 60
) -> None:
    """Until ``url`` answers 200: a started service is up (raises if one of ``procs``
    exits first or ``timeout_s`` passes)."""
    import httpx

    procs = list(procs)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{url} did not come up")
        time.sleep(0.05)


def rss_kb(pid: int) -> int:
    """Resident set size of a process in kB (Linux ``/proc``; 0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def new_prefix(kind: str) -> str:
    return f"bn{kind}{uuid.uuid4().hex[:6]}"


def settings_for(prefix: str, **sections: dict[str, Any]) -> Settings:
    """Default settings under ``prefix`` (environment overrides ignored: reproducible)."""
    overrides: dict[str, Any] = {"redis": {"key_prefix": prefix}}
    overrides.update(sections)
    return load_settings(overrides=overrides, environ={})


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """Delete every key under ``{prefix}:`` (leadpulse's) and ``prefix:`` (the peers', which
    model other systems' layouts) (bounded: SCAN + UNLINK in chunks)."""
    n = 0
    batch: list[bytes] = []
    for match in (every_pattern(prefix), f"{prefix}:*"):  # both key layouts
        for key in client.scan_iter(match=match, count=2_000):
            batch.append(key)
            if len(batch) >= 1_000:
                n += cast(int, client.unlink(*batch))
                batch.clear()
    if batch:
        n += cast(int, client.unlink(*batch))
    return n


@dataclass
class Workload:
    """Seeded simulator traffic, packed for the streams (same seed: same bytes)."""

    events: list[dict[str, Any]]
    payloads: list[bytes]
    partitions: list[int]
    leads: int

    @classmethod
    def build(cls, n_events: int, seed: int = 7, partitions: int = PARTITIONS) -> Workload:
        config = events_for_count(n_events, seed=seed, days=60.0)
        events = list(generate(config))[:n_events]
        pack = msgpack.Packer(use_bin_type=True).pack
        payloads = [pack(e) for e in events]
        parts = [
            partition_of(str(e.get("tenant") or "default"), str(e["lead_id"]), partitions)
            if "lead_id" in e
            else partition_of(str(e.get("tenant") or "default"), f"~{e['visitor_id']}", partitions)
            for e in events
        ]
        return cls(events, payloads, parts, config.leads)

    def __len__(self) -> int:
        return len(self.events)


@dataclass
class Loaded:
    """Stream ids appended per partition, oldest first, as (ms, seq)."""

    names: StreamNames
    ids: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.ids.values())

    def ends(self) -> dict[int, tuple[int, int]]:
        return {p: ids[-1] for p, ids in self.ids.items() if ids}

    def committed(self, client: redis.Redis) -> int:
        """Events whose batch has committed, from the positions hash."""
        done = 0
        for p, v in committed_positions(client, self.names).items():  # either key layout
            ids = self.ids.get(p)
            if ids:
                done += bisect_right(ids, _id_tuple(v))
        return done

    def append(self, client: redis.Redis, work: Workload, lo: int, hi: int) -> None:
        """XADD events ``lo:hi`` of ``work`` to their partitions (pipelined, not trimmed)."""
        pipe = client.pipeline(transaction=False)
        order: list[int] = []
        for i in range(lo, hi):
            p = work.partitions[i]
            pipe.xadd(self.names.events(p), {"e": work.payloads[i]})
            order.append(p)
        for p, sid in zip(order, pipe.execute(), strict=True):
            self.ids.setdefault(p, []).append(_id_tuple(sid))


def _id_tuple(sid: bytes | str) -> tuple[int, int]:
    text = sid.decode() if isinstance(sid, bytes) else sid
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def preload(
    client: redis.Redis,
    names: StreamNames,
    work: Workload,
    n: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> Loaded:
    """Append the first ``n`` events of ``work`` to the streams before the engine starts."""
    loaded = Loaded(names)
    n = len(work) if n is None else min(n, len(work))
    for lo in range(0, n, _LOAD_CHUNK):
        hi = min(n, lo + _LOAD_CHUNK)
        loaded.append(client, work, lo, hi)
        if progress is not None:
            progress(hi)
    return loaded


class DedicatedServer:
    """A private server with no persistence on a free loopback port.

    ``redis-server`` from PATH when there is one (the same binary as the shared
    server here), else the embedded Valkey (``engine.redis_client.EmbeddedServer``).
    """

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        self._embedded: Any = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = ""
        if binary is None:
            from engine.redis_client import EmbeddedServer

            self._embedded = EmbeddedServer()
            self.url = self._embedded.url
            self.kind = "embedded valkey"
        else:
            self._dir = tempfile.mkdtemp(prefix="leadpulse-bench-")
            log = str(Path(self._dir) / "server.log")
            try:
                self._proc, port = start_redis_server(
                    lambda port: [binary, "--port", str(port), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", self._dir,
                                  "--daemonize", "no", "--logfile", log]
                )  # fmt: skip
            except RuntimeError:
                self.stop()
                raise RuntimeError("dedicated redis-server did not start") from None
            self.url = f"redis://127.0.0.1:{port}/0"
            self.kind = "redis-server"
        self.client = redis.Redis.from_url(self.url, socket_timeout=60)
        info = cast(dict[str, Any], self.client.info("server"))
        self.version = str(info.get("valkey_version") or info.get("redis_version"))

    def stop(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        if self._embedded is not None:
            self._embedded.stop()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> DedicatedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _commit() -> str:
    """The code measured: ``git describe --always --dirty`` of the engine's checkout."""
    try:
        return subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip() or "unknown"  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info(
    client: redis.Redis, url: str, extra: Iterable[tuple[str, str]] = ()
) -> dict[str, Any]:
    """Where the figures came from: cores, CPU, Python, Redis, load at start."""
    info = cast(dict[str, Any], client.info("server"))
    out = {
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "redis_version": str(info.get("valkey_version") or info.get("redis_version")),
        "redis_url": url,
        "loadavg_at_start": list(os.getloadavg()),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": _commit(),
    }
    out.update(dict(extra))
    return out
