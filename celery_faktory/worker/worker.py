"""The Faktory worker process: :class:`Worker` wires fetchers, job threads, reporter and heartbeat together.

Threads and connections (each connection carries the worker's wid):

* ``faktory-fetch-N`` (``fetchers`` of them): one connection each, with up to ``fetch_depth`` FETCHes pipelined
  on it while the queues hold jobs (one blocking FETCH when they are empty), each sent only with a free slot of
  the hand-off (``concurrency`` slots, held by every job from FETCH until it finishes);
* ``faktory-job_N`` (``concurrency`` of them, :class:`~celery_faktory.worker.job_threads.JobThreads`): run jobs;
* ``faktory-asyncio``: the event loop that ``async def`` jobs run on, started on first use;
* ``faktory-report-N`` (``reporters`` of them): a connection each; ACK and FAIL, batched and pipelined;
* ``faktory-heartbeat``: its own connection; BEAT every ``beat_interval``;
* ``faktory-shutdown``: runs the stop sequence.

No socket ever carries a blocking FETCH together with ACK, FAIL or BEAT.

Stopping (``stop()``, ``TERM``/``INT``, or the server's ``terminate``): no more FETCHes; jobs fetched but not
started are FAILed at once; running jobs get ``shutdown_timeout`` seconds, then are cancelled (their
``cancelled`` event is set, asyncio tasks are cancelled) and FAILed with errtype ``WorkerShutdown``, so the
server retries them soon instead of when their reservations expire; the remaining ACK/FAILs are sent and every
connection ENDs. Every fetched job is ACKed, FAILed, or (only if the server cannot be reached) left to its
reservation's expiry.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from random import Random
from typing import Any

from celery_faktory.client.connection import Connection, expect_text
from celery_faktory.config import ClientConfig
from celery_faktory.protocol.encoding import loads
from celery_faktory.worker import signals
from celery_faktory.worker.context import JobContext, in_job
from celery_faktory.worker.events import LifecycleEvent, LifecycleEvents
from celery_faktory.worker.executor import JobExecutor, shutdown_report
from celery_faktory.worker.fetch import DEFAULT_FETCH_DEPTH, FetchLoop
from celery_faktory.worker.handoff import Entry, HandOff
from celery_faktory.worker.heartbeat import Heartbeat
from celery_faktory.worker.job_threads import JobThreads
from celery_faktory.worker.loop import EventLoopThread
from celery_faktory.worker.middleware import Middleware, MiddlewareChain
from celery_faktory.worker.options import (
    DEFAULT_BEAT_INTERVAL,
    DEFAULT_CONCURRENCY,
    DEFAULT_SHUTDOWN_TIMEOUT,
    WorkerOptions,
)
from celery_faktory.worker.queues import QueueSpec
from celery_faktory.worker.registry import Registry
from celery_faktory.worker.registry import registry as default_registry
from celery_faktory.worker.reporter import Report, Reporter

__all__ = ["NEVER_STARTED_MESSAGE", "Worker", "WorkerStats"]

log = logging.getLogger(__name__)

#: The FAIL message of a job fetched but not started when the worker stopped.
NEVER_STARTED_MESSAGE = "worker shutting down: job never started"
#: Seconds the stop sequence keeps trying to deliver the last ACK/FAILs to an unreachable server.
FLUSH_TIMEOUT = 5.0
#: Seconds a FETCH waits on the server for a job before answering nothing (Faktory's own, fixed).
FETCH_BLOCK = 2.0
#: Seconds between checks of the stop flag while :meth:`Worker.work` waits (so signals are handled promptly).
WAIT_SLICE = 0.5


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """Counters of a worker since it was built.

    Attributes:
        acked: ACKs the server accepted.
        failed: FAILs the server accepted.
        rejected: ACKs and FAILs the server answered with an error (logged).
        beats: BEATs the server accepted.
        in_progress: Jobs running now.
    """

    acked: int
    failed: int
    rejected: int
    beats: int
    in_progress: int


class Worker:
    """A Faktory worker: fetches jobs from ``queues`` and runs the functions registered for their jobtypes.

    Args:
        url: ``tcp://[:password@]host[:port]`` or ``tcp+tls://...``; default from ``FAKTORY_PROVIDER`` /
            ``FAKTORY_URL``, else ``tcp://localhost:7419``.
        wid: The worker id; a random one by default.
        concurrency: Jobs run at once (threads); default 20.
        shutdown_timeout: Seconds running jobs get after a stop before they are cancelled and FAILed; default 25.
        beat_interval: Seconds between heartbeats; default 15.
        queues: A sequence of names, fetched in strict order (``("critical", "default")``), or weights for
            a weighted random order per FETCH: ``{"critical": 3, "default": 1}`` or ``["critical,3",
            "default,1"]``. Default ``("default",)``.
        labels: Shown on the server's Busy page; default ``config.labels`` (``("python",)``).
        middleware: Middleware run around every job, outermost first (or a ready :class:`MiddlewareChain`).
        registry: Where job functions are looked up; default the module-level registry that
            :func:`~celery_faktory.worker.register` fills.
        fetchers: Fetcher threads (connections); default ``concurrency // 5`` between 1 and 4.
        fetch_depth: FETCHes each fetcher keeps in flight at most; default 4. A stop right after the queues ran
            dry waits for up to this many FETCH blocks (2 s each on Faktory); 1 never pipelines.
        reporters: Connections ACK and FAIL go out on; default 1, or 2 from a concurrency of 10 (the server
            answers one connection's commands one at a time).
        config: A ready :class:`ClientConfig`; ``url`` is then ignored and ``options`` change it.
        **options: Any :class:`ClientConfig` field (``password``, ``tls``, ``read_timeout`` ...).

    Raises:
        ConfigurationError: An option is out of range or the URL is not a Faktory URL.

    Attributes:
        options: The validated settings.
        config: Where the server is.
        middleware: The chain, editable while the worker runs.
        registry: The job functions.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        wid: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        beat_interval: float = DEFAULT_BEAT_INTERVAL,
        queues: QueueSpec = ("default",),
        labels: Sequence[str] | None = None,
        middleware: Iterable[Middleware] | MiddlewareChain = (),
        registry: Registry | None = None,
        fetchers: int | None = None,
        fetch_depth: int = DEFAULT_FETCH_DEPTH,
        reporters: int | None = None,
        config: ClientConfig | None = None,
        **options: Any,
    ) -> None:
        if config is None:
            self.config = ClientConfig.resolve(url, **options)
        else:
            self.config = config.with_options(**options) if options else config
        self.options = WorkerOptions.build(
            wid=wid,
            concurrency=concurrency,
            shutdown_timeout=shutdown_timeout,
            beat_interval=beat_interval,
            queues=queues,
            labels=self.config.labels if labels is None else labels,
            fetchers=fetchers,
            fetch_depth=fetch_depth,
            reporters=reporters,
        )
        self.middleware = middleware if isinstance(middleware, MiddlewareChain) else MiddlewareChain(middleware)
        self.registry = default_registry if registry is None else registry
        self._state = "running"
        self._lock = threading.RLock()
        self._started = False
        self._stopping = False
        self._stop_requested_at = math.inf
        self._deadline = math.inf
        self._finished = threading.Event()
        self._rng = Random()
        self._loop = EventLoopThread()
        self._executor = JobExecutor(self.registry, self.middleware, self._loop)
        self._handoff = HandOff(self.options.concurrency)
        self._reporter = Reporter(self._connect, connections=self.options.reporters)
        self._heartbeat = Heartbeat(
            self._connect,
            wid=self.options.wid,
            interval=self.options.beat_interval,
            state=lambda: self._state,
            on_quiet=self.quiet,
            on_terminate=self._terminated_by_server,
        )
        self._fetch_loop = FetchLoop(
            self._connect,
            self.options.queues,
            self._handoff,
            self._deliver,
            count=self.options.fetchers,
            depth=self.options.fetch_depth,
        )
        self._job_threads = JobThreads(self.options.concurrency, self._execute)
        self._inline: Connection | None = None
        self._shutdown_thread: threading.Thread | None = None
        self._events = LifecycleEvents()

    # -- state -----------------------------------------------------------------------------------------

    @property
    def wid(self) -> str:
        """The worker id."""
        return self.options.wid

    @property
    def state(self) -> str:
        """``running``, ``quiet`` (fetching stopped) or ``terminate`` (stopping or stopped)."""
        return self._state

    @property
    def in_progress(self) -> int:
        """Jobs running now."""
        return self._handoff.in_progress

    @property
    def fetching(self) -> bool:
        """Whether a fetcher thread is still running (False once quiet or stopped and its FETCHes returned)."""
        return self._fetch_loop.alive

    @property
    def stopped(self) -> bool:
        """Whether the stop sequence has finished."""
        return self._finished.is_set()

    def stats(self) -> WorkerStats:
        """The worker's counters now."""
        return WorkerStats(
            acked=self._reporter.acked,
            failed=self._reporter.failed,
            rejected=self._reporter.rejected,
            beats=self._heartbeat.beats,
            in_progress=self.in_progress,
        )

    def _connect(self) -> Connection:
        return Connection(self.config, wid=self.options.wid, labels=self.options.labels)

    # -- lifecycle events ------------------------------------------------------------------------------

    def on(self, event: LifecycleEvent, callback: Callable[[Worker], object]) -> Callable[[Worker], object]:
        """Call ``callback(worker)`` on a lifecycle event; returns ``callback``.

        The events are ``"startup"``, ``"quiet"``, ``"shutdown"`` and ``"stopped"``, each fired once (see
        :mod:`celery_faktory.worker.events`).

        Raises:
            ValueError: An unknown event name.
        """
        self._events.add(event, callback)
        return callback

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> Worker:
        """Connect, BEAT once, and start every thread; returns at once (the worker runs in the background).

        Raises:
            RuntimeError: The worker was started or stopped before (a worker runs once).
            FaktoryConnectionError: The server cannot be reached or refused the handshake.
        """
        with self._lock:
            if self._started or self._stopping:
                raise RuntimeError("a Worker runs once: build a new one")
            if self._inline is not None:
                raise RuntimeError("this Worker was used with run_one(); build a new one to start it")
            self._started = True
            try:
                self._heartbeat.start()
            except BaseException:
                self._stopping = True
                self._finished.set()
                raise
            self._reporter.start()
            self._job_threads.start()
            self._fetch_loop.start()
        plan = self.options.queues
        log.info(
            "worker %s started on %s: queues %s (%s), concurrency %d, %d fetchers, %d reporters",
            self.wid,
            self.config.safe_url,
            ", ".join(plan.queues),
            "weighted" if plan.weighted else "strict order",
            self.options.concurrency,
            self.options.fetchers,
            self.options.reporters,
        )
        self._events.fire("startup", self)
        return self

    def work(self) -> None:
        """Start and block until the worker has stopped.

        Called from the main thread, it handles ``TSTP`` (quiet), ``TERM`` and ``INT`` (stop; a second one
        stops without waiting for running jobs) and ``TTIN`` (log thread stacks) while it runs.
        """
        main = threading.current_thread() is threading.main_thread()
        restore = signals.install(self) if main else None  # before start(): no signal finds the defaults
        try:
            self.start()
            while not self._finished.wait(WAIT_SLICE):
                continue
        except BaseException:
            self.stop(wait=False)
            raise
        finally:
            if restore is not None:
                restore()

    def quiet(self) -> None:
        """Stop fetching; running jobs finish, heartbeats go on, and the server is told at once."""
        with self._lock:
            if self._state != "running":
                return
            self._state = "quiet"
        log.info("worker %s is quiet: fetching stops, %d jobs still running", self.wid, self.in_progress)
        self._fetch_loop.stop()
        self._heartbeat.wake()
        self._events.fire("quiet", self)

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the worker (see the module's description of the sequence).

        Args:
            wait: Block until the sequence has finished. Ignored when called from inside a job, which the
                sequence itself waits for.
            timeout: Seconds running jobs get; default ``shutdown_timeout``. A later call can only shorten it
                (``stop(timeout=0)``: give up on them now).
        """
        with self._lock:
            now = time.monotonic()
            limit = self.options.shutdown_timeout if timeout is None else max(0.0, timeout)
            self._stop_requested_at = min(self._stop_requested_at, now)
            self._deadline = min(self._deadline, now + limit)
            first = not self._stopping
            self._stopping = True
            if first and self._started:
                self._shutdown_thread = threading.Thread(target=self._shutdown, name="faktory-shutdown", daemon=True)
                self._shutdown_thread.start()
        self._handoff.wake()
        if first and not self._started:
            self._close_unstarted()
            self._finished.set()
        if wait and not in_job() and threading.current_thread() is not self._shutdown_thread:
            self._finished.wait()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has stopped, up to ``timeout`` s; True once it has."""
        return self._finished.wait(timeout)

    def _terminated_by_server(self) -> None:
        with self._lock:
            if self._stopping:
                return  # the echo of our own current_state, or a repeat: the server says it on every BEAT
        log.info("the server asked worker %s to terminate", self.wid)
        self.stop(wait=False)

    def _shutdown(self) -> None:
        with self._lock:  # wait for start() to finish
            self._state = "terminate"
        log.info("worker %s stopping: %d jobs running", self.wid, self.in_progress)
        self._heartbeat.wake()
        self._fetch_loop.stop()
        self._events.fire("shutdown", self)
        for entry in self._handoff.close():
            log.warning("job %s %s never started; FAILing it", entry.context.jobtype, entry.context.jid)
            self._reporter.put(shutdown_report(entry.context, NEVER_STARTED_MESSAGE))
        if not self._handoff.wait_idle(lambda: self._deadline):
            self._abandon_running()
        # Every FETCH in flight is read to its end: up to fetch_depth server blocks, the last within read_timeout.
        fetch_wait = self.config.read_timeout + FETCH_BLOCK * (self.options.fetch_depth - 1) + 1
        if not self._fetch_loop.join(fetch_wait):
            log.error("a fetcher is still waiting for its FETCH; its job will come back when its reservation expires")
        self._reporter.close(FLUSH_TIMEOUT)
        self._heartbeat.stop()
        self._job_threads.shutdown()
        self._loop.stop()
        self._events.fire("stopped", self)
        self._finished.set()
        log.info("worker %s stopped", self.wid)

    def _abandon_running(self) -> None:
        waited = self._deadline - self._stop_requested_at
        message = f"worker shutting down: job did not finish within {waited:g} s"
        frames = sys._current_frames()
        for entry in self._handoff.abandon_running():
            context = entry.context
            frame = frames.get(entry.thread_id) if entry.thread_id is not None else None
            log.warning(
                "job %s %s did not finish within %g s; cancelling and FAILing it", context.jobtype, context.jid, waited
            )
            self._reporter.put(shutdown_report(context, message, frame))
            context._cancel()

    def _close_unstarted(self) -> None:
        """Release what :meth:`run_one` opened on a worker that was never started."""
        connection, self._inline = self._inline, None
        if connection is not None:
            connection.close()
        self._reporter.close(FLUSH_TIMEOUT)
        self._loop.stop()

    # -- jobs ------------------------------------------------------------------------------------------

    def _deliver(self, payload: dict[str, Any]) -> None:
        """A fetcher got ``payload`` with a slot: hand it to a job thread (or FAIL it when stopping)."""
        try:
            context = JobContext.from_payload(payload)
        except ValueError as exc:
            log.error("%s; it stays reserved until its reservation expires", exc)
            self._handoff.release()
            return
        entry = self._handoff.admit(context)
        if entry is None:
            self._handoff.release()
            log.warning("job %s %s fetched while stopping; FAILing it", context.jobtype, context.jid)
            self._reporter.put(shutdown_report(context, NEVER_STARTED_MESSAGE))
            return
        self._job_threads.submit(entry)

    def _execute(self, entry: Entry) -> None:
        if not self._handoff.begin(entry):
            return
        report: Report | None = None
        try:
            report = self._executor.run(entry.context)
        finally:
            outcome = report

            def send() -> None:
                if outcome is not None:
                    self._reporter.put(outcome)

            self._handoff.finish(entry, send)

    def run_one(self, timeout: float = 5.0) -> str | None:
        """FETCH one job (for up to ``timeout`` s), run it in this thread, ACK or FAIL it, and return its jid.

        For tests and scripts, on a worker that was not started: no threads, no heartbeat; connection
        errors raise. At least one FETCH is made, which blocks up to the server's FETCH timeout (2 s on
        Faktory) when the queues are empty.

        Returns:
            The jid of the job run, or ``None`` when no job came.
        """
        with self._lock:
            if self._started or self._stopping:
                raise RuntimeError("run_one() needs a worker that was never started or stopped")
            deadline = time.monotonic() + timeout
            while True:
                if self._inline is None or self._inline.broken:
                    self._inline = self._connect()
                text = expect_text(self._inline.request(self.options.queues.fetch_line(self._rng)))
                if text:
                    break
                if time.monotonic() >= deadline:
                    return None
        context = JobContext.from_payload(loads(text))
        self._reporter.send([self._executor.run(context)])
        return context.jid

    def run_until_empty(self) -> int:
        """:meth:`run_one` until a FETCH finds the queues empty; returns how many jobs ran."""
        count = 0
        while self.run_one(timeout=0) is not None:
            count += 1
        return count

    # -- protocol --------------------------------------------------------------------------------------

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Worker {self.wid} {self._state} {self.config.safe_url} queues={list(self.options.queues.queues)}>"
