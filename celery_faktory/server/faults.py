"""Fault injection for client tests: make the server misbehave on purpose, one reply at a time.

A test arms a :class:`Fault` for a verb; the next reply to that verb (on any connection) is delayed, split into
several writes, held back and glued to the following reply, cut off with the connection dropped, or replaced
by garbage. Each armed fault fires once per ``times``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

__all__ = ["Fault", "FaultPlan"]


@dataclass(frozen=True, slots=True)
class Fault:
    """What to do to one reply.

    Attributes:
        delay: Seconds to wait before writing the reply.
        split: Write the reply in pieces of this many bytes, each a separate write (0: in one piece).
        hold: Keep the reply back and write it together with the connection's next reply.
        drop_after: Write only this many bytes of the reply, then drop the connection.
        garbage: Write these bytes instead of the reply.
    """

    delay: float = 0.0
    split: int = 0
    hold: bool = False
    drop_after: int | None = None
    garbage: bytes | None = None


class FaultPlan:
    """The faults armed on one server, by verb, in the order they were armed."""

    def __init__(self) -> None:
        self._armed: dict[str, deque[Fault]] = {}

    def arm(self, verb: str, fault: Fault, times: int = 1) -> None:
        """Apply ``fault`` to the next ``times`` replies to ``verb``."""
        self._armed.setdefault(verb, deque()).extend([fault] * times)

    def take(self, verb: str) -> Fault | None:
        """The fault for this reply to ``verb``, if one is armed."""
        armed = self._armed.get(verb)
        if not armed:
            return None
        fault = armed.popleft()
        if not armed:
            del self._armed[verb]
        return fault

    def clear(self) -> None:
        """Disarm everything."""
        self._armed.clear()
