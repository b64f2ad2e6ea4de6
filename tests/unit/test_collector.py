"""The serving process's garbage collector: off during start-up, then blind to what it built."""

from __future__ import annotations

import json
import subprocess
import sys

# Start-up builds long-lived containers with the collector paused; after settling, collections
# walk only what came later, and a cycle made later is still collected.
PROGRAM = """
import gc, json, weakref
from appliance import collector
full = []
gc.callbacks.append(lambda phase, info: phase == "stop" and full.append(info["generation"]))
collector.pause_for_start_up()
kept = [{"id": n, "tags": [n]} for n in range(200_000)]
during = len(full)
frozen = collector.settle()
class Node:
    pass
node = Node()
node.self = node
gone = weakref.ref(node)
del node
gc.collect()
print(json.dumps({
    "collections_during_start_up": during,
    "frozen": frozen,
    "walked_after": len(gc.get_objects()),
    "enabled": gc.isenabled(),
    "thresholds": gc.get_threshold(),
    "cycle_collected": gone() is None,
    "kept": len(kept),
}))
"""


def test_start_up_objects_are_set_aside_and_later_cycles_still_collected() -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter
        [sys.executable, "-c", PROGRAM],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    seen = json.loads(done.stdout)
    assert seen["collections_during_start_up"] == 0
    assert seen["frozen"] >= 400_000  # each entry's dict and list
    assert seen["walked_after"] < 50_000  # what a full collection still walks
    assert seen["enabled"]
    assert seen["thresholds"] == [50_000, 20, 20]
    assert seen["cycle_collected"]
