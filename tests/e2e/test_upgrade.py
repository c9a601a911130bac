"""The payment step deployed onto a running platform: the previous release's services (the last
commit before the payment step, taken from this repository's history) serve a stream of
shoppers; this release's replicas start beside them, the old ones stop, and then the payment
step is switched on, all while 24 shoppers check out through haproxy.

The upgrade as the README describes it ("Upgrading to the payment step"):
1. service-payment and the provider start (nothing calls them yet; they ignore orders placed
   without a payment token);
2. a replica of this release starts beside each replica of the previous one, service-order's
   with CHECKOUT_SAGA_VERSION=1 (it places orders the old replicas can confirm on
   `stock.reserved`, so no `payment.*` event exists while an old replica consumes);
3. this release's gateway joins haproxy, and the previous release's processes stop (SIGTERM,
   draining);
4. with no old replica left, service-order is rolled to CHECKOUT_SAGA_VERSION=2: checkouts pay.

Afterwards: every order final, stock exact, carts right, nothing dead-lettered, and the money
right to the cent: the version-1 orders never reached the provider, and every version-2 order's
ledger agrees with its status.
"""

from __future__ import annotations

import asyncio
import io
import subprocess
import tarfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from chassis.procfile import parse, replica_procfile, variable
from chassis.testing.process import free_port

from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD, PROVIDER, ROOT, SERVICES, Platform
from .faults import QueueDepths, Stream
from .payments import Provider
from .shop import Admin, login
from .test_replicas import haproxy, in_rotation

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

# The previous release: the last commit before the payment step. When the next release changes
# what an upgrade must do, this moves to this release's last commit, with the new steps.
PREVIOUS_RELEASE = "706333dcf7a2b97dab1a8d4f2a7007c65b0a08f5"
# What of it runs: the importable source of the chassis, the protos and every process.
PREVIOUS_SOURCES = (
    "chassis/src",
    "proto-definitions/src",
    "service-user/src",
    "service-product/src",
    "service-cart/src",
    "service-order/src",
    "api-gateway/src",
)
# The gRPC services the previous release had (service-payment is new).
PREVIOUS_SERVICES = ("service-user", "service-product", "service-cart", "service-order")
OLD = "old-"
OLD_GATEWAY = "api-gateway-old"
NEW_GATEWAY = "api-gateway-2"
# service-order's setting while replicas of the previous release run.
SAGA_VERSION_1 = {"CHECKOUT_SAGA_VERSION": "1"}


def previous_release(folder: Path) -> Path:
    """The previous release's sources, extracted from git into `folder`."""
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{PREVIOUS_RELEASE}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    assert found.returncode == 0, (
        f"the previous release {PREVIOUS_RELEASE} is not in this clone's history"
        " (the upgrade test needs a full clone, not a shallow one)"
    )
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", PREVIOUS_RELEASE, *PREVIOUS_SOURCES],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def upgrade_procfile(old_tree: Path, ports: dict[str, list[int]]) -> str:
    """This release's lines with two replicas of each service (`service-order-1`, ...), plus
    the previous release's: `old-service-order-1` on replica 1's ports and `api-gateway-old`,
    each the same line run with the previous release's sources ahead on PYTHONPATH (ahead of
    this workspace's editable installs)."""
    generated = replica_procfile((ROOT / "Procfile").read_text(), ports)
    python_path = ":".join(str(old_tree / source) for source in PREVIOUS_SOURCES)
    lines = [generated.rstrip("\n")]
    for name, command in parse(generated):
        old_name = {"api-gateway": OLD_GATEWAY}.get(name, f"{OLD}{name}")
        if name == "api-gateway" or (
            name.endswith("-1") and name.removesuffix("-1") in PREVIOUS_SERVICES
        ):
            lines.append(f"{old_name}: PYTHONPATH={python_path} {command}")
    return "\n".join(lines) + "\n"


async def switch(platform: Platform, name: str, **settings: str | None) -> None:
    """Start `name` with `settings` over the ones it had (None removes one) and wait until it
    serves."""
    own = platform.overrides.setdefault(name, {})
    for key, value in settings.items():
        if value is None:
            own.pop(key, None)
        else:
            own[key] = value
    platform.start(name)
    await asyncio.to_thread(platform.wait_serving, name)


async def test_the_payment_step_deployed_under_a_storm_beside_the_previous_release(
    make_env: Callable[[str], Awaitable[dict[str, str]]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    env = await make_env("upgrade")
    folder = tmp_path_factory.mktemp("upgrade")
    old_tree = await asyncio.to_thread(previous_release, folder / "previous-release")
    ports: dict[str, list[int]] = {}
    for service in SERVICES:
        ports[variable(service, "GRPC_PORT")] = [free_port(), free_port()]
        ports[variable(service, "METRICS_PORT")] = [0, 0]
    procfile = folder / "Procfile"
    procfile.write_text(upgrade_procfile(old_tree, ports))
    addresses = {
        f"{prefix}{service}-{k + 1}": f"127.0.0.1:{ports[variable(service, 'GRPC_PORT')][k]}"
        for service in SERVICES
        for k in range(2)
        for prefix in ("", OLD)
    }
    new_gateway = {"GATEWAY_PORT": str(free_port()), "GATEWAY_METRICS_PORT": str(free_port())}
    platform = Platform(
        f"http://127.0.0.1:{env['GATEWAY_PORT']}",
        env,
        overrides={NEW_GATEWAY: new_gateway},
        procfile=procfile,
        addresses=addresses,
        procfile_lines={NEW_GATEWAY: "api-gateway"},
    )
    queues = QueueDepths.of(env)
    old_services = [f"{OLD}{service}-1" for service in PREVIOUS_SERVICES]
    try:
        # The previous release, running: one replica of each of its services and its gateway.
        for name in (*old_services, OLD_GATEWAY):
            platform.start(name)
        await asyncio.to_thread(platform.wait_ready)
        gateway_ports = [env["GATEWAY_PORT"], new_gateway["GATEWAY_PORT"]]
        with haproxy(gateway_ports, folder) as (balancer_url, stats_url):
            async with httpx.AsyncClient(base_url=balancer_url, timeout=30) as balanced:
                admin = Admin(balanced, await login(balanced, ADMIN_EMAIL, ADMIN_PASSWORD))
                # Ample stock: the stream runs for the whole upgrade (a minute or more).
                stream = await Stream.prepare(balanced, admin, shoppers=24, ample=(5000, 5000))
                stream.provider = Provider(env["PAYMENT_PROVIDER_URL"])
                # A new platform: every dead-letter queue starts empty (no baseline to take,
                # and service-payment's queues do not exist yet).
                await _upgrade_under(stream, platform, old_services, stats_url)
                await stream.check_invariants(queues)
                orders = await stream.all_orders()
    finally:
        platform.stop_all()
        platform.save_logs("upgrade")

    confirmed = Counter(o["payment_status"] for o in orders if o["status"] == "CONFIRMED")
    print(f"\nupgrade: {len(orders)} orders; confirmed by payment status {dict(confirmed)}")
    # Both sagas ran: orders confirmed without payment before the switch, paid ones after.
    assert confirmed[None] > 0, confirmed
    assert confirmed["AUTHORIZED"] > 0, confirmed
    assert dict(stream.api.retries) == {}, "requests failed during the upgrade"


async def _upgrade_under(
    stream: Stream, platform: Platform, old_services: list[str], stats_url: str
) -> None:
    async def upgrade() -> None:
        await asyncio.sleep(2.0)
        # 1. The payment step's processes.
        await asyncio.gather(switch(platform, PROVIDER), switch(platform, "service-payment-1"))
        # 2. A replica of this release beside each old one, every deployment at once (as a
        #    rollout of them all); service-order's places version-1 orders while an old replica
        #    may still consume the saga's events.
        await asyncio.gather(
            *(
                switch(platform, f"{service}-2", **SAGA_VERSION_1)
                if service == "service-order"
                else switch(platform, f"{service}-2")
                for service in PREVIOUS_SERVICES
            )
        )
        # 3. This release's gateway in haproxy's rotation, then the old processes stop
        #    (SIGTERM: each drains), the old gateway first.
        await switch(platform, NEW_GATEWAY)
        await in_rotation(stats_url, server=1)
        await asyncio.to_thread(platform.stop, OLD_GATEWAY)
        await asyncio.gather(*(asyncio.to_thread(platform.stop, name) for name in old_services))
        # 4. No old replica left: service-order rolled to the payment step, one replica at a
        #    time.
        await switch(platform, "service-order-1")
        await asyncio.to_thread(platform.stop, "service-order-2")
        await switch(platform, "service-order-2", CHECKOUT_SAGA_VERSION=None)
        await asyncio.sleep(3.0)  # paid checkouts for a while before the stream winds down

    await stream.run_through(upgrade, rounds=4)
