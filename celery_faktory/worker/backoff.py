"""Reconnection delays for the worker's threads: :class:`Backoff` (0.1 s, doubling, capped at 5 s)."""

from __future__ import annotations

__all__ = ["Backoff"]

#: The first delay after a failure, in seconds.
INITIAL_DELAY = 0.1
#: The longest delay, in seconds.
MAX_DELAY = 5.0


class Backoff:
    """Delays that double after each failure up to a cap, and start over after a success.

    Args:
        initial: The first delay, in seconds.
        cap: The longest delay, in seconds.
    """

    def __init__(self, initial: float = INITIAL_DELAY, cap: float = MAX_DELAY) -> None:
        self.initial = initial
        self.cap = cap
        self._next = initial

    def next_delay(self) -> float:
        """The delay to wait now; the following one is twice as long (up to the cap)."""
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay

    def reset(self) -> None:
        """Start over from the initial delay (after a success)."""
        self._next = self.initial
