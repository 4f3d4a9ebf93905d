"""The knobs of the Faktory-compatible server, with Faktory 1.9.4's own values as defaults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["ServerConfig"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Timings and limits of a :class:`~celery_faktory.server.FaktoryServer`.

    Every duration is in seconds. The defaults are those of a real Faktory 1.9.4; tests shorten them.

    Attributes:
        fetch_timeout: How long a FETCH waits for a job before answering ``$-1``.
        handshake_timeout: How long a new connection may take to send HELLO.
        reservation_floor: The shortest reservation; a smaller ``reserve_for`` is raised to it.
        default_reservation: The reservation of a job without ``reserve_for``.
        scheduled_period: How often due scheduled jobs move to their queues.
        retries_period: How often due retries move to their queues.
        reservation_period: How often expired reservations are failed.
        heartbeat_period: How often workers without a recent BEAT are reaped.
        heartbeat_timeout: How old a worker's last BEAT may be before the reaper drops it.
        dead_period: How often expired entries leave the dead set.
        dead_ttl: How long a job stays in the dead set.
        max_connections: Connections beyond this many are refused after the handshake.
        tick_interval: How often the periodic tasks are considered, in real seconds.
        max_line: The longest command line accepted, in bytes.
    """

    fetch_timeout: float = 2.0
    handshake_timeout: float = 2.0
    reservation_floor: float = 60.0
    default_reservation: float = 1800.0
    scheduled_period: float = 5.0
    retries_period: float = 5.0
    reservation_period: float = 15.0
    heartbeat_period: float = 15.0
    heartbeat_timeout: float = 60.0
    dead_period: float = 60.0
    dead_ttl: float = 180 * 86400.0
    max_connections: int = 2000
    tick_interval: float = 1.0
    max_line: int = 256 * 1024 * 1024

    @classmethod
    def fast(cls, **overrides: Any) -> ServerConfig:
        """A configuration for tests: every period and timeout cut to a fraction of a second.

        Keyword arguments override single fields.
        """
        fast = cls(
            fetch_timeout=0.5,
            handshake_timeout=2.0,
            reservation_floor=1.0,
            scheduled_period=0.1,
            retries_period=0.1,
            reservation_period=0.1,
            heartbeat_period=0.1,
            heartbeat_timeout=5.0,
            dead_period=1.0,
            tick_interval=0.05,
        )
        return replace(fast, **overrides)
