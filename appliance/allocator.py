"""The C allocator of the serving process.

glibc's malloc gives threads that allocate at the same time arenas of their own, up to eight per
core, and memory freed in one arena is not reused by another. The server's threads (the event
loop, the encoder, the store's and the index's workers, the re-ranker) each end up holding
partly empty arenas: in a 240 s soak, capping them at two ended with 80 MB less resident memory
and a flatter curve. Fewer arenas cost some contention in malloc, which the GIL and the native
libraries' own pools make small.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger(__name__)

#: glibc's mallopt parameter for the most arenas (malloc.h).
_M_ARENA_MAX = -8


def cap_malloc_arenas(arenas: int) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas from now on; return whether it was done.

    Nothing is done for 0, on another C library, or when ``MALLOC_ARENA_MAX`` is set: glibc read
    that itself when the process started, and the operator's choice stands.
    """
    if arenas <= 0 or "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    done = bool(libc.mallopt(_M_ARENA_MAX, arenas))
    if not done:
        log.warning("could not cap malloc arenas at %d", arenas)
    return done
