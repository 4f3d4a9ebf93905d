"""DeFlow's internal Celery tasks, and ``CeleryDispatcher``, which publishes them. Imports celery, ``phases``.

- ``celery_deflow.run_range(workflow_id, sid, lo, hi)``: first attempts of task positions ``[lo, hi)``;
- ``celery_deflow.run_list(workflow_id, sid, attempts)``: the listed ``[position, attempt]`` retries;
- ``celery_deflow.run_hook(workflow_id, sid, kind)``: a ``before_all``/``after_all`` phase;
- ``celery_deflow.close_phase(workflow_id, token)``: the chord body (and errback) of every phase;
- ``celery_deflow.launch_phase(workflow_id, token, total)``: launches a workflow's first phase from a worker,
  so that the process calling ``run()`` publishes one message and tracks no chord results.

Messages carry ids only: task data and results stay in Redis, and no Celery result is stored. The tasks are
``acks_late``, the work tasks also ``reject_on_worker_lost`` (a message whose worker dies is delivered again;
every transition is idempotent), and they retry themselves on Redis connection errors.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from kombu.utils.uuid import uuid

from .model import PhaseKind

if TYPE_CHECKING:
    from .runtime import DeFlow

__all__ = ["TASK_NAMES", "CeleryDispatcher", "register_tasks"]

TASK_NAMES = (
    "celery_deflow.run_range",
    "celery_deflow.run_list",
    "celery_deflow.run_hook",
    "celery_deflow.close_phase",
    "celery_deflow.launch_phase",
)

_RETRY: dict[str, Any] = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": 0.5,
    "retry_backoff_max": 10,
    "retry_jitter": True,
    "max_retries": 60,
}
_CONTROL: dict[str, Any] = {"shared": False, "bind": True, "acks_late": True, "ignore_result": True, **_RETRY}
_WORK: dict[str, Any] = {**_CONTROL, "reject_on_worker_lost": True}


def _node(task: Any) -> str:
    return str(task.request.hostname or socket.gethostname())


class CeleryDispatcher:
    """Publishes the internal tasks registered on one app (implements ``phases.Dispatcher``).

    A phase's chord is published here with Celery's chord protocol, without the canvas: the group size is
    stored first (``set_chord_size``), then each header message carries the group id, its index and the body
    signature, so the Redis backend counts the parts (deduplicated) and publishes the body once. Going
    through ``celery.chord`` instead would register every header result as pending -- and subscribe to it --
    in the launching process, where nobody ever waits for it. Header results are not stored
    (``ignore_result``): chord parts are counted all the same.
    """

    def __init__(
        self, app: Any, run_range: Any, run_list: Any, run_hook: Any, close_phase: Any, launch_phase: Any
    ) -> None:
        self._app = app
        self._run_range = run_range
        self._run_list = run_list
        self._run_hook = run_hook
        self._close_phase = close_phase
        self._launch_phase = launch_phase

    def _chord(self, header: list[tuple[Any, tuple[Any, ...]]], workflow_id: str, token: str) -> None:
        backend = self._app.backend
        backend.ensure_chords_allowed()
        group_id = uuid()
        body = self._close_phase.si(workflow_id, token)
        body.link_error(self._close_phase.si(workflow_id, token))
        body.freeze(group_id=group_id)
        backend.set_chord_size(group_id, len(header))
        with self._app.producer_or_acquire() as producer:
            for index, (task, args) in enumerate(header):
                task.apply_async(
                    args, group_id=group_id, group_index=index, chord=body, add_to_parent=False, producer=producer
                )

    def tasks_phase(self, workflow_id: str, sid: int, token: str, ranges: Iterable[tuple[int, int]]) -> None:
        """Launch a tasks phase as a chord of range messages."""
        header = [(self._run_range, (workflow_id, sid, lo, hi)) for lo, hi in ranges]
        self._chord(header, workflow_id, token)

    def hook_phase(self, workflow_id: str, sid: int, kind: PhaseKind, token: str) -> None:
        """Launch a hook phase as a chord of its single run."""
        self._chord([(self._run_hook, (workflow_id, sid, kind))], workflow_id, token)

    def launch_later(self, workflow_id: str, token: str, total: int) -> None:
        """Have a worker launch phase ``token``."""
        self._launch_phase.apply_async((workflow_id, token, total), add_to_parent=False)

    def send_ranges(self, workflow_id: str, sid: int, ranges: Iterable[tuple[int, int]]) -> None:
        """Publish range messages outside the phase's chord (tasks added while it runs)."""
        with self._app.producer_or_acquire() as producer:
            for lo, hi in ranges:
                self._run_range.apply_async((workflow_id, sid, lo, hi), add_to_parent=False, producer=producer)

    def send_retries(self, workflow_id: str, sid: int, attempts: list[tuple[int, int]], delay: float | None) -> None:
        """Publish the next attempts of failed tasks, ``delay`` seconds from now."""
        pairs = [[position, attempt] for position, attempt in attempts]
        self._run_list.apply_async((workflow_id, sid, pairs), countdown=delay or None, add_to_parent=False)


def register_tasks(app: Any, deflow: DeFlow) -> CeleryDispatcher:
    """Register the internal tasks on ``app``, bound to ``deflow``; return their dispatcher."""

    def run_range(self: Any, workflow_id: str, sid: int, lo: int, hi: int) -> None:
        deflow.executor.run_tasks(workflow_id, sid, ["r", lo, hi], _node(self))

    def run_list(self: Any, workflow_id: str, sid: int, attempts: list[list[int]]) -> None:
        deflow.executor.run_tasks(workflow_id, sid, ["l", attempts], _node(self))

    def run_hook(self: Any, workflow_id: str, sid: int, kind: PhaseKind) -> None:
        deflow.executor.run_hook(workflow_id, sid, kind)

    def close_phase(self: Any, workflow_id: str, token: str) -> None:
        deflow.driver.close(workflow_id, token, arrived=True)

    def launch_phase(self: Any, workflow_id: str, token: str, total: int) -> None:
        deflow.driver.launch(workflow_id, token, total)

    return CeleryDispatcher(
        app,
        app.task(name="celery_deflow.run_range", **_WORK)(run_range),
        app.task(name="celery_deflow.run_list", **_WORK)(run_list),
        app.task(name="celery_deflow.run_hook", **_WORK)(run_hook),
        app.task(
            name="celery_deflow.close_phase", shared=False, bind=True, acks_late=True, ignore_result=True, **_RETRY
        )(close_phase),
        app.task(
            name="celery_deflow.launch_phase", shared=False, bind=True, acks_late=True, ignore_result=True, **_RETRY
        )(launch_phase),
    )
