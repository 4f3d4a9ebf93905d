"""What the transport does on the Faktory side: job layout, retry, ``at``, reservations, requeue and restore, a
FETCH in flight, foreign jobs, PUSHB, passwords, TLS, reconnecting, and how the transport is selected.

Tests that inspect the server's queues and sets directly are ``faktory_server_only``; the rest also run against
a real Faktory (``FAKTORY_URL``).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import kombu
import pytest
import trustme
from kombu import Consumer, Producer, Queue

from celery_faktory.client import Client
from celery_faktory.client.connection import expect_text
from celery_faktory.clock import ManualClock
from celery_faktory.errors import AuthenticationFailed
from celery_faktory.protocol import commands
from celery_faktory.server import FaktoryServer, Fault, ServerConfig
from celery_faktory.transport import PublishBatchRejected, Transport
from celery_faktory.transport import channel as channel_module
from tests.faktory.brokers import broker_url

EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}

Factory = Callable[..., FaktoryServer]
MakeConnection = Callable[..., kombu.Connection]


def publish_task(
    conn: kombu.Connection,
    queue: str,
    args: list[Any],
    kwargs: dict[str, Any] | None = None,
    *,
    task: str = "proj.add",
    **headers: Any,
) -> str:
    """Publish a protocol-2 JSON task message the way Celery does; returns its task id."""
    task_id = str(uuid.uuid4())
    all_headers = {"lang": "py", "task": task, "id": task_id, "eta": None, "expires": None, "retries": 0}
    all_headers.update(headers)
    with conn.channel() as channel:
        Producer(channel).publish(
            [args, kwargs or {}, EMBED],
            routing_key=queue,
            serializer="json",
            headers=all_headers,
            correlation_id=task_id,
        )
    return task_id


def body(message: Any) -> Any:
    return json.loads(message.body)


def working(server: FaktoryServer, prefix: str) -> list[dict[str, Any]]:
    return [job for job in server.jobs("working") if job["queue"].startswith(prefix)]


def in_set(server: FaktoryServer, name: str, prefix: str) -> list[dict[str, Any]]:
    return [job for job in server.jobs(name) if job["queue"].startswith(prefix)]


def raw_fetch(faktory: Client, *queues: str) -> dict[str, Any] | None:
    """FETCH through the plain client and return the job as the server sent it."""
    text = expect_text(faktory.request(commands.fetch(*queues)))
    return None if text is None else dict(json.loads(text))


@pytest.fixture
def clocked(faktory_server_factory: Factory) -> tuple[FaktoryServer, ManualClock]:
    """A private server on a ManualClock (fast timings otherwise)."""
    clock = ManualClock()
    return faktory_server_factory(clock=clock, config=ServerConfig.fast()), clock


# -- the job on the server -----------------------------------------------------------------------------


def test_native_jobs_are_ordinary_faktory_jobs(connection: kombu.Connection, faktory: Client, prefix: str) -> None:
    with connection as conn:
        task_id = publish_task(conn, "tasks", [2, "three"], {"x": [1]}, timelimit=[4000, None])
    job = raw_fetch(faktory, f"{prefix}tasks")
    assert job is not None
    faktory.ack(job["jid"])
    assert job["jobtype"] == "proj.add"
    assert job["args"] == [2, "three"]
    assert job["custom"]["kwargs"] == {"x": [1]}
    assert job["custom"]["kq"] == "tasks"
    assert job["custom"]["kombu"]["headers"]["id"] == task_id
    assert job["reserve_for"] == 4060
    assert job["retry"] == 25
    assert len(job["jid"]) == 32
    assert job["jid"] != task_id


@pytest.mark.faktory_server_only
def test_every_push_carries_retry(make_connection: MakeConnection, faktory_server: FaktoryServer, prefix: str) -> None:
    with make_connection(retry=7) as conn, closing(conn.SimpleQueue("retries")) as queue:
        queue.put({"plain": 1})
        queue.put({"pickled": 2}, serializer="pickle")
        queue.put({"high": 3}, priority=9)
        publish_task(conn, "retries", [1])
    jobs = faktory_server.queue(f"{prefix}retries") + faktory_server.queue(f"{prefix}retries_p9")
    assert len(jobs) == 4
    assert {job["retry"] for job in jobs} == {7}
    assert {job["reserve_for"] for job in jobs} == {1800}


def test_numbers_survive_faktory_exactly(connection: kombu.Connection) -> None:
    args = [2**60 + 1, 1.0, 0.1, -(2**63)]
    with connection as conn, closing(conn.SimpleQueue("numbers")) as queue:
        publish_task(conn, "numbers", args, {"big": 12345678901234567890})
        message = queue.get(timeout=3)
        message.ack()
    assert body(message) == [args, {"big": 12345678901234567890}, EMBED]
    assert isinstance(body(message)[0][1], float)


def test_queue_names_are_encoded(connection: kombu.Connection, faktory: Client, prefix: str) -> None:
    with connection as conn, closing(conn.SimpleQueue("celery@host.celery.pidbox")) as queue:
        queue.put({"ping": True})
        assert faktory.queue_sizes()[f"{prefix}celery_40host.celery.pidbox"] == 1
        message = queue.get(timeout=3)
        assert message.delivery_info["faktory_queue"] == f"{prefix}celery_40host.celery.pidbox"
        message.ack()


def test_size_purge_delete_and_passive_declare(connection: kombu.Connection, faktory: Client, prefix: str) -> None:
    with connection as conn, closing(conn.SimpleQueue("sized")) as queue:
        for priority in (0, 4, 9):
            queue.put({"p": priority}, priority=priority)
        assert len(queue) == 3
        assert queue.clear() == 3
        assert len(queue) == 0
        queue.put({"again": 1})
        channel = conn.default_channel
        assert channel.queue_declare("sized", passive=True).message_count == 1
        channel.queue_delete("sized")
        assert not [name for name in faktory.queue_sizes() if name.startswith(f"{prefix}sized")]
        with pytest.raises(conn.channel_errors):
            channel.queue_declare("never_used", passive=True)


# -- ETA ---------------------------------------------------------------------------------------------------


@pytest.mark.faktory_server_only
def test_a_far_eta_becomes_at(clocked: tuple[FaktoryServer, ManualClock], prefix: str) -> None:
    server, clock = clocked
    now = datetime.fromtimestamp(clock.time_ns() / 1e9, timezone.utc)
    conn = kombu.Connection(broker_url(server.url), transport_options={"queue_name_prefix": prefix, "clock": clock})
    with conn, closing(conn.SimpleQueue("eta")) as queue:
        publish_task(conn, "eta", [1], eta=(now + timedelta(seconds=60)).isoformat())
        publish_task(conn, "eta", [2], eta=(now + timedelta(seconds=5)).isoformat())
        [scheduled] = server.jobs("scheduled")
        assert scheduled["args"] == [1]
        assert scheduled["at"].endswith("Z")
        soon = queue.get(timeout=3)
        assert body(soon)[0] == [2]
        soon.ack()
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)
        server.advance(59)
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.2)
        server.advance(2)
        late = queue.get(timeout=3)
        assert body(late)[0] == [1]
        assert late.headers["eta"] == (now + timedelta(seconds=60)).isoformat()
        late.ack()


# -- requeue, restore, the FETCH in flight ------------------------------------------------------------


def test_restore_at_channel_close_is_immediate(make_connection: MakeConnection) -> None:
    queue = Queue("restored", routing_key="restored")
    held: list[Any] = []
    with make_connection() as conn:
        with conn.channel() as channel:
            producer = Producer(channel)
            for number in range(2):
                producer.publish({"n": number}, routing_key="restored", declare=[queue])
        with Consumer(conn, [queue], callbacks=[lambda body, message: held.append(message)]):
            while len(held) < 2:
                conn.drain_events(timeout=3)
    with make_connection() as conn, closing(conn.SimpleQueue("restored")) as again:
        messages = [again.get(timeout=3) for _ in range(2)]
        assert sorted(message.payload["n"] for message in messages) == [0, 1]
        assert all(message.delivery_info["redelivered"] for message in messages)
        assert {message.delivery_tag for message in messages}.isdisjoint(m.delivery_tag for m in held)
        for message in messages:
            message.ack()


@pytest.mark.faktory_server_only
def test_restored_originals_never_come_back(clocked: tuple[FaktoryServer, ManualClock], prefix: str) -> None:
    server, _ = clocked
    url = broker_url(server.url)
    held: list[Any] = []
    with (
        kombu.Connection(url, transport_options={"queue_name_prefix": prefix}) as conn,
        closing(conn.SimpleQueue("kept")) as queue,
    ):
        queue.put({"n": 1})
        held.append(queue.get(timeout=3))
        assert len(working(server, prefix)) == 1
    assert working(server, prefix) == []
    [copy] = server.queue(f"{prefix}kept")
    assert copy["jid"] != held[0].delivery_tag
    server.advance(7200)  # far beyond every reservation
    assert in_set(server, "retries", prefix) == []
    assert len(server.queue(f"{prefix}kept")) == 1


def test_closing_with_a_fetch_in_flight_loses_nothing(make_connection: MakeConnection, fetch_block: float) -> None:
    queue = Queue("inflight", routing_key="inflight")
    consumer_conn = make_connection()
    received: list[Any] = []
    with Consumer(consumer_conn, [queue], callbacks=[lambda body, message: received.append(body)]):
        with pytest.raises(socket.timeout):
            consumer_conn.drain_events(timeout=0.05)  # the FETCH is now waiting on the server
        with make_connection() as producer_conn, closing(producer_conn.SimpleQueue("inflight")) as sender:
            sender.put({"sent": "while fetching"})
        time.sleep(min(fetch_block, 0.2))
    consumer_conn.release()
    assert received == []
    with make_connection() as conn, closing(conn.SimpleQueue("inflight")) as again:
        message = again.get(timeout=3)
        assert message.payload == {"sent": "while fetching"}
        message.ack()


def test_a_drain_picks_up_its_pending_fetch(make_connection: MakeConnection) -> None:
    queue = Queue("pending", routing_key="pending")
    received: list[Any] = []
    with make_connection() as conn:

        def on_message(body: Any, message: Any) -> None:
            received.append(body)
            message.ack()

        with Consumer(conn, [queue], callbacks=[on_message]):
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.05)
            with make_connection() as other, closing(other.SimpleQueue("pending")) as sender:
                sender.put({"late": True})
            conn.drain_events(timeout=5)
    assert received == [{"late": True}]


def test_a_job_redelivered_after_fail_is_marked(connection: kombu.Connection, faktory: Client) -> None:
    with connection as conn, closing(conn.SimpleQueue("failed")) as queue:
        queue.put({"try": 1})
        first = queue.get(timeout=3)
        faktory.fail(first.delivery_tag, "worker lost", errtype="ReservationExpired")
        faktory.retries.requeue(jids=[first.delivery_tag])
        again = queue.get(timeout=3)
        assert again.delivery_tag == first.delivery_tag
        assert again.delivery_info["redelivered"] is True
        assert again.headers["redelivered"] is True
        again.ack()


@pytest.mark.faktory_server_only
def test_no_ack_consumers_ack_at_fetch(
    connection: kombu.Connection, faktory_server: FaktoryServer, prefix: str
) -> None:
    with connection as conn, closing(conn.SimpleBuffer("noack")) as buffer:
        buffer.put({"fire": "and forget"})
        assert buffer.get(timeout=3).payload == {"fire": "and forget"}
        assert working(faktory_server, prefix) == []
        assert faktory_server.queue(f"{prefix}noack") == []


@pytest.mark.faktory_server_only
def test_reject_policy_dead(make_connection: MakeConnection, faktory_server: FaktoryServer, prefix: str) -> None:
    with make_connection(reject_policy="dead") as conn, closing(conn.SimpleQueue("doomed")) as queue:
        queue.put({"bad": "message"})
        queue.get(timeout=3).reject(requeue=False)
    [dead] = in_set(faktory_server, "dead", prefix)
    assert dead["failure"]["errtype"] == "kombu.Rejected"
    assert in_set(faktory_server, "retries", prefix) == []


# -- foreign jobs ------------------------------------------------------------------------------------------


def push_foreign(faktory: Client, queue: str, **fields: Any) -> str:
    jid = uuid.uuid4().hex[:16]
    faktory.push({"jid": jid, "jobtype": "proj.add", "args": [2, 3], "queue": queue, "retry": 3, **fields})
    return jid


def test_foreign_jobs_arrive_as_task_messages(connection: kombu.Connection, faktory: Client, prefix: str) -> None:
    jid = push_foreign(faktory, f"{prefix}foreign", custom={"kwargs": {"z": 1}})
    with connection as conn, closing(conn.SimpleQueue("foreign")) as queue:
        message = queue.get(timeout=3)
        assert message.headers["task"] == "proj.add"
        assert message.headers["id"] == jid
        assert message.content_type == "application/json"
        assert body(message) == [[2, 3], {"z": 1}, EMBED]
        message.reject(requeue=True)
        again = queue.get(timeout=3)
        assert again.headers["id"] == jid  # a requeued copy keeps the task id
        assert again.delivery_info["redelivered"] is True
        again.ack()


@pytest.mark.faktory_server_only
def test_foreign_jobs_rejected_stay_visible(
    make_connection: MakeConnection, faktory: Client, faktory_server: FaktoryServer, prefix: str
) -> None:
    jid = push_foreign(faktory, f"{prefix}foreign-reject")
    with make_connection() as conn, closing(conn.SimpleQueue("foreign-reject")) as queue:
        queue.get(timeout=3).reject(requeue=False)
    [retry] = in_set(faktory_server, "retries", prefix)
    assert retry["jid"] == jid
    assert retry["failure"]["errtype"] == "kombu.Rejected"


@pytest.mark.faktory_server_only
def test_foreign_jobs_can_be_refused(
    make_connection: MakeConnection, faktory: Client, faktory_server: FaktoryServer, prefix: str
) -> None:
    jid = push_foreign(faktory, f"{prefix}celery-only")
    with make_connection(accept_foreign_jobs=False) as conn, closing(conn.SimpleQueue("celery-only")) as queue:
        queue.put({"ours": True})
        assert queue.get(timeout=3).payload == {"ours": True}
        with pytest.raises(queue.Empty):
            queue.get(timeout=0.5)
    [refused] = in_set(faktory_server, "retries", prefix)
    assert refused["jid"] == jid
    assert refused["failure"]["errtype"] == "kombu.ForeignJobRefused"


# -- batches -----------------------------------------------------------------------------------------------


def test_publish_batch(connection: kombu.Connection, faktory: Client, prefix: str) -> None:
    with connection as conn:
        producer = Producer(conn.default_channel)
        assert producer.supports_batch_publish
        with producer.batch(max_size=3):
            for number in range(7):
                producer.publish({"n": number}, routing_key="batched")
            assert faktory.queue_sizes()[f"{prefix}batched"] == 6  # two full batches went out
        assert faktory.queue_sizes()[f"{prefix}batched"] == 7
        with closing(conn.SimpleQueue("batched")) as queue:
            assert [queue.get(timeout=3).payload["n"] for _ in range(7)] == list(range(7))


@pytest.mark.faktory_server_only
def test_batch_partial_failure_is_raised(
    connection: kombu.Connection, faktory_server: FaktoryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    jids = iter(f"{number:032x}" for number in range(1, 100))
    monkeypatch.setattr(channel_module, "new_jid", lambda: next(jids))
    refusal = json.dumps({f"{2:032x}": "jobs must have a jobtype parameter"}).encode()
    faktory_server.inject_fault("PUSHB", Fault(garbage=b"$%d\r\n%b\r\n" % (len(refusal), refusal)))
    with connection as conn:
        producer = Producer(conn.default_channel)

        def publish_three() -> None:
            with producer.batch():
                for number in range(3):
                    headers = {"task": "t", "id": f"task-{number}"}
                    producer.publish({"n": number}, routing_key="partial", headers=headers)

        with pytest.raises(PublishBatchRejected) as info:
            publish_three()
    error = info.value
    assert error.accepted == 2
    [rejected] = error.rejected
    assert (rejected.jid, rejected.queue, rejected.task_id) == (f"{2:032x}", "partial", "task-1")
    assert "task-1" in str(error)


# -- connecting --------------------------------------------------------------------------------------------


def test_password(faktory_password_url: str, prefix: str) -> None:
    url = broker_url(faktory_password_url)
    with kombu.Connection(url, transport_options={"queue_name_prefix": prefix}) as conn:
        assert conn.as_uri().startswith("faktory://:**@")
        with closing(conn.SimpleQueue("secret")) as queue:
            queue.put({"authenticated": True})
            message = queue.get(timeout=3)
            assert message.payload == {"authenticated": True}
            message.ack()
    wrong = url.replace("://:", "://:wrong", 1)
    with pytest.raises(AuthenticationFailed):
        kombu.Connection(wrong).transport.establish_connection()


def test_urls_are_shown_with_the_password_masked(url: str) -> None:
    # kombu builds the shown URL itself (the transport does not parse URLs): the password is always masked.
    conn = kombu.Connection("faktory://:s3cret@host:7419;faktory://u:s%40cret@other")
    assert conn.as_uri() == "faktory://:**@host:7419//"
    assert "s3cret" not in repr(conn)
    assert conn.as_uri(include_password=True) == "faktory://:s3cret@host:7419//"
    transport = Transport(kombu.Connection(url))
    assert transport.driver_type == transport.driver_name == "faktory"
    assert transport.driver_version()
    assert transport.default_port == 7419
    assert transport.implements.asynchronous
    assert transport.implements.batch_publish


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.faktory_server_only
@pytest.mark.parametrize("how", ["ssl", "tls-option", "url-query"])
def test_tls(how: str, ca: trustme.CA, tmp_path: Path, faktory_server_factory: Factory, prefix: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = faktory_server_factory(ssl_context=context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    url = "faktory://" + server.url.split("://", 1)[1]
    options: dict[str, Any] = {"queue_name_prefix": prefix}
    if how == "ssl":
        conn = kombu.Connection(
            url, ssl={"ca_certs": str(ca_file), "cert_reqs": ssl.CERT_REQUIRED}, transport_options=options
        )
    elif how == "tls-option":
        conn = kombu.Connection(url, transport_options={**options, "tls": {"ssl_ca_certs": str(ca_file)}})
    else:
        conn = kombu.Connection(f"{url}?ssl_cert_reqs=required&ssl_ca_certs={ca_file}", transport_options=options)
    with conn, closing(conn.SimpleQueue("secure")) as queue:
        queue.put({"über": "TLS"})
        assert queue.get(timeout=3).payload == {"über": "TLS"}
    plain = kombu.Connection(url, transport_options={**options, "connect_timeout": 0.5})
    with pytest.raises(plain.connection_errors):
        plain.transport.establish_connection()  # one attempt (connect() would retry after 2 s)


@pytest.mark.faktory_server_only
def test_reconnect_after_a_server_restart(faktory_server_factory: Factory, prefix: str) -> None:
    server = faktory_server_factory()
    port = server.port
    conn = kombu.Connection(broker_url(server.url), transport_options={"queue_name_prefix": prefix})
    received: list[Any] = []
    queue = Queue("restart", routing_key="restart")
    try:
        with Consumer(conn, [queue], callbacks=[lambda body, message: (received.append(body), message.ack())]):
            with pytest.raises(socket.timeout):
                conn.drain_events(timeout=0.05)
            server.stop()
            with pytest.raises(conn.connection_errors):
                conn.drain_events(timeout=3)
        restarted = faktory_server_factory(port=port)
        conn.close()
        conn.ensure_connection(max_retries=3, interval_start=0.1)
        with Consumer(conn, [queue], callbacks=[lambda body, message: (received.append(body), message.ack())]):
            with conn.channel() as channel:
                Producer(channel).publish({"after": "restart"}, routing_key="restart")
            conn.drain_events(timeout=3)
        assert received == [{"after": "restart"}]
        assert restarted.running
    finally:
        conn.release()


# -- selecting the transport ------------------------------------------------------------------------------


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_importing_the_package_registers_the_alias() -> None:
    code = (
        "import kombu.transport as t; before = 'faktory' in t.TRANSPORT_ALIASES; import celery_faktory; "
        "print(before, t.TRANSPORT_ALIASES['faktory'], t.resolve_transport('faktory').__name__)"
    )
    assert run_python(code) == "False celery_faktory.transport:Transport Transport"


def test_broker_transport_works_without_the_alias(url: str, prefix: str) -> None:
    code = f"""
import kombu
from contextlib import closing
conn = kombu.Connection({url!r}, transport="celery_faktory.transport:Transport",
                        transport_options={{"queue_name_prefix": {prefix!r}}})
with conn, closing(conn.SimpleQueue("classpath")) as queue:
    queue.put("hello")
    message = queue.get(timeout=3)
    message.ack()
    print(message.payload, type(conn.transport).__module__)
"""
    assert run_python(code) == "hello celery_faktory.transport.transport"
