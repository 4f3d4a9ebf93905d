"""Configuration values, parsed and validated once. Imports nothing of ours.

``DeflowConfig`` holds everything ``DeFlow.register`` accepts besides the Celery app; ``RedisSettings`` holds
the connection to the Redis server that keeps the workflow state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "DEFAULT_CHECK_INTERVAL",
    "DEFAULT_CLAIM_WINDOW",
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_MAX_BATCH_SIZE",
    "DEFAULT_RESULT_TTL",
    "DEFAULT_SPLIT_AFTER",
    "DEFAULT_STATE_TTL",
    "DEFAULT_TARGET_BATCHES",
    "DeflowConfig",
    "RedisSettings",
]

#: Period of the crash-recovery scan, in seconds (``check_process_queue_interval``).
DEFAULT_CHECK_INTERVAL = 2.0
#: Seconds an attempt's lease lives without renewal before the attempt counts as lost with its worker.
DEFAULT_LEASE_TIMEOUT = 10.0
#: Most DeFlow tasks carried by one Celery message.
DEFAULT_MAX_BATCH_SIZE = 500
#: Number of Celery messages a tasks phase is split into, when its tasks allow (fewer for small phases).
DEFAULT_TARGET_BATCHES = 16
#: Seconds of work a worker claims at once from its message (at least one task).
DEFAULT_CLAIM_WINDOW = 0.02
#: A worker hands the back half of its message's range to a new message when the rest would take longer.
DEFAULT_SPLIT_AFTER = 0.5
#: Seconds the keys of a running workflow live (a safety net for abandoned workflows).
DEFAULT_STATE_TTL = 7 * 24 * 3600.0
#: Seconds a finished workflow's result stays readable when the app has no ``result_expires``.
DEFAULT_RESULT_TTL = 24 * 3600.0

_CONNECTION_KEYS = frozenset(
    {"host", "port", "db", "username", "password", "ssl", "max_attempts", "connect_timeout", "retry_max_delay"}
)


@dataclass(frozen=True)
class RedisSettings:
    """How to reach the Redis server that holds workflow state.

    Either ``url`` (``redis://`` or ``rediss://``) or the discrete fields. ``max_attempts`` is the number of
    tries of a command on connection errors (default 3), ``connect_timeout`` and ``retry_max_delay`` are in
    seconds. The password is masked in ``repr``.
    """

    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ssl: bool = False
    max_attempts: int = 3
    connect_timeout: float | None = None
    retry_max_delay: float = 2.0
    url: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.url is not None and urlsplit(self.url).scheme not in {"redis", "rediss", "unix"}:
            raise ValueError(f"not a Redis URL: {self.masked_url()!r}")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.retry_max_delay < 0:
            raise ValueError("retry_max_delay must not be negative")

    @classmethod
    def from_connection(cls, connection: Mapping[str, Any]) -> RedisSettings:
        """Settings from a ``connection`` mapping (the keys of the contract; unknown keys are an error)."""
        unknown = set(connection) - _CONNECTION_KEYS
        if unknown:
            raise ValueError(f"unknown connection keys: {sorted(unknown)}")
        values = dict(connection)
        if "port" in values:
            values["port"] = int(values["port"])
        if "db" in values:
            values["db"] = int(values["db"])
        return cls(**values)

    def masked_url(self) -> str:
        """The URL (or one built from the fields) with the password replaced by ``***``."""
        if self.url is None:
            scheme = "rediss" if self.ssl else "redis"
            auth = f"{self.username or ''}:***@" if self.password else ""
            return f"{scheme}://{auth}{self.host}:{self.port}/{self.db}"
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    def __repr__(self) -> str:
        return f"RedisSettings({self.masked_url()!r})"


@dataclass(frozen=True)
class DeflowConfig:
    """Everything ``DeFlow.register`` accepts besides the app (durations in seconds).

    Attributes:
        redis: the state server.
        key_prefix: prefix of every key and channel (default ``"deflow"``).
        check_process_queue_interval: period of the crash-recovery scan; 0 disables it.
        handler_modules: extra modules (and their submodules) workers may import handlers from.
        lease_timeout: an attempt whose lease is not renewed for this long counts as lost with its worker.
        max_batch_size: most tasks per Celery message.
        target_batches: how many messages a large tasks phase is split into.
        claim_window: how much work (by measured duration) a worker claims at once, at least one task.
        split_after: a worker whose message still holds more work than this (by measured duration) publishes
            the back half as a new message, so that slow tasks spread over every node.
        state_ttl: lifetime of a running workflow's keys.
        result_ttl: lifetime of a finished workflow's result.
    """

    redis: RedisSettings = field(default_factory=RedisSettings)
    key_prefix: str = "deflow"
    check_process_queue_interval: float = DEFAULT_CHECK_INTERVAL
    handler_modules: tuple[str, ...] = ()
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    target_batches: int = DEFAULT_TARGET_BATCHES
    claim_window: float = DEFAULT_CLAIM_WINDOW
    split_after: float = DEFAULT_SPLIT_AFTER
    state_ttl: float = DEFAULT_STATE_TTL
    result_ttl: float = DEFAULT_RESULT_TTL

    def __post_init__(self) -> None:
        if not self.key_prefix or any(c in self.key_prefix for c in "{}*? "):
            raise ValueError(f"invalid key_prefix {self.key_prefix!r}")
        if self.lease_timeout <= 0:
            raise ValueError("lease_timeout must be positive")
        if self.max_batch_size < 1 or self.target_batches < 1:
            raise ValueError("max_batch_size and target_batches must be at least 1")
        if min(self.claim_window, self.split_after, self.state_ttl, self.result_ttl) <= 0:
            raise ValueError("claim_window, split_after, state_ttl and result_ttl must be positive")

    @staticmethod
    def modules(names: Iterable[str] | None) -> tuple[str, ...]:
        """Normalise a ``handler_modules`` argument."""
        return tuple(names or ())

    @property
    def state_ttl_ms(self) -> int:
        """``state_ttl`` in milliseconds."""
        return int(self.state_ttl * 1000)

    @property
    def result_ttl_ms(self) -> int:
        """``result_ttl`` in milliseconds."""
        return int(self.result_ttl * 1000)

    @property
    def lease_timeout_ms(self) -> int:
        """``lease_timeout`` in milliseconds."""
        return int(self.lease_timeout * 1000)
