"""ACK and FAIL on a connection of their own: :class:`Report` and the batching :class:`Reporter`.

The ``faktory-report`` thread drains a queue of outcomes and writes every outcome waiting at that moment in one
pipelined write, then reads the replies in order. When the connection fails it reconnects with backoff and sends
again whatever got no reply: ACK and FAIL are safe to repeat. Every reply is checked. ``-ERR Job not found`` on
a FAIL (the reservation expired, or a repeated FAIL) is logged as a warning; any other error reply is logged as
an error and counted. Nothing here raises into the worker.
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


class Reporter:
    """Sends :class:`Report` objects, from its own thread (:meth:`put`) or the caller's (:meth:`send`).

    Args:
        connect: Opens a new connection (the worker's, with its wid).
        name: The thread's name.

    Attributes:
        acked: ACKs the server answered with ``+OK``.
        failed: FAILs the server answered with ``+OK``.
        rejected: ACKs and FAILs the server answered with an error.
    """

    def __init__(self, connect: Callable[[], Connection], *, name: str = "faktory-report") -> None:
        self._connect = connect
        self._connection: Connection | None = None
        self._queue: queue.SimpleQueue[Report | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._deadline: float | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.acked = 0
        self.failed = 0
        self.rejected = 0

    def start(self) -> None:
        """Start the ``faktory-report`` thread."""
        self._thread.start()

    def put(self, report: Report) -> None:
        """Queue ``report`` for the thread to send."""
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
            self._queue.put(_CLOSE)
        if self._thread.is_alive():
            self._thread.join(timeout + 1)
        self._disconnect()

    def _run(self) -> None:
        try:
            self._connection = self._connect()  # ready before the first outcome; send() retries otherwise
        except FaktoryConnectionError as exc:
            log.warning("cannot open the ACK/FAIL connection yet (%s); will retry when there is something to send", exc)
        while True:
            item = self._queue.get()
            closing = item is _CLOSE
            batch = [] if closing else [item]
            while len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _CLOSE:
                    closing = True
                else:
                    batch.append(item)
            self.send([report for report in batch if isinstance(report, Report)])
            if closing:
                return

    def send(self, reports: Sequence[Report]) -> None:
        """Send ``reports`` now, in one write, retrying on a new connection until each got a reply.

        Retries go on with backoff while the reporter is open; once :meth:`close` was called they stop at its
        deadline, and what is left is logged (those jobs come back when their reservations expire). Call it
        from one thread at a time: the reporter's own, or the caller's when the thread was never started.
        """
        pending = list(reports)
        backoff = Backoff()
        while pending:
            try:
                pending = self._send_once(pending)
            except (FaktoryConnectionError, MalformedReply) as exc:
                self._disconnect()
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

    def _send_once(self, pending: list[Report]) -> list[Report]:
        """Pipeline ``pending``; returns what is left (nothing); raises on a connection failure."""
        if self._connection is None or self._connection.broken:
            self._connection = self._connect()
        connection = self._connection
        connection.send(b"".join(report.line for report in pending))
        for done, report in enumerate(pending):
            try:
                reply = connection.read_reply()
            except (FaktoryConnectionError, MalformedReply):
                del pending[:done]
                raise
            self._check(report, reply)
        return []

    def _check(self, report: Report, reply: Reply) -> None:
        if reply == Simple("OK"):
            if report.verb == "ACK":
                self.acked += 1
            else:
                self.failed += 1
            return
        self.rejected += 1
        if isinstance(reply, Error) and report.verb == "FAIL" and reply.message.startswith("Job not found"):
            log.warning("FAIL %s: the server no longer holds its reservation (%s)", report.jid, reply.message)
        else:
            log.error("%s %s was rejected by the server: %r", report.verb, report.jid, reply)

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
