"""The Celery app of bench/celery_throughput.py: ``celery -A bench.celery_bench_app worker ...``.

The worker reads ``BENCH_BROKER_URL``, ``BENCH_COUNTER_URL`` (a Redis for the counters),
``BENCH_TRANSPORT_OPTIONS`` and ``BENCH_CONF`` (JSON) from the environment; the benchmark builds the same app
with :func:`create_app` to publish. There is no result backend: the one task, ``bench.noop``, notes the start
time of the first task to finish and counts completions in Redis, and the task that completes the count notes
the end time.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis
from celery import Celery

import celery_faktory  # noqa: F401  (registers the faktory:// transport alias)

__all__ = ["app", "create_app"]

_counters: dict[int, redis.Redis] = {}


def create_app(
    broker_url: str,
    counter_url: str,
    transport_options: dict[str, Any] | None = None,
    conf: dict[str, Any] | None = None,
) -> Celery:
    """The benchmark app on ``broker_url``, counting in the Redis at ``counter_url``."""
    application = Celery("celery_bench", broker=broker_url, set_as_current=False)
    application.conf.update(
        broker_transport_options=dict(transport_options or {}),
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_acks_late=False,
        worker_prefetch_multiplier=4,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts=False,
    )
    application.conf.update(conf or {})

    def counter() -> redis.Redis:
        client = _counters.get(os.getpid())
        if client is None:
            client = _counters[os.getpid()] = redis.Redis.from_url(counter_url)
        return client

    @application.task(name="bench.noop", ignore_result=True, shared=False)
    def noop(key: str, total: int) -> None:
        started = time.time()
        pipe = counter().pipeline(transaction=False)
        pipe.set(f"{key}:first", repr(started), nx=True)
        pipe.incr(f"{key}:done")
        _, done = pipe.execute()
        if int(done) == total:
            counter().set(f"{key}:last", repr(time.time()))

    return application


def _from_environment() -> Celery:
    return create_app(
        os.environ.get("BENCH_BROKER_URL", "faktory://127.0.0.1:7419"),
        os.environ.get("BENCH_COUNTER_URL", "redis://127.0.0.1:6379/0"),
        json.loads(os.environ.get("BENCH_TRANSPORT_OPTIONS") or "{}"),
        json.loads(os.environ.get("BENCH_CONF") or "{}"),
    )


#: The app ``celery -A`` finds.
app = _from_environment()
