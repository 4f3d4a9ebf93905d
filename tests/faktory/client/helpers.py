"""Helpers of the client tests: set inspection that works on any server, a request spy, scripted servers."""

from __future__ import annotations

import collections
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from celery_faktory.client import Client, Connection, SortedSet
from celery_faktory.job import Job
from celery_faktory.protocol.replies import Reply
from tests.faktory.wire import wait_until


def take_from_set(client: Client, target: SortedSet, jid: str, queue: str) -> Job | None:
    """Requeue ``jid`` from ``target`` and fetch it back (acknowledged); ``None`` when it was not in the set.

    Works on any server without looking inside it: a sentinel job is pushed right after the requeue, so the
    first FETCH returns the requeued job when there was one (queues are FIFO) and the sentinel otherwise.
    """
    target.requeue(jids=[jid])
    sentinel = client.push(Job("Sentinel", queue=queue))
    first = client.fetch(queue)
    assert first is not None
    client.ack(first.jid)
    if first.jid == sentinel:
        return None
    second = client.fetch(queue)
    assert second is not None
    assert second.jid == sentinel
    client.ack(sentinel)
    return first


def fetch_all(client: Client, queue: str, count: int) -> list[Job]:
    """Fetch and acknowledge ``count`` jobs from ``queue`` (fails if one is missing)."""
    jobs = []
    for _ in range(count):
        job = client.fetch(queue)
        assert job is not None, f"only {len(jobs)} of {count} jobs arrived"
        client.ack(job.jid)
        jobs.append(job)
    return jobs


def fail_one(client: Client, queue: str, job: Job, error: BaseException | str = "it broke") -> Job:
    """Push ``job`` to ``queue``, fetch it and FAIL it: it lands in the retries set. Returns the fetched job."""
    job.queue = queue
    client.push(job)
    fetched = client.fetch(queue)
    assert fetched is not None
    assert fetched.jid == job.jid
    client.fail(fetched.jid, error)
    return fetched


class _Recording:
    """A connection handed out through a :class:`RequestSpy`: what is sent is recorded, then sent (or answered)."""

    def __init__(self, spy: RequestSpy, real: Connection | None) -> None:
        self._spy = spy
        self.real = real
        self.broken = False
        self.pid = os.getpid()
        self._answers: collections.deque[Reply] = collections.deque()

    def send(self, data: bytes) -> None:
        lines = [line + b"\r\n" for line in data.split(b"\r\n")[:-1]]
        self._spy.lines.extend(lines)
        if self.real is not None:
            self.real.send(data)
            return
        replies = self._spy.replies
        assert replies is not None
        self._answers.extend(replies(line) for line in lines)

    def read_reply(self) -> Reply:
        if self.real is not None:
            return self.real.read_reply()
        return self._answers.popleft()

    def request(self, line: bytes) -> Reply:
        self.send(line)
        return self.read_reply()

    def pipeline(self, lines: Sequence[bytes]) -> list[Reply]:
        self.send(b"".join(lines))
        return [self.read_reply() for _ in lines]


class RequestSpy:
    """Records the command lines a client sends; with ``replies`` it answers them itself (nothing is sent).

    It takes the place of the connections the client's pool hands out, so every way of sending is seen:
    single requests, pipelines and fanned-out batches.
    """

    def __init__(self, client: Client, replies: Callable[[bytes], Reply] | None = None) -> None:
        self.lines: list[bytes] = []
        self.replies = replies
        pool = client._pool
        acquire, try_acquire, release = pool.acquire, pool.try_acquire, pool.release

        def wrap(real: Connection | None) -> Any:
            return None if real is None and replies is None else _Recording(self, real)

        def spied_release(connection: Any) -> None:
            real = connection.real if isinstance(connection, _Recording) else connection
            if real is not None:
                real.broken = real.broken or connection.broken
                release(real)

        pool.acquire = lambda: wrap(None if replies else acquire())  # type: ignore[method-assign]
        pool.try_acquire = lambda: wrap(None) if replies else wrap(try_acquire())  # type: ignore[method-assign]
        pool.release = spied_release  # type: ignore[method-assign]

    def verbs(self) -> list[str]:
        return [line.split(b" ", 1)[0].strip().decode() for line in self.lines]


class ScriptedServer:
    """A TCP listener on 127.0.0.1 that runs ``handler(sock)`` for each accepted connection, on a thread.

    Everything each connection sent is kept in ``received`` (one bytes object per connection, complete once
    the connection ended).
    """

    def __init__(self, handler: Callable[[socket.socket, ScriptedServer], Any]) -> None:
        self._handler = handler
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.received: list[bytes] = []
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError):
            sock.settimeout(10)
            self._handler(sock, self)

    def read_line(self, sock: socket.socket, buffer: bytearray) -> bytes:
        """Read one line (CRLF included) from ``sock``; ``b""`` at EOF. ``buffer`` keeps what was read ahead."""
        while b"\n" not in buffer:
            data = sock.recv(65536)
            if not data:
                line = bytes(buffer)
                buffer.clear()
                return line
            buffer += data
        end = buffer.index(b"\n") + 1
        line = bytes(buffer[:end])
        del buffer[:end]
        return line

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for thread in self._threads[1:]:
            thread.join(timeout=5)


def greeting_only(greeting: bytes) -> Callable[[socket.socket, ScriptedServer], None]:
    """A handler that writes ``greeting`` and then reads until the client goes away."""

    def handler(sock: socket.socket, server: ScriptedServer) -> None:
        sock.sendall(greeting)
        received = b""
        while data := sock.recv(65536):
            received += data
        server.received.append(received)

    return handler


def faktory_like(replies: Callable[[bytes], bytes] | None = None) -> Callable[[socket.socket, ScriptedServer], None]:
    """A handler that greets ``+HI {"v":2}``, answers HELLO with ``+OK`` and each later line with ``replies(line)``.

    Records every byte the client sent, END included.
    """

    def handler(sock: socket.socket, server: ScriptedServer) -> None:
        sock.sendall(b'+HI {"v":2}\r\n')
        buffer = bytearray()
        received = b""
        try:
            while line := server.read_line(sock, buffer):
                received += line
                if line.startswith(b"HELLO "):
                    sock.sendall(b"+OK\r\n")
                elif line.startswith(b"END"):
                    break
                elif replies is not None:
                    sock.sendall(replies(line))
        finally:
            server.received.append(received)

    return handler


def wait_closed(server: ScriptedServer, count: int = 1, timeout: float = 5.0) -> list[bytes]:
    """Wait until ``count`` connections of ``server`` have ended; returns what each sent."""
    wait_until(lambda: len(server.received) >= count, timeout=timeout)
    return server.received
