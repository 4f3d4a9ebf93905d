"""The exceptions of celery_deflow. Imports nothing of ours.

``DeflowError`` is the root. Errors that are also builtin errors (``NotRegistered`` is a ``RuntimeError``,
``WorkflowTimeout`` a ``TimeoutError``) subclass both, so that code written against the contract's wording
(``RuntimeError``, ``TimeoutError``) catches them.
"""

from __future__ import annotations

__all__ = [
    "DeflowError",
    "HandlerNotAllowed",
    "HookError",
    "NotRegistered",
    "StateError",
    "TaskTimeout",
    "WorkerLost",
    "WorkflowCancelled",
    "WorkflowNotFound",
    "WorkflowTimeout",
]


class DeflowError(Exception):
    """Base class of every celery_deflow error."""


class NotRegistered(DeflowError, RuntimeError):
    """No DeFlow instance is registered in this process."""

    def __init__(self, message: str = "You must register a DeFlow instance") -> None:
        super().__init__(message)


class HandlerNotAllowed(DeflowError):
    """A stored handler path does not name a ``StepHandler`` subclass in an allowed module."""


class WorkflowNotFound(DeflowError, LookupError):
    """The workflow is not (or no longer) stored in Redis."""


class WorkerLost(DeflowError):
    """An attempt's worker stopped renewing its lease (it died); the attempt counts as failed."""


class WorkflowTimeout(DeflowError, TimeoutError):
    """``Workflow.wait`` ran out of time before the workflow was done."""


class TaskTimeout(DeflowError, TimeoutError):
    """An attempt ran longer than its step's ``task_timeout``."""


class WorkflowCancelled(DeflowError):
    """The workflow was cancelled (by ``cancel()``, or replaced by a newer one with ``if_exist="replace"``)."""


class HookError(DeflowError):
    """A hook (``before_all``, ``after_all``, ``after_each``, ``on_handler_error``) raised; the run goes on."""


class StateError(DeflowError):
    """A state transition was refused: the workflow, phase or attempt is no longer the one it was."""
