"""A real local Redis Cluster for tests and benchmarks: ``redis-server --cluster-enabled yes``.

:class:`LocalCluster` starts ``masters`` masters (and ``replicas`` replicas per master)
on free loopback ports in a temporary directory, joins them with
``redis-cli --cluster create … --cluster-yes``, waits until every node reports
``cluster_state:ok`` and stops them all (and removes the directory) on :meth:`stop`.
No persistence: a test cluster is thrown away.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis

from benchmarks.harness import start_redis_server

__all__ = ["LocalCluster", "missing_binaries"]

_BINARIES = ("redis-server", "redis-cli")


def missing_binaries() -> list[str]:
    """Which of ``redis-server`` / ``redis-cli`` are not on ``PATH``."""
    return [b for b in _BINARIES if shutil.which(b) is None]


def _free_port() -> int:
    # A cluster node also listens on port + 10000 (the cluster bus): keep both free.
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


class LocalCluster:
    """``masters`` masters (+ ``replicas`` each) on loopback; ``url`` names the first."""

    def __init__(self, masters: int = 3, replicas: int = 0, timeout_s: float = 30.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="leadpulse-cluster-"))
        self.ports: list[int] = []
        self._procs: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(masters * (1 + replicas)):
                self._start_node(timeout_s)
            self._create(replicas)
            self._wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def _start_node(self, timeout_s: float, tries: int = 5) -> None:
        """A node on a free port, answering (``start_redis_server``: a port taken before
        the node binds it, e.g. as another node's bus port + 10000, is tried again)."""

        def argv(port: int) -> list[str]:
            node = self.dir / str(port)
            node.mkdir(exist_ok=True)
            return ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf"),
                    "--cluster-node-timeout", "2000", "--dir", str(node), "--save", "",
                    "--appendonly", "no", "--logfile", str(node / "redis.log")]  # fmt: skip

        try:
            proc, port = start_redis_server(argv, timeout_s, tries, _free_port)
        except RuntimeError:
            msg = f"no cluster node started in {tries} tries (logs in {self.dir})"
            raise RuntimeError(msg) from None
        self._procs.append(proc)
        self.ports.append(port)

    def _create(self, replicas: int) -> None:
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        cmd = ["redis-cli", "--cluster", "create", *nodes,
               "--cluster-replicas", str(replicas), "--cluster-yes"]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-500:]}")

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            states = [self.info(port).get("cluster_state") for port in self.ports]
            if all(s == "ok" for s in states):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster not ok after {timeout_s:.0f} s: {states}")
            time.sleep(0.05)

    def info(self, port: int) -> dict[str, str]:
        """``CLUSTER INFO`` and ``INFO cluster`` of one node, as text values."""
        client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
        try:
            reply = dict(client.execute_command("CLUSTER INFO"))  # parsed by redis-py
            reply.update(cast(dict[str, Any], client.info("cluster")))  # cluster_enabled: 1
        finally:
            client.close()
        return {str(k): str(v) for k, v in reply.items()}

    def pids(self) -> dict[int, int]:
        """The process id of each node, by port."""
        return {port: proc.pid for port, proc in zip(self.ports, self._procs, strict=True)}

    def kill(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a failover test: its replica takes over)."""
        proc = self._procs[self.ports.index(port)]
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        """Stop every node and remove the directory (idempotent)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
