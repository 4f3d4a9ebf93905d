"""What a running job knows about itself: :class:`JobContext` and :func:`current_job`.

The worker builds one :class:`JobContext` per fetched job and makes it the current one (a context variable)
while the job's middleware and function run, in a worker thread or on the worker's event loop. This module
imports nothing else of ours.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["JobContext", "current_job", "in_job", "set_current"]

_CURRENT: contextvars.ContextVar[JobContext] = contextvars.ContextVar("celery_faktory_current_job")


@dataclass(eq=False)
class JobContext:
    """One fetched job, as its middleware and function see it.

    Middleware may change :attr:`args` before calling ``next()`` (the function is called with the value at that
    moment) and may put anything into :attr:`extra`.

    Attributes:
        jid: The job id.
        jobtype: The job type the function was registered under.
        queue: The queue the job came from.
        args: The positional arguments the function will be called with.
        custom: The job's ``custom`` JSON object (empty when it has none).
        retry_count: The ``retry_count`` of the job's failure block: ``None`` on the first run, ``0`` on the
            first retry, ``1`` on the second, and so on.
        payload: The job exactly as the server sent it.
        extra: Whatever middleware attached for later middleware or the function.
    """

    jid: str
    jobtype: str
    queue: str
    args: list[Any]
    custom: dict[str, Any]
    retry_count: int | None
    payload: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)
    _cancelled: threading.Event | None = field(default=None, init=False, repr=False)
    _cancel_callbacks: list[Callable[[], object]] = field(default_factory=list, init=False, repr=False)
    _cancel_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> JobContext:
        """Build the context of a job from the payload a FETCH returned.

        Raises:
            ValueError: The payload has no usable ``jid`` or ``jobtype``.
        """
        jid, jobtype = payload.get("jid"), payload.get("jobtype")
        if not isinstance(jid, str) or not jid:
            raise ValueError(f"job payload without a jid: {dict(payload)!r}")
        if not isinstance(jobtype, str) or not jobtype:
            raise ValueError(f"job {jid} has no jobtype")
        args = payload.get("args")
        failure = payload.get("failure")
        custom = payload.get("custom")
        retry_count = failure.get("retry_count") if isinstance(failure, dict) else None
        return cls(
            jid=jid,
            jobtype=jobtype,
            queue=str(payload.get("queue") or "default"),
            args=[] if args is None else (list(args) if isinstance(args, list) else args),
            custom=dict(custom) if isinstance(custom, dict) else {},
            retry_count=retry_count if isinstance(retry_count, int) else None,
            payload=dict(payload),
        )

    @property
    def cancelled(self) -> threading.Event:
        """Set when the worker gives up on the job at hard shutdown (after ``shutdown_timeout``).

        A long job can wait on it or poll :attr:`is_cancelled` and return early. The event is made on first use
        (most jobs never look), so a job costs no event unless it asks for one.
        """
        with self._cancel_lock:
            if self._cancelled is None:
                self._cancelled = threading.Event()
            return self._cancelled

    @property
    def is_cancelled(self) -> bool:
        """Whether the worker has given up on this job (see :attr:`cancelled`)."""
        event = self._cancelled
        return event is not None and event.is_set()

    def _on_cancel(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` when the job is cancelled (at once if it already is)."""
        with self._cancel_lock:
            if not self.is_cancelled:
                self._cancel_callbacks.append(callback)
                return
        callback()

    def _cancel(self) -> None:
        """Set :attr:`cancelled` and run the cancel callbacks (the worker's side of hard shutdown)."""
        event = self.cancelled
        with self._cancel_lock:
            event.set()
            callbacks, self._cancel_callbacks = self._cancel_callbacks, []
        for callback in callbacks:
            callback()


def set_current(context: JobContext) -> None:
    """Make ``context`` the current job of the running context.

    The executor calls this inside a fresh :func:`contextvars.copy_context` (or a fresh asyncio task), so
    nothing has to be reset afterwards and nothing leaks into the next job run by the same thread.
    """
    _CURRENT.set(context)


def current_job() -> JobContext:
    """The context of the job running in this thread or task.

    Raises:
        LookupError: Called outside a job.
    """
    try:
        return _CURRENT.get()
    except LookupError:
        raise LookupError("current_job() was called outside a Faktory job") from None


def in_job() -> bool:
    """Whether the calling thread or task is running a job."""
    return _CURRENT.get(None) is not None
