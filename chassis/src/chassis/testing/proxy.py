"""`TcpProxy`: a TCP forwarder a test controls, to take a dependency away from one client (a
service's PostgreSQL, say) without stopping the server every other test shares.

```python
async with TcpProxy("127.0.0.1", 5432) as proxy:      # listens on 127.0.0.1:<proxy.port>
    url = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
async with TcpProxy.in_front_of(postgres_url) as proxy:  # the same, from the server's URL
    url = proxy.url(postgres_url)                        # that URL, through the proxy
    await proxy.cut()        # drops every connection (reset) and refuses new ones: an outage
    await proxy.drop_connections()   # resets every connection, still accepting new ones
    await proxy.forget_connections() # the server forgets them; clients learn on their next send
    await proxy.restore()    # accepts again
    await proxy.restart()    # what a client sees of a server restart: cut, then accepting again
    await proxy.blackhole()  # connections stay open (new ones too) but nothing gets through
    await proxy.restore()    # forwarding again
```

Ways a server can go away, as its clients see them:
- `cut()` resets every connection (RST), as a host that lost the connection's state answers;
- `cut(graceful=True)` closes them (FIN), as the server process exiting does;
- `forget_connections()` drops them without a word: a client learns only when it next sends
  (a reset), as after a host reboot or an expired NAT entry;
- `blackhole()` keeps them open and forwards nothing either way (a server that accepts TCP but
  stopped answering, or a network that drops packets): only the client's own deadlines help.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"postgresql": 5432, "postgres": 5432, "redis": 6379, "rediss": 6380,
                  "amqp": 5672, "amqps": 5671}  # fmt: skip


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `host`:`target_port` until cut."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host = host
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        # Per client connection, its connection to the server; and the clients whose server
        # side went away without a word (`forget_connections`).
        self._upstream: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}
        self._forgotten: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    @classmethod
    def in_front_of(cls, url: str) -> TcpProxy:
        """A proxy to the server `url` names (PostgreSQL, Redis or AMQP URL)."""
        parts = urlsplit(url)
        return cls(parts.hostname or "127.0.0.1", parts.port or _DEFAULT_PORTS[parts.scheme])

    def url(self, url: str) -> str:
        """`url` (credentials, path and query kept) pointing at this proxy instead."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        address = f"127.0.0.1:{self.port}"
        return urlunsplit(
            parts._replace(netloc=f"{credentials}@{address}" if credentials else address)
        )

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def connections(self) -> int:
        """Connections forwarded right now."""
        return len(self._links) // 2

    async def cut(self, *, graceful: bool = False) -> None:
        """Close the listening socket and every forwarded connection: reset them (RST), or with
        `graceful` close them the way an exiting server's kernel does (FIN)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_connections(graceful=graceful)
        self._flowing.set()

    async def drop_connections(self, *, graceful: bool = False) -> None:
        """Reset (or, `graceful`, close) every forwarded connection, still accepting new ones."""
        for writer in list(self._writers):
            if graceful:
                writer.close()
            else:
                writer.transport.abort()
        for task in list(self._links):
            task.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    async def restore(self) -> None:
        """Listen again on the same port, and forward again after a `blackhole`."""
        self._flowing.set()
        if self._server is None:
            await self.start()

    async def restart(self, *, down_for: float = 0.0, graceful: bool = False) -> None:
        """A server restart as its clients see it: every connection dropped, new ones refused
        for `down_for` seconds, then accepted again (by a server that knows none of the old).
        With no `down_for` the proxy never stops listening: the server was back before any client
        could try again."""
        if not down_for:
            await self.drop_connections(graceful=graceful)
            return
        await self.cut(graceful=graceful)
        await asyncio.sleep(down_for)
        await self.restore()

    async def forget_connections(self) -> None:
        """The server loses every open connection without telling its clients (a host that
        rebooted, a NAT or firewall entry that expired): each client learns of it only when it
        next sends something, from a reset. New connections work."""
        for client, upstream in list(self._upstream.items()):
            self._forgotten.add(client)
            upstream.transport.abort()

    async def blackhole(self) -> None:
        """Keep every connection open, accept new ones, and forward nothing until `restore` (or
        `cut`): what is sent meanwhile waits, as in a network that stopped delivering."""
        self._flowing.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(writer)
        try:
            # A server that stopped answering has not necessarily stopped accepting: the
            # connection is taken, and the dial upstream waits with everything else.
            await self._flowing.wait()
            if writer.transport.is_closing():  # cut while it waited
                raise ConnectionResetError
            upstream_reader, upstream_writer = await asyncio.open_connection(
                self.host, self.target_port
            )
        except OSError:
            self._writers.discard(writer)
            writer.transport.abort()
            return
        self._writers.add(upstream_writer)
        self._upstream[writer] = upstream_writer
        links = {
            asyncio.create_task(self._pipe(reader, upstream_writer, client=writer)),
            asyncio.create_task(self._pipe(upstream_reader, writer, client=writer)),
        }
        self._links |= links
        await asyncio.gather(*links, return_exceptions=True)
        self._links -= links
        self._writers -= {writer, upstream_writer}
        self._upstream.pop(writer, None)
        self._forgotten.discard(writer)
        for end in (writer, upstream_writer):
            if not end.transport.is_closing():
                end.transport.abort()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        client: asyncio.StreamWriter,
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if client in self._forgotten:
                    # The client spoke on a connection the server forgot: the reset it gets.
                    client.transport.abort()
                    return
                writer.write(data)
                await writer.drain()
        if writer is client and client in self._forgotten:
            return  # the server's end went away silently: the client is not told
        writer.transport.abort()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.cut()
