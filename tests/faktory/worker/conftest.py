"""Fixtures for the worker tests: a client, a fresh queue, a private registry and a worker factory.

Every live test talks to ``faktory_url``: the session's in-process server, or a real Faktory when
``FAKTORY_URL`` is set. Workers beat every 0.5 s (our test server reaps a worker after 5 s of silence) and
are stopped at teardown without waiting for their jobs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celery_faktory import Client
from celery_faktory.worker import Registry, Worker
from tests.faktory.wire import unique

WorkerFactory = Callable[..., Worker]


@pytest.fixture
def client(faktory_url: str) -> Iterator[Client]:
    with Client(faktory_url) as producer:
        yield producer


@pytest.fixture
def queue(client: Client) -> Iterator[str]:
    """A queue name no other test uses; removed (with whatever is left in it) afterwards."""
    name = unique("wq")
    yield name
    client.queue_remove(name)


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def make_worker(faktory_url: str, queue: str, registry: Registry) -> Iterator[WorkerFactory]:
    """``make_worker(**options)``: a Worker on ``queue`` with ``registry``, not started; stopped at teardown."""
    workers: list[Worker] = []

    def make(**options: Any) -> Worker:
        options.setdefault("queues", (queue,))
        options.setdefault("registry", registry)
        options.setdefault("beat_interval", 0.5)
        options.setdefault("shutdown_timeout", 2.0)
        options.setdefault("concurrency", 4)
        worker = Worker(options.pop("url", faktory_url), **options)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout=0)
