"""Worker middleware: the :class:`Middleware` protocol and the ordered, editable :class:`MiddlewareChain`.

A middleware is one callable taking the job's context and ``next``; it runs code before and after calling
``next()``, may change ``ctx.args`` or ``ctx.extra`` first, and returns (or replaces) what ``next()`` returned.
The chain runs them in onion order: the first middleware is the outermost. A middleware that raises fails the
job exactly as the job function raising would. Middleware always runs in a worker thread, also for ``async``
jobs: there ``next()`` blocks until the coroutine has finished on the worker's event loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from celery_faktory.worker.context import JobContext

__all__ = ["Middleware", "MiddlewareChain"]


class Middleware(Protocol):
    """``middleware(ctx, next)``: wrap one job run."""

    def __call__(self, ctx: JobContext, next: Callable[[], Any], /) -> Any:  # noqa: A002
        """Run around ``next()``, which runs the rest of the chain and the job function."""
        ...


class MiddlewareChain:
    """An ordered list of middleware; thread-safe to edit while jobs run (each run sees a snapshot).

    Args:
        middleware: The initial middleware, outermost first.
    """

    def __init__(self, middleware: Iterable[Middleware] = ()) -> None:
        self._items: list[Middleware] = list(middleware)
        self._lock = threading.Lock()

    def append(self, middleware: Middleware) -> None:
        """Add ``middleware`` innermost (it runs last before the job, first after it)."""
        with self._lock:
            self._items.append(middleware)

    def insert(self, index: int, middleware: Middleware) -> None:
        """Add ``middleware`` at position ``index`` (0: outermost)."""
        with self._lock:
            self._items.insert(index, middleware)

    def remove(self, middleware: Middleware) -> None:
        """Take ``middleware`` out of the chain.

        Raises:
            ValueError: It is not in the chain.
        """
        with self._lock:
            self._items.remove(middleware)

    def run(self, ctx: JobContext, final: Callable[[], Any]) -> Any:
        """Run ``final`` (the job itself) inside every middleware, outermost first; return its result."""
        with self._lock:
            items = tuple(self._items)
        if not items:
            return final()

        def call(index: int) -> Any:
            if index == len(items):
                return final()
            return items[index](ctx, lambda: call(index + 1))

        return call(0)

    def __iter__(self) -> Iterator[Middleware]:
        with self._lock:
            return iter(tuple(self._items))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __repr__(self) -> str:
        return f"<MiddlewareChain {list(self)}>"
