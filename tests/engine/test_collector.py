"""engine/collector.py: collections between batches while a flow runs."""

from __future__ import annotations

import gc
import weakref

import pytest

from engine.collector import SAFETY_NET, YOUNG, between_batches, flow_collection


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def _cycle() -> weakref.ref[_Node]:
    """A cycle only the collector can free; a weak reference to watch it go."""
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def _allocate(n: int) -> list[list[int]]:
    return [[i] for i in range(n)]  # n container objects kept alive


def test_nothing_outside_a_flow() -> None:
    assert between_batches() == -1


def test_thresholds_and_the_frozen_heap_are_handed_back_also_after_an_error() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), flow_collection():
        assert gc.get_threshold() == (SAFETY_NET, *before[1:])
        assert gc.get_freeze_count() > 0
        raise RuntimeError("the flow failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_a_nested_flow_leaves_the_outer_one_as_it_was() -> None:
    before = gc.get_threshold()
    with flow_collection():
        with flow_collection():
            pass
        assert gc.get_threshold() == (SAFETY_NET, *before[1:])
    assert gc.get_threshold() == before


def test_young_collection_waits_for_enough_allocations_then_frees_cycles() -> None:
    with flow_collection():
        gc.collect(0)
        watched = _cycle()
        assert between_batches() == -1  # a few allocations: not worth a collection
        assert watched() is not None
        kept = _allocate(YOUNG + 100)
        assert between_batches() in (0, 1, 2)
        assert watched() is None  # the batch's cycle is gone
        assert gc.get_count()[0] < 100
        del kept


def test_older_generations_follow_pythons_rules() -> None:
    every1 = gc.get_threshold()[1]
    with flow_collection():
        gc.collect(1)  # the middle generation's count starts at 0
        seen = []
        for _ in range(every1 + 2):
            kept = _allocate(YOUNG + 100)
            seen.append(between_batches())
            del kept
        # the middle one once more than threshold1 young ones ran since it (as in CPython)
        assert seen == [0] * (every1 + 1) + [1]


def test_a_full_collection_comes_once_enough_was_promoted() -> None:
    every1, every2 = gc.get_threshold()[1:]
    with flow_collection():
        watched = _cycle()
        survivors = []
        seen = []
        for _ in range((every1 + 2) * (every2 + 2)):
            survivors.append(_allocate(YOUNG + 100))  # promoted: grows the old generation
            seen.append(between_batches())
        assert 2 in seen
        assert seen.count(2) == 1  # then it holds a lot: a quarter more takes a while
        assert watched() is None
