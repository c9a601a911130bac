"""How the workspace's suite is scheduled over pytest-xdist workers (`-n`, `--dist loadgroup`).

Tests that share an expensive session fixture run in one group, so each worker starts what it
needs once: the shared e2e platform, and the fault platforms (the fault tests are split over two
platforms of their own, process kills and store cuts, since each cut stops every process of its
platform). Any other test is grouped with its file; the replicas' platform (two of every process,
about 33 connections) is module-scoped, so it stops as soon as its file is done. A group's tests
run together, and the processes its session fixtures started stop when its last test is done
(`pytest_runtest_teardown`), not when the worker ends. The heaviest groups are collected first,
so they start at once instead of lengthening the tail of the run.

Tests that stop or restart a server the whole machine shares are marked `serial`: `make test` runs
them alone, after the parallel part (they are also gated by their own variables).

The quick round (`pytest -m "not slow"`, `make test-quick`) leaves out what is marked `slow`:
the whole end-to-end tier under `tests/e2e/` (each of its files starts a platform of processes),
every `serial` test, and elsewhere every test that starts service processes of its own, waits
through an outage or a timeout, or fills a queue to its bound (each marked where it is written).

How many workers (`-n auto`): up to 4, fewer when the PostgreSQL server cannot hold 4 workers'
connections. A worker holds the connections of the group it runs (a platform of five processes,
the upstreams of a service's suite, the replicas' platform): with three workers, 88 at the run's
busiest moment while finished platforms still ran until their worker's end, 77 since. The
server's default `max_connections` of 100 gives 3 workers.
"""

from __future__ import annotations

import asyncio
import os

import asyncpg
import pytest

from chassis.postgres import database_url

MAX_WORKERS = 4
CONNECTIONS_PER_WORKER = 28
CONNECTIONS_KEPT_FREE = 15  # the serial tests, psql sessions, the server's reserved slots


async def _max_connections(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return int(await conn.fetchval("SHOW max_connections"))
    finally:
        await conn.close()


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: as many workers as the PostgreSQL server named by POSTGRES_URL has room for."""
    url = os.environ.get("POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432")
    try:
        limit = asyncio.run(_max_connections(database_url(url, "postgres")))
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return 2  # no server to ask yet (testcontainers starts one per worker): stay modest
    room = (limit - CONNECTIONS_KEPT_FREE) // CONNECTIONS_PER_WORKER
    return max(1, min(MAX_WORKERS, room))


SUITE_PROCESS_FIXTURES = ("platform", "upstreams", "provider")
# Session fixtures that keep processes running (platforms, a suite's upstreams, the payment
# provider, the storefront, Chromium): stopped as soon as their worker leaves the group that
# uses them, not at the worker's end (see `pytest_runtest_teardown`).
PROCESS_FIXTURES = (*SUITE_PROCESS_FIXTURES, "fault_platform", "storefront", "chromium")
SHARED_SERVER_MARKERS = ("broker_restart", "postgres_restart", "redis_restart")
END_TO_END_TIER = "tests/e2e/"
# Group name -> rank in the collection order (lower starts first); unlisted groups come after.
HEAVY_GROUPS = {
    "tests/e2e/test_replicas.py": 0,
    "tests/e2e/test_upgrade.py": 1,
    "faults-kill": 2,
    "faults-cut": 3,
    "e2e-platform": 4,
    "faults-dead-letters": 5,
}


def scheduling_group(item: pytest.Item) -> str:
    """The xdist group of a test: what session fixture it shares, else its file."""
    fixtures: list[str] = getattr(item, "fixturenames", [])
    path = item.nodeid.split("::")[0]
    if "fault_platform" in fixtures:
        if path.endswith("test_dead_letters.py"):
            return "faults-dead-letters"
        return "faults-kill" if "sigkilled" in item.name else "faults-cut"
    if "platform" in fixtures and path.startswith(END_TO_END_TIER):
        return "e2e-platform"
    # A suite's own session fixture that starts processes (api-gateway's and service-cart's
    # `platform`, service-order's `upstreams`, service-payment's `provider`): its tests in one
    # group, so one worker starts them, not each worker that runs one of its files.
    for fixture in SUITE_PROCESS_FIXTURES:
        if fixture in fixtures:
            return f"{path.split('/')[0]}-{fixture}"
    return path


def _tag_with_group(item: pytest.Item, group: str) -> None:
    """What pytest-xdist's `loadgroup` itself means to do: the group as a suffix of the node id
    (`tests/e2e/test_journey.py::test_x@e2e-platform`), which its scheduler reads.

    xdist 3.8 writes the suffix into `Item._nodeid`, which pytest 9.2 no longer reads (node ids
    now live in `Node._id`): every test became a group of its own and each worker started every
    platform its tests needed (two replica platforms of eleven processes at once on two cores).
    Done here until xdist follows; harmless where xdist's own suffix works (the scheduler reads
    the last `@`).
    """
    if not hasattr(item, "_id"):
        return  # pytest before 9.2: xdist's own suffix works
    from _pytest.nodeid import coerce_node_id  # pytest >= 9.2 only

    if not item.nodeid.endswith(f"@{group}"):
        item._id = coerce_node_id(f"{item.nodeid}@{group}")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Set on xdist's workers (where collection happens) under `--dist loadgroup`.
    loadgroup = bool(getattr(config.option, "loadgroup", False))
    for item in items:
        if any(item.get_closest_marker(name) for name in SHARED_SERVER_MARKERS):
            item.add_marker(pytest.mark.serial)
        if item.nodeid.startswith(END_TO_END_TIER) or item.get_closest_marker("serial"):
            item.add_marker(pytest.mark.slow)
        group = scheduling_group(item)
        item.add_marker(pytest.mark.xdist_group(group))
        if loadgroup:
            _tag_with_group(item, group)
    # By rank, then each group's tests together, in the order their groups first appear (so
    # every worker's order is the same, and a group's session fixtures start once, also without
    # xdist: see `pytest_runtest_teardown`).
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(scheduling_group(item), index)

    def order(item: pytest.Item) -> tuple[int, int]:
        group = scheduling_group(item)
        return HEAVY_GROUPS.get(group, len(HEAVY_GROUPS)), first_seen[group]

    items.sort(key=order)


@pytest.hookimpl(trylast=True)  # after pytest's own teardown of the test's narrower fixtures
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """The last test of a group on this worker stops the processes the group's session fixtures
    started (a platform of five processes keeps about ten PostgreSQL connections and some CPU
    while idle). They used to run until the worker's end: three workers' finished platforms held
    45 connections at once. A later test that asks for one again gets a new one.
    """
    if nextitem is None or scheduling_group(nextitem) == scheduling_group(item):
        return  # the session's end stops what is left
    still_needed = set(getattr(nextitem, "fixturenames", ()))
    fixtures = getattr(item, "_fixtureinfo", None)
    if fixtures is None:
        return
    for name in PROCESS_FIXTURES:
        if name in still_needed:
            continue
        for fixturedef in fixtures.name2fixturedefs.get(name, ()):
            if fixturedef.scope == "session":
                fixturedef.finish(item._request)  # type: ignore[attr-defined]
