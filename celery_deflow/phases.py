"""``PhaseDriver``: moving a workflow from phase to phase. Imports ``store`` and ``model``.

A phase is launched as one Celery chord: the header carries the phase's work (batches of task positions, or
the single hook run), the body is the tiny immutable ``close_phase`` task. The body -- or, when work was
still outstanding when the body arrived (retries, recovered attempts, tasks added on the way), the last
finisher -- closes the phase in one Lua transition that also merges the steps added during it and picks the
next phase, which is launched here. The Celery side is behind :class:`Dispatcher`.

Work made due inside a transition -- tasks added to a running phase, retries of failed attempts -- is recorded
by that transition as *owed* and settled once its messages are published; should the publisher die or the
broker refuse the publish in between, the recovery scan publishes it (:meth:`PhaseDriver.dispatch_owed`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from .model import PhaseKind, batch_ranges, parse_token
from .store import Advance, Owed, StateStore

__all__ = ["Dispatcher", "PhaseDriver"]


class Dispatcher(Protocol):
    """Publishes DeFlow's internal Celery tasks."""

    def tasks_phase(self, workflow_id: str, sid: int, token: str, ranges: Iterable[tuple[int, int]]) -> None:
        """Launch a tasks phase: a chord of one message per range, closed by ``close_phase``."""

    def hook_phase(self, workflow_id: str, sid: int, kind: PhaseKind, token: str) -> None:
        """Launch a hook phase: a chord of the single hook run, closed by ``close_phase``."""

    def launch_later(self, workflow_id: str, token: str, total: int) -> None:
        """Have a worker launch phase ``token`` (see :meth:`PhaseDriver.start`)."""

    def send_ranges(self, workflow_id: str, sid: int, ranges: Iterable[tuple[int, int]]) -> None:
        """Publish messages for tasks added while their phase runs."""

    def send_retries(self, workflow_id: str, sid: int, attempts: list[tuple[int, int]], delay: float | None) -> None:
        """Publish the next attempts of failed tasks, after ``delay`` seconds."""


class PhaseDriver:
    """Starts, closes and launches phases."""

    def __init__(self, store: StateStore, dispatcher: Dispatcher, *, max_batch_size: int, target_batches: int) -> None:
        self._store = store
        self._dispatcher = dispatcher
        self._max_batch_size = max_batch_size
        self._target_batches = target_batches

    def start(self, workflow_id: str) -> Advance:
        """Start a stored workflow: a worker launches its first phase (or it finishes at once).

        The caller publishes a single message, so it needs no chord bookkeeping and may exit right after.
        """
        advance = self._store.start_workflow(workflow_id)
        if advance.action == "launch":
            self._dispatcher.launch_later(workflow_id, advance.token, advance.total)
        return advance

    def close(self, workflow_id: str, token: str, *, arrived: bool) -> Advance:
        """Close phase ``token`` if it can close, and launch the next one."""
        return self._follow(workflow_id, self._store.close_phase(workflow_id, token, arrived=arrived))

    def _ranges(self, lo: int, hi: int) -> Iterable[tuple[int, int]]:
        return batch_ranges(lo, hi, max_batch_size=self._max_batch_size, target_batches=self._target_batches)

    def _follow(self, workflow_id: str, advance: Advance) -> Advance:
        if advance.action == "launch":
            self.launch(workflow_id, advance.token, advance.total)
        return advance

    def launch(self, workflow_id: str, token: str, total: int) -> None:
        """Publish phase ``token``'s chord and record that it was published."""
        sid, kind = parse_token(token)
        if kind == "t":
            self._dispatcher.tasks_phase(workflow_id, sid, token, self._ranges(0, total))
        else:
            self._dispatcher.hook_phase(workflow_id, sid, kind, token)
        self._store.mark_launched(workflow_id, token)

    def dispatch_added(self, workflow_id: str, sid: int, lo: int, hi: int, *, owed: bool = False) -> None:
        """Publish tasks ``[lo, hi)`` of a running tasks phase, added to it or split off a message.

        ``owed``: the addition recorded them as owed; settle them once published.
        """
        self._dispatcher.send_ranges(workflow_id, sid, self._ranges(lo, hi))
        if owed:
            self._store.settle(Owed(workflow_id, sid, lo, hi))

    def dispatch_retries(
        self, workflow_id: str, sid: int, attempts: list[tuple[int, int]], delay: float | None
    ) -> None:
        """Publish the next attempts ``(position, attempt)`` of failed tasks, then settle them.

        ``attempts`` is exactly the list the transition that made them due returned and recorded as owed.
        """
        if attempts:
            self._dispatcher.send_retries(workflow_id, sid, attempts, delay)
            self._store.settle(Owed(workflow_id, sid, attempts=tuple(attempts)))

    def dispatch_owed(self, owed: Owed) -> None:
        """Publish an overdue owed dispatch (its publisher died or could not publish), then settle it.

        A copy of messages that were published after all costs nothing: claims take only attempts that are due.
        """
        if owed.attempts:
            self._dispatcher.send_retries(owed.workflow_id, owed.sid, list(owed.attempts), None)
        else:
            self._dispatcher.send_ranges(owed.workflow_id, owed.sid, self._ranges(owed.lo, owed.hi))
        self._store.settle(owed)
