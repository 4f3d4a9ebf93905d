"""The kombu virtual channel on Faktory: storage hooks, acknowledgements, reject, restore, batch publishing.

A :class:`Channel` talks to Faktory over two kinds of connections:

* one **FETCH connection**, owned by the thread that drains events. A FETCH blocks on the server for up to
  2 s, so a drain with a shorter timeout leaves it *pending* and reads its reply on the next drain. Under an
  event loop (:meth:`Channel.poll_start` before each poll, :meth:`Channel.on_readable` when the socket is
  ready) the FETCH is sent on the loop's tick and its reply read without blocking, in pieces if need be. A pending
  FETCH is never abandoned: :meth:`Channel.close`, :meth:`Channel.basic_cancel` of the last consumer and
  :meth:`Channel.basic_get` read its reply first and give back any job it carries (the server reserved it
  before answering).
* the transport's pooled, thread-safe **command** :class:`~celery_faktory.client.Client` for PUSH, PUSHB,
  ACK, FAIL, INFO, QUEUE and MUTATE, so acknowledgements from other threads never wait for a FETCH. (An ACK of
  the consuming thread between two FETCHes goes on the FETCH connection instead, without waiting for its reply.)

A requeue (``reject(requeue=True)``, a restore at channel close) PUSHes a copy of the fetched job under a fresh
jid, marked as redelivered, and then ACKs the original, so the message is available again at once and the
original can never come back when its reservation runs out. The codec (:mod:`celery_faktory.transport.codec`)
owns the job layout; this module owns the I/O. It never imports the worker or the server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from queue import Empty
from typing import TYPE_CHECKING, Any

from kombu.exceptions import BatchPublishError
from kombu.transport import virtual

from celery_faktory.client import Client, Connection
from celery_faktory.client.connection import expect_ok, expect_text
from celery_faktory.config import ClientConfig
from celery_faktory.errors import FaktoryConnectionError, FaktoryTimeout, MalformedReply, ServerError
from celery_faktory.protocol import Reply, commands, loads
from celery_faktory.transport import codec
from celery_faktory.transport.options import OPTION_NAMES, TransportOptions

if TYPE_CHECKING:
    from celery_faktory.transport.transport import Transport

__all__ = ["Channel", "PublishBatch", "PublishBatchRejected", "RejectedMessage"]

log = logging.getLogger(__name__)

#: ``errtype`` of a FAIL for a message a consumer rejected without requeue.
REJECTED_ERRTYPE = "kombu.Rejected"
#: ``errtype`` of a FAIL for a foreign job while ``accept_foreign_jobs`` is off.
FOREIGN_ERRTYPE = "kombu.ForeignJobRefused"
#: ``errtype`` of a FAIL for a job whose kombu envelope cannot be read.
MALFORMED_ERRTYPE = "kombu.MalformedJob"


def new_jid() -> str:
    """A fresh job id: a random UUID4 as 32 hex characters."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """One message of a batch that the server refused.

    Attributes:
        jid: The job id it was pushed under.
        queue: The kombu queue it was published to.
        task_id: The Celery task id, or ``None`` for a plain kombu message.
        reason: The server's error text.
    """

    jid: str
    queue: str
    task_id: str | None
    reason: str


class PublishBatchRejected(BatchPublishError):
    """PUSHB accepted part of a batch and refused the rest; the accepted messages stay published.

    Attributes:
        rejected: The refused messages.
        accepted: How many messages of the flushed batch went in.
    """

    def __init__(self, rejected: Sequence[RejectedMessage], accepted: int) -> None:
        self.rejected = tuple(rejected)
        self.accepted = accepted
        shown = "; ".join(f"{item.task_id or item.jid} to {item.queue!r}: {item.reason}" for item in self.rejected[:5])
        more = f" (and {len(self.rejected) - 5} more)" if len(self.rejected) > 5 else ""
        super().__init__(
            f"Faktory refused {len(self.rejected)} of {len(self.rejected) + accepted} batched messages: {shown}{more}"
        )


#: What a FETCH brought back: the job (``None`` for ``$-1``) and its plan (Faktory queue to kombu queue).
_FetchResult = tuple[dict[str, Any] | None, dict[str, str]]


#: Most ACKs on the FETCH line whose replies are unread (a consumer that acks without fetching again).
_MOST_UNREAD_ACKS = 1000


class _FetchLine:
    """The channel's FETCH connection and the FETCH in flight on it, if any.

    The reply of a pending FETCH is read either by waiting for it (:meth:`poll`, for ``drain_events``) or, under
    an event loop, without ever blocking (:meth:`read_ready`, once the socket is readable). Between FETCHes the
    line also carries the ACKs of the thread that consumes (:meth:`send_ack`): their replies are read, without
    being waited for, before the next FETCH's.
    """

    def __init__(self, config: ClientConfig) -> None:
        self._config = config
        self._connection: Connection | None = None
        self._plan: dict[str, str] | None = None
        self._sent_at = 0.0
        #: The jids of the ACKs sent on this connection whose replies are not read yet, oldest first.
        self._unread_acks: deque[str] = deque()

    @property
    def pending(self) -> bool:
        """Whether a FETCH was sent and its reply not read yet."""
        return self._plan is not None

    @property
    def unread_acks(self) -> bool:
        """Whether replies of ACKs sent on the line are still to be read."""
        return bool(self._unread_acks)

    def can_ack(self) -> bool:
        """Whether an ACK may go on the line now.

        It must be open, with no FETCH waiting (replies come in order) and not too many ACK replies unread.
        """
        return (
            self._plan is None
            and self._connection is not None
            and not self._connection.broken
            and len(self._unread_acks) < _MOST_UNREAD_ACKS
        )

    def send_ack(self, jid: str) -> None:
        """Send ``ACK`` for ``jid`` without waiting for its reply (see :meth:`can_ack`).

        Raises:
            FaktoryConnectionError: It could not be sent (the connection is dropped).
        """
        connection = self._connection
        if connection is None or self._plan is not None:
            raise RuntimeError("an ACK goes on the FETCH line only while it is open and no FETCH waits")
        try:
            connection.send(commands.ack(jid))
        except BaseException:
            self._drop()
            raise
        self._unread_acks.append(jid)

    def _ack_reply(self, reply: Reply) -> bool:
        """Take ``reply`` as the oldest unread ACK's, if there is one; whether it was."""
        if not self._unread_acks:
            return False
        jid = self._unread_acks.popleft()
        try:
            expect_ok(reply)
        except (ServerError, MalformedReply) as exc:
            log.warning("ACK of Faktory job %s was refused (%s); the server redelivers it later", jid, exc)
        return True

    def read_acks(self) -> None:
        """Read the replies of sent ACKs that have arrived; never waits.

        Raises:
            FaktoryConnectionError: The connection broke (it is dropped).
        """
        connection = self._connection
        if connection is None:
            return
        try:
            while self._unread_acks:
                reply = connection.read_nowait()
                if reply is None:
                    return
                self._ack_reply(reply)
        except BaseException:
            self._drop()
            raise

    @property
    def connection(self) -> Connection | None:
        """The open FETCH connection, if any (a new one replaces a broken one at the next :meth:`send`)."""
        return self._connection

    def send(self, plan: Sequence[tuple[str, str]]) -> None:
        """Send ``FETCH`` over the plan's Faktory queues, in order."""
        if self._connection is None or self._connection.broken:
            self._drop()
            self._connection = Connection(self._config)
        try:
            self._connection.send(commands.fetch(*(queue for queue, _ in plan)))
        except BaseException:
            self._drop()
            raise
        self._plan = dict(plan)
        self._sent_at = time.monotonic()

    def poll(self, timeout: float | None) -> _FetchResult | None:
        """The pending FETCH's result, waiting up to ``timeout`` seconds (``None``: until it comes).

        Returns ``None`` when no reply arrived in time; the FETCH stays pending.

        Raises:
            FaktoryTimeout: The server has not answered within the read timeout.
            FaktoryConnectionError: The connection broke (it is dropped; the next FETCH opens a new one).
            ServerError: The server answered FETCH with an error.
        """
        connection, plan = self._connection, self._plan
        if connection is None or plan is None:
            raise RuntimeError("no FETCH is pending")
        limit = self._sent_at + self._config.read_timeout
        deadline = limit if timeout is None else min(limit, time.monotonic() + timeout)
        try:
            while True:
                while not connection.wait_readable(deadline - time.monotonic()):
                    now = time.monotonic()
                    if now >= limit:
                        self._raise_overdue()
                    if now >= deadline:
                        return None
                reply = connection.read_reply()
                if not self._ack_reply(reply):
                    break
        except BaseException:
            self._drop()
            raise
        return self._result(reply, plan)

    def read_ready(self) -> _FetchResult | None:
        """The pending FETCH's result if its whole reply has arrived, else ``None``; never waits.

        Raises:
            FaktoryConnectionError: The connection broke (it is dropped; the next FETCH opens a new one).
            ServerError: The server answered FETCH with an error.
        """
        connection, plan = self._connection, self._plan
        if connection is None or plan is None:
            raise RuntimeError("no FETCH is pending")
        try:
            while True:
                reply = connection.read_nowait()
                if reply is None:
                    return None
                if not self._ack_reply(reply):
                    break
        except BaseException:
            self._drop()
            raise
        return self._result(reply, plan)

    def check_overdue(self) -> None:
        """Drop the connection when a pending FETCH has waited longer than the read timeout.

        An event loop only learns of a half-open connection this way: its socket never becomes readable.

        Raises:
            FaktoryTimeout: The pending FETCH is overdue (the connection is dropped).
        """
        if self._plan is not None and time.monotonic() - self._sent_at > self._config.read_timeout:
            self._drop()
            self._raise_overdue()

    def _raise_overdue(self) -> None:
        raise FaktoryTimeout(f"{self._config.safe_url} did not answer FETCH within {self._config.read_timeout} s")

    def _result(self, reply: Reply, plan: dict[str, str]) -> _FetchResult:
        self._plan = None
        text = expect_text(reply)
        if not text:
            return None, plan
        try:
            job = loads(text)
        except ValueError as exc:
            self._drop()
            raise MalformedReply(f"FETCH answered with invalid JSON: {exc}") from exc
        if not isinstance(job, dict) or not isinstance(job.get("jid"), str):
            raise MalformedReply(f"FETCH answered with something that is not a job: {text[:200]!r}")
        return job, plan

    def discard_idle(self) -> None:
        """Close the connection when no reply is awaited (it became readable: the server closed it)."""
        if self._plan is None and not self._unread_acks:
            self._drop()

    def _drop(self) -> None:
        connection, self._connection, self._plan = self._connection, None, None
        self._unread_acks.clear()
        if connection is not None:
            connection.broken = True
            connection.close()

    def close(self) -> None:
        """Close the connection (say END when it is healthy); a pending FETCH must be settled before.

        ACKs already sent are processed by the server before it sees END.
        """
        connection, self._connection, self._plan = self._connection, None, None
        self._unread_acks.clear()
        if connection is not None:
            connection.close()


class PublishBatch:
    """Buffers the jobs of :meth:`kombu.Producer.batch` publications and sends them with PUSHB.

    Created by :meth:`Channel.create_publish_batch`. ``flush`` raises :class:`PublishBatchRejected` when the
    server refused some of the jobs (the others are published) and :class:`kombu.exceptions.BatchPublishError`
    when the outcome is unknown (the connection broke during PUSHB); after either the batch cannot be reused.
    """

    def __init__(self, channel: Channel, max_size: int) -> None:
        self.channel = channel
        self.max_size = max_size
        self._jobs: list[dict[str, Any]] = []
        self._collecting: list[dict[str, Any]] | None = None
        self._failed: BaseException | None = None
        self._aborted = False
        self._closed = False

    def publish(self, message: dict[str, Any], **kwargs: Any) -> Any:
        """Route one prepared message; its jobs are buffered, and flushed once ``max_size`` are waiting."""
        self._check_usable()
        collected: list[dict[str, Any]] = []
        self._collecting = collected
        try:
            result = self.channel.basic_publish(message, _publish_batch=self, **kwargs)
        finally:
            self._collecting = None
        if collected:
            if self._jobs and len(self._jobs) + len(collected) > self.max_size:
                self.flush()
            self._jobs.extend(collected)
            if len(self._jobs) >= self.max_size:
                self.flush()
        return result

    def add(self, job: dict[str, Any]) -> None:
        """Buffer one job of the message being routed (called by :meth:`Channel._put`)."""
        if self._collecting is None:
            raise RuntimeError("a job was added to a Faktory publish batch outside publish()")
        self._collecting.append(job)

    def flush(self) -> None:
        """PUSHB every buffered job (in chunks of at most 1000)."""
        self._check_usable()
        jobs, self._jobs = self._jobs, []
        if not jobs:
            return
        try:
            refused = self.channel.push_bulk(jobs)
        except BaseException as exc:
            self._failed = exc
            if isinstance(exc, Exception):
                raise BatchPublishError("Faktory publish batch failed; delivery is uncertain") from exc
            raise
        if refused:
            by_jid = {job["jid"]: job for job in jobs}
            rejected = [
                RejectedMessage(
                    jid=jid,
                    queue=str(by_jid.get(jid, {}).get("custom", {}).get("kq", "")),
                    task_id=by_jid.get(jid, {}).get("custom", {}).get("kombu", {}).get("headers", {}).get("id"),
                    reason=reason,
                )
                for jid, reason in refused.items()
            ]
            error = PublishBatchRejected(rejected, len(jobs) - len(rejected))
            self._failed = error
            raise error

    def discard(self) -> None:
        """Forget the jobs not flushed yet."""
        self._aborted = True
        self._jobs = []

    def close(self) -> None:
        """Release the batch; nothing is sent."""
        self._closed = True

    def _check_usable(self) -> None:
        if self._closed:
            raise RuntimeError("Faktory publish batch is closed")
        if self._aborted:
            raise RuntimeError("Faktory publish batch is aborted")
        if self._failed is not None:
            raise BatchPublishError("Faktory publish batch cannot be reused after a failure") from self._failed


#: kombu's virtual channel has no annotations; typed as ``Any`` so that strict mypy checks our side only.
_VirtualChannel: Any = virtual.Channel


class Channel(_VirtualChannel):  # type: ignore[misc]
    """A kombu virtual channel whose queues are Faktory queues (see the module docstring).

    Args:
        connection: The :class:`~celery_faktory.transport.Transport` this channel belongs to.
    """

    #: Faktory has no pub/sub: fanout exchanges (remote control, broadcast) are not supported in phase 1.
    supports_fanout = False
    #: Unacknowledged messages go back to Faktory at once when the channel closes.
    do_restore = True
    #: kombu copies these transport options onto the channel; the channel itself reads the parsed
    #: :class:`~celery_faktory.transport.options.TransportOptions` of its transport.
    from_transport_options = (*_VirtualChannel.from_transport_options, *OPTION_NAMES)

    def __init__(self, connection: Transport, **kwargs: Any) -> None:
        self._noack_queues: set[str] = set()
        self._inflight: dict[str, dict[str, Any]] = {}
        self._fetch_lock = threading.Lock()
        self._rotation = 0
        self._pid = os.getpid()
        super().__init__(connection, **kwargs)
        self.options: TransportOptions = connection.options
        self.client: Client = connection.command_client
        self._fetch_line = _FetchLine(connection.client_config)

    # -- helpers ---------------------------------------------------------------------------------------

    def _now(self) -> float:
        return self.options.clock.time_ns() / 1e9

    def _queue_sizes(self) -> dict[str, int]:
        return self.client.queue_sizes()

    def _requeue(self, job: Mapping[str, Any]) -> None:
        """PUSH a fresh, redelivered copy of a fetched job, then ACK the original."""
        self.client.push(codec.requeue_job(job, jid=new_jid()))
        self.client.ack(str(job["jid"]))

    def _fail(self, jid: str, errtype: str, message: str) -> None:
        try:
            self.client.fail(jid, message, errtype=errtype)
        except ServerError as exc:
            log.warning("FAIL of Faktory job %s was refused: %s", jid, exc)

    def _accept(
        self, job: dict[str, Any], plan: Mapping[str, str], *, no_ack: bool = False
    ) -> tuple[dict[str, Any], str] | None:
        """Turn a fetched job into a delivery ``(payload, kombu queue)``, or settle it and return ``None``.

        Expired messages are ACKed and dropped, foreign jobs FAILed while they are not accepted, damaged
        envelopes FAILed; jobs for ``no_ack`` consumers are ACKed right away, the others are tracked until
        they are acked, rejected or restored.
        """
        jid = str(job["jid"])
        custom = job.get("custom") if isinstance(job.get("custom"), dict) else {}
        queue = plan.get(str(job.get("queue"))) or (custom or {}).get("kq")
        if not isinstance(queue, str) or not queue:
            parsed = codec.parse_faktory_queue(str(job.get("queue")), self.options)
            if parsed is None:
                self._requeue(job)
                log.warning("Faktory job %s came from queue %r, which no consumer asked for", jid, job.get("queue"))
                return None
            queue = parsed[0]
        if codec.is_expired(job, self._now()):
            log.debug("dropping expired message %s from %r", jid, queue)
            self.client.ack(jid)
            return None
        if codec.is_foreign(job) and not self.options.accept_foreign_jobs:
            self._fail(
                jid,
                FOREIGN_ERRTYPE,
                f"job {job.get('jobtype')!r} was not pushed through kombu and accept_foreign_jobs is off",
            )
            return None
        try:
            payload = codec.decode_job(job, queue)
        except codec.MalformedJob as exc:
            self._fail(jid, MALFORMED_ERRTYPE, str(exc))
            return None
        if no_ack or queue in self._noack_queues:
            self.client.ack(jid)
        else:
            self._inflight[jid] = job
        return payload, queue

    def _settle(self, for_queue: str | None = None, *, no_ack: bool = False) -> dict[str, Any] | None:
        """Read the reply of a pending FETCH; give its job back, or return it when it is for ``for_queue``.

        The caller holds the fetch lock.
        """
        if not self._fetch_line.pending:
            return None
        result = self._fetch_line.poll(None)
        if result is None:
            return None
        job, plan = result
        if job is None:
            return None
        if for_queue is not None and plan.get(str(job.get("queue"))) == for_queue:
            accepted = self._accept(job, plan, no_ack=no_ack)
            return None if accepted is None else accepted[0]
        self._requeue(job)
        return None

    def _forked(self) -> bool:
        """Whether this is a child process: the deliveries (and the FETCH socket) belong to the parent."""
        return self._pid != os.getpid()

    def _settle_quietly(self) -> None:
        if self._forked():
            return
        with self._fetch_lock:
            try:
                self._settle()
            except (FaktoryConnectionError, ServerError, MalformedReply) as exc:
                log.warning(
                    "could not read the reply of a pending FETCH (%s); a job it reserved comes back when its "
                    "reservation runs out",
                    exc,
                )

    # -- storage hooks ---------------------------------------------------------------------------------

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        """Remember the queue as declared; Faktory itself creates a queue on its first PUSH."""
        self.connection.declared_queues.add(queue)

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        """PUSH the message to the Faktory queue of ``queue`` and its priority (or buffer it in a batch)."""
        batch = kwargs.pop("_publish_batch", None)
        encoded = codec.encode_message(message, queue, jid=new_jid(), now=self._now(), options=self.options)
        for warning in encoded.warnings:
            log.warning("%s", warning)
        if batch is not None:
            batch.add(encoded.job)
        else:
            self.client.push(encoded.job)

    def _get(self, queue: str, timeout: float | None = None, no_ack: bool = False) -> dict[str, Any]:
        """FETCH one message of ``queue`` (highest priority first); :class:`queue.Empty` when there is none.

        INFO is asked first, so an empty queue answers at once instead of after FETCH's 2 s block.
        """
        if self._fetch_lock.acquire(blocking=False):
            try:
                settled = self._settle(queue, no_ack=no_ack)
            finally:
                self._fetch_lock.release()
            if settled is not None:
                return settled
        plan = codec.fetch_plan([queue], self.options)
        sizes = self._queue_sizes()
        if not any(sizes.get(name) for name, _ in plan):
            raise Empty()
        line = commands.fetch(*(name for name, _ in plan))
        while True:
            text = expect_text(self.client.request(line))
            if not text:
                raise Empty()
            job = loads(text)
            accepted = self._accept(job, dict(plan), no_ack=no_ack)
            if accepted is not None:
                return accepted[0]

    def _get_many(self, queues: Sequence[str], timeout: float | None = None) -> None:
        """One FETCH over every active queue's priority sub-queues; deliver what it brings.

        Raises:
            queue.Empty: Nothing arrived within ``timeout`` (the FETCH may stay pending for the next call).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._fetch_lock:
                if not self._fetch_line.pending:
                    plan = codec.fetch_plan(queues, self.options, self._rotation)
                    self._rotation += 1
                    if not plan:
                        raise Empty()
                    self._fetch_line.send(plan)
                remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
                result = self._fetch_line.poll(remaining)
            if result is None:
                raise Empty()
            job, fetched_plan = result
            if job is None:
                raise Empty()
            if self._deliver_fetched(job, fetched_plan):
                return
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty()

    def _deliver_fetched(self, job: dict[str, Any], plan: Mapping[str, str]) -> bool:
        """Hand a job a FETCH of the consumers brought to its queue's callback; whether one was delivered."""
        accepted = self._accept(job, plan)
        if accepted is None:
            return False
        payload, queue = accepted
        if queue in self.connection._callbacks:
            self.connection._deliver(payload, queue)
            return True
        # Its consumer went away while the FETCH was in flight.
        self._inflight.pop(str(job["jid"]), None)
        self._requeue(job)
        return False

    # -- the event loop (Celery's asynloop): see Transport.register_with_event_loop ------------------------

    def poll_start(self) -> Connection | None:
        """Send a FETCH when none is pending, a consumer wants messages and QoS allows one more.

        Called by the event loop before each poll. Returns the FETCH connection whose socket the loop must
        watch (``None`` when there is none); its readiness is handled by :meth:`on_readable`.

        Raises:
            FaktoryConnectionError: The FETCH could not be sent, or a pending one is overdue.
        """
        if self.closed or self._forked() or not self._fetch_lock.acquire(blocking=False):
            return self._fetch_line.connection
        try:
            line = self._fetch_line
            if line.pending:
                line.check_overdue()
            elif self._active_queues and self.qos.can_consume():
                plan = codec.fetch_plan(self._active_queues, self.options, self._rotation)
                self._rotation += 1
                if plan:
                    line.send(plan)
            return line.connection
        finally:
            self._fetch_lock.release()

    def on_readable(self) -> None:
        """Read what arrived on the FETCH socket without blocking; deliver the job once its reply is whole.

        An empty reply (``$-1``) only lets the next :meth:`poll_start` send another FETCH. A readable socket
        with no FETCH pending was closed by the server and is dropped.

        Raises:
            FaktoryConnectionError: The FETCH connection broke.
        """
        if self.closed or not self._fetch_lock.acquire(blocking=False):
            return
        try:
            line = self._fetch_line
            if not line.pending:
                if line.unread_acks:
                    line.read_acks()
                else:
                    line.discard_idle()
                return
            result = line.read_ready()
        finally:
            self._fetch_lock.release()
        if result is not None and result[0] is not None:
            self._deliver_fetched(result[0], result[1])

    def _purge(self, queue: str) -> int:
        """Remove every waiting message of ``queue`` (all priorities); scheduled and retrying jobs stay."""
        names = codec.sub_queues(queue, self.options)
        sizes = self._queue_sizes()
        count = sum(sizes.get(name, 0) for name in names)
        self.client.queue_remove(*names)
        return count

    def _size(self, queue: str) -> int:
        """Messages waiting in ``queue`` over all priorities (scheduled and retrying jobs not counted)."""
        sizes = self._queue_sizes()
        return sum(sizes.get(name, 0) for name in codec.sub_queues(queue, self.options))

    def _delete(self, queue: str, *args: Any, **kwargs: Any) -> None:
        """QUEUE REMOVE every Faktory queue of ``queue``."""
        self.connection.declared_queues.discard(queue)
        self.client.queue_remove(*codec.sub_queues(queue, self.options))

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        """Whether ``queue`` was declared through this connection or the server lists one of its queues.

        INFO lists every queue the server has seen until QUEUE REMOVE (a purge) drops it, so a purged queue
        counts as existing only where it was declared.
        """
        if queue in self.connection.declared_queues:
            return True
        sizes = self._queue_sizes()
        return any(name in sizes for name in codec.sub_queues(queue, self.options))

    def queue_delete(self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any) -> None:
        """Delete ``queue``: its bindings in this process and its Faktory queues (bound or not)."""
        if if_empty and self._size(queue):
            return
        for exchange, routing_key, arguments in list(self.state.queue_bindings(queue)):
            self.queue_unbind(queue, exchange, routing_key, arguments)
        self.state.queue_bindings_delete(queue)
        self._delete(queue)

    # -- consuming -------------------------------------------------------------------------------------

    def basic_consume(self, queue: str, no_ack: bool, *args: Any, **kwargs: Any) -> Any:
        """Consume from ``queue``; with ``no_ack`` every job is ACKed as soon as it is fetched."""
        if no_ack:
            self._noack_queues.add(queue)
        return super().basic_consume(queue, no_ack, *args, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        """Stop a consumer; once none is left, a pending FETCH is settled (its job given back)."""
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._tag_to_queue.values():
            self._noack_queues.discard(queue)
        if not self._consumers and self._fetch_line.pending:
            self._settle_quietly()
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        """Fetch one message of ``queue`` at once, or ``None``."""
        try:
            payload = self._get(queue, no_ack=no_ack)
        except Empty:
            return None
        message = self.Message(payload, channel=self)
        if not no_ack:
            self.qos.append(message, message.delivery_tag)
        return message

    def basic_ack(self, delivery_tag: str, multiple: bool = False) -> None:
        """ACK the job; it is forgotten locally even when the ACK fails (Faktory then redelivers it later).

        Between two FETCHes the ACK goes on the FETCH connection without waiting for its reply (which is read
        before the next FETCH's); otherwise (a FETCH waits, another thread drains) on a command connection.
        """
        self._inflight.pop(delivery_tag, None)
        try:
            if not self._ack_on_fetch_line(delivery_tag):
                self.client.ack(delivery_tag)
        finally:
            super().basic_ack(delivery_tag, multiple=multiple)

    def _ack_on_fetch_line(self, jid: str) -> bool:
        if self._forked() or not self._fetch_lock.acquire(blocking=False):
            return False
        try:
            if not self._fetch_line.can_ack():
                return False
            try:
                self._fetch_line.send_ack(jid)
            except FaktoryConnectionError:
                return False  # the line is dropped; the command connection takes the ACK
            return True
        finally:
            self._fetch_lock.release()

    def basic_reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject a message.

        ``requeue=True`` makes it available again at once (a redelivered copy, then ACK of the original).
        Without requeue it is discarded (ACK), or, with ``reject_policy='dead'``, moved to the dead set
        (FAIL, then MUTATE kill); a foreign job is always FAILed, so it stays visible in Faktory.
        """
        job = self._inflight.pop(delivery_tag, None)
        try:
            if job is None:
                self._reject_untracked(delivery_tag, requeue)
            elif requeue:
                self._requeue(job)
            elif self.options.reject_policy == "dead" or codec.is_foreign(job):
                self._fail(
                    delivery_tag,
                    REJECTED_ERRTYPE,
                    "rejected without requeue by a kombu consumer (for Celery: an unknown task, an undecodable "
                    "message or Reject(requeue=False))",
                )
                if self.options.reject_policy == "dead":
                    self.client.retries.kill(jids=[delivery_tag])
            else:
                self.client.ack(delivery_tag)
        finally:
            self.qos.reject(delivery_tag, requeue=False)

    def _reject_untracked(self, delivery_tag: str, requeue: bool) -> None:
        if requeue:
            try:
                message = self.qos.get(delivery_tag)
            except KeyError:
                message = None
            if message is not None:
                super()._restore(message)
        self.client.ack(delivery_tag)

    def _restore(self, message: Any) -> None:
        """Give an unacknowledged message back to Faktory at once (a redelivered copy, then ACK)."""
        tag = message.delivery_tag
        if self._forked():
            return
        job = self._inflight.pop(tag, None)
        try:
            if job is not None:
                self._requeue(job)
            else:
                super()._restore(message)
                self.client.ack(tag)
        except FaktoryConnectionError as exc:
            log.warning(
                "could not give message %s back to Faktory (%s); the server redelivers it when its reservation "
                "runs out",
                tag,
                exc,
            )

    def close(self) -> None:
        """Close the channel: settle a pending FETCH, restore unacknowledged messages, close the FETCH socket."""
        if not self.closed and self._fetch_line.pending:
            self._settle_quietly()
        try:
            super().close()
        finally:
            with self._fetch_lock:
                self._fetch_line.close()

    # -- publishing ------------------------------------------------------------------------------------

    def create_publish_batch(self, max_size: int) -> PublishBatch:
        """A batch for :meth:`kombu.Producer.batch`, sent with PUSHB."""
        return PublishBatch(self, max_size)

    def push_bulk(self, jobs: Iterable[dict[str, Any]]) -> dict[str, str]:
        """PUSHB ``jobs`` (chunks of at most 1000); returns the refused jids with the server's reasons.

        A PUSHB is never repeated after a connection failure, since the server may have taken it already.
        """
        return self.client.push_bulk(jobs, retry=False)
