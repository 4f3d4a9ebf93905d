"""The pool and the client's robustness, with faults injected into our server's replies (§13.4 item 1)."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from celery_faktory.client import Client, Connection, ConnectionPool
from celery_faktory.config import ClientConfig
from celery_faktory.errors import ConnectionLost, FaktoryTimeout, MalformedReply
from celery_faktory.job import Job
from celery_faktory.protocol import Bulk, Error, commands
from celery_faktory.server import FaktoryServer, Fault
from tests.faktory.client.helpers import fetch_all

pytestmark = pytest.mark.faktory_server_only

HORSE = "žluťoučký kůň 🐎"


@pytest.fixture
def server(faktory_server_factory: Callable[..., FaktoryServer]) -> FaktoryServer:
    """A private server: injected faults must not reach other tests."""
    return faktory_server_factory()


def idle(client: Client) -> list[Connection]:
    return list(client._pool._idle)


# -- the pool -------------------------------------------------------------------------------------------


def test_threads_share_one_client(server: FaktoryServer) -> None:
    with Client(server.url, pool_size=4) as client:

        def push_many(thread: int) -> list[str]:
            return [client.push(Job("Bulk", [thread, n], queue="threads")) for n in range(200)]

        with ThreadPoolExecutor(8) as executor:
            pushed = [jid for jids in executor.map(push_many, range(8)) for jid in jids]
        assert len(pushed) == len(set(pushed)) == 1600
        assert client.queue_sizes()["threads"] == 1600
        assert sorted(job["jid"] for job in server.queue("threads")) == sorted(pushed)
        assert len(idle(client)) <= 4
        assert client._pool._in_use == 0


def test_connections_are_reused(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        client.info()
        first = idle(client)
        for _ in range(5):
            client.info()
        assert idle(client) == first
        assert len(first) == 1


def test_pool_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        ConnectionPool(lambda: None, 0)  # type: ignore[arg-type, return-value]


def test_pool_exhaustion(server: FaktoryServer) -> None:
    client = Client(server.url, pool_size=1, max_retries=0)
    client._pool.acquire_timeout = 0.3
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with client._pool.connection():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        with pytest.raises(FaktoryTimeout, match="no free Faktory connection"):
            client.info()
        assert 0.25 <= time.monotonic() - started < 1.0
    finally:
        release.set()
        thread.join()
    assert client.info()  # the connection came back
    client.close()


def test_acquire_timeout_is_honoured_by_retried_commands(server: FaktoryServer) -> None:
    """A pool that stays exhausted fails after acquire_timeout, not after (max_retries + 1) of them plus backoff."""
    client = Client(server.url, pool_size=1)
    client._pool.acquire_timeout = 0.3
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with client._pool.connection():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(5)
        started = time.monotonic()
        with pytest.raises(FaktoryTimeout):
            client.push(Job("x", queue="q"))
        elapsed = time.monotonic() - started
    finally:
        release.set()
        thread.join()
    client.close()
    assert elapsed < 0.3 + 0.5, f"PUSH waited {elapsed:.1f} s for a connection with acquire_timeout=0.3"


def test_a_waiting_thread_gets_the_released_connection(server: FaktoryServer) -> None:
    client = Client(server.url, pool_size=1, max_retries=0)
    held = threading.Event()

    def hold() -> None:
        with client._pool.connection():
            held.set()
            time.sleep(0.3)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(5)
    assert client.info()  # waits for the connection instead of failing
    thread.join()
    assert len(idle(client)) == 1
    client.close()


def test_close_then_use(server: FaktoryServer) -> None:
    client = Client(server.url)
    client.info()
    connection = idle(client)[0]
    client.close()
    assert connection.broken
    assert idle(client) == []


# -- dead connections -----------------------------------------------------------------------------------


def test_dropped_ack_is_retried_on_a_fresh_connection(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        client.push(Job("x", queue="q"))
        job = client.fetch("q")
        assert job is not None
        old = idle(client)
        server.inject_fault("ACK", Fault(drop_after=0))
        client.ack(job.jid)
        assert server.jobs("working") == []
        assert idle(client) != old
        assert all(not connection.broken for connection in idle(client))
        assert old[0].broken


@pytest.mark.parametrize("drop_after", [0, 3])  # nothing, or "+OK" without its CRLF, then the close
def test_push_is_retried_after_a_dropped_reply(server: FaktoryServer, drop_after: int) -> None:
    with Client(server.url) as client:
        server.inject_fault("PUSH", Fault(drop_after=drop_after))
        job = Job("x", [HORSE], queue="q")
        assert client.push(job) == job.jid
        copies = server.queue("q")
        # Faktory accepts duplicate jids: the retried PUSH may have stored the job twice.
        assert 1 <= len(copies) <= 2
        assert {copy["jid"] for copy in copies} == {job.jid}
        assert all(copy["args"] == [HORSE] for copy in copies)


def test_push_bulk_is_retried_after_a_dropped_reply(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        server.inject_fault("PUSHB", Fault(drop_after=0))
        jobs = [Job("x", [n], queue="q") for n in range(3)]
        assert client.push_bulk(jobs) == {}
        assert {copy["jid"] for copy in server.queue("q")} == {job.jid for job in jobs}


def test_a_connection_lost_between_chunks_loses_no_job(server: FaktoryServer) -> None:
    """One connection carries the next chunk while the server works on this one: both are sent again."""
    with Client(server.url) as client:
        server.inject_fault("PUSHB", Fault())  # the first chunk is answered
        server.inject_fault("PUSHB", Fault(drop_after=0))  # the second one's reply is lost with the connection
        jobs = [Job("x", [n], queue="q") for n in range(10)]
        assert client.push_bulk(jobs, chunk_size=2) == {}
        copies = [copy["jid"] for copy in server.queue("q")]
        assert set(copies) == {job.jid for job in jobs}
        assert all(copies.count(jid) <= 2 for jid in set(copies))  # at most the chunks in flight, twice


def test_a_lost_connection_raises_when_bulk_retry_is_off(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        server.inject_fault("PUSHB", Fault())
        server.inject_fault("PUSHB", Fault(drop_after=0))
        with pytest.raises(ConnectionLost):
            client.push_bulk([Job("x", [n], queue="q") for n in range(10)], chunk_size=2, retry=False)
        assert client.info()  # the broken connection went back to the pool closed, not idle


def test_push_many_sends_again_the_windows_a_lost_connection_took(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        server.inject_fault("PUSH", Fault(), times=4)
        server.inject_fault("PUSH", Fault(drop_after=0))
        jobs = [Job("x", [n], queue="q") for n in range(12)]
        assert client.push_many(jobs, window=3) == {}
        assert {copy["jid"] for copy in server.queue("q")} == {job.jid for job in jobs}


def test_fetch_is_not_retried(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        job = Job("x", queue="q")
        client.push(job)
        server.inject_fault("FETCH", Fault(drop_after=0))
        with pytest.raises(ConnectionLost):
            client.fetch("q")
        assert [reserved["jid"] for reserved in server.jobs("working")] == [job.jid]  # it was not fetched twice
        assert server.queue("q") == []
        assert idle(client) == []  # the dead connection was dropped
        client.ack(job.jid)
        assert client.fetch("q") is None


def test_server_restart_is_survived(faktory_server_factory: Callable[..., FaktoryServer]) -> None:
    first = faktory_server_factory()
    with Client(first.url) as client:
        client.info()
        port = first.port
        first.stop()
        faktory_server_factory(port=port)
        assert client.info()  # the stale idle connection fails, the retry opens a new one
        client.push(Job("x", queue="q"))
        assert len(fetch_all(client, "q", 1)) == 1


def test_exhausted_retries_raise(faktory_server_factory: Callable[..., FaktoryServer]) -> None:
    server = faktory_server_factory()
    with Client(server.url, max_retries=1) as client:
        server.inject_fault("INFO", Fault(drop_after=0), times=2)
        with pytest.raises(ConnectionLost):
            client.info()
        assert client.info()


# -- broken replies -------------------------------------------------------------------------------------


def test_garbage_reply(server: FaktoryServer) -> None:
    with Client(server.url, max_retries=0) as client:
        client.info()
        server.inject_fault("INFO", Fault(garbage=b"?garbage\r\n"))
        with pytest.raises(MalformedReply):
            client.info()
        assert idle(client) == []  # discarded, never reused
        assert client.info()["server"]["description"] == "Faktory"


def test_garbage_fetch_reply_is_not_retried(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        server.inject_fault("FETCH", Fault(garbage=b"*garbage\r\n"))
        with pytest.raises(MalformedReply):
            client.fetch("q")
        client.push(Job("x", queue="q"))
        assert len(fetch_all(client, "q", 1)) == 1


@pytest.mark.parametrize(
    ("verb", "garbage"),
    [
        ("FETCH", b"$8\r\nnot-json\r\n"),
        ("FETCH", b"$3\r\n[1]\r\n"),
        ("INFO", b"$8\r\nnot-json\r\n"),
        ("QUEUE", b"$8\r\nnot-json\r\n"),
        ("PUSHB", b"$8\r\nnot-json\r\n"),
    ],
)
def test_a_bulk_reply_that_is_not_the_expected_json_is_malformed(
    server: FaktoryServer, verb: str, garbage: bytes
) -> None:
    """Every error of the package is a FaktoryError; a peer's bad bytes are a MalformedReply, not a ValueError."""
    with Client(server.url, max_retries=0) as client:
        client.push(Job("x", queue="q"))
        server.inject_fault(verb, Fault(garbage=garbage))
        command = {
            "FETCH": lambda: client.fetch("q"),
            "INFO": client.info,
            "QUEUE": lambda: client.queue_latency("q"),
            "PUSHB": lambda: client.push_bulk([Job("x", queue="q")]),
        }[verb]
        with pytest.raises(MalformedReply):
            command()


def test_garbage_reply_to_a_retried_command(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        server.inject_fault("INFO", Fault(garbage=b"\x00\xff\r\n"))
        assert client.info()["server"]["description"] == "Faktory"


def test_reply_split_into_single_bytes(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        server.inject_fault("PUSH", Fault(split=1))
        job = Job("x", [HORSE], jid="jid-utf8", queue="q")
        client.push(job)
        server.inject_fault("FETCH", Fault(split=1))
        fetched = client.fetch("q")
        assert fetched is not None
        assert fetched.args == [HORSE]
        assert fetched.jid == "jid-utf8"
        client.ack(fetched.jid)


def test_reply_split_inside_multibyte_characters(server: FaktoryServer) -> None:
    with Client(server.url) as client:
        for size in (2, 3):
            job = Job("x", [HORSE * 2], queue="q")
            client.push(job)
            server.inject_fault("FETCH", Fault(split=size))
            fetched = client.fetch("q")
            assert fetched is not None
            assert fetched.args == [HORSE * 2]
            client.ack(fetched.jid)


def test_delayed_reply_times_out(server: FaktoryServer) -> None:
    with Client(server.url, read_timeout=2.5, max_retries=0) as client:
        client.info()
        server.inject_fault("INFO", Fault(delay=3))
        started = time.monotonic()
        with pytest.raises(FaktoryTimeout):
            client.info()
        assert 2.4 <= time.monotonic() - started < 3
        assert idle(client) == []
        assert client.info()["server"]["description"] == "Faktory"


def test_pipelined_replies_glued_into_one_write(server: FaktoryServer) -> None:
    with Connection(ClientConfig.from_url(server.url)) as connection:
        server.inject_fault("INFO", Fault(hold=True))  # the INFO reply waits for the next reply, same write
        replies = connection.pipeline([commands.info(), commands.queue_latency("q"), b"BOGUS\r\n"])
        assert isinstance(replies[0], Bulk)
        assert replies[0].value is not None
        assert replies[0].value.startswith('{"now":')
        assert replies[1] == Bulk('{"q":0}')
        assert replies[2] == Error("ERR", "unknown command BOGUS")
        assert not connection.broken


# -- fork -----------------------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs os.fork")
def test_fork(server: FaktoryServer) -> None:
    client = Client(server.url)
    client.info()
    parent_connection = idle(client)[0]
    job = Job("FromChild", [HORSE], queue="forked")
    pid = os.fork()
    if pid == 0:  # the child: use the inherited client, never the parent's socket
        code = 1
        try:
            client.push(job)
            client.close()  # closes only the child's own connection, never says END on the parent's
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status)
    assert os.WEXITSTATUS(status) == 0
    assert idle(client) == [parent_connection]
    assert not parent_connection.broken
    fetched = client.fetch("forked")  # on the parent's own, untouched connection
    assert fetched is not None
    assert (fetched.jid, fetched.args) == (job.jid, [HORSE])
    client.ack(fetched.jid)
    assert idle(client) == [parent_connection]
    client.close()


def test_connection_of_another_process_is_not_closed_with_end() -> None:
    config = ClientConfig()
    pool = ConnectionPool(lambda: Connection(config), 1)
    pool._pid = -1  # as if this process were a fork of another
    pool._idle = ["the parent's connection"]  # type: ignore[list-item]
    pool._check_fork()
    assert pool._idle == []
    assert pool._pid == os.getpid()
