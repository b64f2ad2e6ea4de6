"""The serving process's cap on glibc malloc arenas, seen in glibc's own statistics."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc arenas are glibc's"
)

# Threads that allocate at the same time, then glibc's statistics (one "Arena N:" per arena).
PROGRAM = """
import ctypes, ctypes.util, sys, threading
from appliance.allocator import cap_malloc_arenas
print(cap_malloc_arenas(int(sys.argv[1])), flush=True)
barrier = threading.Barrier(8)
def churn():
    barrier.wait()
    kept = []
    for n in range(20000):
        kept.append(bytearray(512 + n % 4096))
        if len(kept) > 64:
            kept.clear()
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
ctypes.CDLL(ctypes.util.find_library("c")).malloc_stats()
"""


def arenas(cap: int, environ: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", PROGRAM, str(cap)],
        env=environ,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


def without_arena_max() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}


def test_the_cap_limits_the_arenas_that_threads_get() -> None:
    capped, count = arenas(1, without_arena_max())
    assert capped == "True"
    assert count == 1
    uncapped, count = arenas(0, without_arena_max())
    assert uncapped == "False"
    assert count > 1  # what the cap prevents: threads allocating at once get arenas of their own


def test_the_environment_variable_wins() -> None:
    capped, count = arenas(1, {**without_arena_max(), "MALLOC_ARENA_MAX": "3"})
    assert capped == "False"
    assert 1 < count <= 3
