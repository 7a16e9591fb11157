"""When Python's garbage collector runs while a flow runs: between batches, not inside them.

A batch allocates tens of thousands of container objects (events, feature dicts, score
records, cadence states, Redis replies) that live until the batch commits and are then
freed by reference counting. Python's default collector starts a young collection every
700 net allocations (the engine used 10,000): inside a batch each such collection walks
the batch's whole live working set, finds nearly nothing to free, and promotes it all a
generation, where it is walked again. In a 2,000-lead simulated month (89,261 events,
``benchmarks/cadence.py``, a ~10 s drain) young and middle collections took 341-509 ms
(cadences off) and 591-608 ms (on).

While a flow runs (:func:`flow_collection`):

- the heap alive at its start (River, SciPy, Bytewax, the engine's parts: ~200k objects)
  is frozen out of collections (``gc.freeze``);
- automatic collections start only after :data:`SAFETY_NET` net allocations (a batch
  rarely reaches that; one that does is collected as before);
- after a batch (:func:`between_batches`), when its objects are gone, the young
  generation is collected once :data:`YOUNG` net allocations have piled up since the
  last collection (the survivors: what the caches kept); the older ones follow
  Python's own rules: the middle one after ``threshold1`` young collections, the old
  one after ``threshold2`` middle ones and only if the objects promoted into it since
  its last collection exceed a quarter of those it held then (CPython's
  ``long_lived_pending > long_lived_total / 4``, counted here from the generations'
  sizes, an upper bound).

The same drain: 67-119 ms (off) and 86-125 ms (on). Thresholds and the frozen heap are
handed back when the flow ends.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["SAFETY_NET", "YOUNG", "between_batches", "flow_collection"]

#: Net allocations before an automatic collection starts inside a batch.
SAFETY_NET = 1_000_000
#: Net allocations since the last collection before one runs between batches (a flow at
#: live rate runs a batch per event or tick: not a collection each).
YOUNG = 10_000


class _Schedule:
    """The generations' bookkeeping of the running flows (one per process)."""

    def __init__(self) -> None:
        self.flows = 0  # flows running (a flow per call of run_flow)
        self.saved: tuple[int, int, int] = (700, 10, 10)
        self.pending = 0  # objects promoted to the old generation since its last collection
        self.total = 0  # objects in the old generation after its last collection
        self.lock = threading.Lock()


_S = _Schedule()


@contextlib.contextmanager
def flow_collection() -> Iterator[None]:
    """Collections between batches while the block runs (nested flows: the outermost)."""
    with _S.lock:
        _S.flows += 1
        if _S.flows == 1:
            _S.saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(SAFETY_NET, *_S.saved[1:])
            _S.pending, _S.total = 0, len(gc.get_objects(2))
    try:
        yield
    finally:
        with _S.lock:
            _S.flows -= 1
            if _S.flows == 0:
                gc.set_threshold(*_S.saved)
                gc.unfreeze()


def between_batches() -> int:
    """Collect what the batch just done left: the generation Python's rules would collect
    by now. Returns the generation collected (-1: none; no flow running, or too few
    allocations yet)."""
    if not _S.flows:
        return -1
    _, every1, every2 = _S.saved
    young, middle_due, old_due = gc.get_count()
    if young < YOUNG:
        return -1
    if middle_due <= every1:  # (Python: count > threshold)
        gc.collect(0)
        return 0
    with _S.lock:  # survivors of the young and middle generations are promoted: at most
        _S.pending += len(gc.get_objects(0)) + len(gc.get_objects(1))
        full = old_due > every2 and _S.pending > _S.total // 4
    if not full:
        gc.collect(1)
        return 1
    gc.collect(2)
    with _S.lock:
        _S.pending, _S.total = 0, len(gc.get_objects(2))
    return 2
