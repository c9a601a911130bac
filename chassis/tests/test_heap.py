"""`settle_heap`: what survived startup is frozen out of every collection, and the youngest
generation is collected past `GEN0_THRESHOLD` net allocations instead of CPython's 700. Run in a
fresh interpreter, so the test process's own collector is left as it is."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from chassis.heap import GEN0_THRESHOLD

PROBE = textwrap.dedent(
    """
    import gc, json
    import chassis.grpc_server  # what a service holds from its start: gRPC, protobuf, OTel
    from chassis.heap import settle_heap

    before = gc.get_threshold()
    settle_heap()
    after = gc.get_threshold()
    frozen = gc.get_freeze_count()
    garbage = [[] for _ in range(1000)]
    for item in garbage:
        item.append(item)  # a thousand reference cycles, garbage once dropped
    del garbage, item
    print(json.dumps({
        "before": before, "after": after, "frozen": frozen,
        "young": gc.get_count()[0], "freed": gc.collect(),
    }))
    """
)


def test_settle_heap_freezes_what_startup_left_and_raises_the_youngest_threshold() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    seen = json.loads(result.stdout)
    assert seen["before"][0] == 700  # CPython's default, which the function replaces
    assert seen["after"] == [GEN0_THRESHOLD, seen["before"][1], seen["before"][2]]
    # gRPC, protobuf and OpenTelemetry alone leave tens of thousands of objects.
    assert seen["frozen"] > 10_000
    # A thousand cycles did not trigger a collection of the youngest generation (they would
    # have, past 700): they wait for the threshold, and a collection still frees them all.
    assert seen["young"] >= 1000
    assert seen["freed"] >= 1000
