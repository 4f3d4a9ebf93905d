"""Time sources. Imports nothing of ours.

Redis transitions never read the clock themselves: ``now`` is passed in milliseconds (wall time, comparable
across processes). Local deadlines use the monotonic clock.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """What celery_deflow needs from a clock."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the epoch."""

    def monotonic(self) -> float:
        """Monotonic time in seconds, for local deadlines."""


class SystemClock:
    """The real clock."""

    def now_ms(self) -> int:
        """Wall-clock time in milliseconds since the epoch."""
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        """Monotonic time in seconds."""
        return time.monotonic()
