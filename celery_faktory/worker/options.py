"""The worker's settings, validated once: :class:`WorkerOptions` and the defaults (``DEFAULT_*``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from celery_faktory.errors import ConfigurationError
from celery_faktory.worker.fetch import DEFAULT_FETCH_DEPTH
from celery_faktory.worker.queues import QueuePlan, QueueSpec, parse_queues

__all__ = [
    "DEFAULT_BEAT_INTERVAL",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "WorkerOptions",
    "default_fetchers",
    "default_reporters",
    "new_wid",
]

#: Jobs run at once (threads in the executor), as in faktory_worker_go and faktory_worker_node.
DEFAULT_CONCURRENCY = 20
#: Seconds running jobs get to finish once the worker stops (Heroku sends KILL 30 s after TERM).
DEFAULT_SHUTDOWN_TIMEOUT = 25.0
#: Seconds between heartbeats (the server reaps a worker after 60 s without one).
DEFAULT_BEAT_INTERVAL = 15.0
#: The most fetcher threads :func:`default_fetchers` picks.
MAX_DEFAULT_FETCHERS = 4
#: The concurrency from which :func:`default_reporters` gives ACK and FAIL a second connection.
SECOND_REPORTER_AT = 10


def default_fetchers(concurrency: int) -> int:
    """Fetcher threads for a concurrency: one per 5 slots, at least 1 and at most 4."""
    return min(MAX_DEFAULT_FETCHERS, max(1, concurrency // 5))


def default_reporters(concurrency: int) -> int:
    """ACK/FAIL connections for a concurrency: 1, or 2 from :data:`SECOND_REPORTER_AT` on."""
    return 2 if concurrency >= SECOND_REPORTER_AT else 1


def new_wid() -> str:
    """A random worker id: 16 lowercase hex characters."""
    return os.urandom(8).hex()


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a :class:`~celery_faktory.worker.Worker` runs.

    Attributes:
        wid: The worker id sent in every HELLO and BEAT.
        concurrency: Jobs run at once; also the most jobs fetched and unfinished at once.
        shutdown_timeout: Seconds running jobs get to finish after a stop, before they are cancelled and FAILed.
        beat_interval: Seconds between BEATs.
        queues: The queues and their FETCH order.
        labels: Shown on the server's Busy page.
        fetchers: Fetcher threads, each with its own connection.
        fetch_depth: FETCHes each fetcher keeps in flight on its connection at most (pipelined).
        reporters: Connections (each with its thread) that ACK and FAIL go out on.
    """

    wid: str
    concurrency: int
    shutdown_timeout: float
    beat_interval: float
    queues: QueuePlan
    labels: tuple[str, ...]
    fetchers: int
    fetch_depth: int = DEFAULT_FETCH_DEPTH
    reporters: int = 1

    def __post_init__(self) -> None:
        if not self.wid or any(char.isspace() for char in self.wid):
            raise ConfigurationError(f"wid must be a non-empty string without spaces, got {self.wid!r}")
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.fetchers < 1:
            raise ConfigurationError(f"fetchers must be at least 1, got {self.fetchers}")
        if self.fetch_depth < 1:
            raise ConfigurationError(f"fetch_depth must be at least 1, got {self.fetch_depth}")
        if self.reporters < 1:
            raise ConfigurationError(f"reporters must be at least 1, got {self.reporters}")
        if self.shutdown_timeout < 0:
            raise ConfigurationError(f"shutdown_timeout must not be negative, got {self.shutdown_timeout}")
        if self.beat_interval <= 0:
            raise ConfigurationError(f"beat_interval must be positive, got {self.beat_interval}")

    @classmethod
    def build(
        cls,
        *,
        wid: str | None,
        concurrency: int,
        shutdown_timeout: float,
        beat_interval: float,
        queues: QueueSpec,
        labels: Sequence[str],
        fetchers: int | None,
        fetch_depth: int = DEFAULT_FETCH_DEPTH,
        reporters: int | None = None,
    ) -> WorkerOptions:
        """Validate the keyword options of ``Worker``; ``None`` picks the default (a new wid, fetchers, reporters).

        Raises:
            ConfigurationError: An option is out of range.
        """
        return cls(
            wid=new_wid() if wid is None else wid,
            concurrency=concurrency,
            shutdown_timeout=float(shutdown_timeout),
            beat_interval=float(beat_interval),
            queues=parse_queues(queues),
            labels=tuple(labels),
            fetchers=default_fetchers(concurrency) if fetchers is None else fetchers,
            fetch_depth=fetch_depth,
            reporters=default_reporters(concurrency) if reporters is None else reporters,
        )
