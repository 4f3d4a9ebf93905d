"""The transport's settings, parsed and validated once: :class:`TransportOptions`.

kombu hands every transport option over as one plain mapping (Celery's ``broker_transport_options``, or
``transport_options=`` on a :class:`kombu.Connection`). :meth:`TransportOptions.from_transport_options` reads the
names this transport knows, checks each value and raises :class:`~celery_faktory.errors.ConfigurationError` with a
message naming the option; names it does not know (kombu's own ``max_retries``, ``interval_start`` ...) are left
to kombu. Values given as text (from a URL query) are accepted where the meaning is clear (``"25"``,
``"true"``, ``"0,3,6,9"``). This module does no I/O and imports nothing but the errors and the clock.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from celery_faktory.clock import Clock, SystemClock
from celery_faktory.errors import ConfigurationError

__all__ = [
    "DEFAULT_COMMAND_CONNECTIONS",
    "DEFAULT_ETA_THRESHOLD",
    "DEFAULT_POLLING_INTERVAL",
    "DEFAULT_PRIORITY_STEPS",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_RESERVE_FOR",
    "DEFAULT_RESERVE_FOR_GRACE",
    "DEFAULT_RETRY",
    "MAX_RESERVE_FOR",
    "MIN_RESERVE_FOR",
    "OPTION_NAMES",
    "TransportOptions",
]

#: Default reservation of a job, in seconds (Faktory's own default).
DEFAULT_RESERVE_FOR: Final = 1800
#: Seconds added to a task's hard time limit when sizing its reservation.
DEFAULT_RESERVE_FOR_GRACE: Final = 60
#: ``retry`` sent with every job (Faktory's own default).
DEFAULT_RETRY: Final = 25
#: Priority sub-queues, as in kombu's redis transport.
DEFAULT_PRIORITY_STEPS: Final = (0, 3, 6, 9)
#: ETAs further ahead than this many seconds become the job's ``at``.
DEFAULT_ETA_THRESHOLD: Final = 15.0
#: Seconds the transport sleeps between polls that returned at once without a message.
DEFAULT_POLLING_INTERVAL: Final = 0.1
#: Seconds to wait for a reply; must stay above the server's 2 s FETCH block.
DEFAULT_READ_TIMEOUT: Final = 10.0
#: Pooled command connections (PUSH, ACK, FAIL, INFO ...) per kombu connection, opened on demand.
DEFAULT_COMMAND_CONNECTIONS: Final = 10
#: The shortest reservation Faktory grants, in seconds.
MIN_RESERVE_FOR: Final = 60
#: The longest reservation Faktory accepts, in seconds.
MAX_RESERVE_FOR: Final = 86400

_PREFIX = re.compile(r"\A[a-zA-Z0-9._-]*\Z")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})

PriorityOrder = Literal["asc", "desc"]
RejectPolicy = Literal["ack", "dead"]
JobArgs = Literal["native", "repr", "none"]


@dataclass(frozen=True, slots=True)
class TransportOptions:
    """Every setting of the ``faktory://`` transport; see :mod:`celery_faktory.transport` for the whole table.

    Attributes:
        queue_name_prefix: Prepended to every Faktory queue name (``[a-zA-Z0-9._-]*``); isolates apps and tests.
        reserve_for: Default reservation in seconds, 60 to 86400.
        reserve_for_grace: Seconds added to a task's hard time limit for its reservation.
        retry: Faktory ``retry`` of every job, at least 1 (0 would turn crash recovery into discarding).
        priority_steps: Priority levels that get a Faktory queue of their own, ascending, unique, 0 to 255.
        priority_order: ``"asc"``: a higher priority number is served first (AMQP); ``"desc"``: lower first
            (kombu's redis transport).
        eta_threshold: ETAs (and countdowns) further ahead than this many seconds are handed to Faktory as the
            job's ``at``; nearer ones stay in the worker's memory.
        reject_policy: ``"ack"`` discards a message rejected without requeue; ``"dead"`` sends it to Faktory's
            dead set (FAIL, then MUTATE kill).
        job_args: ``"native"``: JSON Celery task messages carry their real positional arguments in ``args``;
            ``"repr"``: every message is an envelope and ``args`` holds ``[argsrepr, kwargsrepr]``; ``"none"``:
            every message is an envelope with empty ``args``.
        accept_foreign_jobs: Run jobs pushed by other Faktory clients as Celery tasks named by their jobtype.
        polling_interval: Seconds slept between polls that came back at once without a message.
        connect_timeout: Seconds to connect and finish the handshake; ``None`` takes kombu's ``connect_timeout``.
        read_timeout: Seconds to wait for any reply; above 2.
        command_connections: Most pooled command connections per kombu connection.
        tls: TLS settings: ``True`` or a mapping like Celery's ``broker_use_ssl``; ``None`` leaves it to kombu's
            ``ssl`` parameter.
        clock: Where the transport's time comes from (ETA threshold, message TTL); tests pass a ManualClock.
    """

    queue_name_prefix: str = ""
    reserve_for: int = DEFAULT_RESERVE_FOR
    reserve_for_grace: int = DEFAULT_RESERVE_FOR_GRACE
    retry: int = DEFAULT_RETRY
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    priority_order: PriorityOrder = "asc"
    eta_threshold: float = DEFAULT_ETA_THRESHOLD
    reject_policy: RejectPolicy = "ack"
    job_args: JobArgs = "native"
    accept_foreign_jobs: bool = True
    polling_interval: float = DEFAULT_POLLING_INTERVAL
    connect_timeout: float | None = None
    read_timeout: float = DEFAULT_READ_TIMEOUT
    command_connections: int = DEFAULT_COMMAND_CONNECTIONS
    tls: bool | Mapping[str, Any] | None = None
    clock: Clock = field(default_factory=SystemClock, compare=False)

    def __post_init__(self) -> None:
        if not _PREFIX.match(self.queue_name_prefix):
            raise ConfigurationError(
                f"transport option queue_name_prefix may only contain a-z, A-Z, 0-9, '.', '_' and '-', "
                f"got {self.queue_name_prefix!r}"
            )
        if not MIN_RESERVE_FOR <= self.reserve_for <= MAX_RESERVE_FOR:
            raise ConfigurationError(
                f"transport option reserve_for must be between {MIN_RESERVE_FOR} and {MAX_RESERVE_FOR} seconds "
                f"(Faktory's limits), got {self.reserve_for}"
            )
        if self.reserve_for_grace < 0:
            raise ConfigurationError(
                f"transport option reserve_for_grace must not be negative, got {self.reserve_for_grace}"
            )
        if self.retry < 1:
            raise ConfigurationError(
                f"transport option retry must be at least 1 (with 0 Faktory discards a job whose worker crashed), "
                f"got {self.retry}"
            )
        steps = self.priority_steps
        if not steps or list(steps) != sorted(set(steps)) or not all(0 <= step <= 255 for step in steps):
            raise ConfigurationError(
                f"transport option priority_steps must be a non-empty list of unique, ascending integers between "
                f"0 and 255, got {list(steps)!r}"
            )
        if self.priority_order not in ("asc", "desc"):
            raise ConfigurationError(
                f"transport option priority_order must be 'asc' or 'desc', got {self.priority_order!r}"
            )
        if self.reject_policy not in ("ack", "dead"):
            raise ConfigurationError(
                f"transport option reject_policy must be 'ack' or 'dead', got {self.reject_policy!r}"
            )
        if self.job_args not in ("native", "repr", "none"):
            raise ConfigurationError(
                f"transport option job_args must be 'native', 'repr' or 'none', got {self.job_args!r}"
            )
        if self.eta_threshold < 0:
            raise ConfigurationError(f"transport option eta_threshold must not be negative, got {self.eta_threshold}")
        if self.polling_interval < 0:
            raise ConfigurationError(
                f"transport option polling_interval must not be negative, got {self.polling_interval}"
            )
        if self.connect_timeout is not None and self.connect_timeout <= 0:
            raise ConfigurationError(f"transport option connect_timeout must be positive, got {self.connect_timeout}")
        if self.read_timeout <= 2.0:
            raise ConfigurationError(
                f"transport option read_timeout must be above 2 s (a FETCH blocks for 2 s on the server), "
                f"got {self.read_timeout}"
            )
        if self.command_connections < 1:
            raise ConfigurationError(
                f"transport option command_connections must be at least 1, got {self.command_connections}"
            )
        if self.tls is not None and not isinstance(self.tls, (bool, Mapping)):
            raise ConfigurationError(f"transport option tls must be a bool or a mapping, got {self.tls!r}")

    @classmethod
    def from_transport_options(cls, options: Mapping[str, Any] | None) -> TransportOptions:
        """Read this transport's options out of kombu's ``transport_options``; other names are ignored.

        Raises:
            ConfigurationError: A known option has a value of the wrong type or out of range.
        """
        options = options or {}
        values: dict[str, Any] = {}
        for name, parse in _PARSERS.items():
            if name in options and options[name] is not None:
                values[name] = parse(name, options[name])
        return cls(**values)

    @property
    def fetch_priorities(self) -> tuple[int, ...]:
        """The priority steps in the order FETCH serves them (first = served first)."""
        steps = self.priority_steps
        return tuple(reversed(steps)) if self.priority_order == "asc" else steps


def _integer(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigurationError(f"transport option {name} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ConfigurationError(f"transport option {name} must be an integer, got {value!r}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigurationError(f"transport option {name} must be a number of seconds, got {value!r}")
    if isinstance(value, (int, float)):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            raise ConfigurationError(f"transport option {name} must be a number of seconds, got {value!r}") from None
    else:
        raise ConfigurationError(f"transport option {name} must be a number of seconds, got {value!r}")
    if not math.isfinite(result):
        raise ConfigurationError(f"transport option {name} must be a finite number, got {value!r}")
    return result


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigurationError(f"transport option {name} must be true or false, got {value!r}")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ConfigurationError(f"transport option {name} must be a string, got {value!r}")
    return value


def _choice(name: str, value: Any) -> str:
    return _text(name, value).strip().lower()


def _steps(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        parts: list[Any] = [part for part in value.replace(" ", "").split(",") if part]
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        raise ConfigurationError(f"transport option {name} must be a list of integers, got {value!r}")
    return tuple(_integer(name, part) for part in parts)


def _tls(name: str, value: Any) -> bool | Mapping[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    return _boolean(name, value)


def _clock(name: str, value: Any) -> Clock:
    if not callable(getattr(value, "time_ns", None)):
        raise ConfigurationError(f"transport option {name} must be a Clock (an object with time_ns()), got {value!r}")
    clock: Clock = value
    return clock


_PARSERS: dict[str, Any] = {
    "queue_name_prefix": _text,
    "reserve_for": _integer,
    "reserve_for_grace": _integer,
    "retry": _integer,
    "priority_steps": _steps,
    "priority_order": _choice,
    "eta_threshold": _number,
    "reject_policy": _choice,
    "job_args": _choice,
    "accept_foreign_jobs": _boolean,
    "polling_interval": _number,
    "connect_timeout": _number,
    "read_timeout": _number,
    "command_connections": _integer,
    "tls": _tls,
    "clock": _clock,
}

#: Every transport option this transport reads (kombu's ``from_transport_options`` lists them too).
OPTION_NAMES: Final = tuple(item.name for item in fields(TransportOptions))

assert set(OPTION_NAMES) == set(_PARSERS), "every TransportOptions field needs a parser"
