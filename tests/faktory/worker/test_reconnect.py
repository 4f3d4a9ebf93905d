"""Losing the connection, and error replies to ACK and FAIL: no job is lost, no error is ignored.

These run against private servers of our own, which can drop connections on purpose (``inject_fault``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest

from celery_faktory import Client, Job
from celery_faktory.server import FaktoryServer, Fault
from celery_faktory.worker import JobContext, Registry
from tests.faktory.wire import unique, wait_until
from tests.faktory.worker.conftest import WorkerFactory

pytestmark = pytest.mark.faktory_server_only

ServerFactory = Callable[..., FaktoryServer]


def test_dropped_fetch_and_ack_connections_lose_no_job(
    faktory_server_factory: ServerFactory,
    registry: Registry,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At least once: every job runs, and the queue, the working set and the retry set end empty.

    A FETCH reply lost in transit leaves its job reserved; the reservation (1 s here) expires into the retry
    set, and requeueing the retries brings it back.
    """
    server = faktory_server_factory()
    queue = unique("reconnect")
    seen: set[str] = set()
    lock = threading.Lock()

    @registry.register
    def job(n: int, *, job: JobContext) -> None:
        with lock:
            seen.add(job.jid)

    worker = make_worker(
        url=server.url, queues=(queue,), concurrency=8, fetchers=2, reporters=2, beat_interval=0.2
    ).start()
    with Client(server.url) as client:
        jobs = [Job("job", [n], queue=queue, reserve_for=1) for n in range(200)]
        jids = [job.jid for job in jobs]
        client.push_bulk(jobs[:100])
        wait_until(lambda: len(seen) >= 20)
        server.inject_fault("FETCH", Fault(drop_after=0), times=3)
        server.inject_fault("ACK", Fault(drop_after=0), times=3)
        client.push_bulk(jobs[100:])

        def settled() -> bool:
            if server.jobs("retries"):
                client.retries.requeue()
            return (
                seen == set(jids)
                and not server.queue(queue)
                and not server.jobs("working")
                and not server.jobs("retries")
            )

        with caplog.at_level(logging.WARNING, logger="celery_faktory.worker"):
            wait_until(settled, timeout=20)
    assert "FETCH failed" in caplog.text
    assert "ACK/FAIL connection failed" in caplog.text
    assert worker.stats().acked >= 200
    assert not worker.stopped


def test_worker_reconnects_after_the_server_restarts(
    faktory_server_factory: ServerFactory, registry: Registry, make_worker: WorkerFactory
) -> None:
    first = faktory_server_factory()
    port = first.port
    ran: list[int] = []
    registry.add("job", ran.append)
    queue = unique("restart")
    worker = make_worker(url=first.url, queues=(queue,), beat_interval=0.2).start()
    with Client(first.url) as client:
        client.push(Job("job", [1], queue=queue))
        wait_until(lambda: ran == [1])
    first.stop()
    time.sleep(0.3)  # let every connection notice the server is gone
    second = faktory_server_factory(port=port)
    with Client(second.url) as client:
        client.push(Job("job", [2], queue=queue))
        wait_until(lambda: ran == [1, 2], timeout=15)
    wait_until(lambda: worker.wid in second.workers())  # the heartbeat registered again
    wait_until(lambda: worker.stats().acked == 2)  # the ACK of job 2 may wait out a reconnection


def test_an_error_reply_to_ack_is_logged_and_counted(
    faktory_server_factory: ServerFactory,
    registry: Registry,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """cdrx's worker ignores the replies to ACK and FAIL entirely."""
    server = faktory_server_factory()
    queue = unique("ackerr")
    registry.add("job", lambda: None)
    worker = make_worker(url=server.url, queues=(queue,)).start()
    server.inject_fault("ACK", Fault(garbage=b"-ERR simulated ACK failure\r\n"))
    with caplog.at_level(logging.ERROR, logger="celery_faktory.worker.reporter"), Client(server.url) as client:
        jid = client.push(Job("job", [], queue=queue))
        wait_until(lambda: worker.stats().rejected == 1)
    assert f"ACK {jid} was rejected" in caplog.text
    assert "simulated ACK failure" in caplog.text
    with Client(server.url) as client:
        client.push(Job("job", [], queue=queue))
        wait_until(lambda: worker.stats().acked == 1)  # and it carries on


def test_fail_after_the_reservation_expired_is_logged_not_raised(
    faktory_server_factory: ServerFactory,
    registry: Registry,
    make_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = faktory_server_factory()
    queue = unique("expired")

    @registry.register
    def slow_failure() -> None:
        wait_until(lambda: not server.jobs("working"), timeout=10)  # the server expired our reservation
        raise RuntimeError("too late")

    registry.add("quick", lambda: None)
    worker = make_worker(url=server.url, queues=(queue,)).start()
    with caplog.at_level(logging.WARNING, logger="celery_faktory.worker.reporter"), Client(server.url) as client:
        jid = client.push(Job("slow_failure", [], queue=queue, reserve_for=1))
        wait_until(lambda: worker.stats().rejected == 1)
        client.push(Job("quick", [], queue=queue))
        wait_until(lambda: worker.stats().acked == 1)
    assert f"FAIL {jid}: the server no longer holds its reservation" in caplog.text
    failure = server.jobs("retries")[0]["failure"]
    assert failure["errtype"] == "ReservationExpired"
