"""OS signals for a worker, as the Go, Ruby and Node workers read them.

``TSTP`` quiets the worker (no more fetching; running jobs finish). ``TERM`` and ``INT`` stop it: running jobs
get the shutdown timeout; a second ``TERM`` or ``INT`` cuts that wait short. ``TTIN`` logs every thread's stack.
Only :meth:`~celery_faktory.worker.Worker.work` (and so the command line) installs these handlers, and only in
the main thread, where Python runs signal handlers.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from types import FrameType
from typing import Protocol

__all__ = ["Controllable", "install"]

log = logging.getLogger(__name__)

_Handler = Callable[[int, FrameType | None], object] | int | None


class Controllable(Protocol):
    """What the signal handlers act on (a :class:`~celery_faktory.worker.Worker`)."""

    def quiet(self) -> None:
        """Stop fetching."""
        ...

    def stop(self, *, wait: bool = True, timeout: float | None = None) -> None:
        """Stop the worker."""
        ...


def dump_threads() -> None:
    """Log the stack of every thread (the ``TTIN`` action)."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        stack = "".join(traceback.format_stack(frame))
        log.warning("thread %s (%s):\n%s", names.get(ident, "?"), ident, stack)


def install(worker: Controllable) -> Callable[[], None]:
    """Install the handlers for ``worker``; returns a function that puts the previous handlers back.

    Raises:
        ValueError: Not called from the main thread.
    """
    if threading.current_thread() is not threading.main_thread():
        raise ValueError("signal handlers can only be installed from the main thread")
    stops = 0

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stops
        stops += 1
        name = signal.Signals(signum).name
        if stops == 1:
            log.info("%s: stopping", name)
            worker.stop(wait=False)
        else:
            log.warning("%s again: giving up on the running jobs now", name)
            worker.stop(wait=False, timeout=0)

    def on_quiet(signum: int, frame: FrameType | None) -> None:
        log.info("%s: going quiet", signal.Signals(signum).name)
        worker.quiet()

    def on_dump(signum: int, frame: FrameType | None) -> None:
        dump_threads()

    handlers: dict[str, Callable[[int, FrameType | None], None]] = {
        "SIGTERM": on_stop,
        "SIGINT": on_stop,
        "SIGTSTP": on_quiet,
        "SIGTTIN": on_dump,
    }
    previous: dict[signal.Signals, _Handler] = {}
    for name, handler in handlers.items():
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, handler)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore
