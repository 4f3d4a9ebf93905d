"""Helpers shared by the worker tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from celery_faktory import Client, Job


def push(client: Client, queue: str, jobtype: str, *args: Any, **fields: Any) -> str:
    """Push one job to ``queue``; returns its jid."""
    return client.push(Job(jobtype, args, queue=queue, **fields))


def queue_size(client: Client, queue: str) -> int:
    """The number of jobs waiting in ``queue`` (from INFO, so it works on a real Faktory too)."""
    return int(client.queue_sizes().get(queue, 0))


def holds(predicate: Callable[[], Any], duration: float, interval: float = 0.05) -> bool:
    """Whether ``predicate`` stays truthy for ``duration`` seconds (checked every ``interval``)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


def failure_of(jobs: list[dict[str, Any]], jid: str) -> dict[str, Any] | None:
    """The ``failure`` block of job ``jid`` among ``jobs`` (a server set), or ``None`` if it is not there."""
    for job in jobs:
        if job["jid"] == jid:
            failure: dict[str, Any] = job["failure"]
            return failure
    return None
