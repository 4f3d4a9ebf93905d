"""A thread-safe, fork-aware pool of :class:`~celery_faktory.client.connection.Connection` objects.

Connections are opened on demand up to ``size`` and reused most-recently-used first. A connection that broke
is closed and dropped on release. After a fork (Celery's prefork pool forks after import), the child forgets
the parent's sockets without touching them and opens its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery_faktory.client.connection import Connection
from celery_faktory.errors import PoolExhausted

__all__ = ["ConnectionPool"]


class ConnectionPool:
    """Up to ``size`` connections made by ``factory``.

    Args:
        factory: Opens a new connection.
        size: The most connections open at once.
        acquire_timeout: Seconds to wait for a free connection before giving up.
    """

    def __init__(self, factory: Callable[[], Connection], size: int, *, acquire_timeout: float = 10.0) -> None:
        if size < 1:
            raise ValueError("a connection pool needs a size of at least 1")
        self._factory = factory
        self.size = size
        self.acquire_timeout = acquire_timeout
        self._idle: list[Connection] = []
        self._in_use = 0
        self._pid = os.getpid()
        self._condition = threading.Condition(threading.Lock())
        self._closed = False

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            # The parent's sockets belong to the parent: forget them, never write END on them.
            self._idle = []
            self._in_use = 0
            self._pid = os.getpid()
            self._condition = threading.Condition(threading.Lock())

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """Borrow a connection for the duration of a ``with`` block."""
        connection = self.acquire()
        try:
            yield connection
        finally:
            self.release(connection)

    def acquire(self) -> Connection:
        """Take an idle connection, or open one, waiting while ``size`` are in use.

        Raises:
            PoolExhausted: No connection became free within ``acquire_timeout``.
        """
        taken = self._reserve(wait=True)
        return taken if isinstance(taken, Connection) else self._open()

    def try_acquire(self) -> Connection | None:
        """Like :meth:`acquire`, but ``None`` at once instead of waiting while ``size`` are in use."""
        taken = self._reserve(wait=False)
        if taken is False:
            return None
        return taken if isinstance(taken, Connection) else self._open()

    def _reserve(self, *, wait: bool) -> Connection | bool:
        """Count one more connection in use: an idle one, True (open a new one), or False (none, not waiting)."""
        self._check_fork()
        deadline = None
        with self._condition:
            while not self._idle and self._in_use >= self.size:
                if not wait:
                    return False
                if deadline is None:
                    deadline = time.monotonic() + self.acquire_timeout
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._condition.wait(remaining):
                    raise PoolExhausted(f"no free Faktory connection within {self.acquire_timeout} s")
            self._in_use += 1
            return self._idle.pop() if self._idle else True

    def _open(self) -> Connection:
        try:
            return self._factory()
        except BaseException:
            with self._condition:
                self._in_use -= 1
                self._condition.notify()
            raise

    def release(self, connection: Connection) -> None:
        """Give a connection back; a broken one is closed instead of kept."""
        if connection.pid != os.getpid():
            return
        with self._condition:
            self._in_use -= 1
            if connection.broken or self._closed:
                connection.close()
            else:
                self._idle.append(connection)
            self._condition.notify()

    def close(self) -> None:
        """Close the idle connections; connections in use are closed when they come back."""
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
