"""The worker's one asyncio event loop, on a thread of its own (``faktory-asyncio``), for ``async def`` jobs.

Worker threads hand coroutines over with :meth:`EventLoopThread.run` and block until they finish, so an async
job still takes one execution slot. The loop starts on first use. Each coroutine runs in a task of its own with
the job made current inside it, so :func:`~celery_faktory.worker.current_job` works there too.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable
from typing import TypeVar

from celery_faktory.worker.context import JobContext, set_current

__all__ = ["EventLoopThread"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Seconds that cancelled tasks get to finish when the loop stops.
STOP_GRACE = 2.0


async def _in_context(context: JobContext, awaitable: Awaitable[_T]) -> _T:
    set_current(context)  # this task runs in its own copy of the context
    return await awaitable


class EventLoopThread:
    """An event loop running forever on a daemon thread, started lazily, stopped by :meth:`stop`."""

    def __init__(self, name: str = "faktory-asyncio") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=self._run, args=(loop,), name=self.name, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    @staticmethod
    def _run(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    def run(self, context: JobContext, awaitable: Awaitable[_T]) -> _T:
        """Run ``awaitable`` on the loop as ``context``'s job and wait for its result.

        When the job is cancelled (hard shutdown) the task is cancelled too, and this raises
        :class:`concurrent.futures.CancelledError`.
        """
        future = asyncio.run_coroutine_threadsafe(_in_context(context, awaitable), self._running_loop())
        context._on_cancel(future.cancel)
        return future.result()

    def stop(self) -> None:
        """Cancel the tasks still running, give them :data:`STOP_GRACE` seconds, and stop the loop."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        shutdown = asyncio.run_coroutine_threadsafe(_cancel_all(), loop)
        try:
            shutdown.result(timeout=STOP_GRACE + 1)
        except (concurrent.futures.TimeoutError, concurrent.futures.CancelledError):
            log.warning("asyncio jobs did not stop within %.0f s", STOP_GRACE)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=STOP_GRACE)


async def _cancel_all() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=STOP_GRACE)
