"""Crash faults on real processes: SIGKILL ``leadpulse run`` and ``leadpulse serve``.

**Dataflow** (``--events``, default 200,000 simulator events, one partition so the
online model learns in one order): an uninterrupted reference run, then a run of
``leadpulse run`` SIGKILLed ``--kills`` times at random committed positions and
restarted. Everything a run leaves behind is compared: each lead's features
(``:h``), score record (``:s``) and snapshots, the hot list, the alert set (by id,
field by field), the labels stream, and what a restarted trainer has learned.
Recovery time is from each restart to its first new commit.

**Gateway**: a client posts batches to ``leadpulse serve`` while it is SIGKILLed
``--serve-kills`` times and restarted; a batch without an answer is sent again (as
every client must). Every event acknowledged with a 2xx must be in the stream, and no
event id twice. Recovery time is from each restart to the next 2xx.

    python -m benchmarks.fault_crash                  # writes results/fault_crash.{json,md}
    python -m benchmarks.fault_crash --events 20000 --kills 3 --serve-kills 2   # quick
    python -m benchmarks.fault_crash --cluster --out benchmarks/results/fault_crash_cluster
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgpack

from benchmarks.cluster import LocalCluster
from benchmarks.harness import DedicatedServer, free_port, machine_info, wait_http
from benchmarks.simulator import SimConfig, events_for_count, generate
from engine.keys import LAYOUTS, every_pattern, processed_key
from engine.learning import Learner
from engine.model_store import ModelStore
from engine.redis_client import connect
from engine.settings import load_settings
from engine.streams import Producer, StreamNames, committed_positions

RESULTS = Path(__file__).resolve().parent / "results"


def _sid(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def load(
    client: Any, prefix: str, events: list[dict[str, Any]], layout: str = "deployment"
) -> tuple[int, int]:
    """Append ``events`` to one partition under ``prefix``; the last stream id."""
    names = StreamNames(prefix, 1, layout)
    producer = Producer(client, names, maxlen=10**9)
    for i in range(0, len(events), 2_000):
        producer.send(events[i : i + 2_000])
    info = client.xinfo_stream(names.events(0))
    last = info["last-generated-id"]
    return _sid(last.decode() if isinstance(last, bytes) else str(last))


def snapshot(client: Any, prefix: str, tenant: str) -> dict[str, Any]:
    """Everything a run leaves behind that must not depend on crashes, nor on the key
    layout: keys are named without their hash tag, and the alerts and hot-list shards of
    the slot-per-partition layout are merged."""
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=every_pattern(prefix, "{*"), count=1000):
        k = key.decode().split("}:", 1)[1]
        kind = client.type(key).decode()
        if k.endswith(":h") or k.endswith(":s"):
            state[k] = client.hgetall(key)
        elif kind == "zset":
            state[k] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            state[k] = client.lrange(key, 0, -1)
        elif kind == "hash":
            state[k] = client.hgetall(key)
        elif kind == "string":  # the lead's feature record (features/state.py)
            state[k] = client.get(key)
    alerts, hot = [], []
    for shard in _shards(client, prefix):
        for _, fields in client.xrange(f"{{{shard}}}:alerts"):
            alert = msgpack.unpackb(fields[b"a"], raw=False)
            for volatile in ("ingest_ms", "emit_ms"):
                alert.pop(volatile)
            alerts.append(alert)
        hot += client.zrange(f"{{{shard}}}:hot:{tenant}", 0, -1, withscores=True)
    state["alerts"] = sorted(alerts, key=lambda a: a["alert_id"])
    state["hot"] = sorted(hot, key=lambda mv: (mv[1], mv[0]))
    # labelled examples: each learned exactly once, in the same order
    state["labels"] = [
        (msgpack.unpackb(f[b"l"], raw=False)["id"], msgpack.unpackb(f[b"l"], raw=False)["y"])
        for _, f in client.xrange(f"{{{prefix}}}:labels")
    ]
    # the trainer as it restarts from its checkpoint and catches up on the labels stream
    settings = load_settings(overrides={"redis": {"key_prefix": prefix}}, environ={})
    state["labels_learned"] = Learner(settings, ModelStore(client, prefix), 0).live.labels_seen
    return state


def _shards(client: Any, prefix: str) -> list[str]:
    """The tags a deployment's keys are under: ``prefix``, and in the slot-per-partition
    layout its partitions' (found from their position hashes)."""
    tags = {prefix}
    for key in client.scan_iter(match=every_pattern(prefix, "pos"), count=1000):
        tags.add(key.decode()[1:].split("}:", 1)[0])
    return sorted(tags)


def compare(reference: dict[str, Any], crashed: dict[str, Any]) -> dict[str, Any]:
    """Counts of what differs: lost / extra alerts, differing keys."""
    ref_ids = {a["alert_id"]: a for a in reference["alerts"]}
    got_ids: dict[str, Any] = {}
    duplicates = 0
    for a in crashed["alerts"]:
        duplicates += a["alert_id"] in got_ids
        got_ids[a["alert_id"]] = a
    keys = set(reference) | set(crashed)
    differing = sorted(k for k in keys if reference.get(k) != crashed.get(k) and k != "alerts")
    return {
        "alerts_reference": len(reference["alerts"]),
        "alerts_lost": len(set(ref_ids) - set(got_ids)),
        "alerts_extra": len(set(got_ids) - set(ref_ids)),
        "alerts_duplicated": duplicates,
        "alerts_changed": sum(1 for k in ref_ids if k in got_ids and got_ids[k] != ref_ids[k]),
        "lead_keys_reference": sum(1 for k in reference if k.startswith(":{")),
        "keys_differing": len(differing),
        "differing_examples": differing[:10],
        "labels_reference": len(reference["labels"]),
        "labels_learned": [reference["labels_learned"], crashed["labels_learned"]],
        "identical": reference == crashed,
    }


def _env(url: str, prefix: str, layout: str = "deployment") -> dict[str, str]:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "LEADPULSE__REDIS__KEY_PREFIX": prefix,
        "LEADPULSE__REDIS__KEY_LAYOUT": layout,
        "LEADPULSE__STREAMS__PARTITIONS": "1",
        "LEADPULSE__METRICS__PORT": "0",
    }
    env.pop("LEADPULSE_CONFIG", None)
    return env


def _spawn_run(url: str, prefix: str, layout: str = "deployment") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "run"],
        env=_env(url, prefix, layout),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _reference_run(client: Any, ref: str, events: list[dict[str, Any]], layout: str) -> float:
    """Load ``events`` under ``ref`` and run the flow in process; the seconds it took."""
    from engine.app import build_parts
    from engine.dataflow import build_flow, run_flow

    load(client, ref, events, layout)
    t0 = time.monotonic()
    redis = {"key_prefix": ref, "key_layout": layout}
    settings = load_settings(overrides={"redis": redis, "streams": {"partitions": 1}}, environ={})
    run_flow(build_flow(build_parts(settings, client), bounded=True))
    return time.monotonic() - t0


def _kill_points(rng: random.Random, kills: int) -> list[float]:
    # kill points: sorted random fractions of the stream, at least 2 % apart
    points = sorted(rng.uniform(0.05, 0.9) for _ in range(kills))
    for i in range(1, len(points)):
        points[i] = max(points[i], points[i - 1] + 0.02)
    return points


@dataclass
class _CrashRun:
    """What the steps of the crash run share: where it runs and what it measured."""

    client: Any
    url: str
    prefix: str
    end: tuple[int, int]
    layout: str = "deployment"
    recoveries: list[float] = field(default_factory=list)
    killed_at: list[int] = field(default_factory=list)

    def position(self) -> tuple[int, int]:
        return _sid(committed_positions(self.client, self.names())[0])

    def names(self) -> StreamNames:
        return StreamNames(self.prefix, 1, self.layout)


def _run_and_kill(run: _CrashRun, target: tuple[float, int]) -> None:
    """Start ``leadpulse run``, SIGKILL it once it has committed past ``target``."""
    before = run.position()
    proc = _spawn_run(run.url, run.prefix, run.layout)
    started = time.monotonic()
    moved = False
    while run.position() < target:
        if proc.poll() is not None:
            raise RuntimeError("leadpulse run exited early")
        if not moved and run.position() > before:
            run.recoveries.append(time.monotonic() - started)
            moved = True
        time.sleep(0.002)
    if not moved:
        run.recoveries.append(time.monotonic() - started)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if run.position() >= run.end:
        raise RuntimeError("the run finished before it could be killed")
    run.killed_at.append(int(run.client.hget(processed_key(run.names().of(0)), "0") or 0))


def _run_to_end(run: _CrashRun) -> None:
    """The last restart: let ``leadpulse run`` reach the end of the stream, then stop it."""
    proc = _spawn_run(run.url, run.prefix, run.layout)
    started = time.monotonic()
    before = run.position()
    moved = False
    deadline = time.monotonic() + 1_800
    while run.position() < run.end and time.monotonic() < deadline:
        if not moved and run.position() > before:
            run.recoveries.append(time.monotonic() - started)
            moved = True
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)


def crash_dataflow(
    client: Any,
    url: str,
    events: list[dict[str, Any]],
    kills: int,
    seed: int,
    base: str = "fc",
    reference_client: Any = None,
    layout: str = "deployment",
) -> dict[str, Any]:
    """Reference run in process, then ``leadpulse run`` killed ``kills`` times.

    Key prefixes ``<base>r`` (reference) and ``<base>c`` (crash run) on the server at
    ``url`` (``client`` talks to it; it may be a Redis Cluster). The reference runs on
    ``reference_client`` when given (e.g. one server, to compare a cluster against)."""
    tenant = str(events[0]["tenant"])
    ref = base + "r"
    ref_client = client if reference_client is None else reference_client
    reference_s = _reference_run(ref_client, ref, events, layout)
    reference = snapshot(ref_client, ref, tenant)

    prefix = base + "c"
    end = load(client, prefix, events, layout)
    names = StreamNames(prefix, 1, layout)
    points = _kill_points(random.Random(seed), kills)
    first_ms = _sid(client.xrange(names.events(0), count=1)[0][0].decode())[0]
    run = _CrashRun(client, url, prefix, end, layout)

    t0 = time.monotonic()
    for fraction in points:
        _run_and_kill(run, (first_ms + (end[0] - first_ms) * fraction, 0))
    _run_to_end(run)
    crash_s = time.monotonic() - t0
    crashed = snapshot(client, prefix, tenant)
    result = compare(reference, crashed)
    result.update(
        events=len(events),
        leads=len({e.get("lead_id") or e.get("visitor_id") for e in events}),
        kills=len(run.killed_at),
        killed_after_events=run.killed_at,
        recovery_s=[round(r, 2) for r in run.recoveries],
        reference_run_s=round(reference_s, 1),
        crash_run_s=round(crash_s, 1),
    )
    return result


def _spawn_serve(url: str, config: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "engine.cli", "serve", "--config", str(config),
         "--port", str(port), "--redis-url", url],
        env={k: v for k, v in os.environ.items() if k != "LEADPULSE_CONFIG"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _write_gateway_config(prefix: str, tenant: str, api_key: str) -> Path:
    """A ``serve`` config in a fresh temporary directory, with one server key for ``tenant``."""
    tmp = Path(tempfile.mkdtemp(prefix="leadpulse-fault-"))
    config = tmp / "gateway.toml"
    config.write_text(
        f'[redis]\nkey_prefix = "{prefix}"\n[streams]\npartitions = 4\n'
        f"[gateway]\nrate_per_s = 100_000\nrate_burst = 1_000_000\n"
        f'contact_hash_key = "{secrets.token_hex(24)}"\n[gateway.api_keys]\n'
        f'"{hashlib.sha256(api_key.encode()).hexdigest()}" = '
        f'{{ tenant = "{tenant}", role = "server" }}\n'
    )
    return config


@dataclass
class _Ingest:
    """What the posting client and the killer share while ``serve`` is being killed."""

    base: str
    api_key: str
    acked: list[str] = field(default_factory=list)
    answered_not_2xx: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    posted: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    first_2xx_after: list[float] = field(default_factory=list)
    restarted_at: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _post_batch(ingest: _Ingest, http: httpx.Client, chunk: list[dict[str, Any]]) -> None:
    """Post one batch until it has a 2xx answer; record what was acknowledged."""
    while True:
        try:
            reply = http.post("/v1/events", json=chunk)
        except httpx.HTTPError:
            ingest.retries += 1  # no answer: the client cannot know; it sends again
            time.sleep(0.02)
            continue
        if reply.status_code in (429, 503):
            ingest.answered_not_2xx[str(reply.status_code)] = (
                ingest.answered_not_2xx.get(str(reply.status_code), 0) + 1
            )
            time.sleep(0.05)
            continue
        reply.raise_for_status()
        with ingest.lock:
            if ingest.restarted_at and len(ingest.first_2xx_after) < len(ingest.restarted_at):
                ingest.first_2xx_after.append(time.monotonic() - ingest.restarted_at[-1])
        for row in reply.json()["results"]:
            if row["status"] in ("accepted", "duplicate"):
                ingest.acked.append(row["event_id"])
        return


def _post_all(ingest: _Ingest, events: list[dict[str, Any]], batch: int) -> None:
    http = httpx.Client(base_url=ingest.base, timeout=5,
                        headers={"Authorization": f"Bearer {ingest.api_key}"})  # fmt: skip
    for i in range(0, len(events), batch):
        chunk = events[i : i + batch]
        _post_batch(ingest, http, chunk)
        ingest.posted += len(chunk)
    http.close()
    ingest.done.set()


def _stream_event_ids(client: Any, prefix: str) -> list[str]:
    """The event ids in the four partitions of the events stream, duplicates kept."""
    in_stream: list[str] = []
    for p in range(4):
        rows: list[Any] = client.xrange(f"{{{prefix}}}:events:{p}")
        for _, fields in rows:
            in_stream.append(msgpack.unpackb(fields[b"e"], raw=False)["event_id"])
    return in_stream


def crash_gateway(
    client: Any,
    url: str,
    events: list[dict[str, Any]],
    kills: int,
    seed: int,
    prefix: str = "fcg",
    batch: int = 50,
) -> dict[str, Any]:
    """Post ``events`` while ``serve`` is SIGKILLed ``kills`` times; check every 2xx landed."""
    tenant = str(events[0]["tenant"])
    api_key = "lp_" + secrets.token_urlsafe(24)
    config = _write_gateway_config(prefix, tenant, api_key)
    port = free_port()
    ingest = _Ingest(f"http://127.0.0.1:{port}", api_key)

    rng = random.Random(seed)
    proc = _spawn_serve(url, config, port)
    wait_http(ingest.base + "/healthz", [proc], timeout_s=30)
    sender = threading.Thread(target=_post_all, args=(ingest, events, batch))
    sender.start()
    kill_points = sorted(rng.uniform(0.05, 0.9) * len(events) for _ in range(kills))
    for point in kill_points:
        while ingest.posted < point and not ingest.done.is_set():
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)  # mid-request: some batches have no answer
        proc.wait()
        with ingest.lock:
            ingest.restarted_at.append(time.monotonic())
        proc = _spawn_serve(url, config, port)
    sender.join(600)
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)

    in_stream = _stream_event_ids(client, prefix)
    stream_ids = set(in_stream)
    acked_ids = set(ingest.acked)
    return {
        "events": len(events),
        "kills": len(kill_points),
        "batches_resent_after_no_answer": ingest.retries,
        "answers_429_503": ingest.answered_not_2xx,
        "acknowledged": len(acked_ids),
        "acknowledged_missing_from_stream": len(acked_ids - stream_ids),
        "in_stream": len(in_stream),
        "duplicated_in_stream": len(in_stream) - len(stream_ids),
        "never_acknowledged": len({e["event_id"] for e in events} - acked_ids),
        "recovery_to_first_2xx_s": [round(s, 2) for s in ingest.first_2xx_after],
    }


def markdown(result: dict[str, Any]) -> str:
    d, g, m = result["dataflow"], result["gateway"], result["machine"]
    return "\n".join([
        "# Crash faults (SIGKILL)",
        "",
        f"`{result['command']}` on {m['nproc']} cores ({m['cpu_model']}), Redis "
        f"{m['redis_version']} ({m['redis_kind']}), load average at start "
        f"{[round(x, 1) for x in m['loadavg_at_start']]}, commit {m['commit']}.",
        "",
        "## `leadpulse run` SIGKILLed during a replay",
        "",
        f"{d['events']:,} simulator events ({d['leads']:,} leads), one partition. "
        f"Reference run {d['reference_run_s']} s; the crash run with {d['kills']} SIGKILLs "
        f"(after {', '.join(f'{k:,}' for k in d['killed_after_events'])} committed events) "
        f"and restarts took {d['crash_run_s']} s.",
        "",
        "| measure | result |",
        "|---|---:|",
        f"| everything identical to the reference | **{d['identical']}** |",
        f"| alerts in the reference | {d['alerts_reference']:,} |",
        f"| alerts lost / extra / duplicated / changed | {d['alerts_lost']} / "
        f"{d['alerts_extra']} / {d['alerts_duplicated']} / {d['alerts_changed']} |",
        f"| lead keys compared (features, score records, snapshots) | "
        f"{d['lead_keys_reference']:,} |",
        f"| keys differing | {d['keys_differing']} |",
        f"| labels (reference) / learned by a restarted trainer (ref, crash) | "
        f"{d['labels_reference']:,} / {d['labels_learned']} |",
        f"| recovery: restart -> first new commit (s) | {d['recovery_s']} |",
        "",
        "## `leadpulse serve` SIGKILLed during ingest",
        "",
        f"{g['events']:,} events posted in batches; {g['kills']} SIGKILLs; a batch with no "
        f"answer is sent again ({g['batches_resent_after_no_answer']} resends).",
        "",
        "| measure | result |",
        "|---|---:|",
        f"| events acknowledged (2xx: accepted or duplicate) | {g['acknowledged']:,} |",
        "| acknowledged but missing from the stream | "
        f"**{g['acknowledged_missing_from_stream']}** |",
        f"| entries in the stream / duplicated event ids | {g['in_stream']:,} / "
        f"**{g['duplicated_in_stream']}** |",
        f"| events never acknowledged | {g['never_acknowledged']} |",
        f"| 429 / 503 answers | {g['answers_429_503'] or 'none'} |",
        f"| recovery: restart -> next 2xx (s) | {g['recovery_to_first_2xx_s']} |",
        "",
    ])  # fmt: skip


CLUSTER_KIND = "; the crash runs on a local 3-master Redis Cluster (1 replica each)"


def _crash_runs(
    args: argparse.Namespace, server: DedicatedServer, events: list[dict[str, Any]],
    serve_events: list[dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The dataflow and gateway crash runs on ``server``, or with ``--cluster`` on a local
    cluster (the dataflow's uninterrupted reference still on ``server``)."""
    with contextlib.ExitStack() as stack:
        client, url, reference = server.client, server.url, None
        if args.cluster:
            lc = stack.enter_context(LocalCluster(masters=3, replicas=1))
            client, url, reference = connect(lc.url), lc.url, server.client
            stack.callback(client.close)
        dataflow = crash_dataflow(client, url, events, args.kills, args.seed,
                                  reference_client=reference, layout=args.layout)  # fmt: skip
        print(json.dumps(dataflow), flush=True)
        gateway = crash_gateway(client, url, serve_events, args.serve_kills, args.seed)
        print(json.dumps(gateway), flush=True)
    return dataflow, gateway


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--serve-events", type=int, default=50_000)
    ap.add_argument("--serve-kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--out", default=str(RESULTS / "fault_crash"))
    ap.add_argument("--cluster", action="store_true",
                    help="crash runs on a local 3-master Redis Cluster (1 replica each); "
                         "the dataflow's reference run on one server")  # fmt: skip
    ap.add_argument("--layout", choices=LAYOUTS, default="deployment",
                    help="redis.key_layout of the dataflow's runs")  # fmt: skip
    args = ap.parse_args(argv)
    # 90 days of event time: outcomes reach the 30-day label horizon, so the run learns
    # (the count is within +-20 %: ask for more, keep exactly --events, the earliest ones)
    sim = events_for_count(int(args.events * 1.25), seed=args.seed, days=90.0, tenant="sim")
    events = list(generate(sim))[: args.events]
    if len(events) < args.events:
        raise SystemExit(f"the simulator gave {len(events):,} events, fewer than {args.events:,}")
    assert any(e["type"] == "appointment_set" for e in events)
    serve_events = list(generate(SimConfig(seed=args.seed + 1, leads=2_000, tenant="sim")))
    serve_events = serve_events[: args.serve_events]
    with DedicatedServer() as server:
        kind = server.kind + (CLUSTER_KIND if args.cluster else "")
        machine = machine_info(server.client, server.url, [("redis_kind", kind)])
        dataflow, gateway = _crash_runs(args, server, events, serve_events)
    result = {
        "command": "python -m benchmarks.fault_crash " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "dataflow": dataflow,
        "gateway": gateway,
        "machine": machine,
    }  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    ok = dataflow["identical"] and not gateway["acknowledged_missing_from_stream"]
    return 0 if ok and not gateway["duplicated_in_stream"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
