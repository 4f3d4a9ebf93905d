"""Helpers for tests that use a Faktory server as a Celery/kombu broker (the transport's and DeFlow's tests)."""

from __future__ import annotations

from urllib.parse import urlsplit

from celery_faktory.client import Client


def broker_url(faktory_url: str) -> str:
    """The ``faktory://`` form of a ``tcp://`` Faktory URL (password kept)."""
    parts = urlsplit(faktory_url)
    if parts.scheme != "tcp":
        raise ValueError(f"expected a tcp:// URL, got {faktory_url!r}")
    return "faktory://" + faktory_url.split("://", 1)[1]


def remove_prefixed(url: str, prefix: str) -> None:
    """Remove every queue named ``prefix...`` and every set entry pushed to such a queue."""
    with Client(url) as client:
        queues = [name for name in client.queue_sizes() if name.startswith(prefix)]
        if queues:
            client.queue_remove(*queues)
        pattern = f'*"queue":"{prefix}*'
        for target in (client.scheduled, client.retries, client.dead):
            target.discard(regexp=pattern)
