"""Pipelined FETCHes: the adaptive window, and no job lost or shutdown delayed because FETCHes were in flight.

These run unchanged against a real Faktory (``FAKTORY_URL``): every count comes from the worker or from INFO.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import pytest

from celery_faktory import Client, Job
from celery_faktory.client.connection import Connection
from celery_faktory.server import FaktoryServer, Fault, ServerConfig
from celery_faktory.worker import JobContext, Registry
from celery_faktory.worker.fetch import WARM_UP, FetchPipeline
from celery_faktory.worker.handoff import HandOff
from celery_faktory.worker.queues import parse_queues
from tests.faktory.wire import unique, wait_until
from tests.faktory.worker.conftest import WorkerFactory
from tests.faktory.worker.support import queue_size


@pytest.fixture
def fetch_block(faktory_server_config: ServerConfig) -> float:
    """Seconds a FETCH on empty queues blocks: 2 s on Faktory, shortened on our server."""
    return 2.0 if os.environ.get("FAKTORY_URL") else faktory_server_config.fetch_timeout


def push_jobs(client: Client, queue: str, jobtype: str, count: int) -> list[str]:
    jobs = [Job(jobtype, [n], queue=queue) for n in range(count)]
    assert client.push_bulk(jobs) == {}
    return [job.jid for job in jobs]


def test_the_window_opens_after_a_run_of_jobs_and_closes_when_the_queue_runs_dry(
    client: Client, queue: str, faktory_url: str
) -> None:
    depth = 3
    jids = push_jobs(client, queue, "x", WARM_UP + 6)
    handoff = HandOff(64)
    pipeline = FetchPipeline(lambda: Connection(client.config), parse_queues([queue]), handoff, depth)
    fetched: list[str] = []
    windows: list[int] = []
    try:
        while len(fetched) < len(jids):
            pipeline.top_up(1.0)
            windows.append(pipeline.in_flight)
            payload = pipeline.receive()
            assert payload is not None
            fetched.append(payload["jid"])
        assert fetched == jids  # in queue order, one reply per FETCH
        assert windows[: WARM_UP - 1] == [1] * (WARM_UP - 1)  # a few jobs: one FETCH at a time
        assert max(windows) == depth  # a busy stretch: FETCHes pipelined
        while pipeline.in_flight:  # the FETCHes sent while the last jobs came in find the queue empty
            assert pipeline.receive() is None
        assert pipeline.window == 1
        assert handoff.pending == 0
        assert handoff.acquire(0, 64) == 64 - len(jids)  # empty FETCHes gave their slots back
    finally:
        pipeline.reset()
        for jid in fetched:
            client.ack(jid)


def test_quiet_runs_every_job_its_fetches_in_flight_bring(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    ran: list[str] = []
    lock = threading.Lock()

    @registry.register
    def step(n: int, *, job: JobContext) -> None:
        time.sleep(0.002)
        with lock:
            ran.append(job.jid)

    worker = make_worker(concurrency=8, fetchers=2, fetch_depth=4).start()
    jids = push_jobs(client, queue, "step", 400)
    wait_until(lambda: len(ran) >= 60)
    worker.quiet()
    wait_until(lambda: not worker.fetching)
    wait_until(lambda: worker.in_progress == 0 and worker.stats().acked == len(ran))
    left = queue_size(client, queue)
    assert left > 0  # quiet came in mid-stretch
    assert len(ran) + left == len(jids)  # each job ran once or is still waiting: none lost in flight
    assert len(set(ran)) == len(ran)
    assert worker.stats().failed == 0


def test_stop_fails_back_the_jobs_its_fetches_in_flight_bring(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    jobtype = unique("late")
    ran: list[str] = []

    def step(n: int, *, job: JobContext) -> None:
        time.sleep(0.002)
        ran.append(job.jid)

    registry.add(jobtype, step)
    worker = make_worker(concurrency=8, fetchers=2, fetch_depth=4, shutdown_timeout=5.0).start()
    jids = push_jobs(client, queue, jobtype, 400)
    try:
        wait_until(lambda: len(ran) >= 60)
        worker.stop()
        stats = worker.stats()
        left = queue_size(client, queue)
        assert left > 0
        assert stats.rejected == 0
        # Every fetched job was ACKed (it ran) or FAILed back (fetched while stopping); none waits for its
        # reservation to expire.
        assert stats.acked == len(ran)
        assert stats.acked + stats.failed + left == len(jids)
    finally:
        client.retries.discard(jobtype=jobtype)


def test_jobs_pushed_after_stop_reach_fetches_in_flight_and_are_failed_back(
    client: Client,
    queue: str,
    registry: Registry,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = threading.Event()
    registry.add("hold", lambda n: gate.wait(10))
    held = WARM_UP + 4
    worker = make_worker(concurrency=held + 4, fetchers=1, fetch_depth=4, shutdown_timeout=10.0).start()
    try:
        push_jobs(client, queue, "hold", held)
        wait_until(lambda: worker.in_progress == held)  # the window is open: 4 FETCHes block on the empty queue
        with caplog.at_level("WARNING", logger="celery_faktory.worker"):
            worker.stop(wait=False)
            late = push_jobs(client, queue, "hold", 3)
            gate.set()
            assert worker.join(timeout=20)
        stats = worker.stats()
        assert stats.rejected == 0
        assert stats.acked >= held
        # Each late job ran (taken before the hand-off closed), was FAILed back at once, or was never fetched.
        assert stats.acked + stats.failed + queue_size(client, queue) == held + len(late)
        if stats.failed:
            assert "fetched while stopping; FAILing it" in caplog.text
    finally:
        gate.set()
        client.retries.discard(jobtype="hold")


def test_stop_right_after_a_busy_stretch_waits_at_most_depth_fetch_blocks(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory, fetch_block: float
) -> None:
    registry.add("noop", lambda n: None)
    depth = 3
    worker = make_worker(concurrency=8, fetchers=1, fetch_depth=depth).start()
    push_jobs(client, queue, "noop", 200)
    wait_until(lambda: worker.stats().acked == 200)  # the queue just ran dry, with FETCHes in flight
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < depth * fetch_block + 1.5


def test_stop_of_an_idle_worker_waits_at_most_one_fetch_block(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory, fetch_block: float
) -> None:
    registry.add("noop", lambda n: None)
    worker = make_worker(concurrency=8, fetchers=2, fetch_depth=8).start()
    push_jobs(client, queue, "noop", 3)
    wait_until(lambda: worker.stats().acked == 3)  # a few jobs do not open the window
    started = time.monotonic()
    worker.stop()
    assert time.monotonic() - started < fetch_block + 1.5


@pytest.mark.faktory_server_only
def test_an_error_reply_to_a_fetch_in_flight_loses_no_job(
    faktory_server_factory: Callable[..., FaktoryServer],
    registry: Registry,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The error replaced a reply that carried a job: it stays reserved, expires (1 s) and is requeued."""
    server = faktory_server_factory()
    queue = unique("fetcherr")
    seen: set[str] = set()
    lock = threading.Lock()

    @registry.register
    def job(n: int, *, job: JobContext) -> None:
        with lock:
            seen.add(job.jid)

    worker = make_worker(url=server.url, queues=(queue,), concurrency=8, fetchers=1, fetch_depth=4).start()
    with Client(server.url) as client, caplog.at_level(logging.WARNING, logger="celery_faktory.worker"):
        jobs = [Job("job", [n], queue=queue, reserve_for=1) for n in range(300)]
        client.push_bulk(jobs[:100])
        wait_until(lambda: len(seen) >= 20)  # a busy stretch: FETCHes in flight
        server.inject_fault("FETCH", Fault(garbage=b"-ERR simulated FETCH failure\r\n"), times=2)
        client.push_bulk(jobs[100:])

        def settled() -> bool:
            if server.jobs("retries"):
                client.retries.requeue()
            return seen == {job.jid for job in jobs} and not server.jobs("working") and not server.jobs("retries")

        wait_until(settled, timeout=20)
    assert "simulated FETCH failure" in caplog.text
    assert not worker.stopped


@pytest.mark.faktory_server_only
def test_stop_reads_a_deep_window_to_its_end_even_past_the_read_timeout(
    faktory_server_factory: Callable[..., FaktoryServer],
    registry: Registry,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Six FETCHes of 1 s in flight outlast read_timeout + 1: the stop still reads them all and FAILs back the
    jobs they bring, instead of leaving those reserved until their reservations expire."""
    server = faktory_server_factory(config=ServerConfig.fast(fetch_timeout=1.0))
    queue = unique("deep")
    registry.add("noop", lambda n: None)
    worker = make_worker(url=server.url, queues=(queue,), concurrency=8, fetchers=1, fetch_depth=6, read_timeout=2.5)
    worker.start()
    with Client(server.url) as client, caplog.at_level(logging.WARNING, logger="celery_faktory.worker"):
        push_jobs(client, queue, "noop", 200)
        wait_until(lambda: worker.stats().acked == 200)  # the window is open and the queue just ran dry
        worker.stop(wait=False)
        time.sleep(4.0)  # past read_timeout + 1: FETCHes are still in flight
        late = push_jobs(client, queue, "noop", 2)
        assert worker.join(timeout=15)
    assert "still waiting for its FETCH" not in caplog.text
    assert not [job for job in server.jobs("working") if job["queue"] == queue]  # nothing left reserved
    failed_back = {job["jid"] for job in server.jobs("retries") if job["queue"] == queue}
    waiting = {job["jid"] for job in server.queue(queue)}
    assert failed_back | waiting == set(late)
