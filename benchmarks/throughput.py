"""Maximum sustained throughput of the full pipeline, as production runs it.

Each configuration runs the real ``leadpulse run`` (``python -m engine.cli run``) as
separate process(es) against the same Redis, under a fresh key prefix whose streams
were pre-loaded with N simulator events before the engine started: stream ->
validate -> features (Lua) -> score -> alerts -> one MULTI/EXEC per batch. The
benchmark polls the committed positions hash (``<prefix>:pos``) and maps it back to
"events committed" through the stream ids it loaded; the rate is measured from the
first commit seen to the last (start-up excluded), so it is what the engine
sustains with a full backlog, alerts on.

Configurations: ``1 worker``; ``2 workers`` (``--workers 2``: Bytewax worker threads
in one process); ``2 processes`` (``--process-id 0/1 --addresses "a;b"``, each owning
half the partitions).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.harness import PARTITIONS, Workload, delete_prefix, free_port, new_prefix, preload
from engine.streams import StreamNames

__all__ = ["CONFIGS", "EngineProcesses", "engine_env", "engine_file", "measure_drain", "tree_env"]

#: name -> (processes, workers per process)
CONFIGS: dict[str, tuple[int, int]] = {
    "1 worker": (1, 1),
    "2 workers": (1, 2),
    "2 processes": (2, 1),
}


def engine_env(url: str, prefix: str, metrics_port: int = 0) -> dict[str, str]:
    """The environment of an engine process: our Redis, prefix and metrics port only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADPULSE")}
    env.update(
        {
            "REDIS_URL": url,
            "LEADPULSE__REDIS__KEY_PREFIX": prefix,
            "LEADPULSE__STREAMS__PARTITIONS": str(PARTITIONS),
            "LEADPULSE__METRICS__PORT": str(metrics_port),
        }
    )
    return env


def tree_env(env: dict[str, str], tree: str | None) -> dict[str, str]:
    """``env`` for an engine that runs the code of checkout ``tree`` (a worktree of this
    repository), not the editable install's: ``tree`` first on ``PYTHONPATH``."""
    if tree is None:
        return env
    out = dict(env)
    out["PYTHONPATH"] = os.pathsep.join(p for p in (tree, env.get("PYTHONPATH", "")) if p)
    return out


def engine_file(env: dict[str, str], tree: str | None) -> str:
    """Where an engine started with ``env`` in ``tree`` imports ``engine`` from."""
    out = subprocess.run(
        [sys.executable, "-c", "import engine; print(engine.__file__)"],
        env=tree_env(env, tree), cwd=tree, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


class EngineProcesses:
    """``leadpulse run`` processes (one per process id), stopped with SIGTERM.

    ``cwd``: run the code of that checkout (e.g. a worktree of main for an A/B run):
    the processes start there with it first on ``PYTHONPATH``.
    """

    def __init__(
        self, env: dict[str, str], processes: int = 1, workers: int = 1, cwd: str | None = None
    ) -> None:
        env = tree_env(env, cwd)
        addresses = ""
        if processes > 1:
            addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        self._logs: list[Any] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        for pid in range(processes):
            cmd = [sys.executable, "-m", "engine.cli", "run", "--workers", str(workers)]
            if addresses:
                cmd += ["--process-id", str(pid), "--addresses", addresses]
            log = tempfile.TemporaryFile()
            self._logs.append(log)
            self.procs.append(subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=log))

    def cpu_seconds(self) -> float:
        """User + system CPU the processes (all their threads) have used so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in self.procs:
            with open(f"/proc/{proc.pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        return total / tick

    def check(self) -> None:
        """Raise with the engine's output if a process died."""
        for proc, log in zip(self.procs, self._logs, strict=True):
            if proc.poll() is not None:
                log.seek(0)
                tail = log.read().decode(errors="replace")[-2_000:]
                raise RuntimeError(f"leadpulse run exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self._logs:
            log.close()

    def __enter__(self) -> EngineProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Drain:
    events: int
    seconds: float  # first commit seen -> last commit
    events_per_s: float
    startup_s: float  # process start -> first commit seen

    def as_dict(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "startup_s": round(self.startup_s, 2),
        }


def measure_drain(
    client: redis.Redis,
    url: str,
    work: Workload,
    processes: int,
    workers: int,
    progress: Callable[[int, int], object] | None = None,
    timeout_s: float | None = None,
    cwd: str | None = None,
) -> Drain:
    """Pre-load the workload, start the engine, time the drain of the backlog."""
    prefix = new_prefix("tp")
    names = StreamNames(prefix, PARTITIONS)
    try:
        loaded = preload(client, names, work)
        total = loaded.total
        limit = timeout_s if timeout_s is not None else max(60.0, total / 300.0)
        with EngineProcesses(engine_env(url, prefix), processes, workers, cwd) as engine:
            started = time.perf_counter()
            first: tuple[float, int] | None = None
            done = 0
            while done < total:
                now = time.perf_counter()
                if now - started > limit:
                    raise TimeoutError(f"drain of {total} events did not finish in {limit:.0f} s")
                engine.check()
                done = loaded.committed(client)
                if done and first is None:
                    first = (now, done)
                if progress is not None:
                    progress(done, total)
                if done < total:
                    time.sleep(0.005)
            end = time.perf_counter()
        t0, c0 = first if first is not None else (started, 0)
        if c0 >= total or end - t0 < 1e-3:  # everything landed in the first batch seen
            t0, c0 = started, 0
        seconds = end - t0
        return Drain(total, seconds, (total - c0) / seconds, t0 - started)
    finally:
        delete_prefix(client, prefix)
