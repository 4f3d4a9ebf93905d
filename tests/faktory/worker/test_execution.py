"""Running jobs: args, the job context, async functions, and every way a job can fail.

The worker must keep running after each failure; the failure records are read from our server's retry set.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from celery_faktory import Client
from celery_faktory.server import FaktoryServer
from celery_faktory.worker import JobContext, Registry, current_job
from tests.faktory.wire import wait_until
from tests.faktory.worker.conftest import WorkerFactory
from tests.faktory.worker.support import failure_of, push


def test_args_reach_the_function(client: Client, queue: str, registry: Registry, make_worker: WorkerFactory) -> None:
    seen: list[tuple[Any, ...]] = []

    @registry.register
    def job(*args: Any) -> None:
        seen.append(args)

    worker = make_worker().start()
    args = (1, -2.5, "zürich ✓", [1, [2]], {"k": {"n": None}}, True, None, 2**53)
    push(client, queue, "job", *args)
    wait_until(lambda: worker.stats().acked == 1)
    assert seen == [args]


def test_job_keyword_and_current_job_give_the_context(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    seen: list[tuple[Any, ...]] = []

    @registry.register("Context")
    def job(value: str, *, job: JobContext) -> None:
        seen.append(
            (
                job is current_job(),
                job.jid,
                job.jobtype,
                job.queue,
                job.args,
                job.custom,
                job.retry_count,
                job.payload["jid"],
                job.is_cancelled,
                threading.current_thread().name,
            )
        )

    worker = make_worker().start()
    jid = push(client, queue, "Context", "v", custom={"tenant": "acme"})
    wait_until(lambda: worker.stats().acked == 1)
    assert len(seen) == 1
    same, got_jid, jobtype, got_queue, args, custom, retry_count, payload_jid, cancelled, thread = seen[0]
    assert same
    assert got_jid == jid == payload_jid
    assert (jobtype, got_queue, args, custom) == ("Context", queue, ["v"], {"tenant": "acme"})
    assert retry_count is None
    assert not cancelled
    assert thread.startswith("faktory-job")


def test_async_functions_are_awaited_on_the_worker_loop(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    seen: list[tuple[Any, ...]] = []

    @registry.register
    async def fetch_page(url: str, *, job: JobContext) -> None:
        await asyncio.sleep(0.01)
        seen.append((url, current_job() is job, threading.current_thread().name))

    @registry.register
    async def plain(n: int) -> None:
        await asyncio.sleep(0)
        seen.append((n, current_job().jobtype, threading.current_thread().name))

    worker = make_worker().start()
    push(client, queue, "fetch_page", "https://example.com")
    push(client, queue, "plain", 7)
    wait_until(lambda: worker.stats().acked == 2)
    assert sorted(seen, key=str) == sorted(
        [("https://example.com", True, "faktory-asyncio"), (7, "plain", "faktory-asyncio")], key=str
    )


def test_unknown_jobtype_is_failed_and_the_worker_keeps_processing(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    """pyfaktory shuts the whole worker down on an unknown jobtype, leaving the job reserved."""
    ran: list[int] = []
    registry.add("known", ran.append)
    worker = make_worker(concurrency=1, fetchers=1).start()
    push(client, queue, "unknown-type", retry=0)
    push(client, queue, "known", 1)
    push(client, queue, "unknown-type", retry=0)
    push(client, queue, "known", 2)
    wait_until(lambda: worker.stats().acked == 2 and worker.stats().failed == 2)
    assert ran == [1, 2]
    assert not worker.stopped


def test_unknown_jobtype_failure_names_the_jobtype(
    client: Client, queue: str, faktory_server: FaktoryServer, make_worker: WorkerFactory
) -> None:
    worker = make_worker().start()
    jid = push(client, queue, "NoSuchJob")
    failure = wait_until(lambda: failure_of(faktory_server.jobs("retries"), jid))
    assert failure["errtype"] == "UnknownJobType"
    assert "NoSuchJob" in failure["message"]
    assert worker.stats().failed == 1


def test_raising_job_is_failed_with_class_message_and_backtrace(
    client: Client, queue: str, registry: Registry, faktory_server: FaktoryServer, make_worker: WorkerFactory
) -> None:
    def level_three() -> None:
        raise ValueError("card declined: 4242")

    def level_two() -> None:
        level_three()

    @registry.register
    def charge() -> None:
        level_two()

    worker = make_worker().start()
    short = push(client, queue, "charge", backtrace=2)
    full = push(client, queue, "charge")
    wait_until(lambda: worker.stats().failed == 2)
    retries = faktory_server.jobs("retries")
    for jid in (short, full):
        failure = failure_of(retries, jid)
        assert failure is not None
        assert failure["errtype"] == "ValueError"
        assert failure["message"] == "card declined: 4242"
    short_trace = failure_of(retries, short)["backtrace"]  # type: ignore[index]
    full_trace = failure_of(retries, full)["backtrace"]  # type: ignore[index]
    assert len(short_trace) == 2
    assert "in level_three" in short_trace[0]
    assert "raise ValueError" in short_trace[0]
    assert "in level_two" in short_trace[1]
    assert [line.split(" in ")[1].split(":")[0] for line in full_trace] == ["level_three", "level_two", "charge"]
    assert not any("celery_faktory/worker" in line for line in full_trace)


def test_wrong_arity_is_failed(
    client: Client, queue: str, registry: Registry, faktory_server: FaktoryServer, make_worker: WorkerFactory
) -> None:
    registry.add("pair", lambda a, b: None)
    worker = make_worker().start()
    too_few = push(client, queue, "pair", 1)
    too_many = push(client, queue, "pair", 1, 2, 3)
    wait_until(lambda: worker.stats().failed == 2)
    retries = faktory_server.jobs("retries")
    for jid in (too_few, too_many):
        failure = failure_of(retries, jid)
        assert failure is not None
        assert failure["errtype"] == "TypeError"
        assert "job pair(a, b) cannot take args" in failure["message"]


def test_retry_count_comes_from_the_failure_block(
    client: Client, queue: str, registry: Registry, faktory_server: FaktoryServer, make_worker: WorkerFactory
) -> None:
    counts: list[int | None] = []

    @registry.register
    def flaky(*, job: JobContext) -> None:
        counts.append(job.retry_count)
        raise RuntimeError("again")

    worker = make_worker().start()
    jid = push(client, queue, "flaky")
    wait_until(lambda: failure_of(faktory_server.jobs("retries"), jid))
    client.retries.requeue(jids=[jid])
    wait_until(lambda: len(counts) == 2 and worker.stats().failed == 2)
    assert counts == [None, 0]


def test_run_one_and_run_until_empty(
    client: Client, queue: str, registry: Registry, make_worker: WorkerFactory
) -> None:
    seen: list[int] = []

    @registry.register
    async def record(n: int) -> None:
        seen.append(n)

    worker = make_worker()
    jids = [push(client, queue, "record", n) for n in range(3)]
    assert worker.run_one() == jids[0]
    assert worker.run_until_empty() == 2
    assert worker.run_one(timeout=0) is None
    assert seen == [0, 1, 2]
    assert worker.stats().acked == 3
    with pytest.raises(RuntimeError, match="run_one"):
        worker.start()
    worker.stop()
    assert worker.stopped
