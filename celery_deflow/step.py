"""``Step`` and ``Task``: the objects hooks receive. Imports ``errors`` and ``model``.

They are thin: attributes read when the worker loaded the step, and methods that delegate to the runtime
(:class:`StepOps`), which knows the attempt making the call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .errors import StateError
from .model import Progress

if TYPE_CHECKING:
    from .handler import StepHandler

__all__ = ["Step", "StepOps", "Task"]


class StepOps(Protocol):
    """What a ``Step`` delegates to."""

    def add_tasks(self, step: Step, items: Iterable[Any]) -> None:
        """Append tasks to ``step``."""

    def add_after(
        self,
        step: Step,
        handler: type[StepHandler] | str,
        data: Any,
        tasks: Iterable[Any] | None,
        options: Mapping[str, Any] | None,
    ) -> Step:
        """Insert a step after the calling phase."""

    def progress(self, step: Step) -> Progress:
        """The step's progress."""

    def results(self, step: Step) -> list[Task]:
        """The step's finished tasks, in insertion order."""

    def task_count(self, step: Step) -> int:
        """The number of tasks ever added to the step."""


class Step:
    """A workflow step, as passed to hooks.

    Attributes:
        id: the step id (unique).
        name: the step name (the handler's ``name`` or class name; not unique).
        index: the position in the workflow tree: ``"1"``, ``"2"``; ``"3.1"`` for the first step that step
            ``"3"`` added; unique and stable.
        data: the step data given to ``add_step``/``add_after`` (``None`` when none).
        options: the effective step options.
        workflow_id: the workflow's id.
        key: ``"<workflow id>:<step id>"``.
        parent_key: the key of the step that added this one, ``None`` for ``add_step`` steps.
    """

    __slots__ = ("_ops", "_sid", "data", "id", "index", "key", "name", "options", "parent_key", "workflow_id")

    def __init__(
        self,
        ops: StepOps,
        sid: int,
        *,
        step_id: str,
        name: str,
        index: str,
        data: Any,
        options: dict[str, Any],
        workflow_id: str,
        key: str,
        parent_key: str | None,
    ) -> None:
        self._ops = ops
        self._sid = sid
        self.id = step_id
        self.name = name
        self.index = index
        self.data = data
        self.options = options
        self.workflow_id = workflow_id
        self.key = key
        self.parent_key = parent_key

    @property
    def sid(self) -> int:
        """The step's number within its workflow (internal; its Redis keys use it)."""
        return self._sid

    @property
    def task_count(self) -> int:
        """The number of tasks ever added to the step (read live)."""
        return self._ops.task_count(self)

    def add_tasks(self, items: Iterable[Any]) -> None:
        """Append one task per item (any JSON value) to this step."""
        self._ops.add_tasks(self, items)

    def add_after(
        self,
        step: type[StepHandler] | str,
        *,
        data: Any = None,
        tasks: Iterable[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Step:
        """Insert a step that runs right after the current phase, and return it.

        From ``before_all`` it runs before this step's tasks; from ``handler``/``after_each`` after all of
        this step's tasks and before its ``after_all``; from ``after_all`` before the next sibling. Several
        additions run in call order (additions of different tasks in the order of those tasks), and nest
        depth first.
        """
        return self._ops.add_after(self, step, data, tasks, options)

    def get_progress(self) -> Progress:
        """``Progress(done, total, percent)`` of this step; ``done`` counts successes and final failures."""
        return self._ops.progress(self)

    def get_results(self) -> list[Task]:
        """The finished tasks, in the order they were added."""
        return self._ops.results(self)

    def __repr__(self) -> str:
        return f"<Step {self.index} {self.name} key={self.key}>"


@dataclass(eq=False)
class Task:
    """One task of a step.

    Attributes:
        id: the task id.
        data: the task's data item.
        result: the handler's return value (``None`` until an attempt succeeds).
        error: ``str()`` of the last failure; ``None`` after a success.
        failed_count: failed attempts so far.
        step_key: the key of the task's step.
    """

    id: str
    data: Any
    result: Any = None
    error: str | None = None
    failed_count: int = 0
    step_key: str = ""
    _step: Step | None = field(default=None, repr=False)

    def add_tasks(self, items: Iterable[Any]) -> None:
        """Append tasks to this task's own step (only during a run of that step)."""
        if self._step is None:
            raise StateError("add_tasks needs a running step; this task was read from a result")
        self._step.add_tasks(items)

    def to_dict(self) -> dict[str, Any]:
        """The task as a plain dict."""
        return {
            "id": self.id,
            "data": self.data,
            "failed_count": self.failed_count,
            "step_key": self.step_key,
            "result": self.result,
            "error": self.error,
        }
