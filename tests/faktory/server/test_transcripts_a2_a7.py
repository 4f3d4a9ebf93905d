"""Appendix A.2 to A.7 of the Faktory reference: reservation expiry, the password server, the retry default,
verbs without arguments (the ones a real server survives) and the Enterprise-only verbs.

A.2 needs time travel and is ``faktory_server_only``; A.5 and the crashing verbs of A.6 are documented
differences and live in ``test_differences.py``. A.4 (the password read from ``conf.d``) is server
configuration, not protocol: the hash itself is the A.3 computation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

import pytest

from celery_faktory.clock import ManualClock
from celery_faktory.protocol import Bulk, Simple
from celery_faktory.protocol.payload import format_timestamp
from celery_faktory.server import FaktoryServer, ServerConfig
from tests.faktory.server.support import (
    OK,
    Cleanup,
    ack,
    assert_failure_keys,
    assert_job_keys,
    err,
    fail,
    fetch,
    info,
    line,
    mutate,
    parse_ns,
    push,
)
from tests.faktory.wire import RawConnection, unique

pytestmark = pytest.mark.timeout(60)

_S = 1_000_000_000
_GREETING = re.compile(r'\AHI \{"v":2,"i":(\d+),"s":"([0-9a-f]+)"\}\Z')


def sha_loop(password: str, salt: str, applications: int) -> str:
    """SHA-256 applied ``applications`` times to password + salt, lowercase hex (§4.4, computed here)."""
    digest = hashlib.sha256(password.encode() + salt.encode()).digest()
    for _ in range(applications - 1):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def test_password_hash_vectors() -> None:
    """The helper matches the reference's test vectors (so the tests below compute hashes correctly)."""
    assert sha_loop("foobar", "55104dc76695721d", 1545) == (
        "6d877f8e5544b1f2598768f817413ab8a357afffa924dedae99eb91472d4ec30"
    )
    assert sha_loop("abcde123", "123", 3) == "ef646abadf4ffba660d9bbb8de8e45576970de917b4c9da8cad96b49e64636d9"
    assert sha_loop("s3cr3t-pässword", "b119996f5a5e72a", 5965) == (
        "6846f77a609e4bb120914fa152ee5bf4ac09ba1f44b12923d9a168f761fe04e5"
    )
    assert sha_loop("tomlpw123", "7f8d0e7587e4c95b", 4607) == (
        "f320dd2f341fd96014002e75cf36e2e860d83a3bb596a8c45db991fbc92de8c8"
    )


# -- A.2 reservation expiry --------------------------------------------------------------------------


@pytest.mark.faktory_server_only
def test_a2_reservation_expiry(faktory_server_factory: Callable[..., FaktoryServer]) -> None:
    clock = ManualClock()
    server = faktory_server_factory(
        config=ServerConfig.fast(reservation_floor=60.0, heartbeat_timeout=86400.0), clock=clock, seed=7
    )
    queue = unique("rsvq")
    with RawConnection(server.url) as conn:
        assert conn.greeting() == Simple('HI {"v":2}')
        assert conn.command(line("HELLO", {"v": 2, "wid": unique("rsv"), "hostname": "h", "pid": 1})) == OK
        first = push(conn, {"jid": unique(), "jobtype": "slow", "args": [], "queue": queue, "reserve_for": 1})
        second = push(conn, {"jid": unique(), "jobtype": "slow", "args": [], "queue": queue, "reserve_for": 1})
        fetched = fetch(conn, queue)
        assert fetched is not None
        assert fetched["jid"] == first["jid"]
        assert_job_keys(fetched, "retry", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args", "reserve_for")
        assert (fetched["retry"], fetched["reserve_for"]) == (25, 1)
        assert fetch(conn, queue) is not None
        ack(conn, second["jid"])

        server.advance(59)  # reserve_for 1 is raised to the 60 s floor
        assert [job["jid"] for job in server.jobs("working")] == [first["jid"]]
        server.advance(2)
        assert server.jobs("working") == []
        (retry,) = server.jobs("retries")
        assert retry["jid"] == first["jid"]
        failure = retry["failure"]
        assert_failure_keys(failure, "failed_at", "next_at", "message", "errtype", "retry_count", "remaining")
        assert (failure["errtype"], failure["message"]) == ("ReservationExpired", "Faktory job reservation expired")
        assert (failure["retry_count"], failure["remaining"]) == (0, 25)

        # the late ACK is accepted but does not cancel the retry; the late FAIL is refused
        ack(conn, first["jid"])
        assert [job["jid"] for job in server.jobs("retries")] == [first["jid"]]
        assert fail(conn, first["jid"], errtype="E", message="late") == err(f"Job not found {first['jid']}")
        document = info(conn)["faktory"]
        assert document["tasks"]["Busy"]["reaped"] == 1
        assert (document["total_failures"], document["total_processed"]) == (1, 2)

        delay = (parse_ns(failure["next_at"]) - clock.time_ns()) / _S
        assert 15 <= delay <= 44
        server.advance(delay + 1)
        assert server.jobs("retries") == []
        again = fetch(conn, queue)
        assert again is not None
        assert again["jid"] == first["jid"]
        assert_job_keys(
            again, "retry", "failure", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args", "reserve_for"
        )
        assert again["enqueued_at"] == format_timestamp(clock.time_ns())  # updated on promotion
        assert again["created_at"] == fetched["created_at"]
        ack(conn, first["jid"])
        document = info(conn)["faktory"]
        assert document["total_processed"] == 3
        assert document["tasks"]["Retries"]["enqueued"] == 1
        assert document["tasks"]["Workers"]["size"] == 1


# -- A.3 password-protected server -----------------------------------------------------------------


def _challenge(conn: RawConnection) -> tuple[int, str]:
    match = _GREETING.match(conn.greeting().text)
    assert match, "greeting without a password challenge"
    return int(match.group(1)), match.group(2)


def test_a3_greeting_challenge_is_fresh_per_connection(faktory_password_url: str) -> None:
    challenges = []
    for _ in range(3):
        with RawConnection(faktory_password_url) as conn:
            iterations, salt = _challenge(conn)
            assert 4000 <= iterations <= 8095
            assert 1 <= len(salt) <= 16
            assert salt == "0" or not salt.startswith("0")
            challenges.append((iterations, salt))
    assert len({salt for _, salt in challenges}) == 3


def test_a3_correct_v2_hash(faktory_password_url: str) -> None:
    with RawConnection(faktory_password_url) as conn:
        iterations, salt = _challenge(conn)
        hello = {"v": 2, "pwdhash": sha_loop(conn.password or "", salt, iterations)}
        assert conn.command(line("HELLO", hello)) == OK
        queue = unique()
        job = push(conn, {"jid": unique(), "jobtype": "x", "args": [], "queue": queue, "retry": 25})
        fetched = fetch(conn, queue)
        assert fetched is not None
        assert fetched["jid"] == job["jid"]
        ack(conn, job["jid"])
        assert conn.command(line("QUEUE", f"REMOVE {queue}")) == OK


@pytest.mark.parametrize("version", [1, 0, None], ids=["v1", "v0", "no-v"])
def test_a3_old_clients_hash_once(faktory_password_url: str, version: int | None) -> None:
    with RawConnection(faktory_password_url) as conn:
        _, salt = _challenge(conn)
        hello: dict[str, object] = {"pwdhash": sha_loop(conn.password or "", salt, 1)}
        if version is not None:
            hello = {"v": version, **hello}
        assert conn.command(line("HELLO", hello)) == OK
        assert isinstance(conn.command(b"INFO\r\n"), Bulk)


@pytest.mark.parametrize(
    "variant",
    ["wrong-password", "uppercase", "i-minus-1", "i-plus-1", "v1-full-iterations", "missing", "empty"],
)
def test_a3_bad_hash_is_refused_then_closed(faktory_password_url: str, variant: str) -> None:
    with RawConnection(faktory_password_url) as conn:
        iterations, salt = _challenge(conn)
        password = conn.password or ""
        hello: dict[str, object] = {"v": 2}
        if variant == "wrong-password":
            hello["pwdhash"] = sha_loop(password + "x", salt, iterations)
        elif variant == "uppercase":
            hello["pwdhash"] = sha_loop(password, salt, iterations).upper()
        elif variant == "i-minus-1":
            hello["pwdhash"] = sha_loop(password, salt, iterations - 1)
        elif variant == "i-plus-1":
            hello["pwdhash"] = sha_loop(password, salt, iterations + 1)
        elif variant == "v1-full-iterations":
            hello = {"v": 1, "pwdhash": sha_loop(password, salt, iterations)}
        elif variant == "empty":
            hello["pwdhash"] = ""
        assert conn.command(line("HELLO", hello)) == err("Invalid password")
        conn.send(b"INFO\r\n")
        assert conn.closed_by_server(within=5)


# -- A.6 verbs without their argument that a real server survives ---------------------------------


def test_a6_argumentless_verbs_that_are_safe(conn: RawConnection) -> None:
    assert conn.command(b"QUEUE LATENCY\r\n") == Bulk("{}")
    assert conn.command(b"MUTATE\r\n") == err("invalid format")
    assert conn.command(b"FETCH\r\n") == err("must call fetch with at least one queue")
    document = conn.json(b"INFO x\r\n")
    assert document["server"]["description"] == "Faktory"


# -- A.7 Enterprise-only verbs, and FAIL without errtype or message ------------------------------


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        (b"BATCH NEW {}\r\n", "batch subsystem is only available in Faktory Enterprise"),
        (b"BATCH COMMIT abcdefgh\r\n", "batch subsystem is only available in Faktory Enterprise"),
        (b"TRACK GET abc\r\n", "tracking subsystem is only available in Faktory Enterprise"),
        (b'TRACK SET {"jid":"abcdefgh","percent":5}\r\n', "tracking subsystem is only available in Faktory Enterprise"),
    ],
    ids=["batch-new", "batch-commit", "track-get", "track-set"],
)
def test_a7_enterprise_verbs(conn: RawConnection, sent: bytes, message: str) -> None:
    assert conn.command(sent) == err(message)
    assert isinstance(conn.command(b"INFO\r\n"), Bulk)


def test_a7_fail_without_errtype_or_message(conn: RawConnection, cleanup: Cleanup) -> None:
    queue = cleanup.queue("fbq")
    job = push(conn, cleanup.job(queue))
    first = fetch(conn, queue)
    assert first is not None
    assert conn.command(line("FAIL", {"jid": job["jid"]})) == OK
    assert mutate(conn, "requeue", "retries", {"jids": [job["jid"]]}) == OK
    again = fetch(conn, queue)
    assert again is not None
    assert_job_keys(again, "retry", "failure", "jid", "queue", "jobtype", "created_at", "enqueued_at", "args")
    failure = again["failure"]
    assert_failure_keys(failure, "failed_at", "next_at", "message", "errtype", "retry_count", "remaining")
    assert (failure["message"], failure["errtype"]) == ("unknown", "unknown")
    assert (failure["retry_count"], failure["remaining"]) == (0, 25)
    assert again["enqueued_at"] == first["enqueued_at"]
    ack(conn, job["jid"])
