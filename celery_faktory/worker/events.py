"""Worker lifecycle events: :class:`LifecycleEvents`, behind :meth:`Worker.on <celery_faktory.Worker.on>`.

Four events, each fired once per worker, in this order:

* ``startup``: the worker is connected and its threads run (end of :meth:`~celery_faktory.Worker.start`);
* ``quiet``: fetching stopped (:meth:`~celery_faktory.Worker.quiet`, ``TSTP``, or the server's quiet);
* ``shutdown``: the stop sequence began: nothing more is fetched, running jobs still have ``shutdown_timeout``;
* ``stopped``: the sequence has finished: every job was ACKed or FAILed, every connection closed.

A callback gets the worker. It runs on the thread that caused the event; an exception it raises is logged and
does not disturb the worker or the other callbacks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Literal, get_args

__all__ = ["EVENTS", "LifecycleEvent", "LifecycleEvents"]

log = logging.getLogger(__name__)

LifecycleEvent = Literal["startup", "quiet", "shutdown", "stopped"]
#: The event names, in the order they happen.
EVENTS: tuple[str, ...] = get_args(LifecycleEvent)


class LifecycleEvents:
    """The callbacks registered for each lifecycle event, and which events have fired."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[str, list[Callable[[Any], object]]] = {name: [] for name in EVENTS}
        self._fired: set[str] = set()

    def add(self, event: str, callback: Callable[[Any], object]) -> None:
        """Call ``callback(worker)`` when ``event`` fires.

        Raises:
            ValueError: ``event`` is not one of :data:`EVENTS`.
        """
        if event not in self._callbacks:
            raise ValueError(f"unknown worker event {event!r}; the events are {', '.join(EVENTS)}")
        with self._lock:
            self._callbacks[event].append(callback)

    def fire(self, event: LifecycleEvent, worker: Any) -> None:
        """Run ``event``'s callbacks once (later calls do nothing)."""
        with self._lock:
            if event in self._fired:
                return
            self._fired.add(event)
            callbacks = list(self._callbacks[event])
        for callback in callbacks:
            try:
                callback(worker)
            except Exception:
                log.exception("a %r callback of worker %s raised", event, getattr(worker, "wid", "?"))
