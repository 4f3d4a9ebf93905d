"""Quiet, terminate and stop: what happens to fetching, running jobs, and jobs fetched but not started."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from celery_faktory import Client
from celery_faktory.server import FaktoryServer
from celery_faktory.worker import JobContext, Registry, Worker, current_job
from celery_faktory.worker.worker import NEVER_STARTED_MESSAGE
from tests.faktory.wire import wait_until
from tests.faktory.worker.conftest import WorkerFactory
from tests.faktory.worker.support import failure_of, holds, push, queue_size


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Jobs registered by ``blocking`` wait on this; set at teardown so no thread is left waiting."""
    event = threading.Event()
    yield event
    event.set()


def blocking(registry: Registry, gate: threading.Event, name: str = "block") -> None:
    @registry.register(name)
    def job() -> None:
        gate.wait(30)


def in_queue(server: FaktoryServer, queue: str, name: str) -> list[str]:
    return [job["jid"] for job in server.jobs(name) if job["queue"] == queue]


def test_quiet_stops_fetching_but_keeps_running_jobs_and_beats(
    client: Client, queue: str, registry: Registry, gate: threading.Event, make_worker: WorkerFactory
) -> None:
    blocking(registry, gate)
    worker = make_worker(beat_interval=0.2).start()
    push(client, queue, "block")
    wait_until(lambda: worker.in_progress == 1)
    worker.quiet()
    assert worker.state == "quiet"
    wait_until(lambda: not worker.fetching)
    push(client, queue, "block")
    assert holds(lambda: queue_size(client, queue) == 1, 1.0)
    beats = worker.stats().beats
    wait_until(lambda: worker.stats().beats >= beats + 2)
    gate.set()
    wait_until(lambda: worker.stats().acked == 1)
    assert worker.in_progress == 0
    assert not worker.stopped


def test_quiet_from_the_server(
    client: Client,
    queue: str,
    registry: Registry,
    gate: threading.Event,
    faktory_server: FaktoryServer,
    make_worker: WorkerFactory,
) -> None:
    blocking(registry, gate)
    worker = make_worker(beat_interval=0.1).start()
    running = push(client, queue, "block")
    wait_until(lambda: worker.in_progress == 1)
    assert faktory_server.quiet(worker.wid)
    wait_until(lambda: worker.state == "quiet")
    wait_until(lambda: not worker.fetching)
    waiting = push(client, queue, "block")
    beats = worker.stats().beats
    assert holds(lambda: [job["jid"] for job in faktory_server.queue(queue)] == [waiting], 0.8)
    assert worker.stats().beats >= beats + 3  # still beating while quiet
    assert faktory_server.workers()[worker.wid]["state"] == "quiet"
    gate.set()
    wait_until(lambda: worker.stats().acked == 1)
    assert running not in in_queue(faktory_server, queue, "working")
    assert not worker.stopped


def test_self_initiated_quiet_reaches_the_server(faktory_server: FaktoryServer, make_worker: WorkerFactory) -> None:
    """faktory_worker_node's BEAT never carries current_state, so the server never learns of a local quiet."""
    worker = make_worker(beat_interval=5.0).start()
    assert faktory_server.workers()[worker.wid]["state"] == "running"
    worker.quiet()  # BEATs at once instead of after 5 s
    wait_until(lambda: faktory_server.workers()[worker.wid]["state"] == "quiet", timeout=3)


def test_terminate_from_the_server_stops_the_worker(faktory_server: FaktoryServer, make_worker: WorkerFactory) -> None:
    worker = make_worker(beat_interval=0.1).start()
    assert faktory_server.terminate(worker.wid)
    assert worker.join(timeout=5)
    assert worker.state == "terminate"
    assert worker.stopped
    wait_until(lambda: worker.wid not in faktory_server.workers())  # every connection ENDed


def test_stop_acks_a_job_that_finishes_and_fails_one_that_does_not(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    cancelled = threading.Event()

    @registry.register
    def quick() -> None:
        time.sleep(0.3)

    @registry.register
    def stuck(*, job: JobContext) -> None:
        if job.cancelled.wait(30):
            cancelled.set()

    worker = make_worker(shutdown_timeout=1.0).start()
    push(client, queue, "quick")
    push(client, queue, "stuck", retry=0)
    wait_until(lambda: worker.in_progress == 2)
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < 1.0 + 2.5  # the timeout, then at most one FETCH block on our server
    assert worker.stats().acked == 1
    assert worker.stats().failed == 1
    assert cancelled.wait(2)


def test_shutdown_fail_is_in_the_retry_set_at_once(
    client: Client, queue: str, registry: Registry, faktory_server: FaktoryServer, make_worker: WorkerFactory
) -> None:
    """pyfaktory never FAILs in-flight jobs at shutdown; they wait out their reservation (30 min by default)."""

    @registry.register
    def quick() -> None:
        time.sleep(0.2)

    @registry.register
    def stuck(*, job: JobContext) -> None:
        job.cancelled.wait(30)

    worker = make_worker(shutdown_timeout=0.5).start()
    finished = push(client, queue, "quick")
    abandoned = push(client, queue, "stuck")
    wait_until(lambda: worker.in_progress == 2)
    worker.stop()
    failure = failure_of(faktory_server.jobs("retries"), abandoned)
    assert failure is not None
    assert failure["errtype"] == "WorkerShutdown"
    assert failure["message"] == "worker shutting down: job did not finish within 0.5 s"
    assert any("in stuck" in line for line in failure["backtrace"])  # where the job was when given up on
    assert failure_of(faktory_server.jobs("retries"), finished) is None
    assert in_queue(faktory_server, queue, "working") == []
    assert worker.wid not in faktory_server.workers()


def test_async_job_is_cancelled_at_shutdown(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    events: list[str] = []

    @registry.register
    async def sleeper() -> None:
        assert current_job().jobtype == "sleeper"
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    worker = make_worker(shutdown_timeout=0.3).start()
    push(client, queue, "sleeper", retry=0)
    wait_until(lambda: worker.in_progress == 1)
    worker.stop()
    assert worker.stats().failed == 1
    wait_until(lambda: events == ["cancelled"], timeout=3)


def test_prefetched_jobs_never_exceed_the_concurrency(
    client: Client,
    queue: str,
    registry: Registry,
    gate: threading.Event,
    faktory_server: FaktoryServer,
    make_worker: WorkerFactory,
) -> None:
    blocking(registry, gate)
    worker = make_worker(concurrency=2, fetchers=2).start()
    for _ in range(6):
        push(client, queue, "block")
    wait_until(lambda: worker.in_progress == 2)
    assert holds(lambda: len(in_queue(faktory_server, queue, "working")) == 2, 1.0)
    assert len(faktory_server.queue(queue)) == 4
    gate.set()
    wait_until(lambda: worker.stats().acked == 6)


def test_jobs_fetched_during_shutdown_are_failed_never_lost(
    client: Client,
    queue: str,
    registry: Registry,
    gate: threading.Event,
    faktory_server: FaktoryServer,
    make_worker: WorkerFactory,
) -> None:
    blocking(registry, gate)
    worker = make_worker(concurrency=2, fetchers=1, shutdown_timeout=0.5).start()
    push(client, queue, "block")
    wait_until(lambda: worker.in_progress == 1)
    worker.stop(wait=False)  # the fetcher is in a blocking FETCH on an empty queue now
    late = push(client, queue, "block")
    assert worker.join(timeout=5)
    failure = failure_of(faktory_server.jobs("retries"), late)
    if failure is None:  # the FETCH had already returned empty: the job was never fetched
        assert [job["jid"] for job in faktory_server.queue(queue)] == [late]
    else:
        assert failure["errtype"] == "WorkerShutdown"
        assert failure["message"] == NEVER_STARTED_MESSAGE
    assert in_queue(faktory_server, queue, "working") == []


def test_stop_from_inside_a_job_does_not_deadlock(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    workers: list[Worker] = []

    @registry.register
    def shutdown() -> None:
        workers[0].stop()  # returns at once inside a job

    workers.append(make_worker(shutdown_timeout=5.0).start())
    push(client, queue, "shutdown")
    assert workers[0].join(timeout=5)
    assert workers[0].stats().acked == 1


def test_a_worker_runs_once(make_worker: WorkerFactory) -> None:
    worker = make_worker().start()
    with pytest.raises(RuntimeError, match="runs once"):
        worker.start()
    worker.stop()
    worker.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError, match="runs once"):
        worker.start()
    never_started = make_worker()
    never_started.stop()
    assert never_started.stopped
