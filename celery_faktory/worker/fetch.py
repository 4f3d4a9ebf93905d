"""Fetching: the queue order of each FETCH (pure functions) and :class:`FetchLoop`, the fetcher threads.

Queue order. Faktory's FETCH serves its queues in the order named, strictly (a Redis BRPOP). A worker given a
plain sequence of names keeps that order on every FETCH: ``("critical", "default")`` drains ``critical``
first. Given weights (``{"critical": 3, "default": 1}``, or ``"name,weight"`` strings) it draws a new weighted
random order for every FETCH, so each queue comes first with a probability proportional to its weight.

Fetchers. A few threads (``faktory-fetch-0`` ...), each with its own connection, run one blocking FETCH at a
time, only when the :class:`~celery_faktory.worker.handoff.HandOff` has a free slot, and hand each job over.
They reconnect with backoff when the connection fails. :meth:`FetchLoop.stop` lets every thread finish the
FETCH it is in (a FETCH is never cut off: the server would reserve a job nobody reads) and end there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any, Union

from celery_faktory.client.connection import Connection, expect_text
from celery_faktory.errors import ConfigurationError, FaktoryConnectionError, MalformedReply, ServerError
from celery_faktory.protocol import commands
from celery_faktory.protocol.encoding import loads
from celery_faktory.protocol.payload import queue_name_problem
from celery_faktory.worker.backoff import Backoff
from celery_faktory.worker.handoff import HandOff

__all__ = ["FetchLoop", "QueuePlan", "QueueSpec", "parse_queues", "strict_order", "weighted_order"]

log = logging.getLogger(__name__)

#: What ``Worker(queues=...)`` accepts: names in strict order, ``"name,weight"`` strings, or name → weight.
QueueSpec = Union[Sequence[str], Mapping[str, int]]

#: Seconds a fetcher waits for a free slot before checking whether it should stop.
SLOT_WAIT = 0.1


def strict_order(queues: Sequence[str]) -> list[str]:
    """The FETCH order for strict queues: always the order given."""
    return list(queues)


def weighted_order(queues: Sequence[str], weights: Sequence[int], rng: Random) -> list[str]:
    """A random FETCH order in which each queue comes first with a probability proportional to its weight.

    Weighted sampling without replacement (Efraimidis and Spirakis): each queue draws ``u ** (1 / weight)``
    for a uniform ``u``, and the queues are ordered by their draws, largest first. Every queue is always in
    the result.
    """
    keyed = [(rng.random() ** (1.0 / weight), name) for name, weight in zip(queues, weights, strict=True)]
    keyed.sort(reverse=True)
    return [name for _, name in keyed]


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """The queues a worker fetches from, and how it orders them.

    Attributes:
        queues: The queue names, in the order given.
        weights: One positive weight per queue for weighted random order; ``None`` for strict order.
    """

    queues: tuple[str, ...]
    weights: tuple[int, ...] | None = None
    _strict_line: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_strict_line", commands.fetch(*self.queues))

    @property
    def weighted(self) -> bool:
        """Whether each FETCH draws a weighted random order."""
        return self.weights is not None

    def order(self, rng: Random) -> list[str]:
        """The queues for the next FETCH, in the order to name them."""
        if self.weights is None:
            return strict_order(self.queues)
        return weighted_order(self.queues, self.weights, rng)

    def fetch_line(self, rng: Random) -> bytes:
        """The next FETCH command line; encoded once for strict order, drawn anew for weighted order."""
        if self.weights is None:
            return self._strict_line
        return commands.fetch(*weighted_order(self.queues, self.weights, rng))


def parse_queues(spec: QueueSpec) -> QueuePlan:
    """Read a ``queues`` option.

    * A sequence of names (``["critical", "default"]``): strict order.
    * A mapping of names to weights (``{"critical": 3, "default": 1}``): weighted order.
    * A sequence in which some entries are ``"name,weight"`` (``["critical,3", "default"]``): weighted order,
      a name without a weight weighing 1.

    Raises:
        ConfigurationError: No queue, a name Faktory refuses, a repeated name, or a weight that is not a
            positive integer.
    """
    if isinstance(spec, str):
        raise ConfigurationError(f"queues must be a sequence or a mapping of names, not the string {spec!r}")
    pairs: list[tuple[str, int | None]] = []
    if isinstance(spec, Mapping):
        pairs = [(name, _weight(name, weight)) for name, weight in spec.items()]
    else:
        for entry in spec:
            name, comma, weight = str(entry).partition(",")
            pairs.append((name.strip(), _weight(name, weight.strip()) if comma else None))
    if not pairs:
        raise ConfigurationError("a worker needs at least one queue")
    names = tuple(name for name, _ in pairs)
    for name in names:
        problem = queue_name_problem(name)
        if problem is not None:
            raise ConfigurationError(problem)
    if len(set(names)) != len(names):
        raise ConfigurationError(f"queues repeat a name: {list(names)}")
    if isinstance(spec, Mapping) or any(weight is not None for _, weight in pairs):
        return QueuePlan(names, tuple(1 if weight is None else weight for _, weight in pairs))
    return QueuePlan(names)


def _weight(name: str, value: object) -> int:
    try:
        weight = int(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else 0
    except ValueError:
        weight = 0
    if weight < 1:
        raise ConfigurationError(f"the weight of queue {name!r} must be a positive integer, got {value!r}")
    return weight


class FetchLoop:
    """``count`` fetcher threads feeding a :class:`HandOff`.

    Args:
        connect: Opens a new connection carrying the worker's wid.
        plan: The queues and their order.
        handoff: Where slots come from.
        deliver: Takes each fetched job's payload, with the slot it was fetched with.
        count: How many fetcher threads (and connections).
    """

    def __init__(
        self,
        connect: Callable[[], Connection],
        plan: QueuePlan,
        handoff: HandOff,
        deliver: Callable[[dict[str, Any]], None],
        *,
        count: int,
        name_prefix: str = "faktory-fetch",
    ) -> None:
        self._connect = connect
        self._plan = plan
        self._handoff = handoff
        self._deliver = deliver
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._running = count
        self._threads = [
            threading.Thread(target=self._run, name=f"{name_prefix}-{index}", daemon=True) for index in range(count)
        ]

    @property
    def alive(self) -> bool:
        """Whether any fetcher thread is still running."""
        return any(thread.is_alive() for thread in self._threads)

    def start(self) -> None:
        """Start the fetcher threads."""
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """FETCH no more: each thread ends after the FETCH it is in."""
        self._stopping.set()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the threads to end; True when they all have."""
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)
        return not self.alive

    def _run(self) -> None:
        rng = Random()
        backoff = Backoff()
        connection: Connection | None = None
        try:
            while not self._stopping.is_set() and not self._handoff.closed:
                if not self._handoff.acquire(SLOT_WAIT):
                    continue
                payload: dict[str, Any] | None = None
                try:
                    if self._stopping.is_set():
                        continue
                    if connection is None or connection.broken:
                        connection = self._connect()
                    payload = self._fetch(connection, rng)
                    backoff.reset()
                except (FaktoryConnectionError, MalformedReply, ServerError) as exc:
                    if connection is not None:
                        connection.close()
                        connection = None
                    delay = backoff.next_delay()
                    log.warning("FETCH failed (%s); retrying in %.1f s", exc, delay)
                    self._stopping.wait(delay)
                finally:
                    if payload is None:
                        self._handoff.release()
                if payload is not None:
                    self._deliver(payload)
        finally:
            if connection is not None:
                connection.close()
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last:
                log.info("fetching stopped: all %d fetchers ended", len(self._threads))

    def _fetch(self, connection: Connection, rng: Random) -> dict[str, Any] | None:
        text = expect_text(connection.request(self._plan.fetch_line(rng)))
        if not text:
            return None
        try:
            payload = loads(text)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            log.error("FETCH returned a job that is not a JSON object; it stays reserved until it expires: %r", text)
            return None
        return payload
