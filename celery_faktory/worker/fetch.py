"""The fetcher threads: :class:`FetchLoop`, each thread with its own connection and FETCHes pipelined on it.

Each thread (``faktory-fetch-0`` ...) keeps up to ``depth`` FETCHes in flight on its connection, each sent only
with a free slot of the :class:`~celery_faktory.worker.handoff.HandOff`, so fetched jobs never outnumber the
job threads. The server answers a connection's commands one at a time and in order, so several FETCHes in flight
cost one round trip instead of one each while the queues hold jobs. The window is adaptive: one FETCH at a time
until :data:`WARM_UP` FETCHes in a row have brought a job, then ``depth``, and back to one with the first FETCH
that comes back empty, so an idle worker, or one that sees a few jobs now and then, keeps a single FETCH
blocking per connection.

Stopping (:meth:`FetchLoop.stop`) sends no more FETCHes but reads the reply of every FETCH already sent: a FETCH
is never cut off, because the server would reserve a job nobody reads. The jobs those replies bring are handed
over like any other (``deliver`` runs them while the worker is quiet and FAILs them back once it stops). A thread
therefore ends within one FETCH block (2 s on Faktory) after the stop, or ``depth`` blocks if its queues ran
dry in the last moments of a busy stretch; with jobs waiting its FETCHes return at once. The threads reconnect
with backoff when their connection fails.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from random import Random
from typing import Any

from celery_faktory.client.connection import Connection, expect_text
from celery_faktory.errors import FaktoryConnectionError, MalformedReply, ServerError
from celery_faktory.protocol.encoding import loads
from celery_faktory.worker.backoff import Backoff
from celery_faktory.worker.handoff import HandOff
from celery_faktory.worker.queues import QueuePlan

__all__ = ["DEFAULT_FETCH_DEPTH", "FetchLoop", "FetchPipeline"]

log = logging.getLogger(__name__)

#: FETCHes a fetcher keeps in flight on its connection at most, by default.
DEFAULT_FETCH_DEPTH = 4
#: FETCHes in a row that must bring a job before a fetcher pipelines (a busy stretch, not a few jobs).
WARM_UP = 8
#: Seconds a fetcher with no FETCH in flight waits for a free slot before checking whether it should stop.
SLOT_WAIT = 0.1


class FetchPipeline:
    """One fetcher's connection and the FETCHes in flight on it; every FETCH in flight holds a slot.

    Args:
        connect: Opens a new connection carrying the worker's wid.
        plan: The queues and their order.
        handoff: Where slots come from.
        depth: The most FETCHes in flight at once.

    Attributes:
        in_flight: FETCHes sent whose replies have not been read.
        window: FETCHes it may have in flight now: 1, or ``depth`` after :data:`WARM_UP` jobs in a row.
    """

    def __init__(self, connect: Callable[[], Connection], plan: QueuePlan, handoff: HandOff, depth: int) -> None:
        self._connect = connect
        self._plan = plan
        self._handoff = handoff
        self._depth = depth
        self._rng = Random()
        self._connection: Connection | None = None
        self.in_flight = 0
        self.window = 1
        self._streak = 0

    def top_up(self, slot_wait: float) -> None:
        """Send FETCHes (in one write) until ``window`` are in flight or no slot is free.

        With none in flight it waits up to ``slot_wait`` s for a first slot; otherwise it takes only free ones.

        Raises:
            FaktoryConnectionError: The connection could not be opened or written to (nothing is in flight then).
        """
        wanted = self.window - self.in_flight
        taken = self._handoff.acquire(slot_wait if self.in_flight == 0 else 0.0, wanted)
        if not taken:
            return
        try:
            if self._connection is None or self._connection.broken:
                self._connection = self._connect()
            self._connection.send(b"".join(self._plan.fetch_line(self._rng) for _ in range(taken)))
        except BaseException:
            self._handoff.release(taken)
            raise
        self.in_flight += taken

    def receive(self) -> dict[str, Any] | None:
        """Read the reply of the oldest FETCH in flight: the job's payload (which keeps its slot), or ``None``.

        Raises:
            FaktoryConnectionError, MalformedReply: The connection failed; call :meth:`reset`.
            ServerError: The server answered this FETCH with an error; the connection stays usable unless the
                error is one after which the server closes it (then the pipeline is reset).
        """
        connection = self._connection
        if connection is None or not self.in_flight:
            raise RuntimeError("receive() needs a FETCH in flight")
        reply = connection.read_reply()
        self.in_flight -= 1
        try:
            text = expect_text(reply)
        except BaseException:
            self._handoff.release()
            self._cool_down()
            if connection.broken:  # an error after which the server closes: the FETCHes behind it are gone
                self.reset()
            raise
        payload = _job_payload(text)
        if payload is None:
            self._handoff.release()
            if not text:
                self._cool_down()  # the queues ran dry: one blocking FETCH at a time again
            return None
        self._streak += 1
        if self._streak >= WARM_UP:
            self.window = self._depth
        return payload

    def _cool_down(self) -> None:
        self._streak = 0
        self.window = 1

    def reset(self) -> None:
        """Close the connection (after a failure, or at the end) and free the slots of the FETCHes in flight on it.

        A job the server had already reserved for one of those FETCHes comes back when its reservation expires.
        """
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self.in_flight:
            self._handoff.release(self.in_flight)
            self.in_flight = 0
        self._cool_down()


def _job_payload(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        payload = loads(text)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        log.error("FETCH returned a job that is not a JSON object; it stays reserved until it expires: %r", text)
        return None
    return payload


class FetchLoop:
    """``count`` fetcher threads feeding a :class:`HandOff`.

    Args:
        connect: Opens a new connection carrying the worker's wid.
        plan: The queues and their order.
        handoff: Where slots come from.
        deliver: Takes each fetched job's payload, with the slot it was fetched with.
        count: How many fetcher threads (and connections).
        depth: The most FETCHes each thread keeps in flight on its connection.
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        plan: QueuePlan,
        handoff: HandOff,
        deliver: Callable[[dict[str, Any]], None],
        *,
        count: int,
        depth: int = DEFAULT_FETCH_DEPTH,
        name_prefix: str = "faktory-fetch",
    ) -> None:
        self._connect = connect
        self._plan = plan
        self._handoff = handoff
        self._deliver = deliver
        self._depth = depth
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running = count
        self._threads = [
            threading.Thread(target=self._run, name=f"{name_prefix}-{index}", daemon=True) for index in range(count)
        ]

    @property
    def alive(self) -> bool:
        """Whether any fetcher thread is still running."""
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        """Start the fetcher threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """FETCH no more: each thread reads the replies of the FETCHes it has in flight and ends."""
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the threads to end; True when they all have."""
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        return not self.alive

    def _ending(self) -> bool:
        return self._stopping.is_set() or self._handoff.closed

    def _run(self) -> None:
        pipeline = FetchPipeline(self._connect, self._plan, self._handoff, self._depth)
        backoff = Backoff()
        try:
            while True:
                ending = self._ending()
                if ending and pipeline.in_flight == 0:
                    return
                try:
                    if not ending:
                        pipeline.top_up(SLOT_WAIT)
                    if pipeline.in_flight == 0:
                        continue
                    payload = pipeline.receive()
                    backoff.reset()
                except ServerError as exc:  # the connection stays usable: back off once nothing is in flight
                    delay = backoff.next_delay()
                    log.warning("FETCH failed (%s); %d FETCHes in flight", exc, pipeline.in_flight)
                    if pipeline.in_flight == 0:
                        self._stopping.wait(delay)
                    continue
                except (FaktoryConnectionError, MalformedReply) as exc:
                    pipeline.reset()
                    self._stopping.wait(self._retry_delay(backoff, exc))
                    continue
                if payload is not None:
                    self._deliver(payload)
        finally:
            pipeline.reset()
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                log.info("fetching stopped: all %d fetchers ended", len(self._threads))

    @staticmethod
    def _retry_delay(backoff: Backoff, exc: Exception) -> float:
        delay = backoff.next_delay()
        log.warning("FETCH failed (%s); retrying in %.1f s", exc, delay)
        return delay
