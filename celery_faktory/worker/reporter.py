"""ACK and FAIL on connections of their own: :class:`Report` and the batching :class:`Reporter`.

The ``faktory-report-N`` threads (one per connection) drain one queue of outcomes; each writes every outcome
waiting when it wakes in one pipelined write, then reads the replies in order. The server works on a
connection's commands one at a time, so a busy worker needs a second connection for its outcomes to be answered
as fast as its fetchers bring jobs; outcomes of different jobs need no order between them. When a connection
fails its thread reconnects with backoff and sends again whatever got no reply: ACK and FAIL are safe to repeat.
Every reply is checked. ``-ERR Job not found`` on a FAIL (the reservation expired, or a repeated FAIL) is logged
as a warning; any other error reply is logged as an error and counted. Nothing here raises into the worker.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from celery_faktory.client.connection import Connection
from celery_faktory.errors import FaktoryConnectionError, MalformedReply
from celery_faktory.protocol import commands
from celery_faktory.protocol.replies import Error, Reply, Simple
from celery_faktory.worker.backoff import Backoff

__all__ = ["Report", "Reporter"]

log = logging.getLogger(__name__)

#: The most outcomes written in one pipelined batch.
MAX_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of one job, ready to send.

    Attributes:
        jid: The job.
        verb: ``"ACK"`` or ``"FAIL"``.
        line: The encoded command line.
    """

    jid: str
    verb: str
    line: bytes

    @classmethod
    def ack(cls, jid: str) -> Report:
        """The job succeeded."""
        return cls(jid, "ACK", commands.ack(jid))

    @classmethod
    def fail(cls, jid: str, errtype: str, message: str, backtrace: Sequence[str] | None = None) -> Report:
        """The job failed with ``errtype`` and ``message``."""
        return cls(jid, "FAIL", commands.fail(jid, errtype=errtype, message=message, backtrace=backtrace))


_CLOSE = object()


class _Sender:
    """One connection of a :class:`Reporter` and the thread (or caller) that writes on it."""

    def __init__(self, connect: Callable[[], Connection]) -> None:
        self.connect = connect
        self.connection: Connection | None = None

    def send_once(self, pending: list[Report], check: Callable[[Report, Reply], None]) -> None:
        """Pipeline ``pending`` and check each reply, emptying ``pending``.

        Raises:
            FaktoryConnectionError, MalformedReply: The connection failed; the outcomes answered before it are
                removed from ``pending``, the rest stay.
        """
        if self.connection is None or self.connection.broken:
            self.connection = self.connect()
        connection = self.connection
        connection.send(b"".join(report.line for report in pending))
        for done, report in enumerate(pending):
            try:
                reply = connection.read_reply()
            except (FaktoryConnectionError, MalformedReply):
                del pending[:done]
                raise
            check(report, reply)
        pending.clear()

    def disconnect(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()


class Reporter:
    """Sends :class:`Report` objects, from its own threads (:meth:`put`) or the caller's (:meth:`send`).

    Args:
        connect: Opens a new connection (the worker's, with its wid).
        connections: Sender threads, each with its own connection.
        name: The threads' name prefix (``<name>-0`` ...).

    Attributes:
        acked: ACKs the server answered with ``+OK``.
        failed: FAILs the server answered with ``+OK``.
        rejected: ACKs and FAILs the server answered with an error.
    """

    def __init__(
        self, connect: Callable[[], Connection], *, connections: int = 1, name: str = "faktory-report"
    ) -> None:
        if connections < 1:
            raise ValueError("a reporter needs at least one connection")
        self._queue: queue.SimpleQueue[Report | object] = queue.SimpleQueue()
        self._senders = [_Sender(connect) for _ in range(connections)]
        self._caller = _Sender(connect)
        self._threads = [
            threading.Thread(target=self._run, args=(sender,), name=f"{name}-{index}", daemon=True)
            for index, sender in enumerate(self._senders)
        ]
        self._deadline: float | None = None
        self._closed = False
        self._lock = threading.Lock()
        self._counts = threading.Lock()
        self.acked = 0
        self.failed = 0
        self.rejected = 0

    def start(self) -> None:
        """Start the sender threads."""
        for thread in self._threads:
            thread.start()

    def put(self, report: Report) -> None:
        """Queue ``report`` for a sender thread."""
        with self._lock:
            closed = self._closed
            if not closed:
                self._queue.put(report)
        if closed:
            log.error(
                "%s %s not sent: the reporter is closed; the server retries the job when its reservation expires",
                report.verb,
                report.jid,
            )

    def close(self, timeout: float) -> None:
        """Send what is queued (giving up on an unreachable server after ``timeout`` s), then END."""
        with self._lock:
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._queue.put(_CLOSE)  # each thread puts it back for the next: it comes after every outcome
        end = time.monotonic() + timeout + 1
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, end - time.monotonic()))
        for sender in (*self._senders, self._caller):
            sender.disconnect()

    def _run(self, sender: _Sender) -> None:
        try:
            sender.connection = sender.connect()  # ready before the first outcome; sending retries otherwise
        except FaktoryConnectionError as exc:
            log.warning("cannot open an ACK/FAIL connection yet (%s); will retry when there is something to send", exc)
        while True:
            item = self._queue.get()
            closing = item is _CLOSE
            batch = [] if closing else [item]
            while not closing and len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _CLOSE:
                    closing = True
                else:
                    batch.append(item)
            if closing:
                self._queue.put(_CLOSE)
            self._send(sender, [report for report in batch if isinstance(report, Report)])
            if closing:
                return

    def send(self, reports: Sequence[Report]) -> None:
        """Send ``reports`` now from the calling thread, on a connection of its own, in one write.

        It retries on a new connection until each got a reply, with backoff while the reporter is open; once
        :meth:`close` was called retries stop at its deadline, and what is left is logged (those jobs come back
        when their reservations expire). Call it from one thread at a time.
        """
        self._send(self._caller, reports)

    def _send(self, sender: _Sender, reports: Sequence[Report]) -> None:
        pending = list(reports)
        backoff = Backoff()
        while pending:
            try:
                sender.send_once(pending, self._check)
            except (FaktoryConnectionError, MalformedReply) as exc:
                sender.disconnect()
                deadline = self._deadline
                delay = backoff.next_delay()
                if deadline is not None and time.monotonic() + delay > deadline:
                    log.error(
                        "giving up on %d ACK/FAIL (%s); the server retries those jobs when their reservations "
                        "expire: %s",
                        len(pending),
                        exc,
                        ", ".join(report.jid for report in pending),
                    )
                    return
                log.warning("ACK/FAIL connection failed (%s); %d pending, retrying in %.1f s", exc, len(pending), delay)
                time.sleep(delay)

    def _check(self, report: Report, reply: Reply) -> None:
        if reply == Simple("OK"):
            with self._counts:
                if report.verb == "ACK":
                    self.acked += 1
                else:
                    self.failed += 1
            return
        with self._counts:
            self.rejected += 1
        if isinstance(reply, Error) and report.verb == "FAIL" and reply.message.startswith("Job not found"):
            log.warning("FAIL %s: the server no longer holds its reservation (%s)", report.jid, reply.message)
        else:
            log.error("%s %s was rejected by the server: %r", report.verb, report.jid, reply)
