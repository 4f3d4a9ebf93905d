"""Batches of command lines written over several pooled connections at once: :func:`fan_out`.

Faktory runs each connection's commands one at a time but serves its connections in parallel, so a large
PUSHB or pipelined PUSH goes faster spread over a few connections than queued on one. Batch ``i`` goes to
connection ``i % width``, each connection keeps up to ``depth`` batches in flight (the server always has the
next one waiting), and the oldest batch in flight is read first, so one thread drives every connection.
"""

from __future__ import annotations

import collections
from collections.abc import Generator, Iterable, Sequence
from typing import TypeVar

from celery_faktory.client.connection import Connection
from celery_faktory.client.pool import ConnectionPool
from celery_faktory.errors import FaktoryConnectionError, MalformedReply
from celery_faktory.protocol.replies import Reply

__all__ = ["BATCHES_IN_FLIGHT", "Batch", "Failure", "fan_out"]

_K = TypeVar("_K")

#: One batch: the caller's key for it, and its command lines.
Batch = tuple[_K, Sequence[bytes]]

#: Batches each connection has in flight at most.
BATCHES_IN_FLIGHT = 2

#: Why a batch got no complete answer: its connection failed (the caller decides whether to send it again).
Failure = FaktoryConnectionError | MalformedReply


def fan_out(
    pool: ConnectionPool,
    batches: Iterable[Batch[_K]],
    *,
    width: int,
    depth: int = BATCHES_IN_FLIGHT,
) -> Generator[tuple[Batch[_K], list[Reply] | Failure], None, None]:
    """Send each batch's lines in one write and yield ``(batch, replies)``, over up to ``width`` connections.

    The first connection is taken from ``pool`` as :meth:`~ConnectionPool.acquire` would; the others only when
    the pool has them to spare at once. A batch that got no complete answer (no connection to be had, or its
    connection failed before all its replies came) is yielded with the error instead: any of its commands may
    or may not have run. A broken connection is given back to the pool, which replaces it. Batches are yielded
    in the order given, except that a failed one may come early. Nothing is raised for a connection failure.
    """
    connections: list[Connection] = []
    in_flight: collections.deque[tuple[Connection, Batch[_K]]] = collections.deque()
    try:
        for index, batch in enumerate(batches):
            if connections and len(in_flight) >= len(connections) * depth:
                yield _collect(*in_flight.popleft())
            try:
                connection = _pick(pool, connections, index, width)
                connection.send(b"".join(batch[1]))
            except FaktoryConnectionError as exc:
                yield batch, exc
                continue
            in_flight.append((connection, batch))
        while in_flight:
            yield _collect(*in_flight.popleft())
    finally:
        for connection, _ in in_flight:  # given up half-way: replies are still coming on these
            connection.close()
        for connection in connections:
            pool.release(connection)


def _pick(pool: ConnectionPool, connections: list[Connection], index: int, width: int) -> Connection:
    """The connection for batch ``index``: round robin over ``connections``, growing them up to ``width``."""
    for broken in [connection for connection in connections if connection.broken]:
        connections.remove(broken)
        pool.release(broken)  # closed there; its batches in flight fail when they are read
    if index % width >= len(connections):
        fresh = pool.acquire() if not connections else pool.try_acquire()
        if fresh is not None:
            connections.append(fresh)
            return fresh
    return connections[index % len(connections)]


def _collect(connection: Connection, batch: Batch[_K]) -> tuple[Batch[_K], list[Reply] | Failure]:
    try:
        return batch, [connection.read_reply() for _ in batch[1]]
    except (FaktoryConnectionError, MalformedReply) as exc:
        connection.broken = True
        return batch, exc
