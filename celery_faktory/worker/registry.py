"""Which function runs which jobtype: :class:`Registry`, the default :data:`registry` and :func:`register`.

A function is inspected once, when it is registered: a keyword-only parameter named ``job`` means it wants the
:class:`~celery_faktory.worker.context.JobContext`, and its signature is kept to explain a call whose args do
not fit, so a job with the wrong number of args fails with a message naming the jobtype. Imports only
:mod:`celery_faktory.errors` and the worker's context.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from celery_faktory.errors import UnknownJobType
from celery_faktory.worker.context import JobContext

__all__ = ["Handler", "Registry", "UnknownJobType", "register", "registry"]

log = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Handler:
    """A registered job function.

    Attributes:
        jobtype: The jobtype it runs.
        function: The function; it may be ``async def`` (or return an awaitable).
        wants_job: Whether it declares a keyword-only ``job`` parameter (it then gets the job's context).
        signature: Its signature, to explain args that do not fit it; ``None`` when it cannot be inspected.
    """

    jobtype: str
    function: Callable[..., Any]
    wants_job: bool
    signature: inspect.Signature | None

    @classmethod
    def for_function(cls, jobtype: str, function: Callable[..., Any]) -> Handler:
        """Inspect ``function`` once and build its handler."""
        try:
            signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            signature = None
        parameter = signature.parameters.get("job") if signature is not None else None
        wants_job = parameter is not None and parameter.kind is inspect.Parameter.KEYWORD_ONLY
        return cls(jobtype, function, wants_job, signature)

    def __call__(self, context: JobContext) -> Any:
        """Call the function with the job's args (and ``job=context`` when it wants it).

        Raises:
            TypeError: The args are not a list, or do not fit the function's signature.
        """
        args = context.args
        if not isinstance(args, list):
            raise TypeError(f"job {self.jobtype}: args must be a JSON array, got {type(args).__name__}")
        kwargs: dict[str, Any] = {"job": context} if self.wants_job else {}
        try:
            return self.function(*args, **kwargs)
        except TypeError:
            # Binding is checked only now, which costs nothing on the common path: Python checks the
            # arguments before the function's body runs, so args that do not fit never ran any job code.
            if self.signature is not None:
                try:
                    self.signature.bind(*args, **kwargs)
                except TypeError as exc:
                    shape = _bare(self.signature)
                    raise TypeError(f"job {self.jobtype}{shape} cannot take args {args!r}: {exc}") from None
            raise


def _bare(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` without annotations, for messages: ``(a, b, *, job)``."""
    empty = inspect.Parameter.empty
    parameters = [parameter.replace(annotation=empty) for parameter in signature.parameters.values()]
    return signature.replace(parameters=parameters, return_annotation=empty)


class Registry:
    """Job functions by jobtype; thread-safe.

    Example::

        jobs = Registry()

        @jobs.register
        def send_email(address: str) -> None: ...

        @jobs.register("Resize")
        async def resize(path: str, *, job: JobContext) -> None: ...
    """

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()

    @overload
    def register(self, jobtype: _F, /) -> _F: ...

    @overload
    def register(self, jobtype: str | None = None, /) -> Callable[[_F], _F]: ...

    def register(self, jobtype: str | Callable[..., Any] | None = None, /) -> Any:
        """Decorator registering a function; the jobtype defaults to the function's ``__name__``.

        Works bare (``@register``) and called (``@register()``, ``@register("SendEmail")``); returns the
        function unchanged.
        """
        if callable(jobtype):
            self.add(jobtype.__name__, jobtype)
            return jobtype

        def decorate(function: _F) -> _F:
            self.add(jobtype or function.__name__, function)
            return function

        return decorate

    def add(self, jobtype: str, function: Callable[..., Any]) -> Handler:
        """Register ``function`` for ``jobtype``, replacing (with a warning) another one registered before.

        Raises:
            TypeError: ``function`` is not callable.
            ValueError: ``jobtype`` is empty.
        """
        if not isinstance(jobtype, str) or not jobtype:
            raise ValueError(f"a jobtype must be a non-empty string, got {jobtype!r}")
        if not callable(function):
            raise TypeError(f"a job function must be callable, got {function!r}")
        handler = Handler.for_function(jobtype, function)
        with self._lock:
            previous = self._handlers.get(jobtype)
            self._handlers[jobtype] = handler
        if previous is not None and previous.function is not function:
            log.warning("jobtype %r: %r replaces %r", jobtype, function, previous.function)
        return handler

    def get(self, jobtype: str) -> Handler:
        """The handler of ``jobtype``.

        Raises:
            UnknownJobType: Nothing is registered under ``jobtype``.
        """
        with self._lock:
            handler = self._handlers.get(jobtype)
        if handler is None:
            raise UnknownJobType(f"no function is registered for jobtype {jobtype!r}")
        return handler

    def jobtypes(self) -> list[str]:
        """The registered jobtypes, sorted."""
        with self._lock:
            return sorted(self._handlers)

    def __contains__(self, jobtype: object) -> bool:
        with self._lock:
            return jobtype in self._handlers

    def __len__(self) -> int:
        with self._lock:
            return len(self._handlers)

    def __repr__(self) -> str:
        return f"<Registry {self.jobtypes()}>"


#: The registry a :class:`~celery_faktory.worker.Worker` uses when it is given none.
registry = Registry()

#: ``@register`` / ``@register("Name")`` on the default :data:`registry`.
register = registry.register
