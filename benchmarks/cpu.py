"""CPU time of the processor per event: the profile step's replay
(seeded workload, stream-sized batches, a dedicated server), timed with process_time.

    PYTHONPATH=<worktree> python -m benchmarks.cpu [--events N] [--reps R]
        [--cprofile OUT.pstats]

Prints one JSON line: the engine file it ran, CPU and wall µs an event per repetition.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import time

import engine
from benchmarks.harness import DedicatedServer, Workload, settings_for
from benchmarks.profile import _entries
from engine.app import build_parts


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=30_000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--cprofile", default="")
    a = p.parse_args()
    entries = _entries(Workload.build(a.events), a.events)
    batch = settings_for("lp").streams.read_count
    cpu, wall = [], []
    with DedicatedServer() as server:
        for rep in range(a.reps):
            server.client.flushall()
            parts = build_parts(settings_for("lp"), server.client)
            prof = cProfile.Profile() if a.cprofile and rep == a.reps - 1 else None
            c0, w0 = time.process_time(), time.perf_counter()
            if prof:
                prof.enable()
            for lo in range(0, len(entries), batch):
                parts.processor.process(entries[lo : lo + batch])
            if prof:
                prof.disable()
                prof.dump_stats(a.cprofile)
            c1, w1 = time.process_time(), time.perf_counter()
            cpu.append(round(1e6 * (c1 - c0) / len(entries), 1))
            wall.append(round(1e6 * (w1 - w0) / len(entries), 1))
    print(
        json.dumps(
            {
                "engine": engine.__file__,
                "events": len(entries),
                "batch": batch,
                "cpu_us": cpu,
                "wall_us": wall,
            }
        )
    )


if __name__ == "__main__":
    main()
