"""``Workflow``: creating, running and observing workflows. Imports ``runtime``, ``store``, ``results``, ...

A ``Workflow`` is a handle: the one that ``create`` returns records steps in memory until ``run()`` stores
them (streaming their tasks) and dispatches the first phase; handles from ``get``/``get_by_name`` work from any
process. Everything after ``run()`` happens in the workers: the calling process may exit.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from .errors import StateError, WorkflowCancelled, WorkflowNotFound, WorkflowTimeout
from .events import error_event
from .handler import HandlerInfo, StepHandler, describe, resolve
from .model import Progress, StepOptions, merge_options, slugify
from .results import WorkflowResult, read_result
from .runtime import DeFlow
from .store import NewStep, WorkflowRecord

__all__ = ["Workflow"]

#: Seconds between status checks while waiting (besides the ``done`` event).
WAIT_POLL_INTERVAL = 1.0
_IF_EXIST = ("create", "replace")


@dataclass(frozen=True, slots=True)
class _PendingStep:
    info: HandlerInfo
    data: Any
    tasks: Iterable[Any] | None
    options: StepOptions


class Workflow:
    """A workflow: steps of fan-out tasks run by Celery workers, tracked in Redis.

    Attributes:
        id: ``"<slug of name>:<random>"``.
        name: the name given to :meth:`create`.
        options: ``if_exist``, ``clean_on_done`` and the workflow-wide step option defaults.
    """

    def __init__(self, workflow_id: str, name: str, options: dict[str, Any], *, stored: bool) -> None:
        self.id = workflow_id
        self.name = name
        self.options = options
        self._stored = stored
        self._local_status = "pending"
        self._steps: list[_PendingStep] = []

    @classmethod
    def create(
        cls, name: str, *, if_exist: str = "create", clean_on_done: bool = True, **step_option_defaults: Any
    ) -> Workflow:
        """A new workflow (nothing is stored until :meth:`run`).

        Args:
            name: the workflow name (not unique).
            if_exist: ``"create"`` (default) or ``"replace"``: remove earlier workflows with this name at ``run()``
                (running ones are cancelled: their subscribers get an ``error`` event).
            clean_on_done: delete the working state when done (the result stays readable until it expires).
            **step_option_defaults: step options applying to every step (``task_timeout``, ...).
        """
        if if_exist not in _IF_EXIST:
            raise ValueError(f"if_exist must be one of {_IF_EXIST}, not {if_exist!r}")
        merge_options(step_option_defaults)  # validate
        options = {"if_exist": if_exist, "clean_on_done": bool(clean_on_done), **step_option_defaults}
        return cls(f"{slugify(name)}:{uuid.uuid4().hex[:20]}", name, options, stored=False)

    @property
    def _defaults(self) -> dict[str, Any]:
        return {k: v for k, v in self.options.items() if k not in ("if_exist", "clean_on_done")}

    def add_step(
        self,
        step: type[StepHandler] | str,
        *,
        data: Any = None,
        tasks: Iterable[Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Workflow:
        """Append a step (a ``StepHandler`` subclass or its import path); chainable.

        ``tasks`` may be any iterable (a generator keeps the caller's memory flat): it is consumed at ``run()``.
        """
        if self._stored:
            raise StateError("steps can only be added before run(); use step.add_after from a hook")
        info = describe(resolve(step))
        self._steps.append(_PendingStep(info, data, tasks, merge_options(self._defaults, info.options, options)))
        return self

    def run(self) -> Workflow:
        """Store the workflow and dispatch its first phase; returns at once."""
        if self._stored or self._local_status != "pending":
            raise StateError(f"workflow {self.id} was already run or cancelled")
        deflow = DeFlow.get_instance()
        store = deflow.store
        self._stored = True
        if self.options["if_exist"] == "replace":
            replaced = WorkflowCancelled(f"replaced by workflow {self.id}")
            for old in store.names(self.name):
                store.delete_workflow(old, self.name, error_event(old, replaced))
        record = WorkflowRecord(
            self.id,
            self.name,
            self.options,
            self._defaults,
            "pending",
            bool(self.options["clean_on_done"]),
            "",
            0,
            0,
            0,
        )
        steps, self._steps = self._steps, []
        store.write_workflow(record, self._new_steps(steps))
        deflow.driver.start(self.id)
        return self

    def _new_steps(self, steps: list[_PendingStep]) -> Iterable[NewStep]:
        for sid, pending in enumerate(steps, 1):
            step_id = uuid.uuid4().hex[:16]
            info = pending.info
            yield NewStep(
                sid=sid,
                id=step_id,
                key=f"{self.id}:{step_id}",
                name=info.name,
                index=str(sid),
                data=pending.data,
                options=pending.options,
                handler=info.path,
                has_before=info.has_before,
                has_after=info.has_after,
                tasks=pending.tasks or (),
            )

    @property
    def status(self) -> str:
        """``"pending"``, ``"running"``, ``"done"`` or ``"cancelled"``, read live from Redis."""
        if not self._stored:
            return self._local_status
        return DeFlow.get_instance().store.status(self.id) or self._local_status

    def results(self) -> WorkflowResult:
        """The current results (complete once done)."""
        return read_result(DeFlow.get_instance().store, self.id)

    def progress(self) -> Progress:
        """Progress of the whole workflow: finished tasks out of all tasks added so far."""
        done, total = DeFlow.get_instance().store.counts(self.id)
        return Progress.of(done, total)

    def on(self, event: str, callback: Callable[[Any], Any]) -> Workflow:
        """Call ``callback`` on an event: ``"done"``, ``"next_task"`` or ``"error"``.

        ``done`` fires once, with the ``WorkflowResult``; ``next_task`` once per attempt, with
        ``{id, workflow_id, data, step_key, attempt}``; ``error`` with an exception.

        Events come through Redis, from whichever process produces them; callbacks run on this process's
        event thread. Registered before ``run()``, a callback receives every event of the run.
        """
        DeFlow.get_instance().events.subscribe(self.id, event, callback)
        return self

    def wait(self, timeout: float | None = None) -> WorkflowResult:
        """Block until the workflow is done and return its result.

        Raises ``WorkflowTimeout`` (a ``TimeoutError``) after ``timeout`` seconds, ``WorkflowCancelled`` if it is
        cancelled, ``WorkflowNotFound`` if its state disappears from Redis (for instance a restart without
        persistence).
        """
        deflow = DeFlow.get_instance()
        store = deflow.store
        deadline = None if timeout is None else time.monotonic() + timeout
        arrived = threading.Event()
        delivered: list[WorkflowResult] = []

        def on_done(result: WorkflowResult) -> None:
            delivered.append(result)
            arrived.set()

        subscribed = False
        while True:
            if not subscribed:
                try:
                    deflow.events.subscribe(self.id, "done", on_done)
                    subscribed = True
                except redis.RedisError:
                    pass
            try:
                status = store.status(self.id)
            except redis.RedisError:
                status = "unknown"
            if delivered:
                return delivered[0]
            if status == "done":
                return self.results()
            if status is None:
                raise WorkflowNotFound(
                    f"workflow {self.id} is no longer stored in Redis (deleted, expired, or the server lost its data)"
                )
            if status == "cancelled":
                raise WorkflowCancelled(f"workflow {self.id} was cancelled")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WorkflowTimeout(f"workflow {self.id} not done after {timeout} s (status {status})")
            arrived.wait(WAIT_POLL_INTERVAL if remaining is None else min(remaining, WAIT_POLL_INTERVAL))

    def cancel(self) -> None:
        """Stop dispatching, mark the workflow ``"cancelled"`` and emit ``error``; ``done`` never fires."""
        if not self._stored:
            self._local_status = "cancelled"
            return
        store = DeFlow.get_instance().store
        store.cancel(self.id, error_event(self.id, WorkflowCancelled(f"workflow {self.id} was cancelled")))

    @classmethod
    def get(cls, workflow_id: str) -> Workflow | None:
        """A handle on a stored workflow, from any process; ``None`` when it is not stored."""
        record = DeFlow.get_instance().store.workflow(workflow_id)
        if record is None:
            return None
        return cls(record.id, record.name, record.options, stored=True)

    @classmethod
    def get_by_name(cls, name: str) -> list[Workflow]:
        """Handles on every stored workflow called ``name``, oldest first."""
        found = (cls.get(wf) for wf in DeFlow.get_instance().store.names(name))
        return [wf for wf in found if wf is not None]

    def __repr__(self) -> str:
        return f"<Workflow {self.id}>"
