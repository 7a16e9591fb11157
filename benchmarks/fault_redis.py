"""Redis restarts under live traffic: nothing lost, nothing twice, and how long recovery takes.

A private ``redis-server`` with AOF (``appendfsync always``) on its own port and
directory; a real ``leadpulse run`` and a real ``leadpulse serve`` process against it;
seeded simulator events POSTed to the gateway at ``--rate`` events/s in requests of
``--chunk``. Mid-stream Redis is stopped (SIGTERM: a restart; SIGKILL: a crash, where
``appendfsync always`` must still keep every acknowledged event), left down for a
while, and started again on the same port and directory. Meanwhile the sender keeps
retrying its request every 0.1 s (a real client would honour ``Retry-After``), and a
monitor polls both ``/healthz`` endpoints and the engine's committed-entries counter
every 50 ms.

Checks, against the stream and against an uninterrupted reference run (the same
stream entries, copied to another server, through the same dataflow in-process,
bounded): every event the gateway acknowledged (2xx, ``accepted`` or ``duplicate``)
is in the stream once; the engine committed every entry exactly once (its
``processed`` counter equals the stream length); features, score records, hot list,
snapshots, labels and alerts (by id) equal the reference. Recovery times are from
"Redis answers PING again" to: the engine's ``/healthz`` 200, the engine's first
commit, the gateway's ``/healthz`` 200, the gateway's first 2xx.

One partition, as in ``tests/engine/test_crash.py``: the online model then learns in
stream order in both runs, so scores compare exactly.

    python -m benchmarks.fault_redis                 # 50,000 events, a 10 s restart, a SIGKILL
    python -m benchmarks.fault_redis --events 5000 --out /tmp/fr

``tests/engine/test_redis_restart.py`` runs :func:`run_scenario` at small size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import msgpack
import redis

from benchmarks.harness import DedicatedServer, free_port, machine_info, wait_http
from benchmarks.simulator import events_for_count, generate
from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.gateway.auth import key_digest
from engine.learning import Learner
from engine.model_store import ModelStore
from engine.settings import load_settings
from engine.streams import StreamNames

__all__ = ["AofServer", "Outage", "run_scenario", "snapshot", "compare"]

KEY = "lpk_fault_redis_server_key_0123456789"
SECRET = "fault-redis-contact-hash-secret-0123456789"
PREFIX = "lp"  # the engine's default prefix, on its own server
RESULTS = Path(__file__).resolve().parent / "results"


class AofServer:
    """A private ``redis-server`` with AOF, ``appendfsync always``; restartable in place."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH")
        self._binary = binary
        self.dir = tempfile.mkdtemp(prefix="leadpulse-aof-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout_s: float = 30) -> float:
        """Start on the same port and directory; returns when PING answers (AOF loaded)."""
        self._proc = subprocess.Popen(
            [self._binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir,
             "--daemonize", "no", "--logfile", str(Path(self.dir) / "server.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    client.ping()  # BusyLoadingError while the AOF loads
                    return time.monotonic()
                except redis.RedisError:
                    if self._proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start: {self.dir}") from None
                    time.sleep(0.01)
        finally:
            client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM (a clean shutdown, the AOF is flushed) or SIGKILL (a crash)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)
            try:
                self._proc.wait(30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class Outage:
    """Stop Redis once ``at`` (a fraction) of the events were acknowledged, for ``down_s``."""

    at: float
    down_s: float
    signal: str = "SIGTERM"  # or "SIGKILL"


@dataclass
class _Sender:
    """POSTs the events in order; a request that gets no 2xx is retried until it does."""

    base: str
    events: list[dict[str, Any]]
    chunk: int
    rate: float
    statuses: Counter[str] = field(default_factory=Counter)
    acked: list[str] = field(default_factory=list)  # event ids answered accepted/duplicate
    ok_at: list[float] = field(default_factory=list)  # monotonic time of each 2xx
    http: Counter[int] = field(default_factory=Counter)
    no_retry_after: int = 0
    transport_errors: int = 0
    done: int = 0

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        started = time.monotonic()
        with httpx.Client(base_url=self.base, headers=headers, timeout=30) as http:
            for lo in range(0, len(self.events), self.chunk):
                batch = self.events[lo : lo + self.chunk]
                due = started + lo / self.rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)
                while True:
                    try:
                        r = http.post("/v1/events", json=batch)
                    except httpx.TransportError:
                        self.transport_errors += 1
                        time.sleep(0.1)
                        continue
                    self.http[r.status_code] += 1
                    if r.status_code == 200:
                        break
                    if "retry-after" not in r.headers:
                        self.no_retry_after += 1
                    time.sleep(0.1)
                self.ok_at.append(time.monotonic())
                for row in r.json()["results"]:
                    self.statuses[row["status"]] += 1
                    if row["status"] in ("accepted", "duplicate"):
                        self.acked.append(row["event_id"])
                self.done = lo + len(batch)


@dataclass
class _Monitor:
    """Every 50 ms: engine /healthz, gateway /healthz, entries the engine committed."""

    engine: str
    gateway: str
    url: str
    samples: list[tuple[float, int, int, int | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        names = StreamNames(PREFIX, 1)
        key = f"{{{names.prefix}}}:processed"
        with httpx.Client(timeout=2) as http:
            while not self.stop.is_set():
                t = time.monotonic()
                eng, gw = _status(http, self.engine), _status(http, self.gateway)
                try:
                    done: int | None = sum(int(v) for v in cast(list[bytes], client.hvals(key)))
                except redis.RedisError:
                    done = None
                self.samples.append((t, eng, gw, done))
                self.stop.wait(0.05)
        client.close()


def _status(http: httpx.Client, url: str) -> int:
    try:
        return http.get(url).status_code
    except httpx.TransportError:
        return 0


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "engine.cli", *args], env=env, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> int | None:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def _number(value: bytes) -> Any:
    """A stored number as the number it is. The reference may run on another server kind:
    Redis 7.0 writes Lua numbers with ``%.17g``, Valkey 8 as the shortest text that reads
    back as the same double (``1772408555.9979999`` vs ``1772408555.998``)."""
    try:
        return float(value)
    except ValueError:
        return value


def snapshot(client: redis.Redis, prefix: str, tenant: str) -> dict[str, Any]:
    """Everything a run leaves behind that must not depend on outages (as test_crash.py)."""
    state: dict[str, Any] = {}
    for key in client.scan_iter(match=f"{{{prefix}}}:{{*", count=1000):
        k = key.decode()[len(prefix) + 2 :]
        kind = cast(bytes, client.type(key)).decode()
        if kind == "hash":  # score records
            fields = cast(dict[bytes, bytes], client.hgetall(key))
            state[k] = {f: _number(v) for f, v in fields.items()}
        elif kind == "string":  # the lead's feature record (features/state.py)
            state[k] = client.get(key)
        elif kind == "zset":
            state[k] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            state[k] = client.lrange(key, 0, -1)
    alerts = []
    for _, fields in cast(list[Any], client.xrange(f"{{{prefix}}}:alerts")):
        alert = msgpack.unpackb(fields[b"a"], raw=False)
        for volatile in ("ingest_ms", "emit_ms"):
            alert.pop(volatile)
        alerts.append(alert)
    state["alerts"] = alerts
    state["hot"] = client.zrange(f"{{{prefix}}}:hot:{tenant}", 0, -1, withscores=True)
    state["labels"] = [
        (msgpack.unpackb(f[b"l"], raw=False)["id"], msgpack.unpackb(f[b"l"], raw=False)["y"])
        for _, f in cast(list[Any], client.xrange(f"{{{prefix}}}:labels"))
    ]
    settings = load_settings(overrides={"redis": {"key_prefix": prefix}}, environ={})
    state["labels_learned"] = Learner(settings, ModelStore(client, prefix), 0).live.labels_seen
    return state


def compare(run: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Lost / duplicated / different, run against the reference."""
    run_alerts = {a["alert_id"]: a for a in run["alerts"]}
    ref_alerts = {a["alert_id"]: a for a in ref["alerts"]}
    keys = (set(run) | set(ref)) - {"alerts", "labels", "labels_learned"}
    differing = sorted(k for k in keys if run.get(k) != ref.get(k))
    run_labels = Counter(i for i, _ in run["labels"])
    return {
        "state_keys": len(keys),
        "state_keys_differing": len(differing),
        "state_keys_differing_first": differing[:5],
        "alerts_reference": len(ref_alerts),
        "alerts_run": len(run["alerts"]),
        "alerts_lost": len(set(ref_alerts) - set(run_alerts)),
        "alerts_extra": len(set(run_alerts) - set(ref_alerts)),
        "alerts_duplicated": len(run["alerts"]) - len(run_alerts),
        "alerts_differing": sum(
            1 for k in set(ref_alerts) & set(run_alerts) if run_alerts[k] != ref_alerts[k]
        ),
        "labels_reference": len(ref["labels"]),
        "labels_run": len(run["labels"]),
        "labels_lost": len({i for i, _ in ref["labels"]} - set(run_labels)),
        "labels_duplicated": sum(n - 1 for n in run_labels.values()),
        "labels_equal": run["labels"] == ref["labels"],
        "labels_learned": [run["labels_learned"], ref["labels_learned"]],
    }


def _first_after(samples: Sequence[tuple[Any, ...]], t0: float, ok: Any) -> float | None:
    for sample in samples:
        if sample[0] >= t0 and ok(sample):
            return round(sample[0] - t0, 3)
    return None


def _process_env(url: str, metrics_port: int, tenant: str) -> dict[str, str]:
    """The environment of the engine and gateway processes: the AOF server, one key."""
    env = {
        **os.environ,
        "REDIS_URL": url,
        "LEADPULSE__REDIS__KEY_PREFIX": PREFIX,
        "LEADPULSE__STREAMS__PARTITIONS": "1",
        "LEADPULSE__METRICS__PORT": str(metrics_port),
        "LEADPULSE__GATEWAY__CONTACT_HASH_KEY": SECRET,
        f"LEADPULSE__GATEWAY__API_KEYS__{key_digest(KEY)}": f'{{ tenant = "{tenant}" }}',
        "LEADPULSE__GATEWAY__RATE_PER_S": "100000",
        "LEADPULSE__GATEWAY__RATE_BURST": "100000",
    }
    env.pop("LEADPULSE_CONFIG", None)
    return env


def _outage_windows(
    server: AofServer,
    client: redis.Redis,
    procs: tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]],
    sender: _Sender,
    sending: threading.Thread,
    outages: list[Outage],
) -> list[dict[str, Any]]:
    """Stop and restart Redis for each outage once the sender is far enough; the windows."""
    windows: list[dict[str, Any]] = []
    for outage in outages:
        while sender.done < outage.at * len(sender.events) and sending.is_alive():
            time.sleep(0.005)
        down = time.monotonic()
        server.stop(getattr(signal, outage.signal))
        time.sleep(outage.down_s)
        started = time.monotonic()
        back = server.start()
        windows.append(
            {"signal": outage.signal, "at_events": sender.done, "down": down,
             "started": started, "back": back, "committed_at_back": _processed(client)}
        )  # fmt: skip
        assert all(p.poll() is None for p in procs), "a process died"
    return windows


def _wait_committed(client: redis.Redis, names: StreamNames) -> int:
    """Wait (at most 300 s) for the engine to commit every stream entry; the entry count."""
    entries = cast(int, client.xlen(names.events(0)))
    deadline = time.monotonic() + 300
    while _processed(client) < entries and time.monotonic() < deadline:
        time.sleep(0.05)
    return entries


def _check_against_reference(
    result: dict[str, Any],
    client: redis.Redis,
    names: StreamNames,
    reference: redis.Redis,
    reference_prefix: str,
    work: Path,
) -> None:
    """Add the engine's batch retries, the reference run and the comparison to ``result``."""
    tenant = result["tenant"]
    log = (work / "engine.log").read_text(errors="replace")
    result["events"]["engine_batch_retries"] = log.count(" redone in ")
    result["reference"] = _reference(client, names, reference, reference_prefix, tenant)
    result["run_state"] = snapshot(client, PREFIX, tenant)
    result["comparison"] = compare(result["run_state"], result["reference"])
    result["logs"] = str(work)


def run_scenario(
    events: list[dict[str, Any]],
    outages: list[Outage],
    reference: redis.Redis,
    reference_prefix: str,
    *,
    rate: float = 1_500.0,
    chunk: int = 100,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Run engine + gateway on an AOF server through ``outages``; measure and compare."""
    tenant = str(events[0].get("tenant") or "default")
    work = Path(workdir or tempfile.mkdtemp(prefix="leadpulse-fault-redis-"))
    server = AofServer()
    mport, gport = free_port(), free_port()
    env = _process_env(server.url, mport, tenant)
    engine = _spawn(["run", "-v"], env, work / "engine.log")  # -v: log each batch redone
    gateway = _spawn(["serve", "--port", str(gport)], env, work / "gateway.log")
    eng_health = f"http://127.0.0.1:{mport}/healthz"
    gw_base = f"http://127.0.0.1:{gport}"
    client = redis.Redis.from_url(server.url, socket_timeout=30)
    try:
        wait_http(eng_health, [engine])
        wait_http(f"{gw_base}/healthz", [gateway])
        sender = _Sender(gw_base, events, chunk, rate)
        monitor = _Monitor(eng_health, f"{gw_base}/healthz", server.url)
        threads = [threading.Thread(target=x.run, daemon=True) for x in (sender, monitor)]
        for t in threads:
            t.start()
        windows = _outage_windows(server, client, (engine, gateway), sender, threads[0], outages)
        threads[0].join()
        names = StreamNames(PREFIX, 1)
        entries = _wait_committed(client, names)
        monitor.stop.set()
        threads[1].join()
        alive = engine.poll() is None and gateway.poll() is None
        codes = (_stop(engine), _stop(gateway))
        result = _measure(client, names, sender, monitor, windows, entries, tenant)
        result["processes"] = {"alive_at_end": alive, "exit_codes": list(codes)}
        _check_against_reference(result, client, names, reference, reference_prefix, work)
        return result
    finally:
        for proc in (engine, gateway):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        client.close()
        server.close()


def _processed(client: redis.Redis) -> int:
    try:
        return sum(int(v) for v in cast(list[bytes], client.hvals(f"{{{PREFIX}}}:processed")))
    except redis.RedisError:
        return -1


def _outage_report(
    w: dict[str, Any], samples: list[tuple[float, int, int, int | None]], ok_at: list[float]
) -> dict[str, Any]:
    """One outage window: health during it, and the times to recover after it."""
    # from 1 s after the stop: the engine notices at its next round trip (<= ~0.3 s)
    during = [s for s in samples if w["down"] + 1.0 <= s[0] <= w["started"]]
    back = w["back"]

    def committing(sample: tuple[Any, ...], at: int = w["committed_at_back"]) -> bool:
        return sample[3] is not None and sample[3] > at

    return {
        "signal": w["signal"],
        "after_events_acked": w["at_events"],
        "down_s": round(w["started"] - w["down"], 3),
        "restart_to_ping_s": round(back - w["started"], 3),
        "during": {
            "samples": len(during),
            "engine_healthz_503": sum(1 for s in during if s[1] == 503),
            "engine_healthz_200": sum(1 for s in during if s[1] == 200),
            "gateway_healthz_503": sum(1 for s in during if s[2] == 503),
            "gateway_healthz_200": sum(1 for s in during if s[2] == 200),
        },
        "recovery_s": {
            "engine_healthz_200": _first_after(samples, back, lambda s: s[1] == 200),
            "engine_first_commit": _first_after(samples, back, committing),
            "gateway_healthz_200": _first_after(samples, back, lambda s: s[2] == 200),
            "gateway_first_2xx": next((round(t - back, 3) for t in ok_at if t >= back), None),
        },
    }


def _measure(
    client: redis.Redis,
    names: StreamNames,
    sender: _Sender,
    monitor: _Monitor,
    windows: list[dict[str, Any]],
    entries: int,
    tenant: str,
) -> dict[str, Any]:
    rows = cast(list[Any], client.xrange(names.events(0)))
    in_stream = Counter(msgpack.unpackb(f[b"e"], raw=False)["event_id"] for _, f in rows)
    acked = set(sender.acked)
    outages = [_outage_report(w, monitor.samples, sender.ok_at) for w in windows]
    return {
        "events": {
            "sent": len(sender.events),
            "acked": len(sender.acked),
            "statuses": dict(sender.statuses),
            "http": {str(k): v for k, v in sorted(sender.http.items())},
            "http_503_without_retry_after": sender.no_retry_after,
            "transport_errors": sender.transport_errors,
            "stream_entries": entries,
            "acked_lost": len(acked - set(in_stream)),
            "stream_duplicates": sum(n - 1 for n in in_stream.values()),
            "engine_committed": _processed(client),
        },
        "outages": outages,
        "tenant": tenant,
        "scripts_since_last_restart": _script_stats(client),
    }


def _script_stats(client: redis.Redis) -> dict[str, Any]:
    """Script calls on the server since its last start: were scripts loaded again?

    The script cache is not persisted, so after a restart every EVALSHA would fail with
    NOSCRIPT unless the client loads the script again (redis-py does: ``failed_calls``
    of ``evalsha`` counts the NOSCRIPT replies it recovered from).
    """
    stats = cast(dict[str, Any], client.info("commandstats"))
    return {
        k.removeprefix("cmdstat_"): {f: v[f] for f in ("calls", "failed_calls") if f in v}
        for k, v in stats.items()
        if "script" in k or "evalsha" in k
    }


def _reference(
    client: redis.Redis, names: StreamNames, ref: redis.Redis, prefix: str, tenant: str
) -> dict[str, Any]:
    """The same stream entries through an uninterrupted, bounded, in-process run."""
    ref_names = StreamNames(prefix, 1)
    rows = cast(list[Any], client.xrange(names.events(0)))
    for lo in range(0, len(rows), 2_000):
        pipe = ref.pipeline(transaction=False)
        for _, fields in rows[lo : lo + 2_000]:
            pipe.xadd(ref_names.events(0), {"e": fields[b"e"]})
        pipe.execute()
    settings = load_settings(
        overrides={"redis": {"key_prefix": prefix}, "streams": {"partitions": 1}}, environ={}
    )
    run_flow(build_flow(build_parts(settings, ref), bounded=True))
    return snapshot(ref, prefix, tenant)


def _markdown(out: dict[str, Any]) -> str:
    ev, cmp = out["events"], out["comparison"]
    lines = [
        "# Redis restarts under live traffic (`python -m benchmarks.fault_redis`)",
        "",
        f"{out['machine']['started_at']}, code `{out['machine']['commit']}`, "
        f"{out['machine']['nproc']} cores, Redis {out['machine']['redis_version']} "
        "(private server, AOF, `appendfsync always`), load average at start "
        f"{', '.join(f'{x:.1f}' for x in out['machine']['loadavg_at_start'])}. "
        f"{ev['sent']:,} simulator events POSTed to `leadpulse serve` at "
        f"{out['params']['rate']:,.0f} events/s in requests of {out['params']['chunk']}; "
        "`leadpulse run` (1 partition) processing live.",
        "",
        "| | |",
        "|---|---:|",
        f"| events acknowledged (2xx) | {ev['acked']:,} |",
        f"| acknowledged, not in the stream (**lost**) | **{ev['acked_lost']}** |",
        f"| stream entries / duplicated event ids | {ev['stream_entries']:,} / "
        f"{ev['stream_duplicates']} |",
        f"| batch attempts the engine redid (Redis unreachable mid-batch) | "
        f"{ev['engine_batch_retries']} |",
        f"| entries committed by the engine (must equal the stream) | {ev['engine_committed']:,} |",
        f"| 503 answers (all with `Retry-After`) | {ev['http'].get('503', 0)} "
        f"({ev['http_503_without_retry_after']} without) |",
        f"| alerts: reference / run | {cmp['alerts_reference']:,} / {cmp['alerts_run']:,} |",
        f"| alerts **lost** / extra / **duplicated** / different | **{cmp['alerts_lost']}** / "
        f"{cmp['alerts_extra']} / **{cmp['alerts_duplicated']}** / {cmp['alerts_differing']} |",
        f"| labels lost / duplicated | {cmp['labels_lost']} / {cmp['labels_duplicated']} |",
        f"| lead state keys differing from the reference | {cmp['state_keys_differing']} of "
        f"{cmp['state_keys']:,} |",
        "",
        "| outage | down | restart → PING | during: engine /healthz 503 | during: gateway "
        "/healthz 503 | → engine /healthz 200 | → engine commits | → gateway /healthz 200 "
        "| → gateway 2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for o in out["outages"]:
        d, r = o["during"], o["recovery_s"]
        lines.append(
            f"| {o['signal']} after {o['after_events_acked']:,} events | {o['down_s']:.1f} s | "
            f"{o['restart_to_ping_s']:.2f} s | {d['engine_healthz_503']}/{d['samples']} | "
            f"{d['gateway_healthz_503']}/{d['samples']} | {r['engine_healthz_200']} s | "
            f"{r['engine_first_commit']} s | {r['gateway_healthz_200']} s | "
            f"{r['gateway_first_2xx']} s |"
        )
    lines += [
        "",
        "Recovery times run from the moment the restarted server answers PING (its AOF "
        "loaded); the monitor samples every 50 ms and the sender retries every 0.1 s, so "
        "figures are ±0.1 s. The engine waits at most `redis.outage_backoff_cap_s` (2 s) "
        'between tries. "during" counts the monitor\'s samples from 1 s after the stop '
        "until the restart. Scripts on the server after the last restart (`INFO "
        "commandstats`: the cache is not persisted, redis-py loads them again; "
        "`evalsha` `failed_calls` are the NOSCRIPT replies it recovered from): "
        f"`{json.dumps(out['scripts_since_last_restart'])}`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=1_500.0, help="events/s sent")
    parser.add_argument("--chunk", type=int, default=100, help="events per request")
    parser.add_argument("--restart-down-s", type=float, default=10.0)
    parser.add_argument("--kill-down-s", type=float, default=5.0)
    parser.add_argument("--out", default=str(RESULTS), help="directory for the results")
    args = parser.parse_args(argv)
    events = list(generate(events_for_count(args.events, seed=7, days=60.0)))[: args.events]
    outages = [
        Outage(0.3, args.restart_down_s, "SIGTERM"),
        Outage(0.65, args.kill_down_s, "SIGKILL"),
    ]
    with DedicatedServer() as ref:
        machine = machine_info(ref.client, "private redis-server with AOF (own port)")
        out = run_scenario(events, outages, ref.client, "ref", rate=args.rate, chunk=args.chunk)
    out.pop("run_state")
    out.pop("reference")
    out["machine"] = machine
    out["params"] = {"events": args.events, "rate": args.rate, "chunk": args.chunk,
                     "outages": [o.__dict__ for o in outages]}  # fmt: skip
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "fault_redis.json").write_text(json.dumps(out, indent=2) + "\n")
    (dest / "fault_redis.md").write_text(_markdown(out))
    print(_markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
