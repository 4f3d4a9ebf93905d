"""A Celery app on ``faktory://`` for worker subprocesses of the crash tests (``celery -A <this module> worker``).

The worker process reads its settings from the environment:

``CRASH_BROKER_URL``
    The ``faktory://`` broker URL.
``CRASH_BACKEND_URL``
    The Redis result backend; the tasks keep their counters in the same database.
``CRASH_TRANSPORT_OPTIONS``
    JSON: ``broker_transport_options`` (``queue_name_prefix``, ``reserve_for`` ...).
``CRASH_CONF``
    JSON: more Celery settings (``worker_prefetch_multiplier``, ``task_default_queue`` ...).

The test process builds the same app with :func:`create_app` to publish and to read results. Every task
records what it did in Redis under a key the test chooses, so the test sees each start and each completion,
whichever process ran it.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

import celery_faktory  # noqa: F401  (registers the faktory:// transport alias)

__all__ = ["app", "create_app", "redis_client"]

_clients: dict[tuple[int, str], redis.Redis] = {}


def redis_client(url: str) -> redis.Redis:
    """A Redis client for ``url``, one per process (a forked pool child makes its own)."""
    key = (os.getpid(), url)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(url)
    return client


def create_app(
    broker_url: str,
    backend_url: str | None,
    transport_options: dict[str, Any] | None = None,
    conf: dict[str, Any] | None = None,
) -> Celery:
    """The crash-test app: its tasks and settings, for a worker or for a test that publishes."""
    application = Celery("faktory_crash", broker=broker_url, backend=backend_url, set_as_current=False)
    application.conf.update(
        broker_transport_options=dict(transport_options or {}),
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        result_expires=600,
        task_default_queue="crash",
        worker_prefetch_multiplier=1,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_redirect_stdouts=False,
    )
    application.conf.update(conf or {})

    def counters() -> redis.Redis:
        url = application.conf.result_backend
        if not url:
            raise RuntimeError("the crash-test tasks need a Redis result backend")
        return redis_client(str(url))

    @application.task(name="crash.slow", bind=True, acks_late=True, shared=False)
    def slow(self: Any, key: str, first_sleep: float, later_sleep: float = 0.0) -> int:
        """Count a start, note how it was delivered, then sleep long on the first start only."""
        store = counters()
        starts = int(store.incr(f"{key}:starts"))
        delivery = self.request.delivery_info or {}
        store.rpush(
            f"{key}:log",
            json.dumps({"start": starts, "pid": os.getpid(), "redelivered": bool(delivery.get("redelivered"))}),
        )
        time.sleep(first_sleep if starts == 1 else later_sleep)
        store.rpush(f"{key}:done", starts)
        return starts

    @application.task(name="crash.record", bind=True, shared=False)
    def record(self: Any, key: str, number: int, sleep: float = 0.0) -> int:
        """Note the start of ``number``, sleep, note its completion (with the delivery flag) and return it."""
        store = counters()
        store.rpush(f"{key}:started", number)
        time.sleep(sleep)
        delivery = self.request.delivery_info or {}
        store.rpush(f"{key}:done", json.dumps([number, bool(delivery.get("redelivered")), os.getpid()]))
        return number

    return application


def _from_environment() -> Celery:
    return create_app(
        os.environ.get("CRASH_BROKER_URL", "faktory://127.0.0.1:7419"),
        os.environ.get("CRASH_BACKEND_URL") or None,
        json.loads(os.environ.get("CRASH_TRANSPORT_OPTIONS") or "{}"),
        json.loads(os.environ.get("CRASH_CONF") or "{}"),
    )


#: The app ``celery -A`` finds.
app = _from_environment()
