"""The socket front end of the Faktory-compatible server: one asyncio event loop for every connection.

Each connection is an :class:`asyncio.Protocol` feeding a :class:`~celery_faktory.protocol.session.ServerSession`
and a task that answers its commands strictly in order. A blocked FETCH waits on the queues it names and wakes
on a push to any of them; a client that disconnects while blocked is never handed a job. Any error inside one
connection's handling closes that connection only, and is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import ssl
from random import Random
from typing import Any

from celery_faktory.protocol.replies import NEED_DATA, encode_bulk, encode_error, encode_simple
from celery_faktory.protocol.session import Close, Command, Hello, ServerSession
from celery_faktory.server.commands import CLOSE, CommandHandler, FetchRequest
from celery_faktory.server.faults import Fault, FaultPlan
from celery_faktory.server.store import ServerState, encode_job

__all__ = ["Listener"]

log = logging.getLogger(__name__)

_OK = encode_simple("OK")


class Listener:
    """Accepts connections and serves them from one :class:`ServerState`.

    Args:
        state: The server's state (its ``on_enqueue`` hook must call :meth:`wake`).
        password: The password clients must prove, or ``None``.
        rng: The random source of greeting salts and iteration counts.
        ssl_context: A server-side TLS context, to serve TLS only.
    """

    def __init__(
        self,
        state: ServerState,
        *,
        password: str | None,
        rng: Random,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.state = state
        self.config = state.config
        self.password = password
        self.rng = rng
        self.ssl_context = ssl_context
        self.handler = CommandHandler(state, lambda: len(self.connections), _used_memory_mb)
        self.connections: dict[int, _Connection] = {}
        self.faults = FaultPlan()
        self._ids = itertools.count(1)
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._server: asyncio.AbstractServer | None = None
        self._ticker: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host``:``port`` (0 picks a free port) and return the address bound."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self, next(self._ids)), host, port, ssl=self.ssl_context, reuse_address=True
        )
        self._ticker = loop.create_task(self._tick_forever())
        address = self._server.sockets[0].getsockname()
        return str(address[0]), int(address[1])

    async def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._ticker is not None:
            self._ticker.cancel()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections.values()):
            connection.abort()
        if self._server is not None:
            await self._server.wait_closed()

    def wake(self, queue: str) -> None:
        """Wake the FETCHes waiting on ``queue`` (a job just joined it)."""
        for waiter in self._waiters.get(queue, ()):
            if not waiter.done():
                waiter.set_result(None)

    def close_connections(self, ids: set[int]) -> None:
        """Close the given connections (workers dropped by the heartbeat reaper)."""
        for connection_id in ids:
            connection = self.connections.get(connection_id)
            if connection is not None:
                connection.abort()

    def run_tasks(self, *, force: bool = False) -> None:
        """Run the periodic tasks that are due (every one with ``force``) and apply their closes."""
        self.close_connections(self.state.tick(force=force))

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_interval)
            try:
                self.run_tasks()
            except Exception:
                log.exception("periodic server task failed")

    async def serve_fetch(self, request: FetchRequest, connection: _Connection) -> dict[str, Any] | None:
        """Serve one FETCH: a job at once, or the first one pushed within the fetch timeout, or ``None``."""
        loop = asyncio.get_running_loop()
        timeout = self.config.fetch_timeout
        if self.state.fetch_refused(request.queues, connection.wid):
            await asyncio.sleep(timeout)
            return None
        deadline = loop.time() + timeout
        while True:
            job = self.state.fetch(request.queues, connection.wid)
            if job is not None:
                return job
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            waiter: asyncio.Future[None] = loop.create_future()
            for queue in request.queues:
                self._waiters.setdefault(queue, set()).add(waiter)
            try:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waiter, remaining)
            finally:
                for queue in request.queues:
                    waiters = self._waiters.get(queue)
                    if waiters is not None:
                        waiters.discard(waiter)
                        if not waiters:
                            del self._waiters[queue]


class _Connection(asyncio.Protocol):
    """One client connection."""

    def __init__(self, listener: Listener, connection_id: int) -> None:
        self.listener = listener
        self.id = connection_id
        self.wid = ""
        rng = listener.rng
        self.session = ServerSession(
            password=listener.password,
            iterations=rng.randint(4000, 8095),
            salt=format(rng.getrandbits(63), "x"),
            max_line=listener.config.max_line,
        )
        self.transport: asyncio.Transport | None = None
        self._data = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None
        self._hello_timer: asyncio.TimerHandle | None = None
        self._held = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.listener.connections[self.id] = self
        loop = asyncio.get_running_loop()
        transport.write(self.session.greeting())
        self._hello_timer = loop.call_later(self.listener.config.handshake_timeout, self.abort)
        self._task = loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        self.session.receive_data(data)
        self._data.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
        if self._task is not None:
            self._task.cancel()
        if self.listener.connections.pop(self.id, None) is not None:
            self.listener.state.disconnect(self.id, self.wid)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def abort(self) -> None:
        """Close the connection at once, without writing anything more."""
        if self.transport is not None:
            self.transport.abort()

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def _serve(self) -> None:
        try:
            await self._serve_events()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection %d failed; closing it", self.id)
            self.abort()

    async def _serve_events(self) -> None:
        listener = self.listener
        while True:
            event = self.session.next_event()
            if event is NEED_DATA:
                self._data.clear()
                await self._data.wait()
                continue
            if isinstance(event, Close):
                self._close_after(event.reply)
                return
            if isinstance(event, Hello):
                self._accept(event)
                if len(listener.connections) > listener.config.max_connections:
                    self._close_after(encode_error(f"too many connections: {len(listener.connections)}"))
                    return
                continue
            assert isinstance(event, Command)
            result = listener.handler.handle(event)
            if result is CLOSE:
                self._close_after(b"")
                return
            if isinstance(result, FetchRequest):
                job = await listener.serve_fetch(result, self)
                result = encode_bulk(None if job is None else encode_job(job))
            assert isinstance(result, bytes)
            fault = listener.faults.take(event.verb)
            if fault is None:
                self._write(self._held + result)
                self._held = b""
            elif not await self._write_faulty(result, fault):
                return
            await self._writable.wait()

    async def _write_faulty(self, reply: bytes, fault: Fault) -> bool:
        """Write ``reply`` as ``fault`` says; False once the connection has been dropped."""
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.garbage is not None:
            reply = fault.garbage
        if fault.hold:
            self._held += reply
            return True
        data, self._held = self._held + reply, b""
        if fault.drop_after is not None:
            self._write(data[: fault.drop_after])
            await asyncio.sleep(0.01)
            self.abort()
            return False
        step = fault.split or len(data)
        for start in range(0, len(data), step):
            self._write(data[start : start + step])
            await asyncio.sleep(0.01)
        return True

    def _accept(self, hello: Hello) -> None:
        if self._hello_timer is not None:
            self._hello_timer.cancel()
            self._hello_timer = None
        self.wid = hello.wid
        self.listener.state.hello(self.id, hello.payload)
        self._write(_OK)

    def _close_after(self, reply: bytes) -> None:
        assert self.transport is not None
        if reply:
            self.transport.write(reply)
        self.transport.close()


def _used_memory_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
