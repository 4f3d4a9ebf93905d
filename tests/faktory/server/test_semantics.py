"""The conformance checklist of the Faktory reference (§12), beyond the literal transcripts of Appendix A.

Unmarked tests pass against a real Faktory 1.9.4 too (FAKTORY_URL). Tests that need time travel
(a :class:`~celery_faktory.clock.ManualClock`), a seeded random source, a private server with other limits,
or the server's test controls are ``faktory_server_only``.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from celery_faktory.clock import ManualClock
from celery_faktory.protocol import Bulk, Simple
from celery_faktory.protocol.payload import format_timestamp
from celery_faktory.server import FaktoryServer, ServerConfig
from tests.faktory.server.support import (
    OK,
    Cleanup,
    ack,
    assert_error_prefix,
    assert_job_keys,
    assert_timestamp,
    drain,
    err,
    fail,
    fetch,
    info,
    line,
    mutate,
    new_job,
    parse_ns,
    push,
    queue_size,
    requeue_and_fetch,
    rfc3339,
    sets,
    timed,
)
from tests.faktory.wire import RawConnection, connect, unique, wait_until

pytestmark = pytest.mark.timeout(60)

Factory = Callable[..., FaktoryServer]

_S = 1_000_000_000
_DAY = 86400.0
QUIET = Bulk('{"state":"quiet"}')
TERMINATE = Bulk('{"state":"terminate"}')


def _assert_blocked_for(elapsed: float, fetch_timeout: float) -> None:
    assert fetch_timeout * 0.9 <= elapsed <= fetch_timeout + 1.5, elapsed


def server_queue_jids(server: FaktoryServer, queue: str) -> list[str]:
    return [job["jid"] for job in server.queue(queue)]


def _beat(wid: str, **fields: Any) -> bytes:
    return line("BEAT", {"wid": wid, **fields})


def _clocked(factory: Factory, **config: Any) -> tuple[FaktoryServer, ManualClock]:
    """A private server on a ManualClock with a fixed seed and the given config overrides."""
    clock = ManualClock()
    seed = config.pop("seed", 1234)
    config.setdefault("heartbeat_timeout", 100 * _DAY)
    server = factory(config=ServerConfig.fast(**config), clock=clock, seed=seed)
    return server, clock


# -- §12.2 silent closes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_line",
    [
        b'HELLO{"v":2}\r\n',
        b'HELLO  {"v":2}\r\n',
        b'hello {"v":2}\r\n',
        b"INFO\r\n",
        b"HELLO []\r\n",
        b'HELLO {"v":2}x\r\n',
        b'HELLO {"v":2,"pid":"12"}\r\n',
        b'HELLO {"v":2,"labels":[1]}\r\n',
        b'HELLO {"v":2,"labels":"python"}\r\n',
        b'HELLO {"v":256}\r\n',
        b'HELLO {"v":-1}\r\n',
        b'HELLO {"v":2.0}\r\n',
        b'HELLO {"v":2,"wid":5}\r\n',
        b'HELLO {"v":2,"hostname":5}\r\n',
        b'HELLO {"v":2,"rss_kb":1.5}\r\n',
        b"\xff\xfe\x00garbage\r\n",
    ],
    ids=[
        "no-space",
        "two-spaces",
        "lower-case",
        "command-first",
        "array",
        "trailing-junk",
        "pid-string",
        "label-number",
        "labels-string",
        "v-256",
        "v-negative",
        "v-float",
        "wid-number",
        "hostname-number",
        "rss-float",
        "binary",
    ],
)
def test_bad_hello_closes_without_reply(faktory_url: str, first_line: bytes) -> None:
    with RawConnection(faktory_url) as conn:
        conn.greeting()
        conn.send(first_line)
        assert conn.closed_by_server(within=5)


def test_hello_with_nulls_and_trailing_space_is_accepted(faktory_url: str) -> None:
    with RawConnection(faktory_url) as conn:
        conn.greeting()
        assert conn.command(b'HELLO {"v":2,"hostname":null,"wid":"","labels":null} \r\n') == OK


@pytest.mark.faktory_server_only
def test_handshake_deadline_is_configurable(faktory_server_factory: Factory) -> None:
    server = faktory_server_factory(config=ServerConfig.fast(handshake_timeout=0.3))
    with RawConnection(server.url) as silent:
        silent.greeting()
        closed, elapsed = timed(lambda: silent.closed_by_server(within=3))
        assert closed
        assert 0.2 <= elapsed <= 1.5, elapsed
    with RawConnection(server.url) as partial:  # an unfinished HELLO line does not stop the clock
        partial.greeting()
        partial.send(b'HELLO {"v":')
        closed, elapsed = timed(lambda: partial.closed_by_server(within=3))
        assert closed
        assert elapsed <= 1.5, elapsed
    with connect(server.url) as done:  # the deadline ends with the handshake
        time.sleep(0.5)
        assert isinstance(done.command(b"INFO\r\n"), Bulk)


# -- §12.4 worker records --------------------------------------------------------------------------------


def test_beat_works_on_any_connection_while_the_worker_lives(conn: RawConnection, faktory_url: str) -> None:
    wid = unique("w")
    assert conn.command(_beat(wid)) == err(f"unknown worker {wid}")
    with connect(faktory_url, wid=wid):
        assert conn.command(_beat(wid)) == OK  # a producer connection may BEAT for the worker


def test_worker_record_lives_until_its_last_connection_closes(conn: RawConnection, faktory_url: str) -> None:
    wid = unique("w")
    first, second = connect(faktory_url, wid=wid), connect(faktory_url, wid=wid)
    try:
        assert first.command(_beat(wid, current_state="quiet")) == QUIET
        first.send(b"END\r\n")
        assert first.closed_by_server(within=5)
        assert second.command(_beat(wid)) == QUIET  # the record (and its state) lives on with `second`
        second.send(b"END\r\n")
        assert second.closed_by_server(within=5)
    finally:
        first.close()
        second.close()
    wait_until(lambda: conn.command(_beat(wid)) == err(f"unknown worker {wid}"), timeout=5)
    with connect(faktory_url, wid=wid) as again:
        assert again.command(_beat(wid)) == OK  # a fresh record: the quiet state is lost


@pytest.mark.faktory_server_only
def test_worker_record_keeps_first_hello_and_is_deleted_with_last_connection(faktory_server: FaktoryServer) -> None:
    wid = unique("w")
    url = faktory_server.url
    first = connect(url, wid=wid, pid=11, labels=["a", "b"])
    second = connect(url, wid=wid, pid=22, labels=["c"])
    try:
        record = faktory_server.workers()[wid]
        assert (record["pid"], record["labels"], record["connections"], record["state"]) == (
            11,
            ["a", "b"],
            2,
            "running",
        )
        assert first.command(_beat(wid, rss_kb=4321)) == OK
        assert faktory_server.workers()[wid]["rss_kb"] == 4321
        assert faktory_server.quiet(wid) is True
        first.close()
        wait_until(lambda: faktory_server.workers()[wid]["connections"] == 1)
        assert second.command(_beat(wid)) == QUIET
    finally:
        first.close()
        second.close()
    wait_until(lambda: wid not in faktory_server.workers())
    with connect(url, wid=wid) as again:
        assert again.command(_beat(wid)) == OK
        assert faktory_server.workers()[wid]["state"] == "running"


# -- §12.5 replies and framing ---------------------------------------------------------------------------


def test_pipelined_commands_are_answered_in_order(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    first, second = cleanup.job(queue, args=[1]), cleanup.job(queue, args=[2])
    conn.send(
        line("PUSH", first)
        + line("PUSH", second)
        + line("FETCH", queue)
        + line("FETCH", queue)
        + line("ACK", {"jid": first["jid"]})
        + line("ACK", {"jid": second["jid"]})
        + b"BOGUS\r\n"
        + b"INFO\r\n"
    )
    replies = [conn.reply() for _ in range(8)]
    assert replies[:2] == [OK, OK]
    fetched = [json.loads(reply.value) for reply in replies[2:4] if isinstance(reply, Bulk) and reply.value]
    assert [job["jid"] for job in fetched] == [first["jid"], second["jid"]]
    assert replies[4:7] == [OK, OK, err("unknown command BOGUS")]
    assert isinstance(replies[7], Bulk)
    assert json.loads(replies[7].value or "")["server"]["description"] == "Faktory"


def test_many_pipelined_pushes_and_fetches(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    jobs = [cleanup.job(queue, args=[index]) for index in range(50)]
    conn.send(b"".join(line("PUSH", job) for job in jobs))
    assert [conn.reply() for _ in jobs] == [OK] * len(jobs)
    conn.send(b"".join(line("FETCH", queue) + line("ACK", {"jid": job["jid"]}) for job in jobs))
    for job in jobs:
        reply = conn.reply()
        assert isinstance(reply, Bulk)
        assert json.loads(reply.value or "null")["jid"] == job["jid"]
        assert conn.reply() == OK


def test_lf_only_line_endings(faktory_url: str, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue)
    with RawConnection(faktory_url) as conn:
        conn.greeting()
        assert conn.command(b'HELLO {"v":2}\n') == OK
        conn.send(line("PUSH", job).replace(b"\r\n", b"\n") + f"FETCH {queue}\n".encode())
        assert conn.reply() == OK
        fetched = conn.reply()
        assert isinstance(fetched, Bulk)
        assert json.loads(fetched.value or "null")["jid"] == job["jid"]
        assert conn.command(line("ACK", {"jid": job["jid"]}).replace(b"\r\n", b"\n")) == OK


def test_a_command_split_over_several_writes(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue, args=["é" * 20])
    data = line("PUSH", job) + line("FETCH", queue)
    for start in range(0, len(data), 7):
        conn.send(data[start : start + 7])
        time.sleep(0.002)
    assert conn.reply() == OK
    fetched = conn.reply()
    assert isinstance(fetched, Bulk)
    assert json.loads(fetched.value or "null")["args"] == ["é" * 20]
    ack(conn, job["jid"])


@pytest.mark.parametrize("verb", [b"info", b"Info", b"end", b"fetch x", b"FLUSh", b"mutate {}"])
def test_verbs_are_case_sensitive(conn: RawConnection, verb: bytes) -> None:
    assert conn.command(verb + b"\r\n") == err(f"unknown command {verb.decode().split(' ')[0]}")
    assert isinstance(conn.command(b"INFO\r\n"), Bulk)


def test_queue_subcommands_are_case_insensitive(conn: RawConnection, cleanup: Cleanup, fetch_timeout: float) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue))
    assert conn.command(line("QUEUE", f"pause {queue}")) == OK
    reply, elapsed = timed(lambda: fetch(conn, queue))
    assert reply is None
    _assert_blocked_for(elapsed, fetch_timeout)
    assert conn.command(line("QUEUE", f"rEsUmE {queue}")) == OK
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    ack(conn, job["jid"])
    assert conn.command(line("QUEUE", f"latency {queue}")) == Bulk(f'{{"{queue}":0}}')
    push(conn, cleanup.job(queue))
    assert conn.command(line("QUEUE", f"Remove {queue}")) == OK
    assert queue_size(conn, queue) is None


def test_server_json_escapes_html_characters_and_keeps_utf8(conn: RawConnection, cleanup: Cleanup) -> None:
    """§3.3: the server encodes with Go's encoding/json: <, > and & are escaped, other text is raw UTF-8."""
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, args=["<&>", "héllo ☃"]))
    reply = conn.command(line("FETCH", queue))
    assert isinstance(reply, Bulk)
    assert reply.value is not None
    assert '"args":["\\u003c\\u0026\\u003e","héllo ☃"]' in reply.value
    ack(conn, job["jid"])


# -- §12.6 PUSH ------------------------------------------------------------------------------------------


def test_push_fills_in_queue_and_timestamps(conn: RawConnection, cleanup: Cleanup) -> None:
    job = cleanup.job()  # no queue: "default"
    push(conn, job)
    fetched: dict[str, Any] | None = None
    while fetched is None or fetched["jid"] != job["jid"]:
        fetched = fetch(conn, "default")
        assert fetched is not None, "our job never came out of the default queue"
        ack(conn, fetched["jid"])
    assert_job_keys(fetched, "retry", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args")
    assert fetched["queue"] == "default"
    assert_timestamp(fetched["created_at"])
    assert_timestamp(fetched["enqueued_at"])
    assert abs(parse_ns(fetched["created_at"]) - time.time_ns()) < 60 * _S


def test_push_keeps_created_at_and_overwrites_enqueued_at(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, created_at="whenever", enqueued_at="2000-01-01T00:00:00Z"))
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["created_at"] == "whenever"  # not validated
    assert fetched["enqueued_at"] != "2000-01-01T00:00:00Z"  # set by the server at every enqueue
    assert_timestamp(fetched["enqueued_at"])
    ack(conn, job["jid"])


def test_push_reserve_for_limits(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, reserve_for=86400))
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["reserve_for"] == 86400
    ack(conn, job["jid"])
    small = push(conn, cleanup.job(queue, reserve_for=1))
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["reserve_for"] == 1
    ack(conn, small["jid"])
    assert conn.command(line("PUSH", new_job(queue, reserve_for=86401))) == err(
        "jobs cannot be reserved for more than one day"
    )


@pytest.mark.parametrize(
    ("queue", "quoted"),
    [
        ("a/b", '"a/b"'),
        ("ü", '"ü"'),
        ("with space", '"with space"'),
        ("star*", '"star*"'),
        # the name is quoted as Go's %q does (observed on Faktory 1.9.4)
        ('a"b', '"a\\"b"'),
        ("tab\tq", '"tab\\tq"'),
        ("back\\slash", '"back\\\\slash"'),
        ("x\x01y", '"x\\x01y"'),
    ],
    ids=["slash", "non-ascii", "space", "star", "quote", "tab", "backslash", "control"],
)
def test_push_rejects_bad_queue_names(conn: RawConnection, queue: str, quoted: str) -> None:
    assert conn.command(line("PUSH", new_job(queue))) == err(
        f"cannot get {quoted} queue: queue names must match \\A[a-zA-Z0-9._-]+\\z"
    )


def test_push_accepts_every_allowed_queue_character(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = f"Az09._-{unique()}"
    cleanup.queues.append(queue)
    push(conn, cleanup.job(queue))
    assert queue_size(conn, queue) == 1


def test_scheduled_job_with_bad_queue_is_accepted_at_push(conn: RawConnection, cleanup: Cleanup) -> None:
    before = sets(conn)["scheduled"]
    push(conn, cleanup.job("bad queue!", at=rfc3339(3600)))
    assert sets(conn)["scheduled"] == before + 1


def test_push_at_formats(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    before = sets(conn)["scheduled"]
    push(conn, cleanup.job(queue, at=rfc3339(3600)[:19] + "Z"))  # no fraction
    push(conn, cleanup.job(queue, at=rfc3339(3 * 3600)[:19] + "+02:00"))  # one hour from now
    assert sets(conn)["scheduled"] == before + 2
    naive = rfc3339(3600)[:-1]  # Python's isoformat() of a naive datetime: no offset
    reply = conn.command(line("PUSH", new_job(queue, at=naive)))
    assert_error_prefix(reply, f'invalid timestamp for \'at\': "{naive}": parsing time "{naive}"')
    push(conn, cleanup.job(queue, at=""))  # empty: enqueue now
    assert queue_size(conn, queue) == 1


def test_args_and_custom_round_trip(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    args = [None, True, 3, -2.5, "s", [1, [2]], {"k": {"n": None}}, "ünïcode"]
    job = push(conn, cleanup.job(queue, args=args, custom={"track": 1, "nested": {"a": [1]}}))
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["args"] == args
    assert fetched["custom"] == {"track": 1, "nested": {"a": [1]}}
    ack(conn, job["jid"])


def test_empty_custom_and_zero_fields_are_omitted(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, custom={}, reserve_for=0, backtrace=0, at=""))
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert_job_keys(fetched, "retry", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args")
    ack(conn, job["jid"])


# -- §12.7 PUSHB -----------------------------------------------------------------------------------------


def test_pushb_with_a_type_error_pushes_nothing(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    good, bad = cleanup.job(queue), cleanup.job(queue, args={"a": 1})
    assert_error_prefix(conn.command(line("PUSHB", [good, bad])), "invalid JSON: ")
    assert not queue_size(conn, queue)


def test_pushb_reports_every_push_error(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    jobs = {
        "good": cleanup.job(queue),
        "no-args": cleanup.job(queue),
        "bad-queue": cleanup.job("bad queue!"),
        "reserve": cleanup.job(queue, reserve_for=86401),
        "bad-at": cleanup.job(queue, at="tomorrow"),
    }
    del jobs["no-args"]["args"]
    reply = conn.command(line("PUSHB", list(jobs.values())))
    assert isinstance(reply, Bulk)
    assert reply.value is not None
    rejected = json.loads(reply.value)
    assert list(rejected) == sorted(rejected)
    assert rejected.pop(jobs["no-args"]["jid"]) == "jobs must have an args parameter"
    assert rejected.pop(jobs["bad-queue"]["jid"]) == (
        'cannot get "bad queue!" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z'
    )
    assert rejected.pop(jobs["reserve"]["jid"]) == "jobs cannot be reserved for more than one day"
    assert rejected.pop(jobs["bad-at"]["jid"]).startswith("invalid timestamp for 'at': \"tomorrow\": ")
    assert rejected == {}
    assert queue_size(conn, queue) == 1


# -- §12.8 FETCH -----------------------------------------------------------------------------------------


def test_fetch_is_strict_priority_then_fifo(conn: RawConnection, cleanup: Cleanup) -> None:
    high, mid, low = cleanup.queue("high"), cleanup.queue("mid"), cleanup.queue("low")
    pushed = {queue: [push(conn, cleanup.job(queue))["jid"] for _ in range(2)] for queue in (low, mid, high)}
    order = [job["jid"] for job in (fetch(conn, high, mid, low) for _ in range(6)) if job]
    assert order == pushed[high] + pushed[mid] + pushed[low]
    for jid in order:
        ack(conn, jid)


@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
def test_blocked_fetch_wakes_on_a_push_to_any_listed_queue(
    faktory_url: str, conn: RawConnection, cleanup: Cleanup, fetch_timeout: float, position: int
) -> None:
    queues = [cleanup.queue() for _ in range(3)]
    job = cleanup.job(queues[position])
    problems: list[BaseException] = []

    def push_later() -> None:
        try:
            time.sleep(0.1)
            with connect(faktory_url) as other:
                push(other, job)
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)

    pusher = threading.Thread(target=push_later)
    pusher.start()
    fetched, elapsed = timed(lambda: fetch(conn, *queues))
    pusher.join()
    assert not problems, problems
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    assert 0.05 <= elapsed < fetch_timeout * 0.75, elapsed
    ack(conn, job["jid"])


def test_fetch_skips_paused_queues(conn: RawConnection, cleanup: Cleanup, fetch_timeout: float) -> None:
    paused, open_ = cleanup.queue("paused"), cleanup.queue("open")
    held = push(conn, cleanup.job(paused))
    free = push(conn, cleanup.job(open_))
    assert conn.command(line("QUEUE", f"PAUSE {paused}")) == OK
    fetched, elapsed = timed(lambda: fetch(conn, paused, open_))
    assert fetched is not None
    assert fetched["jid"] == free["jid"]
    assert elapsed < fetch_timeout * 0.5
    ack(conn, free["jid"])
    reply, elapsed = timed(lambda: fetch(conn, paused))  # only paused queues: nothing, after the timeout
    assert reply is None
    _assert_blocked_for(elapsed, fetch_timeout)
    assert conn.command(line("QUEUE", f"RESUME {paused}")) == OK
    fetched = fetch(conn, paused)
    assert fetched is not None
    assert fetched["jid"] == held["jid"]
    ack(conn, held["jid"])


def test_fetch_ignores_empty_and_unvalidated_names(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue))
    fetched = conn.command(f"FETCH  bad!name  {queue}\r\n".encode())
    assert isinstance(fetched, Bulk)
    assert json.loads(fetched.value or "null")["jid"] == job["jid"]
    ack(conn, job["jid"])


@pytest.mark.faktory_server_only
def test_quiet_or_terminated_worker_gets_nothing(faktory_server: FaktoryServer, cleanup: Cleanup) -> None:
    timeout = faktory_server.config.fetch_timeout
    wid, queue = unique("w"), cleanup.queue()
    with connect(faktory_server.url, wid=wid) as worker:
        job = push(worker, cleanup.job(queue))
        assert faktory_server.quiet(wid) is True  # the web UI's Quiet button
        reply, elapsed = timed(lambda: fetch(worker, queue))
        assert reply is None
        _assert_blocked_for(elapsed, timeout)
        assert worker.command(_beat(wid)) == QUIET
        assert worker.command(_beat(wid)) == QUIET
        assert faktory_server.terminate(wid) is True  # the Stop button
        assert worker.command(_beat(wid)) == TERMINATE
        reply, elapsed = timed(lambda: fetch(worker, queue))
        assert reply is None
        _assert_blocked_for(elapsed, timeout)
        assert faktory_server.quiet(wid) is True  # states only move forward
        assert worker.command(_beat(wid, current_state="running")) == TERMINATE
        assert queue_size(worker, queue) == 1  # the job was never handed out
    assert faktory_server.quiet(unique("nobody")) is False
    assert faktory_server.terminate(unique("nobody")) is False
    assert server_queue_jids(faktory_server, queue) == [job["jid"]]


# -- §12.9 reservations ----------------------------------------------------------------------------------


@pytest.mark.faktory_server_only
@pytest.mark.parametrize(
    ("reserve_for", "effective"),
    [(None, 1800), (0, 1800), (10, 60), (59, 60), (120, 120)],
    ids=["absent", "zero", "below-floor", "just-below-floor", "honoured"],
)
def test_reservation_length(faktory_server_factory: Factory, reserve_for: int | None, effective: int) -> None:
    server, _ = _clocked(faktory_server_factory, reservation_floor=60.0)
    queue = unique("q")
    with connect(server.url) as conn:
        fields = {} if reserve_for is None else {"reserve_for": reserve_for}
        job = push(conn, new_job(queue, **fields))
        assert fetch(conn, queue) is not None
        server.advance(effective - 1)
        assert [held["jid"] for held in server.jobs("working")] == [job["jid"]]
        server.advance(2)
        assert server.jobs("working") == []
        (retry,) = server.jobs("retries")
        assert retry["failure"]["errtype"] == "ReservationExpired"
        assert retry["failure"]["message"] == "Faktory job reservation expired"


@pytest.mark.faktory_server_only
@pytest.mark.parametrize(("retry", "where"), [(0, None), (-1, "dead"), (3, "retries")])
def test_reservation_expiry_follows_the_retry_rules(
    faktory_server_factory: Factory, retry: int, where: str | None
) -> None:
    server, _ = _clocked(faktory_server_factory, reservation_floor=60.0)
    queue = unique("q")
    with connect(server.url) as conn:
        job = push(conn, new_job(queue, retry=retry, reserve_for=60))
        assert fetch(conn, queue) is not None
        server.advance(61)
        found = {name: [held["jid"] for held in server.jobs(name)] for name in ("working", "retries", "dead")}
        assert found == {name: ([job["jid"]] if name == where else []) for name in found}
        assert fail(conn, job["jid"], errtype="E", message="late") == err(f"Job not found {job['jid']}")
        assert info(conn)["faktory"]["total_failures"] == 1


# -- §12.10 ACK ------------------------------------------------------------------------------------------


def test_ack_accepts_only_string_values(conn: RawConnection) -> None:
    jid = unique()
    for payload in (f'{{"jid":"{jid}","n":1}}', '{"jid":5}', '{"jid":["x"]}', "[]", '"x"'):
        assert conn.command(f"ACK {payload}\r\n".encode()) == err(f"invalid ACK {payload}")
    assert conn.command(b"ACK \r\n") == err("invalid ACK ")
    assert conn.command(line("ACK", {"jid": jid, "note": "extra strings are fine"})) == OK


def test_ack_counts_only_reserved_jobs(conn: RawConnection, faktory_url: str, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    before = info(conn)["faktory"]["total_processed"]
    ack(conn, unique("never"))
    assert info(conn)["faktory"]["total_processed"] == before
    job = push(conn, cleanup.job(queue))
    assert fetch(conn, queue) is not None
    working = sets(conn)["working"]
    with connect(faktory_url) as other:  # any connection may ACK any jid
        ack(other, job["jid"])
    assert sets(conn)["working"] == working - 1
    assert info(conn)["faktory"]["total_processed"] == before + 1
    ack(conn, job["jid"])  # a second ACK counts for nothing
    assert info(conn)["faktory"]["total_processed"] == before + 1


# -- §12.11 FAIL -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "errtype", "message"),
    [
        ({"errtype": "  Boom\t", "message": "\n spaced out  "}, "Boom", "spaced out"),
        ({"errtype": "  " + "E" * 150 + "  ", "message": "m" * 1500}, "E" * 100, "m" * 1000),
        ({"errtype": "", "message": ""}, "unknown", "unknown"),
        ({"errtype": "   ", "message": "\t"}, "unknown", "unknown"),
        ({"errtype": None, "message": None}, "unknown", "unknown"),
    ],
    ids=["trimmed", "truncated", "empty", "blank", "null"],
)
def test_fail_trims_truncates_and_defaults(
    conn: RawConnection, cleanup: Cleanup, fields: dict[str, Any], errtype: str, message: str
) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue))
    assert fetch(conn, queue) is not None
    assert fail(conn, job["jid"], **fields) == OK
    failure = requeue_and_fetch(conn, "retries", job["jid"], queue)["failure"]
    assert (failure["errtype"], failure["message"]) == (errtype, message)
    assert "backtrace" not in failure
    ack(conn, job["jid"])


def test_fail_keeps_at_most_50_backtrace_lines(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, backtrace=5))
    assert fetch(conn, queue) is not None
    lines = [f"frame {index}" for index in range(60)]
    assert fail(conn, job["jid"], errtype="E", message="m", backtrace=lines) == OK
    again = requeue_and_fetch(conn, "retries", job["jid"], queue)
    assert again["failure"]["backtrace"] == lines[:50]
    assert again["backtrace"] == 5
    ack(conn, job["jid"])


def test_fail_rejects_bad_payloads(conn: RawConnection) -> None:
    jid = unique()
    for payload in (
        f'{{"jid":"{jid}","backtrace":"x"}}',
        f'{{"jid":"{jid}","backtrace":[1]}}',
        "[]",
        f'{{"jid":"{jid}","errtype":5}}',
    ):
        assert conn.command(f"FAIL {payload}\r\n".encode()) == err(f"invalid FAIL {payload}")
    assert conn.command(b'FAIL {"jid":""}\r\n') == err("missing JID")


def test_fail_counts_processed_and_failures(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue))
    assert fetch(conn, queue) is not None
    before = info(conn)["faktory"]
    assert fail(conn, job["jid"], errtype="E", message="m") == OK
    after = info(conn)["faktory"]
    assert after["total_failures"] == before["total_failures"] + 1
    assert after["total_processed"] == before["total_processed"] + 1
    assert fail(conn, job["jid"], errtype="E", message="m") == err(f"Job not found {job['jid']}")
    assert info(conn)["faktory"]["total_failures"] == after["total_failures"]


def test_negative_retry_goes_dead_with_remaining_retry(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, retry=-1))
    assert fetch(conn, queue) is not None
    assert fail(conn, job["jid"], errtype="E", message="m") == OK
    failure = requeue_and_fetch(conn, "dead", job["jid"], queue)["failure"]
    assert (failure["retry_count"], failure["remaining"]) == (0, -1)
    ack(conn, job["jid"])


def _fail_now(server: FaktoryServer, conn: RawConnection, clock: ManualClock, job: dict[str, Any]) -> float:
    """FETCH and FAIL ``job``; the retry delay the server chose, in seconds (checked against next_at)."""
    fetched = fetch(conn, job["queue"])
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    now = clock.time_ns()
    assert fail(conn, job["jid"], errtype="E", message="m") == OK
    (retry,) = [held for held in server.jobs("retries") if held["jid"] == job["jid"]]
    delay_ns = parse_ns(retry["failure"]["next_at"]) - now
    assert delay_ns % _S == 0, "the backoff is a whole number of seconds"
    assert retry["failure"]["next_at"] == format_timestamp(now + delay_ns)
    return delay_ns / _S


@pytest.mark.faktory_server_only
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_retry_backoff_windows(faktory_server_factory: Factory, seed: int) -> None:
    server, clock = _clocked(faktory_server_factory, seed=seed)
    queue = unique("q")
    delays: dict[int, list[float]] = {0: [], 1: [], 2: []}
    with connect(server.url) as conn:
        for _ in range(10):
            job = push(conn, new_job(queue))
            for count in (0, 1, 2):
                delay = _fail_now(server, conn, clock, job)
                base = count**4 + 15
                assert base <= delay <= base + 29 * (count + 1), (count, delay)
                assert (delay - base) % (count + 1) == 0, (count, delay)
                delays[count].append(delay)
                server.advance(delay - 1)
                assert queue_size(conn, queue) == 0
                server.advance(1)
                assert queue_size(conn, queue) == 1
            again = fetch(conn, queue)
            assert again is not None
            assert (again["failure"]["retry_count"], again["failure"]["remaining"]) == (2, 23)
            ack(conn, job["jid"])
    assert all(len(set(values)) > 1 for values in delays.values()), delays  # random within the window


@pytest.mark.faktory_server_only
def test_retry_backoff_is_repeatable_with_a_seed(faktory_server_factory: Factory) -> None:
    runs = []
    for _ in range(2):
        server, clock = _clocked(faktory_server_factory, seed=99)
        queue = unique("q")
        with connect(server.url) as conn:
            runs.append([_fail_now(server, conn, clock, push(conn, new_job(queue))) for _ in range(5)])
    assert runs[0] == runs[1]


@pytest.mark.faktory_server_only
def test_retries_exhausted_go_dead_and_expire(faktory_server_factory: Factory) -> None:
    server, clock = _clocked(faktory_server_factory)
    queue = unique("q")
    with connect(server.url) as conn:
        job = push(conn, new_job(queue, retry=2))
        first_failure = clock.time_ns()
        for _ in range(2):
            server.advance(_fail_now(server, conn, clock, job))
        assert fetch(conn, queue) is not None
        assert fail(conn, job["jid"], errtype="Last", message="third") == OK
        assert server.jobs("retries") == []
        (dead,) = server.jobs("dead")
        assert dead["jid"] == job["jid"]
        failure = dead["failure"]
        assert (failure["retry_count"], failure["remaining"], failure["errtype"]) == (2, 0, "Last")
        assert failure["failed_at"] == format_timestamp(first_failure)  # never changed after the first failure
        server.advance(179 * _DAY)
        assert len(server.jobs("dead")) == 1
        server.advance(1 * _DAY + 120)  # the dead set keeps a job for 180 days
        assert server.jobs("dead") == []


@pytest.mark.faktory_server_only
def test_retry_zero_is_discarded_and_negative_goes_dead(faktory_server_factory: Factory) -> None:
    server, _ = _clocked(faktory_server_factory)
    queue = unique("q")
    with connect(server.url) as conn:
        zero, negative = push(conn, new_job(queue, retry=0)), push(conn, new_job(queue, retry=-5))
        for job in (zero, negative):
            assert fetch(conn, queue) is not None
            assert fail(conn, job["jid"], errtype="E", message="m") == OK
        assert server.jobs("retries") == []
        assert [job["jid"] for job in server.jobs("dead")] == [negative["jid"]]
        assert server.jobs("working") == []
        assert server.queue(queue) == []
        assert info(conn)["faktory"]["total_failures"] == 2


# -- §12.12 promotion ------------------------------------------------------------------------------------


@pytest.mark.faktory_server_only
def test_scheduled_promotion_keeps_at_and_sets_enqueued_at(faktory_server_factory: Factory) -> None:
    server, clock = _clocked(faktory_server_factory)
    queue = unique("q")
    with connect(server.url) as conn:
        at = format_timestamp(clock.time_ns() + 10 * _S)
        waiting = push(conn, new_job(queue))
        scheduled = push(conn, new_job(queue, at=at))
        server.advance(9)
        assert [job["jid"] for job in server.queue(queue)] == [waiting["jid"]]
        assert [job["jid"] for job in server.jobs("scheduled")] == [scheduled["jid"]]
        server.advance(2)
        assert server.jobs("scheduled") == []
        promoted = server.queue(queue)
        assert [job["jid"] for job in promoted] == [waiting["jid"], scheduled["jid"]]  # to the back
        assert promoted[1]["at"] == at
        assert promoted[1]["enqueued_at"] == format_timestamp(clock.time_ns())
        assert info(conn)["faktory"]["tasks"]["Scheduled"]["enqueued"] == 1


@pytest.mark.faktory_server_only
def test_retry_promotion_goes_to_the_back_with_new_enqueued_at(faktory_server_factory: Factory) -> None:
    server, clock = _clocked(faktory_server_factory)
    queue = unique("q")
    with connect(server.url) as conn:
        failing = push(conn, new_job(queue))
        original = fetch(conn, queue)
        assert original is not None
        assert fail(conn, failing["jid"], errtype="E", message="m") == OK
        (retry,) = server.jobs("retries")
        delay = (parse_ns(retry["failure"]["next_at"]) - clock.time_ns()) / _S
        waiting = push(conn, new_job(queue))
        server.advance(delay)
        promoted = server.queue(queue)
        assert [job["jid"] for job in promoted] == [waiting["jid"], failing["jid"]]
        assert promoted[1]["enqueued_at"] == format_timestamp(clock.time_ns()) != original["enqueued_at"]
        assert promoted[1]["failure"]["retry_count"] == 0


# -- §12.13 BEAT -----------------------------------------------------------------------------------------


def test_beat_rejects_bad_payloads(faktory_url: str) -> None:
    wid = unique("w")
    with connect(faktory_url, wid=wid) as worker:
        for rss in ('"12"', "1.5", "12.0", "true", "[1]"):
            payload = f'{{"wid":"{wid}","rss_kb":{rss}}}'
            assert worker.command(f"BEAT {payload}\r\n".encode()) == err(f"invalid BEAT {payload}")
        for payload in ("[]", '{"wid":5}', f'{{"wid":"{wid}","current_state":1}}'):
            assert worker.command(f"BEAT {payload}\r\n".encode()) == err(f"invalid BEAT {payload}")
        assert worker.command(_beat(wid, rss_kb=2**40)) == OK
        assert worker.command(_beat("")) == err("unknown worker ")


def test_beat_current_state_is_honoured_and_unknown_states_ignored(faktory_url: str) -> None:
    wid = unique("w")
    with connect(faktory_url, wid=wid) as worker:
        assert worker.command(_beat(wid, current_state="sleepy")) == OK
        assert worker.command(_beat(wid, current_state="")) == OK
        assert worker.command(_beat(wid, current_state="terminate")) == TERMINATE  # may skip quiet
        assert worker.command(_beat(wid)) == TERMINATE
        assert worker.command(_beat(wid, current_state="quiet")) == TERMINATE


# -- §12.14 heartbeat reaper -----------------------------------------------------------------------------


@pytest.mark.faktory_server_only
def test_heartbeat_reaper_closes_every_connection_of_a_silent_worker(faktory_server_factory: Factory) -> None:
    server, _ = _clocked(faktory_server_factory, heartbeat_timeout=60.0)
    wid, other_wid = unique("w"), unique("w")
    first, second = connect(server.url, wid=wid), connect(server.url, wid=wid)
    beating, producer = connect(server.url, wid=other_wid), connect(server.url)
    try:
        server.advance(30)
        assert first.command(_beat(wid)) == OK
        assert beating.command(_beat(other_wid)) == OK
        server.advance(31)  # 31 s after the last BEAT: alive
        assert wid in server.workers()
        assert beating.command(_beat(other_wid)) == OK
        server.advance(30)  # 61 s after the last BEAT: reaped
        assert first.closed_by_server(within=3)
        assert second.closed_by_server(within=3)
        assert producer.command(_beat(wid)) == err(f"unknown worker {wid}")
        assert beating.command(_beat(other_wid)) == OK  # the worker that kept beating is untouched
        assert info(producer)["faktory"]["tasks"]["Workers"]["reaped"] == 1
    finally:
        for connection in (first, second, beating, producer):
            connection.close()


# -- §12.15 QUEUE ----------------------------------------------------------------------------------------


def test_queue_commands_on_unknown_queues_are_no_ops(conn: RawConnection) -> None:
    names = f"{unique()} {unique()}"
    for subcommand in ("PAUSE", "RESUME", "REMOVE"):
        assert conn.command(line("QUEUE", f"{subcommand} {names}")) == OK
    assert conn.command(line("QUEUE", f"LATENCY {names}")) == Bulk(
        json.dumps(dict.fromkeys(sorted(names.split(" ")), 0), separators=(",", ":"))
    )


def test_pause_of_a_queue_that_does_not_exist_yet_is_not_remembered(
    conn: RawConnection, cleanup: Cleanup, fetch_timeout: float
) -> None:
    queue = cleanup.queue()
    assert conn.command(line("QUEUE", f"PAUSE {queue}")) == OK
    job = push(conn, cleanup.job(queue))
    fetched, elapsed = timed(lambda: fetch(conn, queue))
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    assert elapsed < fetch_timeout * 0.5
    ack(conn, job["jid"])


def test_pause_and_resume_several_and_star(conn: RawConnection, cleanup: Cleanup, fetch_timeout: float) -> None:
    first, second = cleanup.queue(), cleanup.queue()
    jobs = [push(conn, cleanup.job(queue)) for queue in (first, second)]
    try:
        assert conn.command(line("QUEUE", f"PAUSE {first} {second}")) == OK
        reply, elapsed = timed(lambda: fetch(conn, first, second))
        assert reply is None
        _assert_blocked_for(elapsed, fetch_timeout)
        assert conn.command(line("QUEUE", f"RESUME {first} {second}")) == OK
        assert conn.command(b"QUEUE PAUSE *\r\n") == OK
        reply, elapsed = timed(lambda: fetch(conn, first, second))
        assert reply is None
        _assert_blocked_for(elapsed, fetch_timeout)
    finally:
        assert conn.command(b"QUEUE RESUME *\r\n") == OK
    fetched = [fetch(conn, first, second), fetch(conn, first, second)]
    assert [job["jid"] for job in fetched if job] == [job["jid"] for job in jobs]
    for job in jobs:
        ack(conn, job["jid"])


def test_remove_deletes_the_jobs_and_unpauses(conn: RawConnection, cleanup: Cleanup, fetch_timeout: float) -> None:
    queue = cleanup.queue()
    for _ in range(3):
        push(conn, cleanup.job(queue))
    assert conn.command(line("QUEUE", f"PAUSE {queue}")) == OK
    assert conn.command(line("QUEUE", f"REMOVE {queue}")) == OK
    assert queue_size(conn, queue) is None
    job = push(conn, cleanup.job(queue))
    assert queue_size(conn, queue) == 1  # the old jobs are gone
    fetched, elapsed = timed(lambda: fetch(conn, queue))
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    assert elapsed < fetch_timeout * 0.5  # no longer paused
    ack(conn, job["jid"])


def test_remove_star_removes_every_queue(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    push(conn, cleanup.job(queue))
    assert conn.command(b"QUEUE REMOVE *\r\n") == OK
    assert queue_size(conn, queue) is None


def test_latency_measures_the_oldest_job(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    push(conn, cleanup.job(queue))
    time.sleep(0.3)
    push(conn, cleanup.job(queue))
    reply = conn.command(line("QUEUE", f"LATENCY {queue}"))
    assert isinstance(reply, Bulk)
    assert reply.value is not None
    latency = json.loads(reply.value)[queue]
    assert isinstance(latency, float)
    assert 0.25 <= latency < 30


# -- §12.16 MUTATE ---------------------------------------------------------------------------------------


def _into(conn: RawConnection, target: str, job: dict[str, Any]) -> None:
    """Put ``job`` (just created, queue otherwise empty) into the ``target`` set."""
    if target == "scheduled":
        push(conn, {**job, "at": rfc3339(3600)})
        return
    push(conn, {**job, "retry": -1 if target == "dead" else 25})
    fetched = fetch(conn, job["queue"])
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    assert fail(conn, job["jid"], errtype="E", message="m") == OK


def _members(conn: RawConnection, target: str, jids: list[str], queue: str) -> set[str]:
    """Which of ``jids`` are in ``target`` (found by requeueing them onto their empty queue, then draining it)."""
    assert not queue_size(conn, queue)
    assert mutate(conn, "requeue", target, {"jids": jids}) == OK
    return {job["jid"] for job in drain(conn, queue)}


_FILTERS = ["jids", "regexp", "jobtype", "regexp+jobtype"]
#: Every cmd x target x filter; clear ignores its filter, so one filter is enough for it.
_MUTATIONS = [
    pytest.param(target, cmd, kind, id=f"{cmd}-{target}-{kind}")
    for target in ("retries", "scheduled", "dead")
    for cmd in ("discard", "kill", "requeue", "clear")
    for kind in (_FILTERS if cmd != "clear" else ["jids"])
]


@pytest.mark.parametrize(("target", "cmd", "filter_kind"), _MUTATIONS)
def test_mutate(conn: RawConnection, cleanup: Cleanup, target: str, cmd: str, filter_kind: str) -> None:
    queue, marker = cleanup.queue(), unique("mk")
    matched = cleanup.job(queue, jobtype=unique("ma"), args=[marker])
    other = cleanup.job(queue, jobtype=unique("mb"), args=[marker])
    for job in (matched, other):
        _into(conn, target, job)
    filters: dict[str, dict[str, Any]] = {
        "jids": {"jids": [matched["jid"]]},
        "regexp": {"regexp": f"*{matched['jid']}*"},
        "jobtype": {"jobtype": matched["jobtype"]},
        "regexp+jobtype": {"regexp": f"*{marker}*", "jobtype": matched["jobtype"]},
    }
    assert mutate(conn, cmd, target, filters[filter_kind]) == OK
    requeued = {job["jid"] for job in drain(conn, queue)}
    jids = [matched["jid"], other["jid"]]
    in_target = _members(conn, target, jids, queue)
    in_dead = _members(conn, "dead", jids, queue) if target != "dead" else in_target
    expected = {
        "discard": ({other["jid"]}, set(), set()),
        "kill": ({other["jid"]}, {matched["jid"]}, set()),
        "requeue": ({other["jid"]}, set(), {matched["jid"]}),
        "clear": (set(), set(), set()),
    }[cmd]
    if target == "dead":  # kill from dead leaves the job in dead
        expected = (expected[0] | expected[1], expected[0] | expected[1], expected[2])
    assert (in_target, in_dead, requeued) == expected


def test_mutate_regexp_is_a_glob_over_the_whole_job(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue)
    _into(conn, "scheduled", job)
    assert mutate(conn, "discard", "scheduled", {"regexp": job["jid"]}) == OK  # no stars: matches nothing
    assert mutate(conn, "discard", "scheduled", {"regexp": f"*{job['jid'][:-1]}?*"}) == OK  # ? is a glob
    assert _members(conn, "scheduled", [job["jid"]], queue) == set()
    again = cleanup.job(queue)
    _into(conn, "scheduled", again)
    assert mutate(conn, "discard", "scheduled", {"regexp": f"{again['jid']}*"}) == OK  # anchored at the start
    assert _members(conn, "scheduled", [again["jid"]], queue) == {again["jid"]}


def test_mutate_jids_match_whole_jids(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue)
    _into(conn, "scheduled", job)
    assert mutate(conn, "discard", "scheduled", {"jids": [job["jid"][:-2]]}) == OK
    assert _members(conn, "scheduled", [job["jid"]], queue) == {job["jid"]}


def test_mutate_empty_filter_matches_everything(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    jobs = [cleanup.job(queue), cleanup.job(queue)]
    for job in jobs:
        _into(conn, "scheduled", job)
    assert mutate(conn, "kill", "scheduled", {}) == OK
    assert _members(conn, "scheduled", [job["jid"] for job in jobs], queue) == set()
    assert _members(conn, "dead", [job["jid"] for job in jobs], queue) == {job["jid"] for job in jobs}


def test_mutate_kill_keeps_the_failure(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue)
    _into(conn, "retries", job)
    assert mutate(conn, "kill", "retries", {"jids": [job["jid"]]}) == OK
    failure = requeue_and_fetch(conn, "dead", job["jid"], queue)["failure"]
    assert (failure["errtype"], failure["retry_count"], failure["remaining"]) == ("E", 0, 25)
    ack(conn, job["jid"])


def test_mutate_requeue_from_scheduled_pushes_the_job_as_stored(conn: RawConnection, cleanup: Cleanup) -> None:
    """§6.13/§7.1: requeue pushes exactly what is stored; a scheduled job was never enqueued."""
    queue = cleanup.queue()
    job = cleanup.job(queue)
    _into(conn, "scheduled", job)
    again = requeue_and_fetch(conn, "scheduled", job["jid"], queue)
    assert_job_keys(again, "retry", "jid", "queue", "jobtype", "created_at", "at", "args")
    ack(conn, job["jid"])


def test_mutate_with_a_space_anywhere_is_invalid_format(conn: RawConnection) -> None:
    assert conn.command(b'MUTATE {"cmd":"discard","target":"dead","filter":{"regexp":"*a b*"}}\r\n') == err(
        "invalid format"
    )
    assert conn.command(b'MUTATE  {"cmd":"clear","target":"dead"}\r\n') == err("invalid format")


def test_mutate_checks_the_command_before_the_target(conn: RawConnection) -> None:
    """Observed on Faktory 1.9.4: an unknown cmd is reported even when the target is bad too."""
    assert mutate(conn, "explode", "nowhere") == err("unknown mutate operation")
    assert conn.command(b"MUTATE {}\r\n") == err("unknown mutate operation")
    assert conn.command(b'MUTATE {"cmd":"clear"}\r\n') == err("invalid target for mutation command")


def test_mutate_decoder_errors_have_no_invalid_json_prefix(conn: RawConnection) -> None:
    for body in (b"[1]", b'{"cmd":"discard","target":"dead","filter":{"jids":"x"}}', b'{"cmd":'):
        reply = conn.command(b"MUTATE " + body + b"\r\n")
        message = assert_error_prefix(reply, "").message
        assert message, reply
        assert not message.startswith("invalid JSON"), reply


# -- §12.17 INFO -----------------------------------------------------------------------------------------


def test_info_shape(conn: RawConnection) -> None:
    document = info(conn)
    assert list(document) == ["now", "server_utc_time", "faktory", "server"]
    assert_timestamp(document["now"])
    assert re.fullmatch(r"\d{2}:\d{2}:\d{2} UTC", document["server_utc_time"])
    faktory = document["faktory"]
    assert list(faktory) == [
        "queues",
        "sets",
        "tasks",
        "total_failures",
        "total_processed",
        "total_enqueued",
        "total_queues",
    ]
    assert all(isinstance(name, str) and type(size) is int for name, size in faktory["queues"].items())
    assert list(faktory["queues"]) == sorted(faktory["queues"])
    assert list(faktory["sets"]) == ["dead", "retries", "scheduled", "working"]
    assert all(type(size) is int and size >= 0 for size in faktory["sets"].values())
    tasks = faktory["tasks"]
    assert list(tasks) == ["Busy", "Dead", "Retries", "Scheduled", "Workers"]
    for name in ("Busy", "Workers"):
        assert list(tasks[name]) == ["reaped", "size"]
        assert all(type(v) is int for v in tasks[name].values())
    for name in ("Dead", "Retries", "Scheduled"):
        task = tasks[name]
        assert list(task) == ["cycles", "enqueued", "size", "wall_time_sec"]
        assert all(type(task[key]) is int for key in ("cycles", "enqueued", "size"))
        assert type(task["wall_time_sec"]) in (int, float)
        assert task["size"] == faktory["sets"][name.lower()]
    for key in ("total_failures", "total_processed", "total_enqueued", "total_queues"):
        assert type(faktory[key]) is int
        assert faktory[key] >= 0
    assert faktory["total_queues"] == len(faktory["queues"])
    assert faktory["total_enqueued"] == sum(faktory["queues"].values())
    server = document["server"]
    assert list(server) == [
        "description",
        "faktory_version",
        "uptime",
        "connections",
        "command_count",
        "used_memory_mb",
    ]
    assert (server["description"], server["faktory_version"]) == ("Faktory", "1.9.4")
    assert all(type(server[key]) is int for key in ("uptime", "connections", "command_count", "used_memory_mb"))
    assert server["connections"] >= 1
    assert info(conn)["server"]["command_count"] > server["command_count"]


def test_info_total_enqueued_is_the_current_sum(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    before = info(conn)["faktory"]["total_enqueued"]
    jobs = [push(conn, cleanup.job(queue)) for _ in range(3)]
    assert info(conn)["faktory"]["total_enqueued"] == before + 3
    assert len(drain(conn, queue)) == len(jobs)
    assert info(conn)["faktory"]["total_enqueued"] == before


def test_info_counts_connections(conn: RawConnection, faktory_url: str) -> None:
    extra = [connect(faktory_url) for _ in range(3)]
    try:
        wait_until(lambda: info(conn)["server"]["connections"] >= 4, timeout=5)
        during = info(conn)["server"]["connections"]
    finally:
        for connection in extra:
            connection.close()
    wait_until(lambda: info(conn)["server"]["connections"] <= during - 3, timeout=5)


# -- §12.18 END and the connection cap -----------------------------------------------------------------


def test_end_closes_without_a_reply(faktory_url: str) -> None:
    with connect(faktory_url) as conn:
        conn.send(b"END\r\n")
        assert conn.closed_by_server(within=5)


@pytest.mark.faktory_server_only
def test_connection_cap(faktory_server_factory: Factory) -> None:
    server = faktory_server_factory(config=ServerConfig.fast(max_connections=2))
    with connect(server.url) as first, connect(server.url):
        with RawConnection(server.url) as third:
            assert third.handshake() == OK
            assert third.reply() == err("too many connections: 3")
            assert third.closed_by_server(within=3)
        assert isinstance(first.command(b"INFO\r\n"), Bulk)  # the others are unaffected
    wait_until(lambda: server.info()["server"]["connections"] == 0)
    with connect(server.url) as again:
        assert isinstance(again.command(b"INFO\r\n"), Bulk)


# -- §12.20 TLS -----------------------------------------------------------------------------------------


@pytest.mark.faktory_server_only
def test_tls_listener(faktory_server_factory: Factory) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    server = faktory_server_factory(ssl_context=server_context)
    assert server.url.startswith("tcp+tls://127.0.0.1:")
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with RawConnection(server.url, ssl_context=client_context) as conn:
        assert conn.greeting() == Simple('HI {"v":2}')
        assert conn.command(b'HELLO {"v":2}\r\n') == OK
        queue = unique("q")
        job = push(conn, new_job(queue, args=["é" * 5000]))
        fetched = fetch(conn, queue)
        assert fetched is not None
        assert fetched["args"] == ["é" * 5000]
        ack(conn, job["jid"])
    with pytest.raises(ssl.SSLCertVerificationError):
        RawConnection(server.url, ssl_context=ssl.create_default_context())  # the CA is not trusted
    with socket.create_connection((server.host, server.port), timeout=5) as plain:  # no plain-text greeting
        plain.sendall(b'HELLO {"v":2}\r\n')
        try:
            data = plain.recv(100)
        except (ConnectionResetError, TimeoutError):
            data = b""
        assert not data.startswith(b"+HI")
