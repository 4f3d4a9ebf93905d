"""Calling hooks: plain or ``async def``, with an optional deadline (``task_timeout``). Imports ``errors``.

The deadline is enforced here, in every Celery pool:

- ``async def`` hooks run under ``asyncio.wait_for``, which cancels them at the deadline;
- plain hooks on the main thread (prefork children, ``solo`` workers) run under ``SIGALRM``
  (``setitimer``), which interrupts blocking calls such as ``time.sleep``;
- plain hooks on other threads (``threads`` pool, embedded workers) run on a helper thread that is abandoned
  at the deadline, after an asynchronous ``TaskTimeout`` is raised in it so that it stops at its next Python
  instruction. Whatever it does afterwards cannot be recorded: its attempt is over.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import inspect
import queue
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from .errors import TaskTimeout

__all__ = ["HookCaller", "timeout_error"]

#: Result types that are never awaitable (checked first: most handlers return plain data).
_PLAIN = frozenset({int, float, str, bool, list, dict, tuple})

Job = tuple[contextvars.Context, Callable[..., Any], tuple[Any, ...], "_Result"]


def timeout_error(timeout: float) -> TaskTimeout:
    """The error of an attempt that ran over ``timeout`` seconds."""
    return TaskTimeout(f"timeout: the attempt ran longer than task_timeout ({timeout:g} s)")


class _Result:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _HelperThread:
    """A thread that runs jobs for one calling thread, until it is abandoned."""

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="deflow-attempt", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            context, fn, args, result = job
            try:
                result.value = context.run(fn, *args)
            except BaseException as exc:  # handed to the caller, who decides
                result.error = exc
            finally:
                result.done.set()

    def abandon(self, timeout: float) -> None:
        """Stop taking jobs and ask the running one to stop (best effort)."""
        self.jobs.put(None)
        ident = self.thread.ident
        if ident is not None:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(TaskTimeout))


class HookCaller:
    """Calls hooks for the threads of one process."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._async: dict[Any, bool] = {}

    def _is_async(self, fn: Callable[..., Any]) -> bool:
        function = getattr(fn, "__func__", fn)
        known = self._async.get(function)
        if known is None:
            known = self._async[function] = inspect.iscoroutinefunction(function)
        return known

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop: asyncio.AbstractEventLoop | None = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._local.loop = asyncio.new_event_loop()
        return loop

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None = None) -> Any:
        """Call ``fn(*args)``, awaiting it if it is a coroutine; ``TaskTimeout`` after ``timeout`` seconds."""
        if self._is_async(fn):
            coroutine = fn(*args)
            if timeout is None:
                return self._loop().run_until_complete(coroutine)
            try:
                return self._loop().run_until_complete(asyncio.wait_for(coroutine, timeout))
            except asyncio.TimeoutError:
                raise timeout_error(timeout) from None
        if timeout is None:
            return self._settle(fn(*args))
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            return self._settle(self._with_alarm(fn, args, timeout))
        return self._settle(self._on_helper(fn, args, timeout))

    def _settle(self, value: Any) -> Any:
        if value is None or type(value) in _PLAIN or not inspect.isawaitable(value):
            return value
        return self._loop().run_until_complete(value)

    def _with_alarm(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        armed = True

        def on_alarm(signum: int, frame: FrameType | None) -> None:
            if armed:
                raise timeout_error(timeout)

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return fn(*args)
        finally:
            armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)

    def _on_helper(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
        helper: _HelperThread | None = getattr(self._local, "helper", None)
        if helper is None:
            helper = self._local.helper = _HelperThread()
        result = _Result()
        helper.jobs.put((contextvars.copy_context(), fn, args, result))
        if not result.done.wait(timeout):
            self._local.helper = None
            helper.abandon(timeout)
            raise timeout_error(timeout)
        if result.error is not None:
            raise result.error
        return result.value
