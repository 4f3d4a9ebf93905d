"""Between the fetchers and the job threads: :class:`HandOff` counts slots and tracks every fetched job.

A fetcher takes a slot before each FETCH it sends and gives it back when the FETCH brings nothing; a fetched job keeps
its slot until it has finished. With ``capacity`` equal to the worker's concurrency, jobs fetched and reserved
on the server never outnumber the threads that can run them, so prefetching never lets a reservation run out
while the job waits.

Each job moves through the states of :class:`EntryState` under one lock, which makes shutdown exact: a job that
never started is abandoned (and FAILed) by :meth:`HandOff.close`, one still running after the shutdown timeout
by :meth:`HandOff.abandon_running`, and the thread that finishes a job learns from :meth:`HandOff.finish`
whether its outcome still counts. Exactly one of them reports each job.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from celery_faktory.worker.context import JobContext

__all__ = ["Entry", "EntryState", "HandOff"]


class EntryState(enum.Enum):
    """Where a fetched job is."""

    QUEUED = "queued"  #: handed over, no thread has started it yet
    RUNNING = "running"  #: a thread runs it
    DONE = "done"  #: finished; its thread reports the outcome
    NEVER_STARTED = "never_started"  #: abandoned before it started (shutdown)
    ABANDONED = "abandoned"  #: abandoned while running (shutdown timeout); its outcome is dropped


@dataclass(eq=False)
class Entry:
    """One fetched job in the hand-off.

    Attributes:
        context: The job.
        state: Where it is.
        thread_id: The thread running it (``threading.get_ident``), once started.
        started_at: :func:`time.monotonic` when it started.
    """

    context: JobContext
    state: EntryState = EntryState.QUEUED
    thread_id: int | None = None
    started_at: float | None = field(default=None, repr=False)


class HandOff:
    """Execution slots and the jobs holding them.

    Args:
        capacity: How many jobs may be fetched and unfinished at once (the worker's concurrency).
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a hand-off needs a capacity of at least 1")
        self.capacity = capacity
        self._free = capacity
        self._entries: dict[int, Entry] = {}
        self._running = 0
        self._closed = False
        self._condition = threading.Condition()

    @property
    def in_progress(self) -> int:
        """Jobs whose function is running now (abandoned ones included until they return)."""
        with self._condition:
            return self._running

    @property
    def pending(self) -> int:
        """Jobs fetched and not finished: queued, running or abandoned but still running."""
        with self._condition:
            return len(self._entries)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        with self._condition:
            return self._closed

    def acquire(self, timeout: float, most: int = 1) -> int:
        """Take up to ``most`` slots, waiting up to ``timeout`` s for the first; how many were taken (0: none).

        Nothing is taken once the hand-off is closed.
        """
        if most <= 0:
            return 0
        deadline = time.monotonic() + timeout
        with self._condition:
            while self._free <= 0 and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return 0
                self._condition.wait(remaining)
            if self._closed:
                return 0
            taken = min(most, self._free)
            self._free -= taken
            return taken

    def release(self, count: int = 1) -> None:
        """Give back ``count`` slots whose FETCHes brought no job (or whose jobs were not admitted)."""
        with self._condition:
            self._free += count
            self._condition.notify_all()

    def admit(self, context: JobContext) -> Entry | None:
        """Track a job just fetched with a slot; ``None`` once closed (the caller FAILs it and releases)."""
        with self._condition:
            if self._closed:
                return None
            entry = Entry(context)
            self._entries[id(entry)] = entry
            return entry

    def begin(self, entry: Entry) -> bool:
        """A thread is about to run ``entry``; False when it was abandoned first (do not run it)."""
        with self._condition:
            if entry.state is not EntryState.QUEUED:
                return False
            entry.state = EntryState.RUNNING
            entry.thread_id = threading.get_ident()
            entry.started_at = time.monotonic()
            self._running += 1
            return True

    def finish(self, entry: Entry, report: Callable[[], object]) -> bool:
        """``entry``'s function returned: free its slot, and call ``report`` unless it was abandoned.

        ``report`` runs under the hand-off's lock, so an outcome is queued before a concurrent shutdown can
        move past :meth:`abandon_running`. Returns whether ``report`` was called.
        """
        with self._condition:
            self._running -= 1
            self._entries.pop(id(entry), None)
            self._free += 1
            counts = entry.state is EntryState.RUNNING
            if counts:
                entry.state = EntryState.DONE
                report()
            self._condition.notify_all()
            return counts

    def close(self) -> list[Entry]:
        """Admit nothing more; abandon the jobs that have not started and return them (to FAIL them)."""
        with self._condition:
            self._closed = True
            never_started = [entry for entry in self._entries.values() if entry.state is EntryState.QUEUED]
            for entry in never_started:
                entry.state = EntryState.NEVER_STARTED
                del self._entries[id(entry)]
                self._free += 1
            self._condition.notify_all()
            return never_started

    def wait_idle(self, deadline: Callable[[], float]) -> bool:
        """Wait until no job is running (abandoned ones aside) or ``deadline()`` passes; True when none runs.

        ``deadline`` returns a :func:`time.monotonic` time and is read again after every :meth:`wake`.
        """
        with self._condition:
            while any(entry.state is EntryState.RUNNING for entry in self._entries.values()):
                remaining = deadline() - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return True

    def wake(self) -> None:
        """Wake :meth:`wait_idle` to read its deadline again."""
        with self._condition:
            self._condition.notify_all()

    def abandon_running(self) -> list[Entry]:
        """Abandon the jobs still running and return them (to cancel and FAIL them)."""
        with self._condition:
            running = [entry for entry in self._entries.values() if entry.state is EntryState.RUNNING]
            for entry in running:
                entry.state = EntryState.ABANDONED
            return running
