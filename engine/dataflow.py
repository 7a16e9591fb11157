"""The Bytewax shell around the engine: the only module that imports Bytewax.

Graph: ``input`` (one resumable partition per Redis stream partition) ->
``flat_map_batch`` (:class:`engine.processor.Processor`: validate, features, score,
alerts, commit) -> ``output`` (a callback for whoever wants the alerts, e.g. the demo).

No key is used, so a batch stays on the worker that read it: the worker owning a
stream partition owns its leads and is the only writer of that partition's committed
position. Rolling state lives in Redis, not in Bytewax; the only Bytewax state is the
source position, which is also committed to Redis with each batch's effects, so a
restart resumes from Redis with or without Bytewax recovery.

Redis going away (a restart, a failover) does not stop the flow: a read that fails is
tried again after a capped exponential backoff, a batch that fails is redone
(``Processor.process_retrying``), and both report to ``/healthz`` meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main

from engine.collector import between_batches, flow_collection
from engine.errors import LeadpulseError
from engine.metrics import RedisHealth
from engine.processor import Entry, Processor
from engine.redis_client import UNREACHABLE
from engine.streams import PartitionReader, StreamNames, committed_positions, unprocessed

__all__ = [
    "EngineParts",
    "build_flow",
    "layout",
    "process_partitions",
    "run_flow",
    "worker_partitions",
]


def _id_key(sid: str) -> tuple[int, int]:
    ms, _, seq = sid.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class EngineParts:
    """What the flow needs, built once per process."""

    processor: Processor
    client: Any  # redis.Redis; typed loosely so Bytewax stays the only import here
    names: StreamNames
    read_count: int
    idle_poll_ms: int
    tick_ms: int = 0  # live: an idle partition sends a clock tick this often (0: never)


#: After a read that found nothing, the partition is read again after 1 ms, then 2, 4, ...
#: up to ``streams.idle_poll_ms``: an event that lands just after an empty read of a busy
#: partition waits ~1 ms, not a whole idle_poll_ms, and a quiet partition still costs one
#: read per idle_poll_ms once the wait has grown.
_FIRST_IDLE_WAIT = timedelta(milliseconds=1)


class _StreamPartition(StatefulSourcePartition[Entry, str]):
    def __init__(
        self,
        reader: PartitionReader,
        partition: int,
        start: str,
        end: str | None,
        stop: threading.Event | None,
        idle: timedelta,
        health: RedisHealth,
        backoff: Any,  # redis_client.outage_backoff(): .compute(failures) -> seconds
        drain: bool = True,
        tick_s: float = 0.0,
    ) -> None:
        self._tick_s = tick_s
        self._next_tick = 0.0
        self._reader = reader
        self._partition = partition
        self._pos = start
        self._end = None if end is None else _id_key(end)
        self._stop = stop
        self._idle = idle
        self._first_wait = min(_FIRST_IDLE_WAIT, idle)
        self._idle_wait = self._first_wait  # the next wait after an empty read
        self._awake: datetime | None = None
        self._health = health
        self._backoff = backoff
        self._failures = 0
        self._drain = drain

    def next_batch(self) -> list[Entry]:
        if self._end is not None and _id_key(self._pos) >= self._end:
            raise StopIteration
        if not self._drain and self._stopping():
            raise StopIteration  # SIGTERM: stop at this batch boundary; the rest waits in Redis
        try:
            rows = self._reader.read(self._pos)
        except UNREACHABLE as exc:  # Redis restarting or gone: never crash, try again later
            if self._stopping():
                raise StopIteration from None
            self._failures += 1
            self._health.failed(f"{exc.__class__.__name__}: {exc}")
            wait = self._backoff.compute(self._failures)
            self._awake = datetime.now(UTC) + timedelta(seconds=wait)
            return []
        if self._failures:
            self._failures = 0
            self._health.ok()
        if not rows:
            if self._stopping():
                raise StopIteration
            self._awake = datetime.now(UTC) + self._idle_wait
            self._idle_wait = min(2 * self._idle_wait, self._idle)
            return self._tick()
        self._awake = None
        self._idle_wait = self._first_wait
        return self._taken(rows)

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _taken(self, rows: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
        """The rows read, up to the end position (a bounded replay), as entries; the
        position moves to the last one taken."""
        partition = self._partition
        last = rows[-1][0]
        last_text = last.decode() if isinstance(last, bytes) else str(last)
        if self._end is None or _id_key(last_text) <= self._end:  # ids ascend: all of them
            self._pos = last_text
            return [(partition, sid, fields) for sid, fields in rows]
        out: list[Entry] = []
        for sid, fields in rows:
            text = sid.decode() if isinstance(sid, bytes) else str(sid)
            if _id_key(text) > self._end:
                break
            out.append((partition, sid, fields))
            self._pos = text
        if len(out) < len(rows):
            self._pos = f"{self._end[0]}-{self._end[1]}"
        return out

    def _tick(self) -> list[Entry]:
        """Live (cadences on): an idle partition hands the processor a clock tick (an entry
        with an empty id) every ``cadence.tick_ms``, so due follow-up steps fire at live rate
        without new events on the partition."""
        if not self._tick_s:
            return []
        now = time.monotonic()
        if now < self._next_tick:
            return []
        self._next_tick = now + self._tick_s
        return [(self._partition, b"", {})]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> str:
        return self._pos


class RedisStreamSource(FixedPartitionedSource[Entry, str]):
    """One resumable partition per stream partition; reads never block the worker.

    ``bounded``: stop at the newest entry present when the partition is built (replay).
    ``stop``: once this event is set, stop at the next batch boundary (``drain=False``:
    `run` on SIGTERM — everything committed is safe, the rest waits in the stream) or
    once the partition is drained (``drain=True``: the demo's end).
    """

    def __init__(
        self,
        parts: EngineParts,
        bounded: bool = False,
        stop: threading.Event | None = None,
        drain: bool = True,
    ) -> None:
        self._parts = parts
        self._bounded = bounded
        self._stop = stop
        self._drain = drain

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self._parts.names.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: str | None) -> _StreamPartition:
        p = int(for_part)
        parts = self._parts
        committed = committed_positions(parts.client, parts.names)[p]
        start = committed
        if resume_state is not None and _id_key(resume_state) > _id_key(committed):
            start = resume_state
        reader = PartitionReader(parts.client, parts.names, p, parts.read_count)
        end = reader.last_id() if self._bounded else None
        idle = timedelta(milliseconds=parts.idle_poll_ms)
        proc = parts.processor
        tick_s = 0.0 if self._bounded else parts.tick_ms / 1000
        return _StreamPartition(
            reader,
            p,
            start,
            end,
            self._stop,
            idle,
            proc.health,
            proc.outage_backoff,
            self._drain,
            tick_s,
        )


class _CallbackPartition(StatelessSinkPartition[Any]):
    def __init__(self, callback: Callable[[list[Any]], None]) -> None:
        self._callback = callback

    def write_batch(self, items: list[Any]) -> None:
        self._callback(items)


class _CallbackSink(DynamicSink[Any]):
    def __init__(self, callback: Callable[[list[Any]], None]) -> None:
        self._callback = callback

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CallbackPartition:
        return _CallbackPartition(self._callback)


def build_flow(
    parts: EngineParts,
    *,
    bounded: bool = False,
    stop: threading.Event | None = None,
    drain: bool = True,
    on_alerts: Callable[[list[dict[str, Any]]], None] | None = None,
) -> Dataflow:
    """The leadpulse dataflow: streams -> processor -> alert callback."""
    flow = Dataflow("leadpulse")
    source = RedisStreamSource(parts, bounded=bounded, stop=stop, drain=drain)
    entries = op.input("streams", flow, source)

    def process(batch: list[Entry]) -> Sequence[dict[str, Any]]:
        alerts = parts.processor.process_retrying(batch, stop).alerts
        between_batches()  # the batch's objects are gone: collect now (engine/collector.py)
        return alerts

    alerts = op.flat_map_batch("process", entries, process)
    op.output("alerts", alerts, _CallbackSink(on_alerts or (lambda items: None)))
    return flow


def worker_partitions(worker: int, total: int, partitions: int) -> list[int]:
    """The stream partitions Bytewax gives global worker ``worker`` of ``total``.

    Bytewax 0.21 sorts a source's partition names (as text: ``0, 1, 10, 11, 2, ...``) and
    deals them to the workers of all processes in turn; worker ``w`` of process ``i`` is
    global worker ``i * workers_per_process + w``. With a partition count that is a
    multiple of ``total`` every worker gets the same number.
    """
    names = sorted(str(p) for p in range(partitions))
    return sorted(int(n) for k, n in enumerate(names) if k % total == worker)


def process_partitions(process_id: int, processes: int, workers: int, partitions: int) -> list[int]:
    """The stream partitions of the workers of process ``process_id``."""
    total = processes * workers
    first = process_id * workers
    mine = (worker_partitions(w, total, partitions) for w in range(first, first + workers))
    return sorted(p for ps in mine for p in ps)


def layout(process_id: int, processes: int, workers: int, partitions: int) -> str:
    """The start line's "who reads what", with a warning when some workers get no
    partition or the partitions do not spread evenly."""
    total = processes * workers
    mine = process_partitions(process_id, processes, workers, partitions)
    text = (
        f"process {process_id} of {processes}, {workers} worker(s), "
        f"partitions {','.join(map(str, mine)) or 'none'} of {partitions}"
    )
    if partitions < total:
        text += f" (warning: {total - partitions} of {total} workers idle: create more partitions)"
    elif partitions % total:
        text += f" (warning: {partitions} partitions do not spread evenly over {total} workers)"
    return text


def run_flow(
    flow: Dataflow, *, workers: int = 1, process_id: int = 0, addresses: list[str] | None = None
) -> None:
    """Run in this process: one worker, several worker threads, or one of several processes.

    Bytewax's production entry point (``bytewax.run.cli_main``, what ``python -m
    bytewax.run`` calls): ``workers`` threads here; with ``addresses`` (every process's
    ``host:port``, this one's at ``process_id``) this process joins the others and
    Bytewax deals the stream partitions to all their workers (:func:`process_partitions`).

    Bytewax wraps what a step raised in its own runtime error; a leadpulse error inside
    (e.g. SIGTERM while Redis is still down) is raised as itself, so the CLI prints one
    line instead of a Rust-and-Python traceback.

    While the flow runs, the garbage collector runs between batches, not inside them, and
    never walks the heap alive at the flow's start (``engine/collector.py``).
    """
    with flow_collection():
        _run(flow, workers, process_id, addresses)


def _run(flow: Dataflow, workers: int, process_id: int, addresses: list[str] | None) -> None:
    try:
        if addresses:
            cli_main(flow, workers_per_process=workers, process_id=process_id, addresses=addresses)
        else:
            cli_main(flow, workers_per_process=workers)
    except Exception as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, LeadpulseError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def run_bounded(parts: EngineParts, *, workers: int = 1) -> None:
    """Process everything in the streams now, and what that sends on: identity hand-overs
    between partitions (``engine/identity.py``) land past the first run's bounded end, so
    bounded runs repeat until no partition holds an entry it has not processed (replay,
    tests)."""
    run_flow(build_flow(parts, bounded=True), workers=workers)
    while unprocessed(parts.client, parts.names):
        run_flow(build_flow(parts, bounded=True), workers=workers)
