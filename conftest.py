"""How the workspace's suite is scheduled over pytest-xdist workers (`-n`, `--dist loadgroup`).

Tests that share an expensive session fixture run in one group, so each worker starts what it
needs once: the shared e2e platform, and the fault platforms (the fault tests are split over two
platforms of their own, process kills and store cuts, since each cut stops every process of its
platform). Any other test is grouped with its file. The heaviest groups are collected first, so
they start at once instead of lengthening the tail of the run.

Tests that stop or restart a server the whole machine shares are marked `serial`: `make test` runs
them alone, after the parallel part (they are also gated by their own variables).
"""

from __future__ import annotations

import pytest

SHARED_SERVER_MARKERS = ("broker_restart", "postgres_restart", "redis_restart")
# Group name -> rank in the collection order (lower starts first); unlisted groups come after.
HEAVY_GROUPS = {"faults-kill": 0, "faults-cut": 1, "e2e-platform": 2, "faults-dead-letters": 3}


def scheduling_group(item: pytest.Item) -> str:
    """The xdist group of a test: what session fixture it shares, else its file."""
    fixtures = item.fixturenames
    path = item.nodeid.split("::")[0]
    if "fault_platform" in fixtures:
        if path.endswith("test_dead_letters.py"):
            return "faults-dead-letters"
        return "faults-kill" if "sigkilled" in item.name else "faults-cut"
    if "platform" in fixtures:
        return "e2e-platform"
    return path


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in SHARED_SERVER_MARKERS):
            item.add_marker(pytest.mark.serial)
        item.add_marker(pytest.mark.xdist_group(scheduling_group(item)))
    # Stable: within a rank, the collection order (and so every worker's) is kept.
    items.sort(key=lambda item: HEAVY_GROUPS.get(scheduling_group(item), len(HEAVY_GROUPS)))
