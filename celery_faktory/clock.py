"""Time as a value that can be replaced: the :class:`Clock` protocol and its two implementations.

Everything with a timer in this package takes a :class:`Clock`; tests pass a :class:`ManualClock` and move it
with :meth:`ManualClock.advance` instead of sleeping. This module imports nothing else of ours.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """A source of wall-clock time."""

    def time_ns(self) -> int:
        """Unix time in nanoseconds."""
        ...


class SystemClock:
    """The real wall clock (:func:`time.time_ns`)."""

    def time_ns(self) -> int:
        """Unix time in nanoseconds."""
        return time.time_ns()


class ManualClock:
    """A clock that only moves when told to; safe to read and advance from several threads.

    Args:
        start_ns: The initial Unix time in nanoseconds; defaults to the real time at construction.
    """

    def __init__(self, start_ns: int | None = None) -> None:
        self._now = time.time_ns() if start_ns is None else start_ns
        self._lock = threading.Lock()

    def time_ns(self) -> int:
        """Unix time in nanoseconds, as last set."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (must not be negative)."""
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        with self._lock:
            self._now += round(seconds * 1_000_000_000)
