"""kombu-level conformance, modelled on the contract classes of kombu's ``t/integration/common.py``.

The same behaviours kombu checks for every transport (connect, publish and consume, routing, acks, reject,
priorities, TTL, failover), written for ``faktory://``: one message per ``drain_events`` (a virtual transport
delivers one at a time), fanout unsupported. Everything runs against our server and a real Faktory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from typing import Any

import kombu
import pytest
from kombu import Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError

from celery_faktory.clock import ManualClock
from celery_faktory.errors import ConnectFailed
from tests.faktory.transport.conftest import dead_port

Bodies = list[Any]


def collect(connection: kombu.Connection, queues: list[Queue], *, count: int, timeout: float = 3.0) -> Bodies:
    """Consume ``count`` messages (one drain each), acking them; fail if they do not arrive."""
    received: Bodies = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    with Consumer(connection, queues, callbacks=[on_message], accept=["json", "pickle"]):
        deadline = time.monotonic() + timeout * count
        while len(received) < count:
            connection.drain_events(timeout=max(deadline - time.monotonic(), 0.01))
    return received


def nothing_arrives(connection: kombu.Connection, queues: list[Queue], timeout: float = 1.0) -> bool:
    """Whether a consumer of ``queues`` receives nothing within ``timeout`` seconds."""
    received: Bodies = []
    with Consumer(connection, queues, callbacks=[lambda body, message: received.append(body)], accept=["pickle"]):
        try:
            connection.drain_events(timeout=timeout)
        except TimeoutError:
            return not received
    return False


class BasicFunctionality:
    """Connecting, channels, and the plain publish and consume paths."""

    def test_connect(self, connection: kombu.Connection) -> None:
        connection.connect()
        assert connection.connection
        assert connection.connected
        connection.close()
        assert not connection.connected
        connection.connect()
        assert connection.connected
        connection.close()

    def test_default_channel_autoconnect(self, connection: kombu.Connection) -> None:
        connection.connect()
        connection.close()
        assert connection.default_channel
        assert connection.connected

    def test_channel(self, connection: kombu.Connection) -> None:
        with connection as conn:
            channel = conn.channel()
            assert channel is not None
            assert conn.connected
            channel.close()

    def test_default_channel(self, connection: kombu.Connection) -> None:
        with connection as conn:
            assert conn.default_channel is not None
            assert conn.connected

    def test_autoretry_default_channel(self, connection: kombu.Connection) -> None:
        calls: list[Any] = []

        def function(*, channel: Any) -> str:
            calls.append(channel)
            return "done"

        with connection as conn:
            result, channel = conn.autoretry(function, max_retries=0)()
            assert result == "done"
            assert calls == [channel]
            assert conn.connected

    def test_publish_consume(self, connection: kombu.Connection) -> None:
        queue = Queue("test", routing_key="test")
        seen: list[Any] = []

        def on_message(body: Any, message: Any) -> None:
            assert message.content_type == "application/x-python-serialize"
            assert message.delivery_info["routing_key"] == "test"
            seen.append(body)
            message.ack()

        with connection as conn, conn.channel() as channel:
            Producer(channel).publish(
                {"hello": "world"},
                retry=True,
                exchange=queue.exchange,
                routing_key=queue.routing_key,
                declare=[queue],
                serializer="pickle",
            )
            with Consumer(conn, [queue], accept=["pickle"], callbacks=[on_message]):
                conn.drain_events(timeout=3)
        assert seen == [{"hello": "world"}]

    def test_consume_empty_queue(self, connection: kombu.Connection) -> None:
        with connection as conn:
            assert nothing_arrives(conn, [Queue("empty", routing_key="empty")])

    def test_simple_queue_publish_consume(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleQueue("simple_queue_test")) as queue:
            queue.put({"Hello": "World"}, headers={"k1": "v1"})
            message = queue.get(timeout=3)
            assert message.payload == {"Hello": "World"}
            assert message.content_type == "application/json"
            assert message.content_encoding == "utf-8"
            assert message.headers == {"k1": "v1"}
            message.ack()

    def test_simple_buffer_publish_consume(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleBuffer("simple_buffer_test")) as buffer:
            buffer.put({"Hello": "World"}, headers={"k1": "v1"})
            message = buffer.get(timeout=3)
            assert message.payload == {"Hello": "World"}
            assert message.content_type == "application/json"
            assert message.content_encoding == "utf-8"
            assert message.headers == {"k1": "v1"}
            message.ack()


class TestBasicFunctionality(BasicFunctionality):
    """Against the tests' server directly."""


class TestFailedConnections:
    """A server that is not there is reported at once (kombu's connect() retries once, after 2 s)."""

    def test_failed_connect(self, invalid_connection: kombu.Connection) -> None:
        with pytest.raises(ConnectFailed):
            invalid_connection.connect()

    def test_failed_connection(self, invalid_connection: kombu.Connection) -> None:
        with pytest.raises(ConnectFailed):
            _ = invalid_connection.connection

    def test_failed_channel(self, invalid_connection: kombu.Connection) -> None:
        with pytest.raises(ConnectFailed):
            invalid_connection.channel()

    def test_failed_default_channel(self, invalid_connection: kombu.Connection) -> None:
        invalid_connection.transport_options["max_retries"] = 1
        started = time.monotonic()
        with pytest.raises(OperationalError):
            _ = invalid_connection.default_channel
        assert time.monotonic() - started < 10


class TestFailover:
    """Through ``faktory://<dead>;<live>``: the basic paths, and kombu's alternate-URL rules."""

    basic = BasicFunctionality()

    def test_connect(self, failover_connection: kombu.Connection) -> None:
        self.basic.test_connect(failover_connection)

    def test_publish_consume(self, failover_connection: kombu.Connection) -> None:
        self.basic.test_publish_consume(failover_connection)

    def test_consume_empty_queue(self, failover_connection: kombu.Connection) -> None:
        self.basic.test_consume_empty_queue(failover_connection)

    def test_simple_buffer_publish_consume(self, failover_connection: kombu.Connection) -> None:
        self.basic.test_simple_buffer_publish_consume(failover_connection)

    def test_failover_switches_to_alternate_url(self, failover_connection: kombu.Connection, url: str) -> None:
        dead = failover_connection.port
        failover_connection.connect()
        assert failover_connection.connected
        assert failover_connection.port != dead
        assert failover_connection.port == kombu.Connection(url).port
        assert failover_connection.transport_cls == "faktory"

    def test_failover_rejects_dotted_alternate(self, url: str) -> None:
        with pytest.raises(ValueError, match="Invalid transport scheme"):
            kombu.Connection(f"{url};celery.faktory://127.0.0.1:7419")

    def test_failover_to_alias_alternate_is_allowed(
        self, make_connection: Callable[..., kombu.Connection], url: str
    ) -> None:
        conn = make_connection(f"faktory://127.0.0.1:{dead_port()}", connect_timeout=1)
        conn.switch(url)
        conn.connect()
        assert conn.connected


class TestExchangeTypes:
    """Routing within one process (bindings are kept in memory, as in every virtual transport)."""

    def test_direct(self, connection: kombu.Connection) -> None:
        exchange = Exchange("direct_test", type="direct")
        queue = Queue("direct_test", exchange, routing_key="direct_test")
        with connection as conn:
            with conn.channel() as channel:
                Producer(channel).publish(
                    {"hello": "direct"}, exchange=exchange, routing_key="direct_test", declare=[queue],
                    serializer="pickle",
                )  # fmt: skip
            assert collect(conn, [queue], count=1) == [{"hello": "direct"}]

    def test_direct_routing_keys(self, connection: kombu.Connection) -> None:
        exchange = Exchange("direct_routing", type="direct")
        first = Queue("direct_routing_1", exchange, routing_key="d1")
        second = Queue("direct_routing_2", exchange, routing_key="d2")
        with connection as conn:
            with conn.channel() as channel:
                producer = Producer(channel)
                producer.publish({"to": "d1"}, exchange=exchange, routing_key="d1", declare=[first, second],
                                 serializer="pickle")  # fmt: skip
                producer.publish({"to": "d3"}, exchange=exchange, routing_key="d3", serializer="pickle")
            assert collect(conn, [first], count=1) == [{"to": "d1"}]
            assert nothing_arrives(conn, [first, second])

    def test_topic(self, connection: kombu.Connection) -> None:
        exchange = Exchange("topic_test", type="topic")
        star_a = Queue("topic_a", exchange, routing_key="t.*")
        star_b = Queue("topic_b", exchange, routing_key="t.*")
        plain = Queue("topic_c", exchange, routing_key="t")
        with connection as conn:
            with conn.channel() as channel:
                Producer(channel).publish({"topic": 1}, exchange=exchange, routing_key="t.1",
                                          declare=[star_a, star_b, plain], serializer="pickle")  # fmt: skip
            assert collect(conn, [star_a], count=1) == [{"topic": 1}]
            assert collect(conn, [star_b], count=1) == [{"topic": 1}]
            assert nothing_arrives(conn, [plain])

    def test_publish_empty_exchange(self, connection: kombu.Connection) -> None:
        exchange = Exchange("empty_topic", type="topic")
        with connection as conn, conn.channel() as channel:
            exchange(channel).declare()
            Producer(channel).publish({"nobody": "listens"}, exchange=exchange, routing_key="t.1")

    def test_fanout_is_not_offered(self, connection: kombu.Connection) -> None:
        exchange = Exchange("fanout_test", type="fanout")
        first = Queue("fanout_1", exchange)
        with connection as conn:
            assert not conn.supports_exchange_type("fanout")
            with conn.channel() as channel:
                Producer(channel).publish({"fan": "out"}, exchange=exchange, declare=[first], serializer="pickle")
            assert nothing_arrives(conn, [first])


class TestMessage:
    """ack, reject and requeue through ``SimpleQueue.get_nowait``."""

    def test_ack(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleQueue("ack_test")) as queue:
            queue.put("one")
            queue.get_nowait().ack()
            with pytest.raises(queue.Empty):
                queue.get_nowait()

    def test_reject_no_requeue(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleQueue("reject_test")) as queue:
            queue.put("one")
            queue.get_nowait().reject(requeue=False)
            with pytest.raises(queue.Empty):
                queue.get_nowait()

    def test_reject_requeue(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleQueue("requeue_test")) as queue:
            queue.put("one")
            first = queue.get_nowait()
            assert not first.delivery_info.get("redelivered")
            first.reject(requeue=True)
            again = queue.get_nowait()
            assert again.payload == "one"
            assert again.delivery_info["redelivered"] is True
            assert again.delivery_tag != first.delivery_tag
            again.ack()
            with pytest.raises(queue.Empty):
                queue.get_nowait()

    def test_requeue(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleQueue("requeue_test2")) as queue:
            queue.put("one")
            queue.get_nowait().requeue()
            again = queue.get_nowait()
            assert again.payload == "one"
            again.ack()


class TestPriority:
    """``asc`` order (a higher number first); one message per drain."""

    def _publish(self, conn: kombu.Connection, queue: Queue, priorities: list[int]) -> None:
        with conn.channel() as channel:
            producer = Producer(channel)
            for number, priority in enumerate(priorities):
                producer.publish(
                    {"n": number, "priority": priority},
                    routing_key=queue.routing_key,
                    exchange=queue.exchange,
                    declare=[queue],
                    priority=priority,
                    serializer="pickle",
                )

    def test_publish_consume(self, connection: kombu.Connection) -> None:
        queue = Queue("priority_test", routing_key="priority_test", max_priority=10)
        with connection as conn:
            self._publish(conn, queue, [1, 8, 1])
            bodies = collect(conn, [queue], count=3)
        assert [body["n"] for body in bodies] == [1, 0, 2]

    def test_publish_requeue_consume(self, connection: kombu.Connection) -> None:
        queue = Queue("priority_requeue", routing_key="priority_requeue", max_priority=10)
        with connection as conn:
            self._publish(conn, queue, [1, 8, 1])
            held: list[Any] = []
            with Consumer(conn, [queue], accept=["pickle"], callbacks=[lambda body, message: held.append(message)]):
                while len(held) < 3:
                    conn.drain_events(timeout=3)
                for message in held:
                    message.requeue()
            self._publish(conn, queue, [9])
            bodies = collect(conn, [queue], count=4)
        assert [(body["n"], body["priority"]) for body in bodies] == [(0, 9), (1, 8), (0, 1), (2, 1)]

    def test_simple_queue_publish_consume(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleQueue("priority_simple")) as queue:
            for number, priority in enumerate([1, 8, 1]):
                queue.put({"n": number}, priority=priority)
            assert [queue.get(timeout=3).payload["n"] for _ in range(3)] == [1, 0, 2]

    def test_simple_buffer_publish_consume(self, connection: kombu.Connection) -> None:
        with connection as conn, closing(conn.SimpleBuffer("priority_buffer")) as buffer:
            for number, priority in enumerate([1, 8, 1]):
                buffer.put({"n": number}, priority=priority)
            assert [buffer.get(timeout=3).payload["n"] for _ in range(3)] == [1, 0, 2]

    def test_desc_order_serves_lower_numbers_first(self, make_connection: Callable[..., kombu.Connection]) -> None:
        with make_connection(priority_order="desc") as conn, closing(conn.SimpleQueue("priority_desc")) as queue:
            for number, priority in enumerate([9, 0, 5]):
                queue.put({"n": number}, priority=priority)
            assert [queue.get(timeout=3).payload["n"] for _ in range(3)] == [1, 2, 0]

    def test_priority_spans_queues(self, connection: kombu.Connection) -> None:
        low = Queue("prio_low", routing_key="prio_low")
        high = Queue("prio_high", routing_key="prio_high")
        with connection as conn:
            self._publish(conn, low, [0, 0])
            self._publish(conn, high, [9])
            bodies = collect(conn, [low, high], count=3)
        assert bodies[0] == {"n": 0, "priority": 9}


class TestTimeToLive:
    """Message TTL is emulated at FETCH; a Celery ``expires`` header is never treated as a TTL."""

    def test_publish_consume(self, connection: kombu.Connection) -> None:
        queue = Queue("ttl_test", routing_key="ttl_test")
        with connection as conn:
            with conn.channel() as channel:
                Producer(channel).publish({"short": "lived"}, routing_key="ttl_test", declare=[queue],
                                          expiration=0.5, serializer="pickle")  # fmt: skip
            time.sleep(0.8)
            assert nothing_arrives(conn, [queue])

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    def test_simple_queue_publish_consume(
        self, make_connection: Callable[..., kombu.Connection], clock: ManualClock
    ) -> None:
        with make_connection(clock=clock) as conn, closing(conn.SimpleQueue("ttl_simple")) as queue:
            queue.put({"a": 1}, expiration=2)
            queue.put({"b": 2})
            clock.advance(3)
            assert queue.get(timeout=3).payload == {"b": 2}
            with pytest.raises(queue.Empty):
                queue.get(timeout=0.5)

    def test_simple_buffer_publish_consume(
        self, make_connection: Callable[..., kombu.Connection], clock: ManualClock
    ) -> None:
        with make_connection(clock=clock) as conn, closing(conn.SimpleBuffer("ttl_buffer")) as buffer:
            buffer.put({"a": 1}, expiration=2)
            clock.advance(3)
            with pytest.raises(buffer.Empty):
                buffer.get(timeout=0.5)
            buffer.put({"c": 3}, expiration=2)
            assert buffer.get(timeout=3).payload == {"c": 3}

    def test_celery_expires_header_is_delivered(
        self, make_connection: Callable[..., kombu.Connection], clock: ManualClock
    ) -> None:
        with make_connection(clock=clock) as conn, closing(conn.SimpleQueue("ttl_celery")) as queue:
            queue.put(
                {"task": "body"}, expiration=1, headers={"task": "t", "id": "i", "expires": "2000-01-01T00:00:00Z"}
            )
            clock.advance(5)
            message = queue.get(timeout=3)
            assert message.headers["expires"] == "2000-01-01T00:00:00Z"
            message.ack()
