"""The queue order of each FETCH: :class:`QueuePlan`, :func:`parse_queues` and the order functions (all pure).

Faktory's FETCH serves its queues in the order named, strictly (a Redis BRPOP). A worker given a plain sequence
of names keeps that order on every FETCH: ``("critical", "default")`` drains ``critical`` first. Given weights
(``{"critical": 3, "default": 1}``, or ``"name,weight"`` strings) it draws a new weighted random order for
every FETCH, so each queue comes first with a probability proportional to its weight.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Union

from celery_faktory.errors import ConfigurationError
from celery_faktory.protocol import commands
from celery_faktory.protocol.payload import queue_name_problem

__all__ = ["QueuePlan", "QueueSpec", "parse_queues", "strict_order", "weighted_order"]

#: What ``Worker(queues=...)`` accepts: names in strict order, ``"name,weight"`` strings, or name → weight.
QueueSpec = Union[Sequence[str], Mapping[str, int]]


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
        return commands.fetch(*self.order(rng))


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
