"""Helpers of the server conformance suite: command lines, job shapes, INFO look-ups, cleanup.

Everything here speaks raw protocol through :mod:`tests.faktory.wire`, so the same helpers work against the
in-process server and against a real Faktory 1.9.4.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from celery_faktory.protocol import Bulk, Error, Reply, Simple
from tests.faktory.wire import RawConnection, connect, unique

_T = TypeVar("_T")

OK = Simple("OK")
#: A timestamp as Faktory writes it: RFC 3339, UTC, ``Z``, 0 to 9 fractional digits with trailing zeros trimmed.
TIMESTAMP = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{0,8}[1-9])?Z\Z")
#: The order of the keys of a job the server sends back (§7.5).
JOB_KEYS = (
    "retry",
    "failure",
    "custom",
    "jid",
    "queue",
    "jobtype",
    "created_at",
    "enqueued_at",
    "at",
    "args",
    "reserve_for",
    "backtrace",
)
#: The order of the keys of a job's failure block.
FAILURE_KEYS = ("failed_at", "next_at", "message", "errtype", "backtrace", "retry_count", "remaining")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII kept as UTF-8 (as a client sends it)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def line(verb: str, argument: Any = None) -> bytes:
    """A command line; a non-string argument is sent as compact JSON."""
    if argument is None:
        return f"{verb}\r\n".encode()
    text = argument if isinstance(argument, str) else dumps(argument)
    return f"{verb} {text}\r\n".encode()


def err(message: str) -> Error:
    """The reply ``-ERR <message>``."""
    return Error("ERR", message)


def assert_error_prefix(reply: Reply, prefix: str) -> Error:
    """``reply`` is ``-ERR <prefix>...`` (for messages whose tail is the Go decoder's own text); returns it."""
    assert isinstance(reply, Error), reply
    assert reply.code == "ERR", reply
    assert reply.message.startswith(prefix), reply
    return reply


def new_job(queue: str | None = None, **fields: Any) -> dict[str, Any]:
    """A valid job with a fresh jid and an explicit ``retry`` (25 unless given)."""
    job: dict[str, Any] = {"jid": unique(), "jobtype": "x", "args": [], "retry": 25}
    if queue is not None:
        job["queue"] = queue
    job.update(fields)
    return job


def push(conn: RawConnection, job: dict[str, Any]) -> dict[str, Any]:
    """PUSH ``job`` and check for ``+OK``; returns the job."""
    reply = conn.command(line("PUSH", job))
    assert reply == OK, reply
    return job


def fetch(conn: RawConnection, *queues: str) -> dict[str, Any] | None:
    """FETCH from ``queues``; the job as a dict (keys in wire order), or ``None`` for ``$-1``."""
    reply = conn.command(line("FETCH", " ".join(queues)))
    assert isinstance(reply, Bulk), reply
    return None if reply.value is None else json.loads(reply.value)


def timed(function: Callable[[], _T]) -> tuple[_T, float]:
    """Call ``function``; its result and how many seconds it took."""
    started = time.monotonic()
    result = function()
    return result, time.monotonic() - started


def ack(conn: RawConnection, jid: str) -> None:
    """ACK ``jid`` and check for ``+OK``."""
    reply = conn.command(line("ACK", {"jid": jid}))
    assert reply == OK, reply


def fail(conn: RawConnection, jid: str, **fields: Any) -> Reply:
    """FAIL ``jid`` with the given fields; the raw reply."""
    return conn.command(line("FAIL", {"jid": jid, **fields}))


def mutate(conn: RawConnection, cmd: str, target: str, filter: dict[str, Any] | None = None) -> Reply:  # noqa: A002
    """Send a compact MUTATE; the raw reply."""
    operation: dict[str, Any] = {"cmd": cmd, "target": target}
    if filter is not None:
        operation["filter"] = filter
    return conn.command(line("MUTATE", operation))


def info(conn: RawConnection) -> dict[str, Any]:
    """The INFO document."""
    return conn.json(b"INFO\r\n")  # type: ignore[no-any-return]


def sets(conn: RawConnection) -> dict[str, int]:
    """INFO's ``faktory.sets``: the sizes of dead, retries, scheduled and working."""
    return dict(info(conn)["faktory"]["sets"])


def queue_size(conn: RawConnection, queue: str) -> int | None:
    """The size INFO reports for ``queue``, or ``None`` when INFO does not list it."""
    return info(conn)["faktory"]["queues"].get(queue)  # type: ignore[no-any-return]


def requeue_and_fetch(conn: RawConnection, target: str, jid: str, queue: str) -> dict[str, Any]:
    """Move ``jid`` from ``target`` back onto its (otherwise empty) ``queue`` and fetch it."""
    assert mutate(conn, "requeue", target, {"jids": [jid]}) == OK
    job = fetch(conn, queue)
    assert job is not None
    assert job["jid"] == jid, job
    return job


def drain(conn: RawConnection, queue: str) -> list[dict[str, Any]]:
    """Fetch and ACK every job INFO counts in ``queue`` (without blocking); the jobs, in fetch order."""
    jobs = []
    for _ in range(queue_size(conn, queue) or 0):
        job = fetch(conn, queue)
        assert job is not None
        ack(conn, job["jid"])
        jobs.append(job)
    return jobs


def assert_job_keys(job: dict[str, Any], *keys: str) -> None:
    """The job has exactly ``keys``, in the server's fixed order."""
    assert list(keys) == [key for key in JOB_KEYS if key in keys], f"bad expectation {keys}"
    assert list(job) == list(keys), list(job)


def assert_failure_keys(failure: dict[str, Any], *keys: str) -> None:
    """The failure block has exactly ``keys``, in the server's fixed order."""
    assert list(keys) == [key for key in FAILURE_KEYS if key in keys], f"bad expectation {keys}"
    assert list(failure) == list(keys), list(failure)


def assert_timestamp(value: Any) -> None:
    """``value`` is a timestamp in Faktory's own format."""
    assert isinstance(value, str), value
    assert TIMESTAMP.match(value), value


def parse_ns(text: str) -> int:
    """Unix nanoseconds of an RFC 3339 timestamp in Faktory's format (UTC, ``Z``)."""
    assert_timestamp(text)
    whole, _, fraction = text[:-1].partition(".")
    moment = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    seconds = (moment - _EPOCH) // timedelta(seconds=1)
    return seconds * 1_000_000_000 + int(fraction.ljust(9, "0") or 0)


def rfc3339(seconds_from_now: float, *, offset: bool = False) -> str:
    """A timestamp ``seconds_from_now`` away, with microseconds and ``Z`` (or ``+00:00``)."""
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text + ("+00:00" if offset else "Z")


def wait_for_job(conn: RawConnection, queue: str, within: float) -> dict[str, Any]:
    """FETCH ``queue`` (blocking) until a job comes, or fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        job = fetch(conn, queue)
        if job is not None:
            return job
    raise AssertionError(f"no job arrived in {queue} within {within} s")


class Cleanup:
    """Remembers what a test created on the server, and removes it at teardown.

    Teardown ACKs the jids (in case they are still reserved), discards them from the retries, dead and
    scheduled sets, and removes the queues (which also unpauses them).
    """

    def __init__(self) -> None:
        self.jids: list[str] = []
        self.queues: list[str] = []

    def queue(self, prefix: str = "q") -> str:
        """A fresh queue name, removed at teardown."""
        name = unique(prefix)
        self.queues.append(name)
        return name

    def job(self, queue: str | None = None, **fields: Any) -> dict[str, Any]:
        """:func:`new_job`, with the jid remembered for teardown."""
        job = new_job(queue, **fields)
        self.jids.append(job["jid"])
        return job

    def add_jids(self, jids: Iterable[str]) -> None:
        """Also clean up these jids."""
        self.jids.extend(jids)

    def run(self, url: str) -> None:
        """Remove everything remembered (errors are ignored: the server may be gone)."""
        if not self.jids and not self.queues:
            return
        with contextlib.suppress(OSError, EOFError, AssertionError), connect(url) as conn:
            for jid in self.jids:
                conn.command(line("ACK", {"jid": jid}))
            if self.jids:
                for target in ("retries", "dead", "scheduled"):
                    conn.command(line("MUTATE", {"cmd": "discard", "target": target, "filter": {"jids": self.jids}}))
            if self.queues:
                conn.command(line("QUEUE", "REMOVE " + " ".join(self.queues)))
            conn.send(b"END\r\n")
