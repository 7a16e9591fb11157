"""Events per CPU-second of ``leadpulse run``: 1 process vs 2 processes (issue 13).

The machine running this may have as few cores as processes, and other work on it, so
wall-clock throughput says little about scaling out; CPU time does. Each configuration
drains the same pre-loaded backlog (seeded simulator events, 4 partitions) on a
dedicated ``redis-server``; the engine processes' CPU time (user + system, from
``/proc/<pid>/stat``) and the committed events are sampled from the first commit seen
to the last, so start-up (imports, model load) is excluded. The Redis server's CPU time
over the same interval is reported beside it (not counted in the rate).

``python -m benchmarks.scale_out --events 40000 --rounds 3 --out benchmarks/results``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import redis

from benchmarks.harness import (
    PARTITIONS,
    DedicatedServer,
    Workload,
    delete_prefix,
    machine_info,
    new_prefix,
    preload,
)
from benchmarks.throughput import EngineProcesses, engine_env
from engine.streams import StreamNames

__all__ = ["Measured", "measure", "main"]

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True)
class Measured:
    processes: int
    events: int  # committed between the first and the last sample
    wall_s: float
    engine_cpu_s: float  # all engine processes together
    redis_cpu_s: float
    events_per_cpu_s: float  # events / engine CPU seconds
    events_per_s: float  # wall clock, for reference only


def measure(
    client: redis.Redis, url: str, redis_pid: int, work: Workload, processes: int
) -> Measured:
    """Drain ``work`` with ``processes`` engine processes (1 worker each)."""
    prefix = new_prefix("so")
    loaded = preload(client, StreamNames(prefix, PARTITIONS), work)
    try:
        with EngineProcesses(engine_env(url, prefix), processes, 1) as engine:
            pids = [p.pid for p in engine.procs]
            first: tuple[float, int, float, float] | None = None
            deadline = time.monotonic() + max(120.0, loaded.total / 200)
            while True:
                engine.check()
                done = loaded.committed(client)
                now = time.perf_counter()
                sample = (now, done, sum(cpu_s(p) for p in pids), cpu_s(redis_pid))
                if done and first is None:
                    first = sample
                if done >= loaded.total:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{done} of {loaded.total} events after the deadline")
                time.sleep(0.01)
        assert first is not None
        events = sample[1] - first[1]
        engine_cpu, wall = sample[2] - first[2], sample[0] - first[0]
        return Measured(processes, events, round(wall, 3), round(engine_cpu, 2),
                        round(sample[3] - first[3], 2), round(events / engine_cpu, 1),
                        round(events / wall, 1))  # fmt: skip
    finally:
        delete_prefix(client, prefix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--out", default="", help="directory for scale_out.json")
    args = parser.parse_args(argv)
    work = Workload.build(args.events)
    runs: dict[int, list[Measured]] = {1: [], 2: []}
    with DedicatedServer() as server:
        client = redis.Redis.from_url(server.url)
        redis_pid = int(cast(dict[str, Any], client.info("server"))["process_id"])
        for _ in range(args.rounds):  # interleaved, so a busy spell hits both alike
            for processes in (1, 2):
                m = measure(client, server.url, redis_pid, work, processes)
                runs[processes].append(m)
                print(json.dumps(asdict(m)), file=sys.stderr, flush=True)
        machine = machine_info(client, server.url)
        client.close()
    median = {n: statistics.median(m.events_per_cpu_s for m in ms) for n, ms in runs.items()}
    summary = {
        "events": len(work),
        "partitions": PARTITIONS,
        "median_events_per_cpu_s": median,
        "two_vs_one": round(median[2] / median[1], 3),
        "runs": {n: [asdict(m) for m in ms] for n, ms in runs.items()},
        "machine": machine,
    }
    print(json.dumps({k: summary[k] for k in ("median_events_per_cpu_s", "two_vs_one")}))
    if args.out:
        Path(args.out, "scale_out.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
