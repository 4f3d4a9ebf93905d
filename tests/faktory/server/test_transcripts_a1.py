"""Appendix A.1 of the Faktory reference, section by section: every exchange of the main transcript.

Values the server generates (timestamps, sizes) are compared by shape; jids and queues are fresh per test so
the same tests pass against a real Faktory 1.9.4 (FAKTORY_URL). Every PUSH carries ``retry`` explicitly.
"""

from __future__ import annotations

import json

import pytest

from celery_faktory.protocol import Bulk, Simple
from tests.faktory.server.support import (
    OK,
    Cleanup,
    ack,
    assert_error_prefix,
    assert_failure_keys,
    assert_job_keys,
    assert_timestamp,
    dumps,
    err,
    fail,
    fetch,
    info,
    line,
    mutate,
    parse_ns,
    push,
    queue_size,
    rfc3339,
    sets,
    timed,
    wait_for_job,
)
from tests.faktory.wire import RawConnection, connect, unique

pytestmark = pytest.mark.timeout(60)

_S = 1_000_000_000


def _assert_blocked_for(elapsed: float, fetch_timeout: float) -> None:
    assert fetch_timeout * 0.9 <= elapsed <= fetch_timeout + 1.5, elapsed


# -- A. handshake + PUSH/FETCH/ACK/INFO ------------------------------------------------------------------


def test_a_greeting_and_hello(faktory_url: str) -> None:
    with RawConnection(faktory_url) as conn:
        assert conn.greeting() == Simple('HI {"v":2}')
        assert conn.command(b'HELLO {"v":2}\r\n') == OK


def test_a_push_fetch_ack(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue, args=[1])
    assert conn.command(line("PUSH", job)) == OK
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert_job_keys(fetched, "retry", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args")
    assert fetched["retry"] == 25
    assert (fetched["jid"], fetched["queue"], fetched["jobtype"], fetched["args"]) == (job["jid"], queue, "x", [1])
    assert_timestamp(fetched["created_at"])
    assert_timestamp(fetched["enqueued_at"])
    assert parse_ns(fetched["created_at"]) <= parse_ns(fetched["enqueued_at"])
    assert conn.command(line("ACK", {"jid": job["jid"]})) == OK


def test_a_info_after_ack_counts_processed(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    before = info(conn)["faktory"]["total_processed"]
    job = push(conn, cleanup.job(queue))
    assert fetch(conn, queue) is not None
    ack(conn, job["jid"])
    document = info(conn)
    assert document["faktory"]["total_processed"] == before + 1
    assert document["faktory"]["queues"][queue] == 0
    assert document["server"]["description"] == "Faktory"


def test_a_fetch_on_empty_queue_blocks_then_answers_nothing(
    conn: RawConnection, cleanup: Cleanup, fetch_timeout: float
) -> None:
    reply, elapsed = timed(lambda: conn.command(line("FETCH", cleanup.queue())))
    assert reply == Bulk(None)
    _assert_blocked_for(elapsed, fetch_timeout)


# -- B. FAIL -> retry set ---------------------------------------------------------------------------------


def test_b_fail_moves_the_job_to_retries(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, jobtype="failer", args=["a", 2]))
    assert fetch(conn, queue) is not None
    before = sets(conn)
    reply = fail(
        conn,
        job["jid"],
        errtype="RuntimeError",
        message="boom happened",
        backtrace=["app.py:10 in run", "lib.py:3 in go"],
    )
    assert reply == OK
    after = sets(conn)
    assert after["retries"] == before["retries"] + 1
    assert after["working"] == before["working"] - 1


def test_b_fail_errors(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue))
    assert fetch(conn, queue) is not None
    assert fail(conn, job["jid"], errtype="E", message="m") == OK
    # a second FAIL: no longer reserved
    assert fail(conn, job["jid"], errtype="RuntimeError", message="again", backtrace=[]) == err(
        f"Job not found {job['jid']}"
    )
    never = unique("never")
    assert conn.command(line("FAIL", {"jid": never})) == err(f"Job not found {never}")
    assert conn.command(b'FAIL {"errtype":"X"}\r\n') == err("missing JID")
    assert conn.command(b"FAIL not-json\r\n") == err("invalid FAIL not-json")


def test_b_ack_errors(conn: RawConnection) -> None:
    assert conn.command(line("ACK", {"jid": unique("never")})) == OK
    assert conn.command(b"ACK not-json\r\n") == err("invalid ACK not-json")
    assert conn.command(b'ACK {"nojid":"x"}\r\n') == err('invalid ACK {"nojid":"x"}')


def test_b_requeue_keeps_failure_and_enqueued_at(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, jobtype="failer", args=["a", 2]))
    first = fetch(conn, queue)
    assert first is not None
    backtrace = ["app.py:10 in run", "lib.py:3 in go"]
    assert fail(conn, job["jid"], errtype="RuntimeError", message="boom happened", backtrace=backtrace) == OK
    assert mutate(conn, "requeue", "retries", {"jids": [job["jid"]]}) == OK
    again = fetch(conn, queue)
    assert again is not None
    assert_job_keys(again, "retry", "failure", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args")
    failure = again["failure"]
    assert_failure_keys(failure, "failed_at", "next_at", "message", "errtype", "backtrace", "retry_count", "remaining")
    assert (failure["message"], failure["errtype"], failure["backtrace"]) == (
        "boom happened",
        "RuntimeError",
        backtrace,
    )
    assert (failure["retry_count"], failure["remaining"]) == (0, 25)
    assert_timestamp(failure["failed_at"])
    delay = (parse_ns(failure["next_at"]) - parse_ns(failure["failed_at"])) / _S
    assert 15 - 0.1 <= delay <= 44 + 0.1, delay
    # requeue pushes the job exactly as stored: the old enqueued_at, created_at and args
    for key in ("created_at", "enqueued_at", "args", "retry"):
        assert again[key] == first[key], key

    # second failure: retry_count +1, remaining -1, failed_at kept, message/errtype/backtrace replaced
    assert fail(conn, job["jid"], errtype="E2", message="second failure") == OK
    assert mutate(conn, "requeue", "retries", {"jids": [job["jid"]]}) == OK
    third = fetch(conn, queue)
    assert third is not None
    failure2 = third["failure"]
    assert_failure_keys(failure2, "failed_at", "next_at", "message", "errtype", "retry_count", "remaining")
    assert failure2["failed_at"] == failure["failed_at"]
    assert (failure2["message"], failure2["errtype"]) == ("second failure", "E2")
    assert (failure2["retry_count"], failure2["remaining"]) == (1, 24)
    delay2 = (parse_ns(failure2["next_at"]) - parse_ns(failure["failed_at"])) / _S
    assert 16 - 0.1 <= delay2 <= 74 + 5, delay2
    assert third["enqueued_at"] == first["enqueued_at"]
    ack(conn, job["jid"])


# -- B2. FAIL with retry 0, -1 and 1 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry", "retries_delta", "dead_delta"),
    [(0, 0, 0), (-1, 0, 1), (1, 1, 0)],
    ids=["retry0-discarded", "retry-1-dead", "retry1-retries"],
)
def test_b2_retry_values(
    conn: RawConnection, cleanup: Cleanup, retry: int, retries_delta: int, dead_delta: int
) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, retry=retry))
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["retry"] == retry
    before = sets(conn)
    assert fail(conn, job["jid"], errtype="E", message="m") == OK
    after = sets(conn)
    assert after["retries"] - before["retries"] == retries_delta
    assert after["dead"] - before["dead"] == dead_delta
    assert after["working"] == before["working"] - 1


# -- C. scheduled jobs -------------------------------------------------------------------------------------


def test_c_future_at_goes_to_scheduled(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    before = sets(conn)["scheduled"]
    push(conn, cleanup.job(queue, at=rfc3339(3600)))
    assert sets(conn)["scheduled"] == before + 1
    push(conn, cleanup.job(queue, at=rfc3339(3600, offset=True)))
    assert sets(conn)["scheduled"] == before + 2
    assert queue_size(conn, queue) in (None, 0)


def test_c_past_at_is_enqueued_at_once(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    at = rfc3339(-3600)
    job = push(conn, cleanup.job(queue, at=at))
    assert queue_size(conn, queue) == 1
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    assert_job_keys(fetched, "retry", "jid", "queue", "jobtype", "created_at", "enqueued_at", "at", "args")
    assert fetched["at"] == at
    ack(conn, job["jid"])


def test_c_unparseable_at(conn: RawConnection) -> None:
    job = {"jid": unique(), "jobtype": "x", "args": [], "retry": 25, "at": "tomorrow"}
    assert conn.command(line("PUSH", job)) == err(
        'invalid timestamp for \'at\': "tomorrow": parsing time "tomorrow" as '
        '"2006-01-02T15:04:05.999999999Z07:00": cannot parse "tomorrow" as "2006"'
    )


def test_c_scheduled_job_is_promoted_keeping_at(conn: RawConnection, cleanup: Cleanup) -> None:
    """Real time: due 1 s after the push; a real server's scanner runs every 5 s."""
    queue = cleanup.queue()
    at = rfc3339(1)
    job = push(conn, cleanup.job(queue, at=at))
    fetched = wait_for_job(conn, queue, within=12)
    assert fetched["jid"] == job["jid"]
    assert_job_keys(fetched, "retry", "jid", "queue", "jobtype", "created_at", "enqueued_at", "at", "args")
    assert fetched["at"] == at
    assert parse_ns(fetched["enqueued_at"]) > parse_ns(fetched["created_at"])
    ack(conn, job["jid"])


# -- D. PUSH validation errors / unknown commands ------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('{"jid":"abc123456","jobtype":"x",', "invalid JSON: unexpected end of JSON input"),
        ('{"jid":"abc123456","args":[1],"retry":25}', "jobs must have a jobtype parameter"),
        ('{"jobtype":"x","args":[1],"retry":25}', "jobs must have a reasonable jid parameter"),
        ('{"jid":"short","jobtype":"x","args":[1],"retry":25}', "jobs must have a reasonable jid parameter"),
        ('{"jid":"1234567","jobtype":"x","args":[1],"retry":25}', "jobs must have a reasonable jid parameter"),
        ('{"jid":"noargs001","jobtype":"x","retry":25}', "jobs must have an args parameter"),
        ('{"jid":"nullargs1","jobtype":"x","args":null,"retry":25}', "jobs must have an args parameter"),
        (
            '{"jid":"rsvtoobig","jobtype":"x","args":[],"reserve_for":86401,"retry":25}',
            "jobs cannot be reserved for more than one day",
        ),
        (
            '{"jid":"badqueue1","jobtype":"x","args":[],"queue":"bad queue!","retry":25}',
            'cannot get "bad queue!" queue: queue names must match \\A[a-zA-Z0-9._-]+\\z',
        ),
        ("", "invalid JSON: unexpected end of JSON input"),
    ],
    ids=[
        "truncated",
        "no-jobtype",
        "no-jid",
        "short-jid",
        "7-byte-jid",
        "no-args",
        "null-args",
        "reserve-too-long",
        "bad-queue",
        "empty-argument",
    ],
)
def test_d_push_validation(conn: RawConnection, body: str, message: str) -> None:
    assert conn.command(f"PUSH {body}\r\n".encode()) == err(message)


@pytest.mark.parametrize(
    "body",
    [
        '{"jid":"objargs01","jobtype":"x","args":{"a":1},"retry":25}',
        '{"jid":"intjobtyp","jobtype":5,"args":[],"retry":25}',
        "[]",
    ],
    ids=["object-args", "number-jobtype", "array-body"],
)
def test_d_push_type_errors(conn: RawConnection, body: str) -> None:
    assert_error_prefix(conn.command(f"PUSH {body}\r\n".encode()), "invalid JSON: ")


def test_d_eight_byte_jid_is_accepted(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    jid = unique()[-8:]
    cleanup.add_jids([jid])
    assert conn.command(line("PUSH", {"jid": jid, "jobtype": "x", "args": [1], "queue": queue, "retry": 25})) == OK
    assert queue_size(conn, queue) == 1


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (b"BOGUS\r\n", "unknown command BOGUS"),
        (b"BOGUS with args\r\n", "unknown command BOGUS"),
        (b'push {"jid":"lower0001","jobtype":"x","args":[],"retry":25}\r\n', "unknown command push"),
        (b'HELLO {"v":2}\r\n', "unknown command HELLO"),
        (b"FETCH\r\n", "must call fetch with at least one queue"),
        (b"\r\n", "unknown command "),
    ],
    ids=["bogus", "bogus-with-args", "lower-case-verb", "second-hello", "bare-fetch", "empty-line"],
)
def test_d_unknown_commands(conn: RawConnection, sent: bytes, message: str) -> None:
    assert conn.command(sent) == err(message)
    assert isinstance(conn.command(b"INFO\r\n"), Bulk)  # the connection stays usable


def test_d_duplicate_jids_are_both_delivered(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue, args=[1])
    push(conn, job)
    push(conn, {**job, "args": [2]})
    assert queue_size(conn, queue) == 2
    first, second = fetch(conn, queue), fetch(conn, queue)
    assert first is not None
    assert second is not None
    assert (first["jid"], first["args"]) == (job["jid"], [1])
    assert (second["jid"], second["args"]) == (job["jid"], [2])
    ack(conn, job["jid"])
    ack(conn, job["jid"])


def test_d_unknown_fields_and_priority_are_dropped(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = cleanup.job(queue, custom={"k": "v"}, unknown_field=123, priority=7, backtrace=5)
    push(conn, job)
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert_job_keys(
        fetched, "retry", "custom", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args", "backtrace"
    )
    assert fetched["custom"] == {"k": "v"}
    assert fetched["backtrace"] == 5
    ack(conn, job["jid"])


# -- E. PUSHB ---------------------------------------------------------------------------------------------


def test_e_pushb_maps_only_rejected_jids(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    good = cleanup.job(queue, args=[1])
    no_type = cleanup.job(queue, args=[2])
    del no_type["jobtype"]
    short = {"jid": "shrt", "jobtype": "x", "args": [3], "queue": queue, "retry": 25}
    reply = conn.command(line("PUSHB", [good, no_type, short]))
    expected = {
        no_type["jid"]: "jobs must have a jobtype parameter",
        "shrt": "jobs must have a reasonable jid parameter",
    }
    # Go encodes a map with its keys sorted
    assert reply == Bulk(json.dumps(expected, sort_keys=True, separators=(",", ":")))
    assert queue_size(conn, queue) == 1  # no atomicity: the valid job stays pushed
    more = cleanup.job(queue, args=[1])
    assert conn.command(line("PUSHB", [more])) == Bulk("{}")
    assert conn.command(b"PUSHB []\r\n") == Bulk("{}")
    assert queue_size(conn, queue) == 2
    assert [job["jid"] for job in (fetch(conn, queue), fetch(conn, queue)) if job] == [good["jid"], more["jid"]]
    ack(conn, good["jid"])
    ack(conn, more["jid"])


def test_e_pushb_bad_bodies(conn: RawConnection) -> None:
    assert_error_prefix(conn.command(b"PUSHB not-json\r\n"), "invalid JSON: ")
    body = dumps({"jid": unique(), "jobtype": "x", "args": [1], "retry": 25})
    assert_error_prefix(conn.command(f"PUSHB {body}\r\n".encode()), "invalid JSON: ")


# -- F. QUEUE PAUSE / RESUME / LATENCY / REMOVE --------------------------------------------------------


def test_f_pause_and_resume(conn: RawConnection, cleanup: Cleanup, fetch_timeout: float) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue))
    assert conn.command(line("QUEUE", f"PAUSE {queue}")) == OK
    reply, elapsed = timed(lambda: fetch(conn, queue))
    assert reply is None
    _assert_blocked_for(elapsed, fetch_timeout)
    assert queue_size(conn, queue) == 1  # a paused queue keeps its jobs and its size
    assert conn.command(line("QUEUE", f"RESUME {queue}")) == OK
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    ack(conn, job["jid"])


def test_f_pause_nonexistent_lowercase_and_resume_star(
    conn: RawConnection, cleanup: Cleanup, fetch_timeout: float
) -> None:
    queue = cleanup.queue()
    assert conn.command(line("QUEUE", f"PAUSE {cleanup.queue('nonexistent')}")) == OK
    job = push(conn, cleanup.job(queue))
    assert conn.command(line("QUEUE", f"pause {queue}")) == OK  # subcommands are case-insensitive
    reply, elapsed = timed(lambda: fetch(conn, queue))
    assert reply is None
    _assert_blocked_for(elapsed, fetch_timeout)
    assert conn.command(b"QUEUE RESUME *\r\n") == OK
    fetched = fetch(conn, queue)
    assert fetched is not None
    assert fetched["jid"] == job["jid"]
    ack(conn, job["jid"])


def test_f_latency(conn: RawConnection, cleanup: Cleanup) -> None:
    base = unique("lat")
    bulk, emptied, nonexistent = f"{base}-a", f"{base}-b", f"{base}-c"
    cleanup.queues.extend([bulk, emptied, nonexistent])
    push(conn, cleanup.job(bulk))
    emptied_job = push(conn, cleanup.job(emptied))
    assert fetch(conn, emptied) is not None
    ack(conn, emptied_job["jid"])
    reply = conn.command(line("QUEUE", f"LATENCY {bulk} {emptied} {nonexistent}"))
    assert isinstance(reply, Bulk)
    assert reply.value is not None
    latency = json.loads(reply.value)
    assert list(latency) == [bulk, emptied, nonexistent]  # sorted keys
    assert isinstance(latency[bulk], (int, float))
    assert 0 <= latency[bulk] < 60
    assert latency[emptied] == 0
    assert latency[nonexistent] == 0
    assert f'"{nonexistent}":0' in reply.value


def test_f_latency_wildcard_and_bad_subcommand(conn: RawConnection) -> None:
    assert conn.command(b"QUEUE LATENCY *\r\n") == err("QUEUE LATENCY does not support wildcards")
    assert conn.command(b"QUEUE BOGUS pq\r\n") == err("no such QUEUE subcommand: BOGUS")
    assert conn.command(b"QUEUE bogus pq\r\n") == err("no such QUEUE subcommand: BOGUS")


def test_f_remove(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    push(conn, cleanup.job(queue))
    push(conn, cleanup.job(queue))
    assert queue_size(conn, queue) == 2
    assert conn.command(line("QUEUE", f"REMOVE {queue}")) == OK
    assert queue_size(conn, queue) is None  # gone from INFO until its next push


# -- G. MUTATE --------------------------------------------------------------------------------------------


def test_g_mutate_transcript(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    jobtype = unique("mutjob")
    job = push(conn, cleanup.job(queue, jobtype=jobtype, retry=1))
    first = fetch(conn, queue)
    assert first is not None
    assert fail(conn, job["jid"], errtype="E", message="m") == OK
    spaced = f'{{"cmd": "kill", "target": "retries", "filter": {{"jids": ["{job["jid"]}"]}}}}'
    assert conn.command(f"MUTATE {spaced}\r\n".encode()) == err("invalid format")
    before = sets(conn)
    assert mutate(conn, "kill", "retries", {"jids": [job["jid"]]}) == OK
    after = sets(conn)
    assert (after["dead"] - before["dead"], after["retries"] - before["retries"]) == (1, -1)
    assert mutate(conn, "requeue", "dead", {"jobtype": jobtype}) == OK
    assert sets(conn)["dead"] == before["dead"]
    assert queue_size(conn, queue) == 1
    requeued = fetch(conn, queue)
    assert requeued is not None
    assert_job_keys(requeued, "retry", "failure", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args")
    assert_failure_keys(requeued["failure"], "failed_at", "next_at", "message", "errtype", "retry_count", "remaining")
    assert (requeued["failure"]["retry_count"], requeued["failure"]["remaining"]) == (0, 1)
    assert requeued["enqueued_at"] == first["enqueued_at"]
    ack(conn, job["jid"])
    assert mutate(conn, "discard", "scheduled", {"regexp": f"*{jobtype}*"}) == OK


def test_g_mutate_errors(conn: RawConnection) -> None:
    assert mutate(conn, "explode", "dead") == err("unknown mutate operation")
    assert mutate(conn, "clear", "default") == err("invalid target for mutation command")
    assert mutate(conn, "clear", "working") == err("invalid target for mutation command")
    reply = conn.command(b"MUTATE not-json\r\n")
    message = assert_error_prefix(reply, "").message
    assert message, reply
    assert not message.startswith("invalid JSON"), reply  # the bare decoder message
    assert conn.command(b"MUTATE\r\n") == err("invalid format")


def test_g_mutate_clear(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue()
    job = push(conn, cleanup.job(queue, retry=-1))
    assert fetch(conn, queue) is not None
    before = sets(conn)["dead"]
    assert fail(conn, job["jid"], errtype="E", message="m") == OK
    assert sets(conn)["dead"] == before + 1
    assert mutate(conn, "clear", "dead") == OK
    assert sets(conn)["dead"] <= before
    # the job is gone: a requeue by jid finds nothing to put back
    assert mutate(conn, "requeue", "dead", {"jids": [job["jid"]]}) == OK
    assert not queue_size(conn, queue)


# -- H. BEAT ----------------------------------------------------------------------------------------------


def test_h_beat_transcript(faktory_url: str, cleanup: Cleanup, fetch_timeout: float) -> None:
    wid = unique("wkr")
    queue = cleanup.queue("wq")
    with RawConnection(faktory_url) as conn:
        conn.greeting()
        hello = {"v": 2, "wid": wid, "hostname": "probe-host", "pid": 4242, "labels": ["python", "probe"]}
        assert conn.command(line("HELLO", hello)) == OK
        assert conn.command(line("BEAT", {"wid": wid})) == OK
        assert conn.command(line("BEAT", {"wid": wid, "rss_kb": 12345})) == OK
        assert conn.command(line("BEAT", {"wid": wid, "current_state": "running", "rss_kb": 12345})) == OK
        nope = unique("nope")
        assert conn.command(line("BEAT", {"wid": nope})) == err(f"unknown worker {nope}")
        assert conn.command(line("BEAT", {"wid": wid})) == OK
        assert conn.command(b"BEAT not-json\r\n") == err("invalid BEAT not-json")
        job1 = push(conn, cleanup.job(queue))
        assert fetch(conn, queue) is not None
        quiet, terminate = Bulk('{"state":"quiet"}'), Bulk('{"state":"terminate"}')
        assert conn.command(line("BEAT", {"wid": wid, "current_state": "quiet"})) == quiet
        assert conn.command(line("BEAT", {"wid": wid})) == quiet  # on every BEAT, not only the first
        push(conn, cleanup.job(queue))
        reply, elapsed = timed(lambda: fetch(conn, queue))  # a quiet worker gets nothing
        assert reply is None
        _assert_blocked_for(elapsed, fetch_timeout)
        assert conn.command(line("BEAT", {"wid": wid, "current_state": "running"})) == quiet  # forward only
        assert conn.command(line("BEAT", {"wid": wid, "current_state": "terminate"})) == terminate
        assert conn.command(line("BEAT", {"wid": wid, "current_state": "quiet"})) == terminate
        ack(conn, job1["jid"])
        conn.send(b"END\r\n")
        assert conn.closed_by_server(within=5)


# -- I. the priority field ----------------------------------------------------------------------------


def test_i_priority_is_ignored(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue("prioq")
    jobs = [push(conn, cleanup.job(queue, args=[priority], priority=priority)) for priority in (1, 9, 5)]
    for job in jobs:
        fetched = fetch(conn, queue)
        assert fetched is not None
        assert fetched["jid"] == job["jid"]
        assert "priority" not in fetched
        ack(conn, job["jid"])


# -- J. multi-queue FETCH order ----------------------------------------------------------------------


def test_j_fetch_order_follows_the_arguments(conn: RawConnection, cleanup: Cleanup, fetch_timeout: float) -> None:
    qa, qb = cleanup.queue("qa"), cleanup.queue("qb")
    job_a = push(conn, cleanup.job(qa))
    job_b = push(conn, cleanup.job(qb))
    first, second = fetch(conn, qb, qa), fetch(conn, qb, qa)
    assert first is not None
    assert first["jid"] == job_b["jid"]
    assert first["queue"] == qb
    assert second is not None
    assert second["jid"] == job_a["jid"]
    assert second["queue"] == qa
    ack(conn, job_a["jid"])
    ack(conn, job_b["jid"])
    reply, elapsed = timed(lambda: fetch(conn, qb, qa))
    assert reply is None
    _assert_blocked_for(elapsed, fetch_timeout)


# -- K. FLUSH ---------------------------------------------------------------------------------------------


def test_k_flush(faktory_url: str, cleanup: Cleanup) -> None:
    with connect(faktory_url) as conn:
        queue = cleanup.queue()
        push(conn, cleanup.job(queue))
        push(conn, cleanup.job(queue, at=rfc3339(3600)))
        job = push(conn, cleanup.job(queue, retry=-1))
        while (fetched := fetch(conn, queue)) is not None and fetched["jid"] != job["jid"]:
            ack(conn, fetched["jid"])
        assert fail(conn, job["jid"], errtype="E", message="m") == OK
        assert conn.command(b"FLUSH\r\n") == OK
        assert conn.command(b"FLUSH x\r\n") == OK  # trailing arguments are ignored
        document = info(conn)
        faktory = document["faktory"]
        assert faktory["sets"] == {"dead": 0, "retries": 0, "scheduled": 0, "working": 0}
        assert set(faktory["queues"].values()) <= {0}
        assert (faktory["total_failures"], faktory["total_processed"], faktory["total_enqueued"]) == (0, 0, 0)
        conn.send(b"END\r\n")
        assert conn.closed_by_server(within=5)


# -- L. handshake edge cases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first_line",
    [b"HELLO not-json\r\n", b'PUSH {"jid":"x"}\r\n'],
    ids=["hello-not-json", "push-first"],
)
def test_l_bad_first_line_closes_silently(faktory_url: str, first_line: bytes) -> None:
    with RawConnection(faktory_url) as conn:
        assert conn.greeting() == Simple('HI {"v":2}')
        conn.send(first_line)
        assert conn.closed_by_server(within=5)


@pytest.mark.parametrize(
    "hello",
    [b'HELLO {"v":2,"pwdhash":"deadbeef"}\r\n', b'HELLO {"v":1}\r\n', b"HELLO {}\r\n"],
    ids=["meaningless-pwdhash", "v1", "empty"],
)
def test_l_lenient_hellos_are_accepted(faktory_url: str, hello: bytes) -> None:
    with RawConnection(faktory_url) as conn:
        assert conn.greeting() == Simple('HI {"v":2}')
        assert conn.command(hello) == OK
        assert isinstance(conn.command(b"INFO\r\n"), Bulk)


def test_l_silent_client_is_closed_after_the_handshake_deadline(faktory_url: str) -> None:
    with RawConnection(faktory_url) as conn:
        assert conn.greeting() == Simple('HI {"v":2}')
        closed, elapsed = timed(lambda: conn.closed_by_server(within=6))
        assert closed
        assert 1.5 <= elapsed <= 3.5, elapsed
