"""Celery worker subprocesses on ``faktory://``: a SIGKILL mid-task, warm shutdowns, a Faktory restart, the event
loop with the prefork pool, and passwords kept out of the logs.

Each test starts real ``celery worker`` processes (the app is :mod:`tests.faktory.transport.celery_app_crash`)
against a private server of this package and keeps its counters and results in the session's Redis. The server's
:class:`~celery_faktory.clock.ManualClock` stands in for the minutes a real Faktory needs before it redelivers a
crashed job (the transport does not reserve a job for less than 60 s): the tests move it past the reservation and
the retry backoff instead of waiting.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from celery_faktory.clock import ManualClock
from celery_faktory.server import FaktoryServer, ServerConfig
from tests.faktory.brokers import broker_url
from tests.faktory.transport.celery_app_crash import create_app
from tests.faktory.wire import wait_until

pytestmark = [
    pytest.mark.faktory_server_only,
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),  # Celery + redis-py 8
]

ROOT = Path(__file__).resolve().parents[3]
APP_MODULE = "tests.faktory.transport.celery_app_crash"
#: The transport's shortest reservation (it refuses a smaller ``reserve_for``).
RESERVE_FOR = 60
#: Faktory's first retry comes back 15 + rand(0..29) seconds after the failure.
FIRST_RETRY_BACKOFF = 45
START_TIMEOUT = 30.0
RESULT_TIMEOUT = 20.0


class CeleryWorker:
    """``celery -A tests.faktory.transport.celery_app_crash worker ...`` in its own session, logging to a file.

    ``CRASH_LOGLEVEL=debug`` in the test's environment makes the workers log Celery's boot steps too.
    """

    def __init__(
        self, log: Path, env: dict[str, str], pool: str, concurrency: int, queues: list[str], loglevel: str | None
    ) -> None:
        self.log = log
        self.name = f"crash-{uuid.uuid4().hex[:8]}@%h"
        args = [
            sys.executable, "-m", "celery", "-A", APP_MODULE, "worker",
            "-P", pool, "-c", str(concurrency), "-Q", ",".join(queues), "-n", self.name,
            "-l", loglevel or os.environ.get("CRASH_LOGLEVEL", "info"),
            "--without-heartbeat", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        with log.open("wb") as output:
            self.popen = subprocess.Popen(
                args, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for Celery's ``<hostname> ready.`` line."""
        deadline = time.monotonic() + timeout
        while " ready." not in self.text():
            if self.popen.poll() is not None:
                raise AssertionError(f"the worker exited with {self.popen.returncode}\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker was not ready within {timeout} s\n{self.text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL the whole process group: the main process and every pool child, nothing cleaned up."""
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def warm_shutdown(self, timeout: float = 20.0) -> int:
        """SIGTERM to the main process (Celery's warm shutdown); its exit code."""
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit within {timeout} s of SIGTERM\n{self.text()}") from None

    def cleanup(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        else:
            # Pool children of a worker that exited on its own may still be winding down.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)


class Harness:
    """Starts workers and builds the publishing app for one broker, prefix and Redis database."""

    def __init__(self, tmp_path: Path, redis_url: str, prefix: str) -> None:
        self.tmp_path = tmp_path
        self.redis_url = redis_url
        self.prefix = prefix
        self.key = f"crash-{uuid.uuid4().hex[:12]}"
        self.workers: list[CeleryWorker] = []
        self.apps: list[Celery] = []

    def options(self) -> dict[str, Any]:
        return {"queue_name_prefix": self.prefix, "reserve_for": RESERVE_FOR}

    def app(self, server_url: str, conf: dict[str, Any] | None = None) -> Celery:
        application = create_app(broker_url(server_url), self.redis_url, self.options(), conf)
        self.apps.append(application)
        return application

    def worker(
        self,
        server_url: str,
        *,
        pool: str,
        concurrency: int = 1,
        queues: tuple[str, ...] = ("crash",),
        conf: dict[str, Any] | None = None,
        loglevel: str | None = None,
    ) -> CeleryWorker:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("CRASH_", "CELERY_"))}
        env.update(
            CRASH_BROKER_URL=broker_url(server_url),
            CRASH_BACKEND_URL=self.redis_url,
            CRASH_TRANSPORT_OPTIONS=json.dumps(self.options()),
            CRASH_CONF=json.dumps(conf or {}),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
            PYTHONUNBUFFERED="1",
        )
        log = self.tmp_path / f"worker-{len(self.workers)}.log"
        worker = CeleryWorker(log, env, pool, concurrency, list(queues), loglevel)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.cleanup()
        for application in self.apps:
            # Results kept alive by a failure's traceback are deleted at exit, after Redis stopped: their
            # AsyncResult.__del__ must find nothing to unsubscribe (or it retries the connection for seconds).
            consumer = getattr(application.backend, "result_consumer", None)
            if consumer is not None:
                consumer.stop()
                consumer.subscribed_to.clear()
            application.close()


@pytest.fixture
def harness(tmp_path: Path, redis_url: str) -> Iterator[Harness]:
    value = Harness(tmp_path, redis_url, f"kc-{uuid.uuid4().hex[:10]}.")
    try:
        yield value
    finally:
        value.close()


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


def ours(jobs: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [job for job in jobs if str(job.get("queue", "")).startswith(prefix)]


def task_ids(jobs: list[dict[str, Any]]) -> list[str]:
    return [job["custom"]["kombu"]["headers"]["id"] for job in jobs]


def tracebacks(text: str) -> int:
    return text.count("Traceback (most recent call last)")


# -- SIGKILL while an acks_late task runs ---------------------------------------------------------------------


@pytest.mark.parametrize("pool", ["prefork", "threads", "solo"])
def test_a_task_killed_mid_run_is_redelivered_after_its_reservation(
    pool: str,
    harness: Harness,
    redis_db: redis.Redis,
    faktory_server_factory: Callable[..., FaktoryServer],
) -> None:
    server = faktory_server_factory(config=ServerConfig.fast(), clock=ManualClock())
    queue = f"{harness.prefix}crash"
    app = harness.app(server.url)
    key = harness.key

    first = harness.worker(server.url, pool=pool)
    first.wait_ready()
    result = app.tasks["crash.slow"].apply_async((key, 60.0, 0.0))
    wait_until(lambda: redis_db.get(f"{key}:starts") == "1", timeout=RESULT_TIMEOUT)
    (reserved,) = ours(server.jobs("working"), harness.prefix)
    assert task_ids([reserved]) == [result.id]
    assert reserved["reserve_for"] == RESERVE_FOR

    first.kill()
    assert first.popen.returncode == -signal.SIGKILL
    # Nothing gave the job back: the server still holds it for the dead worker.
    assert [job["jid"] for job in ours(server.jobs("working"), harness.prefix)] == [reserved["jid"]]
    assert server.queue(queue) == []

    second = harness.worker(server.url, pool=pool)
    second.wait_ready()
    time.sleep(0.5)  # the new worker is polling; the job is still reserved, so it must not run yet
    assert redis_db.get(f"{key}:starts") == "1"
    assert result.state == "PENDING"

    server.advance(RESERVE_FOR + 1)  # the reservation runs out: the job fails into the retry set
    (retrying,) = ours(server.jobs("retries"), harness.prefix)
    assert retrying["jid"] == reserved["jid"]
    assert retrying["failure"]["errtype"] == "ReservationExpired"
    assert retrying["failure"]["retry_count"] == 0
    assert ours(server.jobs("working"), harness.prefix) == []

    server.advance(FIRST_RETRY_BACKOFF)  # past the retry backoff: back in its queue, and the new worker runs it
    assert result.get(timeout=RESULT_TIMEOUT) == 2
    assert result.state == "SUCCESS"
    assert redis_db.get(f"{key}:starts") == "2"
    log = [json.loads(entry) for entry in redis_db.lrange(f"{key}:log", 0, -1)]
    assert [entry["redelivered"] for entry in log] == [False, True]
    assert log[1]["pid"] != log[0]["pid"]
    assert redis_db.lrange(f"{key}:done", 0, -1) == ["2"]

    # Nothing lost, nothing left: no queued, reserved, retrying or dead job.
    wait_until(lambda: not ours(server.jobs("working"), harness.prefix), timeout=5)
    assert server.queue(queue) == []
    for set_name in ("retries", "dead", "scheduled"):
        assert ours(server.jobs(set_name), harness.prefix) == [], set_name
    assert second.popen.poll() is None
    assert tracebacks(second.text()) == 0, second.text()


# -- warm shutdown with prefetched tasks ----------------------------------------------------------------------


def test_a_warm_shutdown_gives_prefetched_tasks_back_at_once(
    harness: Harness, redis_db: redis.Redis, faktory_server_factory: Callable[..., FaktoryServer]
) -> None:
    # The server's clock never moves: a job can only come back through the transport's restore.
    server = faktory_server_factory(config=ServerConfig.fast(), clock=ManualClock())
    queue = f"{harness.prefix}crash"
    conf = {"worker_prefetch_multiplier": 4, "task_acks_late": False}
    app = harness.app(server.url, conf)
    key = harness.key
    record = app.tasks["crash.record"]

    # The thread pool (prefork's consumer would block on the pool's semaphore instead of prefetching).
    first = harness.worker(server.url, pool="threads", concurrency=1, conf=conf)
    first.wait_ready()
    # Until the consumer stops (after the pending FETCH returns) the pool keeps starting what it holds, so the
    # running task must outlast that for the others to stay unstarted.
    running = record.apply_async((key, 0, 6.0))
    wait_until(lambda: redis_db.lrange(f"{key}:started", 0, -1) == ["0"], timeout=RESULT_TIMEOUT)
    waiting = [record.apply_async((key, number)) for number in (1, 2, 3)]
    wait_until(lambda: first.text().count("] received") == 4, timeout=RESULT_TIMEOUT)  # all four prefetched
    # The three wait in the worker's memory: reserved on the server, neither started nor acknowledged.
    wait_until(lambda: len(ours(server.jobs("working"), harness.prefix)) == 3, timeout=RESULT_TIMEOUT)
    assert sorted(task_ids(ours(server.jobs("working"), harness.prefix))) == sorted(r.id for r in waiting)

    assert first.warm_shutdown() == 0, first.text()
    assert running.get(timeout=1) == 0  # the running task was allowed to finish
    # The pool dropped the three it had not started (cancel_futures); the channel's restore pushed them back at
    # once, marked redelivered, and acknowledged the originals: nothing is left reserved.
    assert redis_db.lrange(f"{key}:started", 0, -1) == ["0"]
    assert ours(server.jobs("working"), harness.prefix) == []
    restored = server.queue(queue)
    assert sorted(task_ids(restored)) == sorted(r.id for r in waiting)
    assert all(job["custom"].get("redelivered") is True for job in restored)
    assert tracebacks(first.text()) == 0, first.text()

    second = harness.worker(server.url, pool="threads", concurrency=2, conf=conf)
    second.wait_ready()
    assert [r.get(timeout=RESULT_TIMEOUT) for r in waiting] == [1, 2, 3]
    done = [json.loads(entry) for entry in redis_db.lrange(f"{key}:done", 0, -1)]
    assert sorted(number for number, _, _ in done) == [0, 1, 2, 3]  # each ran exactly once
    assert {number: redelivered for number, redelivered, _ in done} == {0: False, 1: True, 2: True, 3: True}
    wait_until(lambda: not ours(server.jobs("working"), harness.prefix), timeout=5)
    assert server.queue(queue) == []


# -- a Faktory restart under a running worker -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("pool", ["threads", "prefork"])
def test_the_worker_survives_a_faktory_restart(pool: str, harness: Harness, redis_db: redis.Redis) -> None:
    port = _free_port()
    config = ServerConfig.fast()
    servers: list[FaktoryServer] = []
    try:
        servers.append(FaktoryServer(port=port, config=config).start())
        url = servers[0].url
        app = harness.app(url)
        record = app.tasks["crash.record"]
        key = harness.key

        worker = harness.worker(url, pool=pool, concurrency=2)
        worker.wait_ready()
        before = [record.apply_async((key, number)) for number in range(3)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in before] == [0, 1, 2]
        for number in (100, 101):  # in flight when the server goes away, with all its memory
            record.apply_async((key, number, 0.5))

        servers[0].stop()
        time.sleep(1.0)  # the worker notices and retries against a closed port
        servers.append(FaktoryServer(port=port, config=config).start())
        assert servers[1].url == url

        after = [record.apply_async((key, number)) for number in range(10, 15)]
        assert [r.get(timeout=RESULT_TIMEOUT) for r in after] == list(range(10, 15))
        done = [json.loads(entry)[0] for entry in redis_db.lrange(f"{key}:done", 0, -1)]
        assert sorted(number for number in done if 10 <= number < 15) == list(range(10, 15))  # each ran once

        text = worker.text()
        assert "consumer: Connection to broker lost" in text, text
        assert text.count("Connected to faktory://") == 2, text
        settled = tracebacks(text)
        time.sleep(1.5)  # a reconnect loop would keep logging
        assert worker.popen.poll() is None, worker.text()
        assert tracebacks(worker.text()) == settled, worker.text()
        assert settled <= 4, worker.text()
        wait_until(lambda: not ours(servers[1].jobs("working"), harness.prefix), timeout=5)
        assert servers[1].queue(f"{harness.prefix}crash") == []
    finally:
        for server in servers:
            server.stop()


# -- the event loop -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "limit"), [("solo", 1.5), ("threads", 1.5), ("prefork", 3.0)])
def test_a_warm_shutdown_is_prompt(
    pool: str,
    limit: float,
    harness: Harness,
    redis_db: redis.Redis,
    faktory_server_factory: Callable[..., FaktoryServer],
) -> None:
    # Under the event loop the worker notices SIGTERM when the pending FETCH returns (0.5 s on this server, 2 s on
    # a real Faktory); the prefork pool then needs its own time to stop its children.
    server = faktory_server_factory(config=ServerConfig.fast())
    fetch_block = server.config.fetch_timeout
    app = harness.app(server.url)
    worker = harness.worker(server.url, pool=pool, concurrency=2, loglevel="debug")
    worker.wait_ready()
    assert "Starting Hub" in worker.text()  # Celery's asynloop, not its synloop
    assert app.tasks["crash.record"].apply_async((harness.key, 1)).get(timeout=RESULT_TIMEOUT) == 1
    time.sleep(1.0)  # idle: the consumer waits in an empty FETCH
    started = time.monotonic()
    assert worker.warm_shutdown() == 0, worker.text()
    took = time.monotonic() - started
    assert took < limit + fetch_block, f"{pool}: the worker took {took:.2f} s to exit after SIGTERM"
    assert tracebacks(worker.text()) == 0, worker.text()
    assert ours(server.jobs("working"), harness.prefix) == []


def test_prefork_under_the_event_loop_runs_everything_once(
    harness: Harness, redis_db: redis.Redis, faktory_server_factory: Callable[..., FaktoryServer]
) -> None:
    server = faktory_server_factory(config=ServerConfig.fast())
    conf = {"worker_prefetch_multiplier": 4}
    app = harness.app(server.url, conf)
    record = app.tasks["crash.record"]
    worker = harness.worker(server.url, pool="prefork", concurrency=2, conf=conf, loglevel="debug")
    worker.wait_ready()
    assert "Starting Hub" in worker.text()
    results = [record.apply_async((harness.key, number, 0.01)) for number in range(60)]
    assert [r.get(timeout=RESULT_TIMEOUT) for r in results] == list(range(60))
    done = [json.loads(entry) for entry in redis_db.lrange(f"{harness.key}:done", 0, -1)]
    assert sorted(number for number, _, _ in done) == list(range(60))  # each ran exactly once
    assert len({pid for _, _, pid in done}) == 2  # both children worked
    wait_until(lambda: not ours(server.jobs("working"), harness.prefix), timeout=5)  # all acknowledged
    assert server.queue(f"{harness.prefix}crash") == []
    assert worker.warm_shutdown() == 0, worker.text()
    assert tracebacks(worker.text()) == 0, worker.text()


def test_the_password_never_reaches_the_worker_log(
    harness: Harness, faktory_server_factory: Callable[..., FaktoryServer]
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    server = faktory_server_factory(config=ServerConfig.fast(), password=password)
    assert password in server.url
    app = harness.app(server.url)
    worker = harness.worker(server.url, pool="solo", loglevel="debug")
    worker.wait_ready()
    assert app.tasks["crash.record"].apply_async((harness.key, 7)).get(timeout=RESULT_TIMEOUT) == 7
    server.stop()  # connection errors and reconnect attempts get logged too
    wait_until(lambda: "Connection to broker lost" in worker.text(), timeout=10)
    time.sleep(1.0)
    assert worker.warm_shutdown() == 0, worker.text()
    text = worker.text()
    assert f"faktory://:**@127.0.0.1:{server.port}" in text  # the banner and "Connected to ..."
    assert password not in text
