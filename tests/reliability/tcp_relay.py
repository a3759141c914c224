"""A loopback TCP relay that a test can cut or blackhole, to play an unavailable server.

    relay = TcpRelay("127.0.0.1", 5432).start()   # listens on 127.0.0.1:<relay.port>
    relay.cut()          # drop every open connection, refuse new ones ("server stopped")
    relay.blackhole()    # keep connections, accept new ones, forward nothing ("blocked")
    relay.restore()      # forward again; blackholed connections resume where they stopped
    relay.close()

While blackholed the relay stops reading from both sides of every connection, so what a
peer sends waits in kernel buffers: the peer's TCP stack sees a healthy connection (its
bytes are acknowledged) but no answer ever comes, as with a frozen server process. New
connections are accepted and held; on ``restore`` they are connected upstream and their
buffered bytes forwarded, unless their client gave up meanwhile.

Bounded on purpose: loopback only, at most ``max_connections`` at once (more are closed
at once), upstream connects time out, and every call from the test thread waits a
bounded time. The relay runs its own asyncio loop in a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Coroutine
from typing import Any, Literal

__all__ = ["TcpRelay"]

State = Literal["up", "cut", "blackhole"]
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class TcpRelay:
    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        max_connections: int = 128,
        connect_timeout: float = 5.0,
    ) -> None:
        if upstream_host not in _LOOPBACK:
            raise ValueError(f"the relay only forwards to loopback, not {upstream_host!r}")
        self.upstream = (upstream_host, upstream_port)
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.state: State = "up"
        self.port = 0
        self.accepted = 0  # connections accepted since start (for the test's curiosity)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-relay", daemon=True
        )
        self._server: asyncio.Server | None = None
        self._flowing: asyncio.Event | None = None  # set unless blackholed
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- control (from the test's thread) ---------------------------------------------

    def start(self) -> TcpRelay:
        self._thread.start()
        self._call(self._start())
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        """Drop every connection (reset) and stop listening: connects are refused."""
        self._call(self._cut())

    def blackhole(self) -> None:
        """Accept and keep connections but forward nothing, either way."""
        self._call(self._blackhole())

    def restore(self) -> None:
        """Listen and forward again."""
        self._call(self._restore())

    def connections(self) -> int:
        return self._call(self._count())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._cut())
            self._call(self._finish())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> TcpRelay:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- the loop ----------------------------------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        await self._listen()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._accept, "127.0.0.1", self.port, reuse_address=True, backlog=64
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _count(self) -> int:
        return len(self._transports)

    async def _cut(self) -> None:
        self.state = "cut"
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()  # RST: the peer sees the connection reset at once
        self._transports.clear()
        assert self._flowing is not None
        self._flowing.set()  # let held pumps see the state and end
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Wait for them: a task left pending when the loop stops is destroyed later, by
        # the garbage collector of whatever thread, which logs it with a traceback.
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _finish(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _blackhole(self) -> None:
        assert self._flowing is not None
        if self.state == "cut":
            await self._listen()
        self.state = "blackhole"
        self._flowing.clear()

    async def _restore(self) -> None:
        assert self._flowing is not None
        if self._server is None:
            await self._listen()
        self.state = "up"
        self._flowing.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None and self._flowing is not None
        if self.state == "cut" or len(self._transports) >= self.max_connections:
            writer.transport.abort()
            return
        self.accepted += 1
        self._tasks.add(task)  # type: ignore[arg-type]
        self._transports.add(writer.transport)
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()  # a blackholed connection is held here
            if self.state != "up":
                return
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.upstream), self.connect_timeout
                )
            except (OSError, TimeoutError):
                return
            self._transports.add(upstream.transport)
            pumps = [
                asyncio.create_task(self._pump(reader, upstream)),
                asyncio.create_task(self._pump(up_reader, writer)),
            ]
            try:
                await asyncio.gather(*pumps, return_exceptions=True)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for side in (writer, upstream):
                if side is not None:
                    self._transports.discard(side.transport)
                    side.transport.abort()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()  # blackholed: stop reading, bytes wait in buffers
                data = await source.read(65536)
                if not data or self.state == "cut":
                    break
                await self._flowing.wait()  # read just before the blackhole: hold it too
                if self.state == "cut":
                    break
                sink.write(data)
                await sink.drain()
        finally:
            # Half-close like a real peer would: EOF one way ends the other pump too.
            with contextlib.suppress(OSError, RuntimeError):
                if sink.can_write_eof() and not sink.is_closing():
                    sink.write_eof()


def refused(port: int) -> bool:
    """True when nothing accepts connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False
