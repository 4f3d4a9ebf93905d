"""``WorkflowResult`` and ``StepResult``, and reading them from the store. Imports ``step``, ``store``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import WorkflowNotFound
from .step import Task
from .store import StateStore, StepRecord

__all__ = ["StepResult", "WorkflowResult", "read_result", "task_id"]


def task_id(step_id: str, position: int) -> str:
    """The id of the task at ``position`` of step ``step_id``."""
    return f"{step_id}-{position}"


@dataclass
class StepResult:
    """One step of a ``WorkflowResult``; ``tasks`` in insertion order, ``hook_errors`` oldest first."""

    id: str
    name: str
    index: str
    data: Any
    options: dict[str, Any]
    task_count: int
    workflow_id: str
    key: str
    parent_key: str | None
    tasks: list[Task] = field(default_factory=list)
    hook_errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The step as plain data."""
        return {
            "id": self.id,
            "name": self.name,
            "index": self.index,
            "data": self.data,
            "options": dict(self.options),
            "task_count": self.task_count,
            "workflow_id": self.workflow_id,
            "key": self.key,
            "parent_key": self.parent_key,
            "tasks": [task.to_dict() for task in self.tasks],
            "hook_errors": list(self.hook_errors),
        }


@dataclass
class WorkflowResult:
    """A workflow's results: ``steps`` in execution order (hook phases excluded)."""

    id: str
    name: str
    options: dict[str, Any]
    status: str
    steps: list[StepResult] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain data (JSON-serialisable when the task data and results are)."""
        return {
            "id": self.id,
            "name": self.name,
            "options": dict(self.options),
            "status": self.status,
            "steps": [step.to_dict() for step in self.steps],
        }


def _step_result(store: StateStore, step: StepRecord, *, all_finished: bool) -> StepResult:
    tasks = [
        Task(task_id(step.id, row.position), row.data, row.result, row.error, row.failed_count, step.key)
        for row in store.tasks(step.workflow_id, step.sid, all_finished=all_finished)
        if row.finished
    ]
    return StepResult(
        id=step.id,
        name=step.name,
        index=step.index,
        data=step.data,
        options=step.options.to_dict(),
        task_count=step.total,
        workflow_id=step.workflow_id,
        key=step.key,
        parent_key=step.parent_key,
        tasks=tasks,
        hook_errors=store.hook_errors(step.workflow_id, step.sid),
    )


def read_result(store: StateStore, workflow_id: str) -> WorkflowResult:
    """The workflow's current results.

    The steps whose tasks phase started, in execution order, each with its finished tasks in insertion order.
    Raises ``WorkflowNotFound`` when the workflow is not stored.
    """
    record = store.workflow(workflow_id)
    if record is None:
        raise WorkflowNotFound(f"workflow {workflow_id!r} is not stored (unknown, expired or deleted)")
    all_finished = record.status == "done"
    steps = []
    for sid in store.order(workflow_id):
        step = store.step(workflow_id, sid)
        if step is not None:
            steps.append(_step_result(store, step, all_finished=all_finished))
    return WorkflowResult(record.id, record.name, record.options, record.status, steps)
