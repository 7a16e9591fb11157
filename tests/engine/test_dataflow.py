"""How Bytewax spreads stream partitions over workers, checked against Bytewax itself.

``leadpulse run`` states its partitions on its start line and the README's sizing rule
(partitions a multiple of processes x workers) rests on this assignment, so a Bytewax
upgrade that deals partitions differently must fail here.
"""

from __future__ import annotations

import threading
from typing import Any

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition

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
