"""Helpers for driving the dashboard headlessly (the tests and scripts/screenshots.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot


async def wait_until(
    pilot: Pilot[Any],
    condition: Callable[[], object],
    *,
    seconds: float = 15.0,
    what: str = "the condition",
) -> None:
    """Let the app run until ``condition()`` is true.

    Args:
        pilot: The running app's pilot.
        condition: Checked after each short pause; an exception counts as false.
        seconds: Seconds to wait at most.
        what: Named in the error.

    Raises:
        TimeoutError: If the condition is still false after ``timeout`` seconds.

    """
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return
        except Exception:  # noqa: BLE001, S110 - not there yet is the same as false
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {seconds:g} s waiting for {what}")
        await pilot.pause(0.05)
