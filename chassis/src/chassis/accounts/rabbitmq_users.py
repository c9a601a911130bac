"""RabbitMQ accounts: a broker user per service that may configure, write and read exactly the
exchanges and queues the chassis uses for it (`chassis.messaging.topology.service_resources`).

The users and their permissions are imported as one definitions document, which creates a user
or updates its password and permissions, and leaves everything else on the broker as it is. The
password travels as the broker's salted SHA-256 hash, never in clear. The document goes to the
management API (`http://admin:password@host:15672`, what compose and the Kubernetes overlay run)
or to `rabbitmqctl import_definitions` on a machine whose broker has no management plugin.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import shutil
import subprocess
import urllib.request
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import aio_pika

from chassis.accounts.plan import PlanError, RabbitmqAccount
from chassis.logging import get_logger
from chassis.messaging import topology

TIMEOUT_S = 30.0
HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
# rabbitmqctl's exit status for a user that does not exist (EX_NOUSER).
_NO_SUCH_USER = 67
_log = get_logger(__name__)


def password_hash(password: str, *, salt: bytes | None = None) -> str:
    """The broker's stored form of `password`: base64(salt + SHA-256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(accounts: tuple[RabbitmqAccount, ...]) -> dict[str, Any]:
    """The definitions document of `accounts`: users without tags, one permission each."""
    return {
        "users": [
            {
                "name": account.credentials.user,
                "password_hash": password_hash(account.credentials.password),
                "hashing_algorithm": HASHING_ALGORITHM,
                "tags": [],
            }
            for account in accounts
        ],
        "permissions": [
            {
                "user": account.credentials.user,
                "vhost": account.vhost,
                "configure": account.permission,
                "write": account.permission,
                "read": account.permission,
            }
            for account in accounts
        ],
    }


class RabbitmqAdmin:
    """Where definitions are imported: the management API at an `http(s)://` URL with the
    administrator's credentials, or `rabbitmqctl` (optionally `rabbitmqctl:<node>`) here."""

    def __init__(self, admin_url: str) -> None:
        self._url = admin_url
        self._node: str | None = None
        self._api: str | None = None
        scheme, _, node = admin_url.partition(":")
        if scheme == "rabbitmqctl":
            self._node = node or None
        elif scheme in ("http", "https"):
            self._api = admin_url
        else:
            raise PlanError(
                "RABBITMQ_ADMIN_URL is the management API (http://user:password@host:15672) "
                "or rabbitmqctl[:node]"
            )

    @property
    def admin_user(self) -> str | None:
        """The administrator's user name (for the management API; rabbitmqctl has none)."""
        if self._api is None:
            return None
        return unquote(urlsplit(self._api).username or "") or None

    async def import_definitions(self, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        if self._api is not None:
            await asyncio.to_thread(self._request, "POST", "/api/definitions", body)
        else:
            await asyncio.to_thread(self._rabbitmqctl, "import_definitions", stdin=body)

    async def delete_user(self, user: str) -> None:
        """Remove `user` (and its permissions); one that does not exist is no error."""
        if self._api is not None:
            path = f"/api/users/{quote(user, safe='')}"
            await asyncio.to_thread(self._request, "DELETE", path, None, (404,))
        else:
            await asyncio.to_thread(self._rabbitmqctl, "delete_user", user, absent=_NO_SUCH_USER)

    def _request(
        self, method: str, path: str, body: bytes | None = None, fine: tuple[int, ...] = ()
    ) -> None:
        assert self._api is not None
        parts = urlsplit(self._api)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        url = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + path, "", ""))
        user, password = unquote(parts.username or ""), unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - the scheme is http(s), checked above
            url,
            data=body,
            method=method,
            headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S):  # noqa: S310
                pass
        except HTTPError as error:
            if error.code in fine:
                return
            detail = error.read().decode(errors="replace")[:300]
            raise RuntimeError(f"management API {method} {path}: {error.code} {detail}") from None
        except URLError as error:
            raise OSError(f"management API at {netloc} unreachable: {error.reason}") from None

    def _rabbitmqctl(
        self, *arguments: str, stdin: bytes | None = None, absent: int | None = None
    ) -> None:
        executable = shutil.which("rabbitmqctl")
        if executable is None:
            raise PlanError(
                "rabbitmqctl is not on PATH: set RABBITMQ_ADMIN_URL to the management API"
            )
        node = ["--node", self._node] if self._node else []
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [executable, "--quiet", *node, *arguments],
            input=stdin,
            capture_output=True,
            timeout=TIMEOUT_S * 2,
            check=False,
        )
        if done.returncode not in (0, absent):
            error = (done.stderr or done.stdout).decode(errors="replace").strip()[:300]
            raise RuntimeError(f"rabbitmqctl {arguments[0]}: {error}")


async def apply(admin: RabbitmqAdmin, accounts: tuple[RabbitmqAccount, ...]) -> None:
    """Every account's user and permission, in one import."""
    if not accounts:
        return
    await admin.import_definitions(definitions(accounts))
    for account in accounts:
        _log.info(
            "rabbitmq_user_ready",
            service=account.service,
            user=account.credentials.user,
            vhost=account.vhost,
            resources=list(account.resources),
        )


async def verify(account: RabbitmqAccount) -> None:
    """The user opens a connection with the URL the service is given, and declares the service's
    queue bound to its events, as the service itself will (`topology.declare_service_queue`, so
    the arguments agree): the topology is declared before any service starts, and an event
    published by the first service up is never missed by a consumer that starts after it (the
    events exchange's alternate exchange only keeps events no queue at all was bound to)."""
    connection = await aio_pika.connect(account.credentials.url, timeout=10)
    try:
        if account.events and account.settings is not None:
            await topology.declare_service_queue(
                connection, account.settings, account.queue, account.events
            )
    finally:
        await connection.close()
