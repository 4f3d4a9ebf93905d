"""The threads that run jobs: :class:`JobThreads`, a fixed set of threads draining one queue of hand-off entries.

A :class:`~concurrent.futures.ThreadPoolExecutor` builds a future, a work item and a few locks per call; the
worker needs none of that, since every job reports its own outcome. Here a job costs one put and one get on a
:class:`queue.SimpleQueue`. The threads are daemon threads: a process that exits without stopping its worker
does not wait for them (the stop sequence, not interpreter exit, is what settles running jobs).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from celery_faktory.worker.handoff import Entry

__all__ = ["JobThreads"]

log = logging.getLogger(__name__)


class JobThreads:
    """``count`` threads that call ``run`` with each entry :meth:`submit` is given, in order of submission.

    Args:
        count: How many threads.
        run: Runs one entry; it must not raise (the worker's ``_execute`` reports every outcome itself).
        name_prefix: Thread names are ``<prefix>_0``, ``<prefix>_1`` ...
    """

    def __init__(self, count: int, run: Callable[[Entry], None], *, name_prefix: str = "faktory-job") -> None:
        self._run = run
        self._queue: queue.SimpleQueue[Entry | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._loop, name=f"{name_prefix}_{index}", daemon=True) for index in range(count)
        ]
        self._started = False

    def start(self) -> None:
        """Start the threads (once; later calls do nothing)."""
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def submit(self, entry: Entry) -> None:
        """Queue ``entry`` for the next free thread."""
        self._queue.put(entry)

    def shutdown(self) -> None:
        """Let every thread end once the entries queued before this call have run; returns at once."""
        for _ in self._threads:
            self._queue.put(None)

    def _loop(self) -> None:
        get, run = self._queue.get, self._run
        while (entry := get()) is not None:
            try:
                run(entry)
            except Exception:  # a bug of ours, not the job's: keep the thread, and say so
                log.exception("job thread: running %s failed", entry.context.jid)
