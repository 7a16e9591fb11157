"""How Bytewax spreads stream partitions over workers, checked against Bytewax itself.

``leadpulse run`` states its partitions on its start line and the README's sizing rule
(partitions a multiple of processes x workers) rests on this assignment, so a Bytewax
upgrade that deals partitions differently must fail here.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from engine.collector import SAFETY_NET
from engine.dataflow import layout, process_partitions, run_flow, worker_partitions


class _Once(StatefulSourcePartition[int, None]):
    def __init__(self) -> None:
        self._done = False

    def next_batch(self) -> list[int]:
        if self._done:
            raise StopIteration
        self._done = True
        return []

    def snapshot(self) -> None:
        return None


class _GcWitness(StatefulSourcePartition[int, None]):
    """Records the collector's thresholds seen from inside a running flow."""

    def __init__(self, seen: list[tuple[int, int, int]]) -> None:
        self._seen = seen

    def next_batch(self) -> list[int]:
        self._seen.append(gc.get_threshold())
        raise StopIteration

    def snapshot(self) -> None:
        return None


class _GcSource(FixedPartitionedSource[int, None]):
    def __init__(self) -> None:
        self.seen: list[tuple[int, int, int]] = []

    def list_parts(self) -> list[str]:
        return ["0"]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _GcWitness:
        return _GcWitness(self.seen)


class _Recorder(FixedPartitionedSource[int, None]):
    """Records which worker thread builds each partition."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self.built: dict[int, int] = {}
        self._lock = threading.Lock()

    def list_parts(self) -> list[str]:
        return [str(p) for p in range(self.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Once:
        with self._lock:
            self.built[int(for_part)] = threading.get_ident()
        return _Once()


class _Nowhere(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


class _Sink(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Nowhere:
        return _Nowhere()


def test_partitions_go_to_workers_as_worker_partitions_says() -> None:
    workers, partitions = 3, 12  # 12 > 10: names sort as text (0, 1, 10, 11, 2, ...)
    source = _Recorder(partitions)
    flow = Dataflow("spread")
    op.output("out", op.input("in", flow, source), _Sink())
    run_flow(flow, workers=workers)
    assert sorted(source.built) == list(range(partitions))
    by_thread: dict[int, set[int]] = {}
    for p, thread in source.built.items():
        by_thread.setdefault(thread, set()).add(p)
    expected = {frozenset(worker_partitions(w, workers, partitions)) for w in range(workers)}
    assert {frozenset(ps) for ps in by_thread.values()} == expected
    assert all(len(ps) == 4 for ps in expected)


def test_processes_split_the_partitions_without_overlap() -> None:
    for processes, workers, partitions in ((2, 1, 4), (2, 2, 8), (3, 1, 12), (2, 1, 16)):
        seen = [process_partitions(i, processes, workers, partitions) for i in range(processes)]
        assert sorted(p for ps in seen for p in ps) == list(range(partitions))
        assert {len(ps) for ps in seen} == {partitions // processes}


def test_the_start_line_warns_about_idle_workers_and_uneven_spreads() -> None:
    assert layout(1, 2, 1, 4) == "process 1 of 2, 1 worker(s), partitions 1,3 of 4"
    assert "2 of 4 workers idle" in layout(0, 2, 2, 2)
    assert "do not spread evenly" in layout(0, 2, 1, 5)


def test_an_empty_partition_is_read_again_after_1_ms_doubling_up_to_idle_poll(
    client: Any, make_settings: Any
) -> None:
    """An event landing just after an empty read waits ~1 ms, not a whole idle_poll_ms
    (20 ms); the wait doubles while the partition stays empty and starts again at 1 ms
    after a read that found something."""
    from datetime import UTC, datetime, timedelta

    from engine.app import build_parts
    from engine.dataflow import RedisStreamSource
    from engine.streams import Producer

    settings = make_settings(streams={"partitions": 1, "idle_poll_ms": 20})
    parts = build_parts(settings, client)
    part = RedisStreamSource(parts).build_part("streams", "0", None)

    def wait_after_read() -> tuple[int, timedelta]:
        before = datetime.now(UTC)
        rows = part.next_batch()
        after = datetime.now(UTC)
        awake = part.next_awake()
        if awake is None:
            return len(rows), timedelta(0)
        # the wait the partition chose lies between these two bounds
        lo, hi = awake - after, awake - before
        ms = next(w for w in (1, 2, 4, 8, 16, 20) if lo <= timedelta(milliseconds=w) <= hi)
        return len(rows), timedelta(milliseconds=ms)

    waits = [wait_after_read()[1] for _ in range(7)]
    assert waits == [timedelta(milliseconds=w) for w in (1, 2, 4, 8, 16, 20, 20)]
    # a partition idle for long stays at idle_poll_ms (the wait never grows past it)
    assert {wait_after_read()[1] for _ in range(100)} == {timedelta(milliseconds=20)}
    event = {"event_id": "e1", "lead_id": "L1", "type": "page_view", "ts": 1_767_225_600.0}
    Producer(client, parts.names, 0).send([event])
    assert wait_after_read() == (1, timedelta(0))  # found something: read again at once
    assert wait_after_read() == (0, timedelta(milliseconds=1))


def test_collections_wait_for_batch_ends_while_a_flow_runs_and_are_restored_after() -> None:
    before = gc.get_threshold()
    source = _GcSource()
    flow = Dataflow("gc")
    op.output("out", op.input("in", flow, source), _Sink())
    run_flow(flow)
    assert source.seen == [(SAFETY_NET, *before[1:])]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
