"""The transport under kombu's event loop (the hub Celery's ``asynloop`` runs): delivery, prefetch, no spinning,
replies in pieces, a FETCH in flight at close, broken and silent FETCH connections.

Each test registers a real :class:`kombu.asynchronous.Hub` with the transport, as Celery's consumer does, and turns
the loop by hand. Tests that inject faults are ``faktory_server_only``; the rest also run against a real Faktory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from typing import Any

import kombu
import pytest
from kombu import Consumer, Producer, Queue
from kombu.asynchronous import Hub

from celery_faktory.errors import FaktoryConnectionError, FaktoryTimeout
from celery_faktory.server import FaktoryServer, Fault
from celery_faktory.transport import channel as channel_module

MakeConnection = Callable[..., kombu.Connection]


class Loop:
    """A hub registered with one connection's transport, turned by :meth:`run_until`."""

    def __init__(self, conn: kombu.Connection) -> None:
        self.hub = Hub()
        self.conn = conn
        conn.transport.register_with_event_loop(conn.connection, self.hub)
        self._loop = self.hub.create_loop()
        self.turns = 0

    def turn(self) -> None:
        self.turns += 1
        next(self._loop)

    def run_until(self, done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the event loop did not get there in time"
            self.turn()

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.turn()

    def close(self) -> None:
        self.hub.close()


@pytest.fixture
def loop_for() -> Iterator[Callable[[kombu.Connection], Loop]]:
    loops: list[Loop] = []

    def make(conn: kombu.Connection) -> Loop:
        loop = Loop(conn)
        loops.append(loop)
        return loop

    yield make
    for loop in loops:
        loop.close()


def publish(conn: kombu.Connection, queue: Queue, *bodies: Any) -> None:
    with conn.channel() as channel:
        producer = Producer(channel)
        for body in bodies:
            producer.publish(body, routing_key=queue.routing_key, declare=[queue])


def test_the_event_loop_delivers_and_acks(
    make_connection: MakeConnection, loop_for: Callable[[kombu.Connection], Loop]
) -> None:
    queue = Queue("evented", routing_key="evented")
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    with make_connection() as producer_conn:
        publish(producer_conn, queue, *({"n": n} for n in range(20)))
    with make_connection() as conn:
        conn.connect()
        loop = loop_for(conn)
        with Consumer(conn, [queue], callbacks=[on_message], prefetch_count=4):
            loop.run_until(lambda: len(received) == 20, timeout=20)
        assert sorted(body["n"] for body in received) == list(range(20))
    with make_connection() as conn, closing(conn.SimpleQueue("evented")) as again, pytest.raises(again.Empty):
        again.get(timeout=0.2)  # every message was acknowledged: nothing came back at close


def test_the_event_loop_keeps_to_the_prefetch_limit(
    make_connection: MakeConnection, loop_for: Callable[[kombu.Connection], Loop], fetch_block: float
) -> None:
    queue = Queue("prefetched", routing_key="prefetched")
    held: list[Any] = []
    with make_connection() as producer_conn:
        publish(producer_conn, queue, *({"n": n} for n in range(5)))
    with make_connection() as conn:
        conn.connect()
        loop = loop_for(conn)
        with Consumer(conn, [queue], callbacks=[lambda body, message: held.append(message)], prefetch_count=2):
            loop.run_until(lambda: len(held) == 2, timeout=10)
            loop.run_for(0.3)
            assert len(held) == 2
            assert not conn.default_channel._fetch_line.pending  # no FETCH while QoS is full
            held[0].ack()
            loop.run_until(lambda: len(held) == 3, timeout=10)
            for message in held[1:]:
                message.ack()
            loop.run_until(lambda: len(held) == 5, timeout=10)
            for message in held[3:]:
                message.ack()
    assert sorted(message.payload["n"] for message in held) == list(range(5))


def test_an_idle_event_loop_does_not_spin(
    make_connection: MakeConnection, loop_for: Callable[[kombu.Connection], Loop], fetch_block: float
) -> None:
    queue = Queue("idle", routing_key="idle")
    with make_connection() as conn:
        conn.connect()
        loop = loop_for(conn)
        with Consumer(conn, [queue], callbacks=[lambda body, message: None]):
            seconds = 2 * fetch_block + 0.2
            loop.run_for(seconds)
            # One turn per empty FETCH (the server's block is the pause), and the hub's own wake-ups.
            assert loop.turns <= 2 * (seconds / fetch_block + seconds + 2)


def test_closing_with_a_fetch_in_flight_under_the_event_loop_loses_nothing(
    make_connection: MakeConnection, loop_for: Callable[[kombu.Connection], Loop]
) -> None:
    queue = Queue("loopinflight", routing_key="loopinflight")
    received: list[Any] = []
    conn = make_connection()
    conn.connect()
    loop = loop_for(conn)
    with Consumer(conn, [queue], callbacks=[lambda body, message: received.append(body)]):
        conn.transport._on_poll_start()  # the hub's tick: a FETCH is now waiting on the server
        assert conn.default_channel._fetch_line.pending
        with make_connection() as producer_conn:
            publish(producer_conn, queue, {"sent": "while fetching"})
        time.sleep(0.2)  # the server hands the job to the waiting FETCH, which nobody reads
    conn.release()
    assert received == []
    assert loop.hub.readers == {}
    assert not loop.hub.on_tick  # the closed transport left the loop
    with make_connection() as again_conn, closing(again_conn.SimpleQueue("loopinflight")) as again:
        message = again.get(timeout=3)
        assert message.payload == {"sent": "while fetching"}
        message.ack()


@pytest.mark.faktory_server_only
def test_a_reply_in_pieces_is_read_without_blocking(
    faktory_server: FaktoryServer,
    make_connection: MakeConnection,
    loop_for: Callable[[kombu.Connection], Loop],
) -> None:
    queue = Queue("pieces", routing_key="pieces")
    received: list[Any] = []
    with make_connection() as producer_conn:
        publish(producer_conn, queue, {"text": "x" * 300})
    with make_connection() as conn:
        conn.connect()
        loop = loop_for(conn)
        reads: list[float] = []
        transport = conn.transport
        read = transport.on_readable

        def timed(fileno: int) -> None:
            started = time.monotonic()
            read(fileno)
            reads.append(time.monotonic() - started)

        transport.on_readable = timed
        # The reply comes in 16-byte writes, 10 ms apart: every read takes what is there and returns.
        faktory_server.inject_fault("FETCH", Fault(split=16))
        with Consumer(conn, [queue], callbacks=[lambda body, message: (received.append(body), message.ack())]):
            loop.run_until(lambda: bool(received), timeout=10)
    assert received == [{"text": "x" * 300}]
    assert len(reads) >= 5
    assert max(reads) < 0.01


@pytest.mark.faktory_server_only
def test_a_broken_fetch_connection_raises_out_of_the_loop(
    faktory_server: FaktoryServer,
    make_connection: MakeConnection,
    loop_for: Callable[[kombu.Connection], Loop],
) -> None:
    queue = Queue("broken", routing_key="broken")
    with make_connection() as conn:
        conn.connect()
        loop = loop_for(conn)
        faktory_server.inject_fault("FETCH", Fault(drop_after=3))
        with Consumer(conn, [queue], callbacks=[lambda body, message: None]):
            with pytest.raises(FaktoryConnectionError) as raised:
                loop.run_for(5)
            # Celery reconnects on every connection error of the transport.
            assert isinstance(raised.value, conn.connection_errors)


@pytest.mark.faktory_server_only
def test_a_silent_fetch_connection_times_out_in_the_loop(
    faktory_server: FaktoryServer,
    make_connection: MakeConnection,
    loop_for: Callable[[kombu.Connection], Loop],
) -> None:
    queue = Queue("silent", routing_key="silent")
    with make_connection(read_timeout=2.5) as conn:
        conn.connect()
        loop = loop_for(conn)
        faktory_server.inject_fault("FETCH", Fault(delay=8))
        with Consumer(conn, [queue], callbacks=[lambda body, message: None]):
            started = time.monotonic()
            with pytest.raises(FaktoryTimeout):
                loop.run_for(8)
            assert time.monotonic() - started < 2.5 + 1.5  # the read timeout, noticed at the next tick


def test_plain_drain_events_still_works_beside_the_event_loop(url: str, prefix: str) -> None:
    # A kombu program that never registers a loop drains as before (the synchronous path).
    queue = Queue("plain", routing_key="plain")
    received: list[Any] = []
    with kombu.Connection(url, transport_options={"queue_name_prefix": prefix}) as conn:
        publish(conn, queue, {"plain": True})
        with Consumer(conn, [queue], callbacks=[lambda body, message: (received.append(body), message.ack())]):
            conn.drain_events(timeout=5)
    assert received == [{"plain": True}]


@pytest.mark.faktory_server_only
def test_acks_ride_on_the_fetch_line_and_a_refusal_is_logged(
    faktory_server: FaktoryServer,
    make_connection: MakeConnection,
    loop_for: Callable[[kombu.Connection], Loop],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = Queue("acked", routing_key="acked")
    # An embedded Celery worker earlier in the session leaves the root logger at ERROR.
    caplog.set_level(logging.WARNING, logger=channel_module.log.name)
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    with make_connection() as producer_conn:
        publish(producer_conn, queue, *({"n": n} for n in range(3)))
    faktory_server.inject_fault("ACK", Fault(garbage=b"-ERR refused for the test\r\n"))
    with make_connection() as conn:
        conn.connect()
        loop = loop_for(conn)
        with Consumer(conn, [queue], callbacks=[on_message], prefetch_count=1):
            loop.run_until(lambda: len(received) == 3, timeout=10)
            loop.run_until(lambda: not conn.default_channel._fetch_line.unread_acks, timeout=5)
        working = [job for job in faktory_server.jobs("working") if str(job.get("queue")).startswith(prefix)]
    assert sorted(body["n"] for body in received) == [0, 1, 2]
    assert "refused for the test" in caplog.text
    # The consumer went on after the refusal (the fault replaced only the reply: the server took every ACK).
    assert working == []
