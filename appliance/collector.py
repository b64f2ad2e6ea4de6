"""Python's cycle collector in the serving process.

A full collection walks every container object the interpreter tracks and stops the whole
process while it does. The server holds a great many that live as long as it does: the item
and user caches read at start-up (about a million objects at 100,000 items), the models, the
modules. Measured at 100K items, each full collection took 0.3-0.8 s and found nothing to free;
start-up ran seventeen of them as the caches grew (4.5 s in all), and serving one every 10-20 s,
each stalling every request in flight.

So the server starts with the collector off, and once start-up is done collects once and moves
everything that survived into the permanent generation (``gc.freeze``), which later collections
do not walk. Objects there are still freed by reference counting when released; only cycles
among them would stay, and start-up's leftovers hold none worth the pause.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

#: Allocations between young collections, and young collections between older ones (Python's
#: defaults: 700, 10, 10). Every object a request holds when a young collection runs is promoted
#: and counts towards the next full one; at 1,000 requests a second the defaults ran a full
#: collection every 1.5 s.
YOUNG_THRESHOLDS = (50_000, 20, 20)


def pause_for_start_up() -> None:
    """Turn the collector off while the long-lived state is built (see ``settle``)."""
    gc.disable()


def settle() -> int:
    """Collect once, keep what survives out of later collections, and turn the collector on.

    Returns:
        How many objects were moved out of the collector's reach.

    """
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*YOUNG_THRESHOLDS)
    gc.enable()
    frozen = gc.get_freeze_count()
    log.info(
        "%d long-lived objects set aside from garbage collection in %.2f s",
        frozen,
        time.perf_counter() - started,
    )
    return frozen
