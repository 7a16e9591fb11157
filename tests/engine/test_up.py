"""``leadpulse up`` as a user runs it: a fresh data dir, the printed keys and curl line,
Ctrl-C, a restart that resumes with nothing lost, and other commands sharing its server.

Real processes throughout: ``up`` is a subprocess on the embedded Valkey in a temporary
data dir (``REDIS_URL`` unset), requests go over loopback HTTP.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

LEADPULSE = [sys.executable, "-m", "engine.cli"]
READY = "Ctrl-C stops everything"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env() -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("LEADPULSE")}
    out.pop("REDIS_URL", None)
    out["LEADPULSE__STREAMS__IDLE_POLL_MS"] = "5"
    out["LEADPULSE__DELIVERY__BLOCK_MS"] = "20"
    out["LEADPULSE__DELIVERY__EVENTS_POLL_MS"] = "20"
    return out


class Proc:
    """A leadpulse subprocess whose stdout and stderr lines are collected as they come."""

    def __init__(self, argv: list[str], extra: dict[str, str] | None = None) -> None:
        self.p = subprocess.Popen(
            [*LEADPULSE, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**env(), **(extra or {})},
        )  # fmt: skip
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(stream, into), daemon=True)
            for stream, into in ((self.p.stdout, self.out), (self.p.stderr, self.err))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def wait_for(self, check: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.p.poll() is not None:
                self.close()
                raise AssertionError(f"exited {self.p.returncode}: {self.out} {self.err}")
            assert time.monotonic() < deadline, f"timed out: {self.out} {self.err}"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGINT) -> int:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        code = self.p.wait(60)
        self.close()
        return code

    def close(self) -> None:
        """Kill if still running; read what is left; close the pipes."""
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()
        for reader in self._readers:
            reader.join(10)
        for stream in (self.p.stdout, self.p.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def up(data: Path, port: int, *extra: str) -> Iterator[Proc]:
    proc = Proc(["up", "--data-dir", str(data), "--port", str(port), *extra])
    try:
        proc.wait_for(lambda: any(READY in line for line in proc.out))
        yield proc
    finally:
        proc.close()


def call(url: str, key: str = "", body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def keys_of(lines: list[str]) -> dict[str, str]:
    text = "\n".join(lines)
    server = re.search(r"server key: (lpk_\S+)", text)
    agent = re.search(r"agent key .*: (lpk_agt_\S+)", text)
    return {"server": server.group(1), "agent": agent.group(1)} if server and agent else {}


def server_pid(data: Path) -> int:
    return int(json.loads((data / "server.json").read_text())["pid"])


def alive(pid: int) -> bool:
    try:
        return ") Z" not in Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False


@pytest.fixture(autouse=True)
def no_server_left(tmp_path: Path) -> Iterator[None]:
    """A failing test may leave its data dir's server running: stop it."""
    yield
    record = tmp_path / "data" / "server.json"
    if record.exists() and alive(server_pid(tmp_path / "data")):
        os.kill(server_pid(tmp_path / "data"), signal.SIGKILL)
        pytest.fail("the data dir's server outlived the test")


def test_up_first_start_restart_and_shared_server(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    with up(data, port) as first:
        keys = keys_of(first.out)
        assert keys, first.out
        assert f"{base}/hotlist" in first.out[0]
        assert "embedded valkey" in first.out[0]
        # only digests are kept: no key in any file of the data dir
        stored = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
        assert keys["server"].encode() not in stored and keys["agent"].encode() not in stored
        # the printed curl line works as printed
        curl = next(line for line in first.out if "try: curl" in line).split("try: ", 1)[1]
        reply = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert json.loads(reply.stdout)["accepted"] == 1, reply
        first.wait_for(lambda: bool(call(f"{base}/v1/hotlist", keys["server"])[1]["leads"]))
        # another command shares the running server, and leaving does not stop it
        model = subprocess.run(
            [*LEADPULSE, "model", "--data-dir", str(data), "status"],
            capture_output=True, text=True, env=env(), timeout=60,
        )  # fmt: skip
        assert model.returncode == 0, model.stderr
        assert "serving version" in model.stdout
        assert call(f"{base}/healthz")[0] == 200
        pid = server_pid(data)
        # accepted just before Ctrl-C: in Redis (AOF) whether or not the engine got to it
        late = [{"event_id": f"late-{i}", "lead_id": f"L{i}", "type": "inquiry",
                 "ts": time.time()} for i in range(2, 12)]  # fmt: skip
        assert call(f"{base}/v1/events", keys["server"], late)[1]["accepted"] == 10
        assert first.stop(signal.SIGINT) == 0
        assert any("stopped" in line for line in first.err), first.err
        assert "Traceback" not in "\n".join(first.err)
    assert not alive(pid), "the embedded server outlived up"

    with up(data, port) as second:  # a restart resumes: same keys, same leads
        assert not keys_of(second.out), "keys are printed only once"
        assert any("keys.toml" in line for line in second.out)
        hot = f"{base}/v1/hotlist?limit=50"

        def routed() -> bool:
            leads = call(hot, keys["server"])[1]["leads"]
            return len(leads) == 11 and all(r.get("agent_id") for r in leads)

        second.wait_for(routed)
        board = call(hot, keys["server"])[1]["leads"]
        assert sorted(r["lead_id"] for r in board) == sorted(f"L{i}" for i in range(1, 12))
        assert {r["agent_id"] for r in board} == {"agent"}  # routed to up's agent
        assert second.stop(signal.SIGTERM) == 0


def test_up_demo_feeds_traffic_and_deliver_shares_the_data_dir(tmp_path: Path) -> None:
    data, port, metrics = tmp_path / "data", free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with up(data, port, "--demo") as proc:
        key = keys_of(proc.out)["server"]
        proc.wait_for(lambda: len(call(f"{base}/v1/hotlist", key)[1]["leads"]) >= 3, 60)
        deliver = Proc(
            ["deliver", "--data-dir", str(data), "--consumer", "second"],
            {"LEADPULSE__DELIVERY__METRICS_PORT": str(metrics)},
        )
        try:
            deliver.wait_for(lambda: any("leadpulse deliver" in line for line in deliver.err))
            start = next(line for line in deliver.err if "leadpulse deliver" in line)
            assert f"127.0.0.1:{metrics}" in start and "redis://:***@127.0.0.1:" in start
            password = json.loads((data / "server.json").read_text())["password"]
            assert password not in "\n".join(deliver.err + proc.err + proc.out)
            status, health = call(f"http://127.0.0.1:{metrics}/healthz")
            assert (status, health) == (200, {"status": "ok", "redis": "ok"})
        finally:
            assert deliver.stop(signal.SIGTERM) == 0
        assert call(f"{base}/healthz")[0] == 200  # deliver left; up's server stays
        for argv in (["run"], ["up", "--port", str(free_port())]):  # a second engine: refused
            second = subprocess.run(
                [*LEADPULSE, *argv, "--data-dir", str(data)], capture_output=True, text=True,
                env=env(), timeout=60,
            )  # fmt: skip
            assert second.returncode == 2, second
            assert second.stderr.count("\n") == 1 and "already runs on data dir" in second.stderr
        assert call(f"{base}/healthz")[0] == 200
        assert proc.stop() == 0


def test_run_and_serve_print_one_start_line_without_v(tmp_path: Path, redis_url: str) -> None:
    metrics, port = free_port(), free_port()
    run = Proc(["run"], {"REDIS_URL": redis_url, "LEADPULSE__REDIS__KEY_PREFIX": "tstartln",
                         "LEADPULSE__METRICS__PORT": str(metrics)})  # fmt: skip
    serve = Proc(["serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)])
    try:
        run.wait_for(lambda: any("leadpulse run" in line for line in run.err))
        serve.wait_for(lambda: any("leadpulse serve" in line for line in serve.err))
        (line,) = [x for x in run.err if "leadpulse run" in x]
        assert f"http://127.0.0.1:{metrics}" in line and "Redis redis://" in line
        assert call(f"http://127.0.0.1:{metrics}/healthz")[1]["status"] == "ok"
        (line,) = [x for x in serve.err if "leadpulse serve" in x]
        assert f"http://127.0.0.1:{port}" in line and "redis://:***@127.0.0.1:" in line
        assert len(keys_of(serve.out)) == 2  # a fresh data dir: serve made and printed keys
        assert call(f"http://127.0.0.1:{port}/healthz")[0] == 200
    finally:
        assert run.stop(signal.SIGTERM) == 0
        assert serve.stop(signal.SIGTERM) == 0


def test_up_killed_then_restarted_reuses_its_server_and_stops_it(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    with up(data, port) as first:
        key = keys_of(first.out)["server"]
        ev = {"event_id": "k1", "lead_id": "K1", "type": "inquiry", "ts": time.time()}
        assert call(f"{base}/v1/events", key, [ev])[1]["accepted"] == 1
        pid = server_pid(data)
        assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    assert alive(pid)  # its own session: a killed up leaves the server (and the data) up
    with up(data, port) as second:
        assert server_pid(data) == pid  # attached, not a second server on the same AOF
        second.wait_for(lambda: call(f"{base}/v1/leads/K1", key)[0] == 200)
        assert second.stop(signal.SIGINT) == 0
    assert not alive(pid)  # the last one out stopped it
