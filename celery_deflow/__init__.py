"""DeFlow workflows (steps of fan-out tasks with hooks) on Celery chords, tracked in Redis.

The public surface is the one of ``shared/design/deflow-api.md``: :class:`DeFlow` binds a Celery app to a
Redis server, :class:`Workflow` runs steps described by :class:`StepHandler` subclasses, whose hooks receive
:class:`Step` and :class:`Task` objects. Never imports ``celery_faktory``.
"""

from .errors import (
    DeflowError,
    HandlerNotAllowed,
    HookError,
    NotRegistered,
    StateError,
    TaskTimeout,
    WorkerLost,
    WorkflowCancelled,
    WorkflowNotFound,
    WorkflowTimeout,
)
from .handler import StepHandler
from .model import Progress
from .results import StepResult, WorkflowResult
from .runtime import DeFlow
from .step import Step, Task
from .workflow import Workflow

__all__ = [
    "DeFlow",
    "DeflowError",
    "HandlerNotAllowed",
    "HookError",
    "NotRegistered",
    "Progress",
    "StateError",
    "Step",
    "StepHandler",
    "StepResult",
    "Task",
    "TaskTimeout",
    "WorkerLost",
    "Workflow",
    "WorkflowCancelled",
    "WorkflowNotFound",
    "WorkflowResult",
    "WorkflowTimeout",
]
