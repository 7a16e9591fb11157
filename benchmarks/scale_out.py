"""Events per CPU-second of ``leadpulse run``: one server vs a Redis Cluster, 1 vs 2
processes (issue 13).

The machine running this may have as few cores as processes, and other work on it, so
wall-clock throughput says little about scaling out; CPU time does. Each configuration
drains the same pre-loaded backlog (seeded simulator events, 4 partitions unless
``--partitions`` says otherwise) on its own
target: a dedicated ``redis-server``, or a dedicated 3-master Redis Cluster
(``benchmarks/cluster.py``, no replicas, ``REDIS_URL`` naming the first node), both
started once for the whole run. The engine processes' CPU time (user + system, from
``/proc/<pid>/stat``) and the committed events are sampled from the first commit seen
to the last, so start-up (imports, model load) is excluded. The Redis processes' CPU
time over the same interval (all cluster nodes together) is reported beside it (not
counted in the rate). Rounds interleave the four configurations. After each cluster
run the deployment's keys are counted on each master (the key spread).

``python -m benchmarks.scale_out --events 40000 --rounds 3 --out benchmarks/results``;
``--layout partition --partitions 6`` runs every configuration in the slot-per-partition
key layout (``redis.key_layout``), whose keys spread over the masters.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from benchmarks.cluster import LocalCluster
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
from engine.keys import LAYOUTS, every_pattern
from engine.redis_client import connect, is_cluster
from engine.streams import StreamNames

__all__ = ["Measured", "Target", "measure", "key_spread", "summarize", "markdown", "main"]

_TICK = os.sysconf("SC_CLK_TCK")
CONFIGS = (("server", 1), ("cluster", 1), ("server", 2), ("cluster", 2))


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


@dataclass(frozen=True)
class Target:
    """Where a configuration runs: one server or a cluster, and its Redis processes."""

    name: str  # "server" or "cluster"
    url: str
    client: Any  # redis.Redis, or redis.cluster.RedisCluster for a cluster
    redis_pids: tuple[int, ...]


@dataclass(frozen=True)
class Measured:
    target: str
    processes: int
    events: int  # committed between the first and the last sample
    wall_s: float
    engine_cpu_s: float  # all engine processes together
    redis_cpu_s: float  # all Redis processes of the target together
    events_per_cpu_s: float  # events / engine CPU seconds
    events_per_s: float  # wall clock, for reference only
    keys_per_master: dict[str, int] = field(default_factory=dict)  # cluster runs only


def key_spread(client: Any, prefix: str) -> dict[str, int]:
    """How many of the deployment's keys (either layout) each master of a cluster holds."""
    spread: dict[str, int] = {}
    for node in client.get_primaries():
        keys = node.redis_connection.scan_iter(match=every_pattern(prefix), count=2_000)
        spread[f"{node.host}:{node.port}"] = sum(1 for _ in keys)
    return spread


def _sample(target: Target, engine_pids: list[int], done: int) -> tuple[float, ...]:
    return (time.perf_counter(), done, sum(cpu_s(p) for p in engine_pids),
            sum(cpu_s(p) for p in target.redis_pids))  # fmt: skip


def measure(
    target: Target, work: Workload, processes: int, layout: str = "deployment",
    partitions: int = PARTITIONS,
) -> Measured:  # fmt: skip
    """Drain ``work`` on ``target`` with ``processes`` engine processes (1 worker each)."""
    client, prefix = target.client, new_prefix("so")
    loaded = preload(client, StreamNames(prefix, partitions, layout), work)
    env = engine_env(target.url, prefix)
    env.update(LEADPULSE__REDIS__KEY_LAYOUT=layout,
               LEADPULSE__STREAMS__PARTITIONS=str(partitions))  # fmt: skip
    try:
        with EngineProcesses(env, processes, 1) as engine:
            pids = [p.pid for p in engine.procs]
            first: tuple[float, ...] | None = None
            deadline = time.monotonic() + max(120.0, loaded.total / 200)
            while True:
                engine.check()
                done = loaded.committed(client)
                sample = _sample(target, pids, done)
                if done and first is None:
                    first = sample
                if done >= loaded.total:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{done} of {loaded.total} events after the deadline")
                time.sleep(0.01)
        assert first is not None
        spread = key_spread(client, prefix) if is_cluster(client) else {}
        events = int(sample[1] - first[1])
        engine_cpu, wall = sample[2] - first[2], sample[0] - first[0]
        return Measured(target.name, processes, events, round(wall, 3), round(engine_cpu, 2),
                        round(sample[3] - first[3], 2), round(events / engine_cpu, 1),
                        round(events / wall, 1), spread)  # fmt: skip
    finally:
        delete_prefix(client, prefix)


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def summarize(
    runs: dict[str, list[Measured]], events: int, layout: str = "deployment",
    partitions: int = PARTITIONS,
) -> dict[str, Any]:  # fmt: skip
    """Medians per configuration, the cluster / server and 2 / 1 process ratios (of the
    medians, and per round: both halves of a round ran back to back)."""
    median = {k: statistics.median(m.events_per_cpu_s for m in ms) for k, ms in runs.items()}
    paired: dict[str, list[float]] = {}
    for n in (1, 2):
        server, cluster = runs[f"server/{n}"], runs[f"cluster/{n}"]
        paired[f"cluster_vs_server/{n}"] = [
            _ratio(c.events_per_cpu_s, s.events_per_cpu_s)
            for s, c in zip(server, cluster, strict=True)
        ]
    for name in ("server", "cluster"):
        one, two = runs[f"{name}/1"], runs[f"{name}/2"]
        paired[f"two_vs_one/{name}"] = [
            _ratio(b.events_per_cpu_s, a.events_per_cpu_s) for a, b in zip(one, two, strict=True)
        ]
    return {
        "events": events,
        "partitions": partitions,
        "key_layout": layout,
        "median_events_per_cpu_s": median,
        "cluster_vs_server": {
            n: _ratio(median[f"cluster/{n}"], median[f"server/{n}"]) for n in ("1", "2")
        },
        "two_vs_one": {
            t: _ratio(median[f"{t}/2"], median[f"{t}/1"]) for t in ("server", "cluster")
        },
        "per_round_ratios": paired,
        "keys_per_master": [
            m.keys_per_master for k in runs if k.startswith("cluster") for m in runs[k]
        ],
        "runs": {k: [asdict(m) for m in ms] for k, ms in runs.items()},
    }


def markdown(summary: dict[str, Any], command: str) -> str:
    """The results page: the method, a row per round, the medians, the key spread."""
    m, runs, med = summary["machine"], summary["runs"], summary["median_events_per_cpu_s"]
    lines = [
        "# Scale out: events per CPU-second, one server vs a 3-master Redis Cluster, "
        "1 vs 2 `leadpulse run` processes (issue 13)", "", f"```\n{command}\n```", "",
        f"{m['started_at']}, commit `{m['commit']}`, {m['nproc']} cores ({m['cpu_model']}), "
        f"Python {m['python']}, Redis {m['redis_version']}; key layout "
        f"`{summary['key_layout']}`, {summary['partitions']} partitions; load average at start "
        f"{[round(x, 1) for x in m['loadavg_at_start']]}, at the end "
        f"{[round(x, 1) for x in summary['loadavg_at_end']]}.", "",
        __doc__.split("\n\n")[1].replace("\n", " "), "",
        "| round | target | processes | events | engine CPU-s | events/CPU-s | wall events/s "
        "| Redis CPU-s |", "|---|---|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in range(len(runs["server/1"])):
        for key in ("server/1", "cluster/1", "server/2", "cluster/2"):
            x = runs[key][r]
            lines.append(f"| {r + 1} | {x['target']} | {x['processes']} | {x['events']:,} | "
                         f"{x['engine_cpu_s']} | {x['events_per_cpu_s']:,.0f} | "
                         f"{x['events_per_s']:,.0f} | {x['redis_cpu_s']} |")  # fmt: skip
    ratios = summary["per_round_ratios"]
    lines += ["", "| median events/CPU-s | 1 process | 2 processes | 2 / 1 |",
              "|---|---:|---:|---:|"]  # fmt: skip
    for t in ("server", "cluster"):
        rounds = ratios["two_vs_one/" + t]
        lines.append(f"| {t} | {med[t + '/1']:,.0f} | {med[t + '/2']:,.0f} | "
                     f"{summary['two_vs_one'][t]} (rounds {rounds}) |")  # fmt: skip
    lines += [f"| **cluster / server** | **{summary['cluster_vs_server']['1']}** (rounds "
              f"{ratios['cluster_vs_server/1']}) | **{summary['cluster_vs_server']['2']}** "
              f"(rounds {ratios['cluster_vs_server/2']}) | |", "",
              "Keys of the deployment on each master after each cluster run "
              "(`SCAN` of each master):", ""]  # fmt: skip
    for spread in summary["keys_per_master"]:
        counts, total = list(spread.values()), sum(spread.values())
        worst = max(abs(c / total * len(counts) - 1) for c in counts) if total else 0.0
        lines.append(f"- {' / '.join(f'{c:,}' for c in counts)} keys "
                     f"({', '.join(spread)}): the furthest master is {worst:.0%} off an "
                     f"even share (target: within 20 %)")  # fmt: skip
    return "\n".join(lines) + "\n"


def _run_all(
    targets: dict[str, Target], work: Workload, args: argparse.Namespace
) -> dict[str, list[Measured]]:
    runs: dict[str, list[Measured]] = {f"{t}/{n}": [] for t, n in CONFIGS}
    for _ in range(args.rounds):  # interleaved, so a busy spell hits every configuration alike
        for name, processes in CONFIGS:
            m = measure(targets[name], work, processes, args.layout, args.partitions)
            runs[f"{name}/{processes}"].append(m)
            print(json.dumps(asdict(m)), file=sys.stderr, flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale_out", description=__doc__)
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--out", default="", help="directory for scale_out.json and .md")
    parser.add_argument("--layout", choices=LAYOUTS, default="deployment",
                        help="redis.key_layout of every configuration")  # fmt: skip
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    args = parser.parse_args(argv)
    work = Workload.build(args.events, partitions=args.partitions)
    with DedicatedServer() as server, LocalCluster(masters=3, replicas=0) as lc:
        server_client, cluster_client = connect(server.url), connect(lc.url)
        machine = machine_info(server_client, server.url, [("cluster_url", lc.url)])
        server_pid = int(cast(dict[str, Any], server_client.info("server"))["process_id"])
        targets = {
            "server": Target("server", server.url, server_client, (server_pid,)),
            "cluster": Target("cluster", lc.url, cluster_client, tuple(lc.pids().values())),
        }
        try:
            runs = _run_all(targets, work, args)
        finally:
            server_client.close()
            cluster_client.close()
    summary = {**summarize(runs, len(work), args.layout, args.partitions), "machine": machine,
               "loadavg_at_end": list(os.getloadavg())}  # fmt: skip
    print(json.dumps({k: summary[k] for k in ("median_events_per_cpu_s", "cluster_vs_server",
                                              "two_vs_one", "keys_per_master")}))  # fmt: skip
    if args.out:
        command = "python -m benchmarks.scale_out " + " ".join(
            sys.argv[1:] if argv is None else argv)  # fmt: skip
        Path(args.out, "scale_out.json").write_text(json.dumps(summary, indent=1) + "\n")
        Path(args.out, "scale_out.md").write_text(markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
