"""Documented differences between this server and a real Faktory 1.9.4 (reference §11).

The real server's quirks are not copied: bare verbs do not crash it (§11.1), a PUSH carrying ``retry`` does
not move the server-wide default, quiet applies to every connection of a worker, numbers do not pass through
a 64-bit float, FLUSH clears everything (§11.2). Misbehaving clients never disturb other connections. None of
this can run against a real server (some of it would kill one), so every test is ``faktory_server_only``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from celery_faktory.protocol import Bulk, Error
from celery_faktory.server import FaktoryServer, ServerConfig
from tests.faktory.server.support import OK, ack, assert_error_prefix, err, fetch, info, line, new_job, push, timed
from tests.faktory.wire import RawConnection, connect, unique

pytestmark = [pytest.mark.faktory_server_only, pytest.mark.timeout(60)]

Factory = Callable[..., FaktoryServer]


# -- §11.1 verbs without their argument ---------------------------------------------------------------


@pytest.mark.parametrize(
    "verb",
    [b"PUSH", b"PUSHB", b"ACK", b"FAIL", b"BEAT", b"QUEUE", b"QUEUE PAUSE", b"QUEUE RESUME", b"QUEUE REMOVE"],
)
def test_bare_verb_gets_an_error_and_nothing_dies(faktory_url: str, verb: bytes) -> None:
    with connect(faktory_url) as conn:
        reply = conn.command(verb + b"\r\n")
        assert assert_error_prefix(reply, "").message, reply
        assert isinstance(conn.command(b"INFO\r\n"), Bulk)  # the connection is alive
    with connect(faktory_url) as other:  # and so is the server
        assert isinstance(other.command(b"INFO\r\n"), Bulk)


def test_every_bare_verb_in_a_row_on_one_connection(faktory_url: str) -> None:
    verbs = [b"PUSH", b"PUSHB", b"ACK", b"FAIL", b"BEAT", b"QUEUE", b"QUEUE PAUSE", b"QUEUE RESUME", b"QUEUE REMOVE"]
    with connect(faktory_url) as conn:
        conn.send(b"".join(verb + b"\r\n" for verb in verbs) + b"INFO\r\n")
        replies = [conn.reply() for _ in verbs]
        assert all(isinstance(reply, Error) for reply in replies), replies
        assert isinstance(conn.reply(), Bulk)


# -- §11.2 the global retry default -------------------------------------------------------------------


def test_push_with_retry_does_not_move_the_default(faktory_server_factory: Factory) -> None:
    """The A.5 sequence: on a real Faktory every job after the `retry: 3` PUSH would get 3."""
    server = faktory_server_factory()
    queue = unique("q")

    def pushed_retry(conn: RawConnection, **fields: Any) -> int:
        job: dict[str, Any] = {"jid": unique(), "jobtype": "x", "args": [], "queue": queue, **fields}
        assert conn.command(line("PUSH", job)) == OK
        fetched = fetch(conn, queue)
        assert fetched is not None
        assert fetched["jid"] == job["jid"]
        ack(conn, job["jid"])
        return int(fetched["retry"])

    with connect(server.url) as conn:
        assert pushed_retry(conn) == 25
        assert pushed_retry(conn, retry=3) == 3
        assert pushed_retry(conn) == 25
        # a rejected PUSH carrying retry changes nothing either
        assert conn.command(line("PUSH", {"jid": "shrt", "jobtype": "x", "args": [], "retry": 4})) == err(
            "jobs must have a reasonable jid parameter"
        )
        assert pushed_retry(conn) == 25
    with connect(server.url) as second:
        assert pushed_retry(second) == 25
        no_retry: dict[str, Any] = {"jid": unique(), "jobtype": "x", "args": [], "queue": queue}
        seven = new_job(queue, retry=7)
        assert second.command(line("PUSHB", [no_retry, seven])) == Bulk("{}")
        assert [job["retry"] for job in (fetch(second, queue), fetch(second, queue)) if job] == [25, 7]
        for job in (no_retry, seven):
            ack(second, job["jid"])
        assert pushed_retry(second) == 25
        assert pushed_retry(second, retry=None) == 25


# -- §11.2 quiet on every connection of a worker ---------------------------------------------------------


def test_quiet_applies_to_every_connection_of_the_worker(faktory_server: FaktoryServer) -> None:
    """A real Faktory stops only the connection whose HELLO created the worker record."""
    timeout = faktory_server.config.fetch_timeout
    wid, queue = unique("w"), unique("q")
    with connect(faktory_server.url, wid=wid) as creator, connect(faktory_server.url, wid=wid) as joiner:
        job = push(creator, new_job(queue))
        assert faktory_server.quiet(wid)
        for conn in (joiner, creator):
            started = time.monotonic()
            reply = fetch(conn, queue)
            elapsed = time.monotonic() - started
            assert reply is None
            assert elapsed >= timeout * 0.9
        assert [held["jid"] for held in faktory_server.queue(queue)] == [job["jid"]]
        assert creator.command(line("QUEUE", f"REMOVE {queue}")) == OK


# -- §11.2 numbers keep their precision ------------------------------------------------------------------


def test_numbers_do_not_pass_through_a_float(faktory_url: str) -> None:
    queue = unique("q")
    with connect(faktory_url) as conn:
        job = push(conn, new_job(queue, args=[12345678901234567890, 9007199254740993, 1.0, 0.1], custom={"n": 2**64}))
        reply = conn.command(line("FETCH", queue))
        assert isinstance(reply, Bulk)
        assert reply.value is not None
        assert '"args":[12345678901234567890,9007199254740993,1.0,0.1]' in reply.value
        assert json.loads(reply.value)["custom"] == {"n": 2**64}
        ack(conn, job["jid"])


# -- §11.2 FLUSH clears the in-memory state too -------------------------------------------------------


def test_flush_clears_names_pauses_and_reservations(faktory_server_factory: Factory) -> None:
    server = faktory_server_factory()
    paused, working = unique("q"), unique("q")
    with connect(server.url) as conn:
        push(conn, new_job(paused))
        push(conn, new_job(working))
        assert fetch(conn, working) is not None
        assert conn.command(line("QUEUE", f"PAUSE {paused}")) == OK
        assert conn.command(b"FLUSH\r\n") == OK
        document = info(conn)["faktory"]
        assert document["queues"] == {}
        assert document["tasks"]["Busy"]["size"] == 0
        assert server.paused_queues() == set()
        assert server.jobs("working") == []
        job = push(conn, new_job(paused))  # no longer paused
        fetched, elapsed = timed(lambda: fetch(conn, paused))
        assert fetched is not None
        assert fetched["jid"] == job["jid"]
        assert elapsed < server.config.fetch_timeout / 2


# -- robustness: misbehaving clients do not disturb others ------------------------------------------------


def test_garbage_binary_and_huge_lines_do_not_disturb_another_connection(faktory_url: str) -> None:
    queue = unique("q")
    stop = threading.Event()
    rounds: list[int] = []
    problems: list[BaseException] = []

    def steady_worker() -> None:
        try:
            with connect(faktory_url) as conn:
                count = 0
                while not stop.is_set():
                    job = push(conn, new_job(queue))
                    fetched = fetch(conn, queue)
                    assert fetched is not None
                    assert fetched["jid"] == job["jid"]
                    ack(conn, job["jid"])
                    count += 1
                rounds.append(count)
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)

    worker = threading.Thread(target=steady_worker)
    worker.start()
    try:
        with RawConnection(faktory_url) as before_hello:  # garbage instead of HELLO: silently closed
            before_hello.greeting()
            before_hello.send(bytes(range(256)) * 4 + b"\r\n")
            assert before_hello.closed_by_server(within=5)
        with connect(faktory_url) as rude:
            binary = rude.command(b"\x00\xff\xfe garbage \x80\x81\r\n")
            assert_error_prefix(binary, "unknown command ")
            huge_verb = rude.command(b"X" * (4 * 1024 * 1024) + b"\r\n")
            assert_error_prefix(huge_verb, "unknown command XXXX")
            big = new_job(unique("big"), args=["y" * (8 * 1024 * 1024)])
            assert rude.command(line("PUSH", big)) == OK
            fetched = fetch(rude, big["queue"])
            assert fetched is not None
            assert len(fetched["args"][0]) == 8 * 1024 * 1024
            ack(rude, big["jid"])
            assert_error_prefix(rude.command(b"PUSH {not json at all\r\n"), "invalid JSON: ")
            assert isinstance(rude.command(b"INFO\r\n"), Bulk)
        with RawConnection(faktory_url) as quitter:  # half a line, then gone
            quitter.greeting()
            quitter.send(b'HELLO {"v":2}\r\nPUSH {"jid":"abcdefghij","job')
        time.sleep(0.2)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not problems, problems
    assert rounds
    assert rounds[0] > 0
    with connect(faktory_url) as conn:
        assert conn.command(line("QUEUE", f"REMOVE {queue}")) == OK


def test_overlong_line_closes_only_that_connection(faktory_server_factory: Factory) -> None:
    server = faktory_server_factory(config=ServerConfig.fast(max_line=1024))
    with connect(server.url) as bystander, connect(server.url) as rude:
        rude.send(b"PUSH " + b"z" * 2000)
        reply = rude.reply()
        assert_error_prefix(reply, "")
        assert rude.closed_by_server(within=3)
        assert isinstance(bystander.command(b"INFO\r\n"), Bulk)


def test_a_fetch_abandoned_by_its_client_does_not_swallow_a_job(
    faktory_url: str, faktory_server: FaktoryServer
) -> None:
    """A real Faktory would still pop the job for the dead connection and leave it reserved."""
    queue = unique("q")
    gone = connect(faktory_url)
    gone.send(line("FETCH", queue))
    time.sleep(0.05)
    gone.close()
    time.sleep(0.1)
    with connect(faktory_url) as conn:
        job = push(conn, new_job(queue))
        fetched = fetch(conn, queue)
        assert fetched is not None
        assert fetched["jid"] == job["jid"]
        ack(conn, job["jid"])
        assert job["jid"] not in {held["jid"] for held in faktory_server.jobs("working")}
