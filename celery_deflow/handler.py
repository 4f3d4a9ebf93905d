"""``StepHandler``, and finding handlers from their stored import paths.

A step's handler is stored in Redis as an import path ``"package.module:ClassName"``. Workers load it with
:class:`HandlerLoader`, which only resolves paths to ``StepHandler`` subclasses in allowed modules (already
imported, the app's ``include``/``imports``, or ``handler_modules``) and never imports any other module named
in Redis. Imports ``errors`` only.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import HandlerNotAllowed

__all__ = ["HOOK_NAMES", "HandlerInfo", "HandlerLoader", "StepHandler", "describe", "handler_path", "resolve"]

#: The optional hooks a handler may define (plain or ``async def`` methods).
HOOK_NAMES = ("before_all", "handler", "after_each", "on_handler_error", "after_all")

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH = re.compile(rf"^({_IDENT}(?:\.{_IDENT})*):({_IDENT}(?:\.{_IDENT})*)$")


class StepHandler:
    """Base class of step handlers.

    Subclass it and define any of these hooks (all optional, plain or ``async def``)::

        def before_all(self, step): ...                      # once, before the step's tasks
        def handler(self, task, step): ...                   # each attempt; the return value is the result
        def on_handler_error(self, task, step, error): ...   # after each failed attempt
        def after_each(self, task, step): ...                # after each attempt, failed or not
        def after_all(self, step): ...                       # once, after all the step's tasks

    Attributes:
        options: step options for steps using this handler (between workflow and ``add_step`` options).
        name: the step name; defaults to the class name.

    One instance per class is created in each process that runs the handler's steps; define handlers at
    module level, in a module every worker can import.
    """

    options: ClassVar[Mapping[str, Any]] = {}
    name: ClassVar[str | None] = None


@dataclass(frozen=True, slots=True)
class HandlerInfo:
    """What the runtime needs to know about a handler class."""

    path: str
    name: str
    options: Mapping[str, Any]
    has_before: bool
    has_after: bool


def handler_path(cls: type[StepHandler]) -> str:
    """The import path ``"module:QualName"`` that workers load ``cls`` from.

    Raises ``ValueError`` for a class workers cannot import (defined in ``__main__`` or inside a function).
    """
    if "<locals>" in cls.__qualname__:
        raise ValueError(f"{cls.__qualname__} is defined inside a function; define handlers at module level")
    if cls.__module__ == "__main__":
        raise ValueError(f"{cls.__qualname__} is defined in __main__; workers cannot import it by path")
    return f"{cls.__module__}:{cls.__qualname__}"


def _attribute(obj: Any, qualname: str) -> Any:
    for part in qualname.split("."):
        if part.startswith("__"):
            raise AttributeError(part)
        obj = getattr(obj, part)
    return obj


def _check_class(path: str, obj: object) -> type[StepHandler]:
    if isinstance(obj, type) and issubclass(obj, StepHandler) and obj is not StepHandler:
        return obj
    raise HandlerNotAllowed(f"handler path {path!r} does not name a StepHandler subclass")


def resolve(step: type[StepHandler] | str) -> type[StepHandler]:
    """The handler class for ``add_step``/``add_after``: a class, or an import path given by the program.

    Raises ``ValueError`` (or ``HandlerNotAllowed``) when it is not a loadable ``StepHandler`` subclass.
    """
    if isinstance(step, str):
        match = _PATH.match(step)
        if match is None:
            raise ValueError(f"invalid handler path {step!r}; expected 'package.module:ClassName'")
        module = importlib.import_module(match.group(1))
        try:
            return _check_class(step, _attribute(module, match.group(2)))
        except AttributeError:
            raise ValueError(f"handler path {step!r}: no attribute {match.group(2)!r}") from None
    cls = _check_class(repr(step), step)
    module_name, _, qualname = handler_path(cls).partition(":")
    found: object = _attribute(sys.modules[module_name], qualname)
    if found is not cls:
        raise ValueError(f"{cls!r} is not reachable as {module_name}:{qualname}")
    return cls


def describe(cls: type[StepHandler]) -> HandlerInfo:
    """The stored description of a handler class."""
    return HandlerInfo(
        path=handler_path(cls),
        name=cls.name or cls.__name__,
        options=dict(cls.options),
        has_before=callable(getattr(cls, "before_all", None)),
        has_after=callable(getattr(cls, "after_all", None)),
    )


class HandlerLoader:
    """Loads handlers from stored paths, refusing anything outside the allowed modules.

    A module is allowed when it is already imported, or is (or is inside) one of ``allowed_modules``.
    One handler instance per class, shared by the threads of the process.
    """

    def __init__(self, allowed_modules: Iterable[str]) -> None:
        self._allowed = tuple(dict.fromkeys(m for m in allowed_modules if m))
        self._instances: dict[str, StepHandler] = {}
        self._lock = threading.Lock()

    def allowed(self, module: str) -> bool:
        """Whether handlers may be loaded from ``module``."""
        if module in sys.modules:
            return True
        return any(module == m or module.startswith(m + ".") for m in self._allowed)

    def load(self, path: str) -> StepHandler:
        """The handler instance for a stored ``path``; ``HandlerNotAllowed`` with the reason otherwise."""
        instance = self._instances.get(path)
        if instance is not None:
            return instance
        match = _PATH.match(path)
        if match is None:
            raise HandlerNotAllowed(f"handler path {path!r} is malformed; refusing to load it")
        module_name, qualname = match.groups()
        if not self.allowed(module_name):
            raise HandlerNotAllowed(
                f"handler path {path!r} refused: module {module_name!r} is not imported and not among the "
                "allowed handler modules (app include/imports, handler_modules)"
            )
        with self._lock:  # also keeps threads from seeing a module another thread is still importing
            instance = self._instances.get(path)
            if instance is not None:
                return instance
            try:
                cls = _check_class(path, _attribute(importlib.import_module(module_name), qualname))
            except (ImportError, AttributeError) as exc:
                raise HandlerNotAllowed(f"handler path {path!r} cannot be loaded: {exc!r}") from exc
            instance = self._instances[path] = cls()
        return instance
