"""Running one job: :class:`JobExecutor` turns a :class:`JobContext` into the :class:`Report` to send.

The job runs in a fresh copy of the thread's context with itself as :func:`current_job`, through the middleware
chain, then the function registered for its jobtype: called in the worker thread, or, when it returns an
awaitable (``async def``), awaited on the worker's event loop. Any exception, from a middleware, the lookup
(``UnknownJobType``), the args check (``TypeError``) or the function, becomes a FAIL with the exception's class
name, its text and a backtrace of at most the job's ``backtrace`` lines. Nothing escapes :meth:`JobExecutor.run`.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import os
import traceback
from collections.abc import Sequence
from types import FrameType
from typing import Any

from celery_faktory.worker.context import JobContext, set_current
from celery_faktory.worker.loop import EventLoopThread
from celery_faktory.worker.middleware import MiddlewareChain
from celery_faktory.worker.registry import Registry, UnknownJobType
from celery_faktory.worker.reporter import Report

__all__ = ["DEFAULT_BACKTRACE", "SHUTDOWN_ERRTYPE", "JobExecutor", "shutdown_report"]

log = logging.getLogger(__name__)

#: Backtrace lines sent with a FAIL when the job does not say (its ``backtrace`` field).
DEFAULT_BACKTRACE = 30
#: The errtype of the FAIL sent for a job the worker gave up on at shutdown.
SHUTDOWN_ERRTYPE = "WorkerShutdown"

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _backtrace_limit(context: JobContext) -> int:
    limit = context.payload.get("backtrace")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0:
        return limit
    return DEFAULT_BACKTRACE


def _job_frames(frames: Sequence[traceback.FrameSummary]) -> list[traceback.FrameSummary]:
    """The frames of the job's own code: none outside the worker's first frame, none of the worker's."""
    ours = [index for index, frame in enumerate(frames) if frame.filename.startswith(_PACKAGE_DIR)]
    inner = frames[ours[0] :] if ours else frames
    return [frame for frame in inner if not frame.filename.startswith(_PACKAGE_DIR)]


def _format_frames(frames: Sequence[traceback.FrameSummary], limit: int) -> list[str]:
    """One line per job frame, innermost first (the order Faktory's web UI shows), at most ``limit`` lines."""
    lines: list[str] = []
    for frame in reversed(_job_frames(frames)):
        if len(lines) >= limit:
            break
        code = f": {frame.line.strip()}" if frame.line else ""
        lines.append(f"{frame.filename}:{frame.lineno} in {frame.name}{code}")
    return lines


def failure_report(context: JobContext, exc: BaseException) -> Report:
    """The FAIL for a job that raised ``exc``."""
    frames = traceback.extract_tb(exc.__traceback__)
    return Report.fail(
        context.jid,
        errtype=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        backtrace=_format_frames(frames, _backtrace_limit(context)),
    )


def shutdown_report(context: JobContext, message: str, frame: FrameType | None = None) -> Report:
    """The FAIL for a job given up on at shutdown; ``frame`` is where its thread was, for the backtrace."""
    backtrace = _format_frames(traceback.extract_stack(frame), _backtrace_limit(context)) if frame else None
    return Report.fail(context.jid, errtype=SHUTDOWN_ERRTYPE, message=message, backtrace=backtrace)


class JobExecutor:
    """Runs jobs through a middleware chain and a registry.

    Args:
        registry: Where job functions are looked up.
        middleware: The chain every job runs through.
        loop: Where awaitables returned by job functions are run.
    """

    def __init__(self, registry: Registry, middleware: MiddlewareChain, loop: EventLoopThread) -> None:
        self.registry = registry
        self.middleware = middleware
        self.loop = loop

    def run(self, context: JobContext) -> Report:
        """Run the job in the calling thread and return its ACK or FAIL; never raises."""
        return contextvars.copy_context().run(self._run, context)

    def _run(self, context: JobContext) -> Report:
        set_current(context)
        try:
            self.middleware.run(context, lambda: self._call(context))
        except BaseException as exc:  # a job's failure, whatever it is, is reported, not raised
            if isinstance(exc, UnknownJobType):
                log.warning("job %s: %s", context.jid, exc)
            else:
                log.warning(
                    "job %s %s failed: %s: %s", context.jobtype, context.jid, type(exc).__name__, exc, exc_info=exc
                )
            return failure_report(context, exc)
        log.debug("job %s %s done", context.jobtype, context.jid)
        return Report.ack(context.jid)

    def _call(self, context: JobContext) -> Any:
        handler = self.registry.get(context.jobtype)
        result = handler(context)
        if inspect.isawaitable(result):
            return self.loop.run(context, result)
        return result
