"""A Faktory-compatible work server, in memory, for tests and local development.

:class:`FaktoryServer` runs the server on its own event-loop thread::

    with FaktoryServer(port=0) as server:
        push_jobs_to(server.url)

It follows the open-source Faktory 1.9.4 server's protocol and semantics, answers with its exact error texts,
never crashes on any input, and offers controls a real server lacks: quiet or terminate a worker, look inside
queues and sets, run the periodic tasks now, and move a :class:`~celery_faktory.clock.ManualClock` forward.
This package never imports the client: each checks the other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import signal
import ssl
import threading
from collections.abc import Callable
from random import Random
from typing import Any, TypeVar
from urllib.parse import quote

from celery_faktory.clock import Clock, ManualClock, SystemClock
from celery_faktory.server.config import ServerConfig
from celery_faktory.server.faults import Fault
from celery_faktory.server.listener import Listener
from celery_faktory.server.store import ServerState

__all__ = ["Fault", "FaktoryServer", "ServerConfig"]

_T = TypeVar("_T")

#: The port a Faktory server listens on by default.
DEFAULT_PORT = 7419


class FaktoryServer:
    """An in-process Faktory server on a background thread.

    Args:
        host: The address to listen on.
        port: The port to listen on; 0 picks a free one.
        password: The password clients must send, or ``None`` for an open server.
        config: Timings and limits (Faktory 1.9.4's by default; :meth:`ServerConfig.fast` for tests).
        clock: Where the server's time comes from (a :class:`ManualClock` lets tests move it).
        seed: Seeds the random source of retry backoff and password challenges, for repeatable tests.
        ssl_context: A server-side TLS context: the server then speaks TLS only (``tcp+tls://``).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        password: str | None = None,
        config: ServerConfig | None = None,
        clock: Clock | None = None,
        seed: int | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.password = password
        self.config = config or ServerConfig()
        self.clock: Clock = clock or SystemClock()
        self._rng = Random(seed)
        self._ssl_context = ssl_context
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._listener: Listener | None = None

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The URL clients connect to, e.g. ``tcp://127.0.0.1:7419`` or ``tcp+tls://:secret@host:port``."""
        scheme = "tcp+tls" if self._ssl_context is not None else "tcp"
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{auth}{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is listening."""
        return self._listener is not None

    def start(self) -> FaktoryServer:
        """Start listening on a background thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("this FaktoryServer is already running")
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop, started), name=f"faktory-server-{self.port}", daemon=True
        )
        self._thread.start()
        try:
            started.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = self._loop = None
            raise
        return self

    def _run_loop(self, loop: asyncio.AbstractEventLoop, started: concurrent.futures.Future[None]) -> None:
        asyncio.set_event_loop(loop)
        try:
            listener = self._new_listener()
            self.host, self.port = loop.run_until_complete(listener.start(self.host, self.port))
        except BaseException as exc:
            started.set_exception(exc)
            loop.close()
            return
        self._listener = listener
        started.set_result(None)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(listener.stop())
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    def _new_listener(self) -> Listener:
        holder: list[Listener] = []
        state = ServerState(self.config, self.clock, self._rng, on_enqueue=lambda queue: holder[0].wake(queue))
        listener = Listener(state, password=self.password, rng=self._rng, ssl_context=self._ssl_context)
        holder.append(listener)
        return listener

    def stop(self) -> None:
        """Close every connection and stop the server; safe to call twice."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._thread = self._loop = self._listener = None

    def serve_forever(self) -> None:
        """Run the server in the calling thread until SIGINT or SIGTERM (used by the command line).

        Either signal closes every connection and returns.
        """
        listener = self._new_listener()

        async def main() -> None:
            stopped = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stopped.set)
            self.host, self.port = await listener.start(self.host, self.port)
            self._listener = listener
            try:
                await stopped.wait()
            finally:
                await listener.stop()
                self._listener = None

        asyncio.run(main())

    def __enter__(self) -> FaktoryServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        url = self.url.replace(f":{quote(self.password, safe='')}@", ":***@") if self.password else self.url
        return f"<FaktoryServer {url} {'running' if self.running else 'stopped'}>"

    # -- test controls ---------------------------------------------------------------------------------

    def _call(self, function: Callable[[Listener], _T]) -> _T:
        loop, listener = self._loop, self._listener
        if loop is None or listener is None:
            raise RuntimeError("the FaktoryServer is not running")
        result: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                result.set_result(function(listener))
            except BaseException as exc:
                result.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return result.result(timeout=30)

    def quiet(self, wid: str) -> bool:
        """Put a worker in the quiet state, like the web UI's Quiet button; False for an unknown wid."""
        return self._call(lambda listener: listener.state.set_worker_state(wid, "quiet"))

    def terminate(self, wid: str) -> bool:
        """Put a worker in the terminate state, like the web UI's Stop button; False for an unknown wid."""
        return self._call(lambda listener: listener.state.set_worker_state(wid, "terminate"))

    def run_periodic_tasks(self) -> None:
        """Run every periodic task now.

        That promotes due scheduled jobs and retries, expires reservations, reaps workers without a recent
        heartbeat and purges the dead set.
        """
        self._call(lambda listener: listener.run_tasks(force=True))

    def advance(self, seconds: float) -> None:
        """Move the server's :class:`ManualClock` forward, then run every periodic task now.

        Raises:
            TypeError: The server was not given a :class:`ManualClock`.
        """
        if not isinstance(self.clock, ManualClock):
            raise TypeError("advance() needs a FaktoryServer built with clock=ManualClock()")
        self.clock.advance(seconds)
        self.run_periodic_tasks()

    def queue(self, name: str) -> list[dict[str, Any]]:
        """Copies of the jobs waiting in queue ``name``, oldest first."""
        return self._call(lambda listener: copy.deepcopy(list(listener.state.queues.get(name, ()))))

    def jobs(self, set_name: str) -> list[dict[str, Any]]:
        """Copies of the jobs in the ``scheduled``, ``retries``, ``dead`` or ``working`` set, earliest first."""

        def read(listener: Listener) -> list[dict[str, Any]]:
            if set_name == "working":
                return [reservation.job for reservation in listener.state.working.values()]
            job_set = listener.state.job_set(set_name)
            if job_set is None:
                raise ValueError(f"no such set {set_name!r}: scheduled, retries, dead or working")
            return list(job_set)

        return self._call(lambda listener: copy.deepcopy(read(listener)))

    def paused_queues(self) -> set[str]:
        """The names of the paused queues."""
        return self._call(lambda listener: set(listener.state.paused))

    def workers(self) -> dict[str, dict[str, Any]]:
        """The live worker records by wid: state, hostname, pid, labels, rss_kb, connection count."""
        return self._call(
            lambda listener: {
                wid: {
                    "state": record.state,
                    "hostname": record.hostname,
                    "pid": record.pid,
                    "labels": list(record.labels),
                    "rss_kb": record.rss_kb,
                    "connections": len(record.connections),
                }
                for wid, record in listener.state.workers.items()
            }
        )

    def info(self) -> dict[str, Any]:
        """The INFO document, as a client would get it."""
        return self._call(lambda listener: listener.state.info(connections=len(listener.connections), used_memory_mb=0))

    def flush(self) -> None:
        """Delete every job, set and counter, as FLUSH does."""
        self._call(lambda listener: listener.state.flush())

    def inject_fault(self, verb: str, fault: Fault, *, times: int = 1) -> None:
        """Make the next ``times`` replies to ``verb`` misbehave as ``fault`` says (see :class:`Fault`)."""
        self._call(lambda listener: listener.faults.arm(verb, fault, times))

    def clear_faults(self) -> None:
        """Disarm every injected fault."""
        self._call(lambda listener: listener.faults.clear())
