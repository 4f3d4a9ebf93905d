"""Celery end to end on ``faktory://`` with the Redis result backend and an embedded worker.

One worker (threads pool, so acknowledgements come from other threads than the consumer's) serves the whole
module under its own ``queue_name_prefix``. The tests cover a result round trip, retries, an ETA handed to
Faktory as ``at``, ``Reject(requeue=True)``, a chain, a group and a chord, and a job pushed by a non-Celery
Faktory client; and that the worker starts cleanly without remote control.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401  (registers celery.ping for start_worker)
import pytest
from celery import Celery, chain, chord, group
from celery.contrib.testing.worker import start_worker
from celery.exceptions import Reject, TaskRevokedError
from celery.result import AsyncResult

from celery_faktory.protocol import Simple, commands
from celery_faktory.server import FaktoryServer
from tests.faktory.brokers import broker_url, remove_prefixed
from tests.faktory.wire import connect
from tests.services import RedisService

pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning")  # Celery + redis-py 8

#: ETAs further ahead than this become ``at`` in this module (the default is 15 s).
ETA_THRESHOLD = 1.0
RESULT_TIMEOUT = 20.0


class Records(logging.Handler):
    """Keeps every WARNING or worse record logged while the worker runs."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def celery_prefix(faktory_url: str) -> Iterator[str]:
    value = f"ce-{uuid.uuid4().hex[:12]}."
    yield value
    remove_prefixed(faktory_url, value)


@pytest.fixture(scope="module")
def app(faktory_url: str, redis_server: RedisService, celery_prefix: str) -> Celery:
    os.environ.pop("TEST_BROKER", None)
    application = Celery("faktory_e2e", broker=broker_url(faktory_url), backend=redis_server.url, set_as_current=False)
    application.conf.update(
        broker_transport_options={"queue_name_prefix": celery_prefix, "eta_threshold": ETA_THRESHOLD},
        broker_connection_retry_on_startup=True,
        result_expires=600,
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
        task_default_queue="celery",
    )

    @application.task(name="e2e.add")
    def add(x: int, y: int) -> int:
        return x + y

    @application.task(name="e2e.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    @application.task(name="e2e.tsum")
    def tsum(values: list[int]) -> int:
        return sum(values)

    @application.task(name="e2e.flaky", bind=True, max_retries=3)
    def flaky(self: Any, failures: int) -> int:
        if self.request.retries < failures:
            raise self.retry(countdown=0.3)
        return int(self.request.retries)

    @application.task(name="e2e.reject_then_succeed", bind=True, acks_late=True)
    def reject_then_succeed(self: Any) -> str:
        if not self.request.delivery_info.get("redelivered"):
            raise Reject("try again", requeue=True)
        return "redelivered"

    @application.task(name="e2e.stamp")
    def stamp() -> float:
        return time.time()

    return application


@pytest.fixture(scope="module")
def worker(app: Celery) -> Iterator[Records]:
    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=True, shutdown_timeout=30):
            yield records
    finally:
        root.removeHandler(records)


def task(app: Celery, name: str) -> Any:
    return app.tasks[name]


def test_result_round_trip(app: Celery, worker: Records) -> None:
    assert task(app, "e2e.add").delay(2, 3).get(timeout=RESULT_TIMEOUT) == 5


def test_retries_with_countdown(app: Celery, worker: Records) -> None:
    assert task(app, "e2e.flaky").delay(2).get(timeout=RESULT_TIMEOUT) == 2


def test_eta_beyond_the_threshold_is_scheduled_by_faktory(
    app: Celery, worker: Records, request: pytest.FixtureRequest, remote: bool, celery_prefix: str
) -> None:
    countdown = ETA_THRESHOLD + 1.5
    sent = time.time()
    result = task(app, "e2e.stamp").apply_async(countdown=countdown)
    if not remote:
        server: FaktoryServer = request.getfixturevalue("faktory_server")
        scheduled = [job for job in server.jobs("scheduled") if job["queue"].startswith(celery_prefix)]
        assert [job["custom"]["kombu"]["headers"]["id"] for job in scheduled] == [result.id]
        assert scheduled[0]["at"].endswith("Z")
    ran_at = result.get(timeout=RESULT_TIMEOUT)
    assert ran_at >= sent + countdown - 0.05


def test_reject_with_requeue_redelivers(app: Celery, worker: Records) -> None:
    assert task(app, "e2e.reject_then_succeed").delay().get(timeout=RESULT_TIMEOUT) == "redelivered"


def test_an_expired_task_is_revoked_not_dropped(app: Celery, worker: Records) -> None:
    result = task(app, "e2e.add").apply_async((1, 1), expires=datetime.now(timezone.utc) - timedelta(seconds=1))
    with pytest.raises(TaskRevokedError):
        result.get(timeout=RESULT_TIMEOUT)
    assert result.state == "REVOKED"


def test_chain(app: Celery, worker: Records) -> None:
    add, mul = task(app, "e2e.add"), task(app, "e2e.mul")
    assert chain(add.s(1, 2), add.s(3), mul.s(2))().get(timeout=RESULT_TIMEOUT) == 12


def test_group(app: Celery, worker: Records) -> None:
    add = task(app, "e2e.add")
    assert group(add.s(number, 1) for number in range(4))().get(timeout=RESULT_TIMEOUT) == [1, 2, 3, 4]


def test_chord(app: Celery, worker: Records) -> None:
    add, tsum = task(app, "e2e.add"), task(app, "e2e.tsum")
    assert chord([add.s(number, number) for number in range(5)], tsum.s())().get(timeout=RESULT_TIMEOUT) == 20


def test_a_foreign_job_runs_as_a_celery_task(
    app: Celery, worker: Records, faktory_url: str, celery_prefix: str
) -> None:
    jid = uuid.uuid4().hex[:20]
    job = {"jid": jid, "jobtype": "e2e.add", "args": [20], "queue": f"{celery_prefix}celery", "retry": 1,
           "custom": {"kwargs": {"y": 22}}}  # fmt: skip
    with connect(faktory_url) as raw:
        assert raw.command(commands.push(job)) == Simple("OK")
    assert AsyncResult(jid, app=app).get(timeout=RESULT_TIMEOUT) == 42


def test_the_worker_runs_without_remote_control_and_without_errors(app: Celery, worker: Records) -> None:
    with app.connection_for_write() as conn:
        assert not conn.supports_exchange_type("fanout")
    started = time.monotonic()
    assert app.control.inspect(timeout=0.3).ping() is None
    assert time.monotonic() - started < 5
    assert task(app, "e2e.add").delay(1, 1).get(timeout=RESULT_TIMEOUT) == 2
    problems = [record for record in worker.records if record.levelno >= logging.WARNING]
    assert problems == [], [record.getMessage() for record in problems]
