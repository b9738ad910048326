"""shared/heap.py: a started process's objects are left out of later collections."""

from __future__ import annotations

import gc
import weakref

from shared.heap import freeze_startup_heap


class _Node:
    me: _Node | None = None


def test_start_up_garbage_is_freed_and_what_is_left_is_frozen() -> None:
    already = gc.get_freeze_count()
    kept = [[i] for i in range(20_000)]  # start-up's long-lived objects
    freed: list[bool] = []
    enabled = gc.isenabled()
    gc.disable()  # no automatic collection may free the cycle first
    try:
        cycle = _Node()
        cycle.me = cycle
        weakref.finalize(cycle, freed.append, True)
        del cycle
        frozen = freeze_startup_heap()
    finally:
        if enabled:
            gc.enable()
    try:
        assert freed == [True]  # collected before the freeze, not kept forever
        assert frozen == gc.get_freeze_count() >= already + len(kept)
        later = {id(o) for o in gc.get_objects()}  # what a full collection walks now
        assert not any(id(row) in later for row in kept)
        assert len(later) < len(kept)
    finally:
        if already == 0:
            gc.unfreeze()
