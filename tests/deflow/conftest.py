"""Fixtures of the DeFlow tests: a Celery app bound to DeFlow, in-thread workers and worker subprocesses.

Every test that runs workflows takes ``broker``, parametrized over the brokers under test: ``redis://`` and
``faktory://`` (the ``faktory_url`` server: our own, or a real Faktory when ``FAKTORY_URL`` is set, each test under
a queue name prefix of its own that is cleaned up afterwards). The backend and the DeFlow state always use the
test's Redis. Worker subprocesses get the broker through ``DEFLOW_BROKER_URL`` and ``DEFLOW_BROKER_OPTIONS``
(JSON transport options).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery._state import _set_task_join_will_block
from celery.contrib.testing.worker import start_worker

from celery_deflow import DeFlow
from tests.faktory.brokers import broker_url as faktory_broker_url
from tests.faktory.brokers import remove_prefixed
from tests.faktory.wire import unique

REPO = Path(__file__).resolve().parents[2]
BROKERS = ["redis", "faktory"]
#: Short timings so that recovery tests run fast.
LEASE_TIMEOUT = 1.0
CHECK_INTERVAL = 0.3
#: redis://: fast polling (quick shutdowns), and unacked messages of dead workers back within seconds.
REDIS_OPTIONS = {
    "polling_interval": 0.1,
    "visibility_timeout": 4,
    "unacked_restore_interval": 0.5,
    "unacked_restore_throttle": 1,
}


@dataclass(frozen=True)
class Broker:
    """A broker under test: its URL and the transport options of every app that uses it."""

    name: str
    url: str
    options: dict[str, Any]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, redis_url: str) -> Iterator[Broker]:
    """The broker under test (the backend and the DeFlow state always use ``redis_url``)."""
    if request.param == "redis":
        yield Broker("redis", redis_url, REDIS_OPTIONS)
        return
    faktory_url = str(request.getfixturevalue("faktory_url"))
    prefix = unique("df") + "."
    yield Broker("faktory", faktory_broker_url(faktory_url), {"queue_name_prefix": prefix, "polling_interval": 0.1})
    remove_prefixed(faktory_url, prefix)


def make_app(broker: Broker, redis_url: str) -> Celery:
    app = Celery("deflow-tests", broker=broker.url, backend=redis_url, set_as_current=False)
    app.conf.update(
        worker_prefetch_multiplier=1,
        broker_transport_options=broker.options,
        result_expires=600,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
    )
    return app


@dataclass
class Env:
    app: Celery
    deflow: DeFlow
    broker: Broker
    redis_url: str
    client: redis.Redis
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def broker_environ(self) -> dict[str, str]:
        """The environment variables that hand the broker to a subprocess."""
        return {"DEFLOW_BROKER_URL": self.broker.url, "DEFLOW_BROKER_OPTIONS": json.dumps(self.broker.options)}

    def redis_keys(self, pattern: str = "deflow:*") -> list[str]:
        return sorted(k.decode() for k in self.client.scan_iter(pattern))


@pytest.fixture
def register_options() -> dict[str, Any]:
    """Override in a test module to change DeFlow.register's options."""
    return {}


@pytest.fixture
def deflow_env(
    broker: Broker, redis_url: str, redis_client: redis.Redis, register_options: dict[str, Any]
) -> Iterator[Env]:
    app = make_app(broker, redis_url)
    options: dict[str, Any] = {
        "url": redis_url,
        "check_process_queue_interval": CHECK_INTERVAL,
        "lease_timeout": LEASE_TIMEOUT,
        "handler_modules": ["tests.deflow.handlers"],
        **register_options,
    }
    deflow = DeFlow.register(app, **options)
    try:
        yield Env(app, deflow, broker, redis_url, redis_client)
    finally:
        DeFlow.unregister()


@contextlib.contextmanager
def in_thread_worker(app: Celery, *, pool: str = "threads", concurrency: int = 4) -> Iterator[None]:
    """An embedded worker node ``w0@deflow``. One per process: kombu's event loop is a process-wide singleton,
    so several nodes are run as subprocesses (:func:`start_worker_process`)."""
    with start_worker(
        app,
        pool=pool,
        concurrency=concurrency,
        perform_ping_check=False,
        hostname="w0@deflow",
        loglevel="WARNING",
        shutdown_timeout=20,
    ):
        _set_task_join_will_block(True)  # DeFlow never waits on Celery results
        yield


@pytest.fixture
def worker(deflow_env: Env) -> Iterator[None]:
    with in_thread_worker(deflow_env.app):
        yield


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the whole node (its pool children too)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_worker_process(
    env: Env, name: str, *, pool: str = "solo", concurrency: int = 1, **extra_env: str
) -> WorkerProcess:
    log = Path(tempfile.mkstemp(prefix=f"deflow-worker-{name}-", suffix=".log")[1])
    environ = {
        **os.environ,
        **env.broker_environ,
        "DEFLOW_REDIS_URL": env.redis_url,
        "DEFLOW_LEASE_TIMEOUT": str(LEASE_TIMEOUT),
        "DEFLOW_CHECK_INTERVAL": str(CHECK_INTERVAL),
        "NAME": name,
        "PYTHONPATH": str(REPO),
        **extra_env,
    }
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.deflow.worker_app",
        "worker",
        "--pool",
        pool,
        "-c",
        str(concurrency),
        "-n",
        f"{name}@deflow",
        "--without-mingle",
        "--without-gossip",
        "--without-heartbeat",
        "-l",
        "INFO",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=environ, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return WorkerProcess(name, process, log)


def wait_ready(workers: list[WorkerProcess], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    for worker in workers:
        while "ready." not in worker.output():
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {worker.name} did not start:\n{worker.output()[-3000:]}")
            time.sleep(0.05)


def stop_worker_processes(workers: list[WorkerProcess]) -> None:
    """Stop worker subprocesses together: SIGTERM (warm shutdown), then SIGKILL after a grace period."""
    for worker in workers:
        if worker.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGKILL)  # stray pool children
        worker.log.unlink(missing_ok=True)


@pytest.fixture
def worker_processes(deflow_env: Env) -> Iterator[Callable[..., list[WorkerProcess]]]:
    """``worker_processes(count, pool=..., concurrency=..., **env)`` starts worker subprocesses, waits until ready."""
    started: list[WorkerProcess] = []

    def start(
        count: int, *, pool: str = "solo", concurrency: int = 1, prefix: str = "p", **env: str
    ) -> list[WorkerProcess]:
        new = [
            start_worker_process(deflow_env, f"{prefix}{i}", pool=pool, concurrency=concurrency, **env)
            for i in range(count)
        ]
        started.extend(new)
        wait_ready(new)
        return new

    try:
        yield start
    finally:
        stop_worker_processes(started)
