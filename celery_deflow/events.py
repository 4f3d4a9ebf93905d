"""Workflow events over Redis pub/sub: encoding, and ``EventHub``, the per-process subscriber.

Each workflow has its own channel (``<prefix>:ev:<id>``). Messages are JSON objects with a ``type``:

- ``next_task``: ``{"tasks": [{id, workflow_id, data, step_key, attempt}, ...]}``, one message per claimed
  window of attempts, published by the claim transition itself, before the handlers run;
- ``done``: ``{"workflow_id"}``, published by the transition that stores the status ``done``;
- ``error``: ``{"workflow_id", "error" (class name), "message", "step_key"}``.

``EventHub`` pattern-subscribes once per process, on first use, and hands events to the callbacks registered
for their workflow on its listener thread. Imports ``errors``, ``keys`` and ``results``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any

import redis

from .errors import (
    DeflowError,
    HandlerNotAllowed,
    HookError,
    StateError,
    TaskTimeout,
    WorkerLost,
    WorkflowCancelled,
)
from .keys import KeySchema
from .results import WorkflowResult

__all__ = ["EVENTS", "EventHub", "decode_error", "error_event"]

logger = logging.getLogger(__name__)

#: The events ``Workflow.on`` accepts.
EVENTS = ("done", "next_task", "error")
#: How many finished workflows the hub remembers (a late ``on("done")`` for them is answered at once).
FIRED_MEMORY = 10_000

_ERRORS: dict[str, type[DeflowError]] = {
    cls.__name__: cls for cls in (HandlerNotAllowed, HookError, StateError, TaskTimeout, WorkerLost, WorkflowCancelled)
}

Callback = Callable[[Any], Any]


def error_event(workflow_id: str, error: BaseException, step_key: str | None = None) -> str:
    """The JSON text of an ``error`` event for ``error``."""
    name = type(error).__name__ if type(error).__name__ in _ERRORS else "DeflowError"
    return json.dumps(
        {"type": "error", "workflow_id": workflow_id, "error": name, "message": str(error), "step_key": step_key}
    )


def decode_error(event: dict[str, Any]) -> DeflowError:
    """The exception an ``error`` event stands for."""
    return _ERRORS.get(str(event.get("error")), DeflowError)(str(event.get("message", "")))


class EventHub:
    """Subscribes to every workflow channel and dispatches events to per-workflow callbacks."""

    def __init__(self, client: redis.Redis, keys: KeySchema, read_result: Callable[[str], WorkflowResult]) -> None:
        self._client = client
        self._keys = keys
        self._read_result = read_result
        self._lock = threading.Lock()
        self._callbacks: dict[str, dict[str, list[Callback]]] = defaultdict(lambda: defaultdict(list))
        self._fired: OrderedDict[str, None] = OrderedDict()  # the latest workflows whose done was delivered
        self._pubsub: redis.client.PubSub | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def subscribe(self, workflow_id: str, event: str, callback: Callback) -> None:
        """Call ``callback`` for each ``event`` of the workflow, from now on."""
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; expected one of {', '.join(EVENTS)}")
        self._ensure_listening()
        with self._lock:
            fired = event == "done" and workflow_id in self._fired
            if not fired:
                self._callbacks[workflow_id][event].append(callback)
        if fired:
            self._call(callback, self._read_result(workflow_id))

    def fire_done(self, workflow_id: str) -> None:
        """Deliver ``done`` to the workflow's callbacks unless that already happened (each gets it once)."""
        with self._lock:
            if workflow_id in self._fired:
                return
            self._fired[workflow_id] = None
            while len(self._fired) > FIRED_MEMORY:
                self._fired.popitem(last=False)
            entry = self._callbacks.pop(workflow_id, None)
        callbacks = [] if entry is None else entry.get("done", [])
        if callbacks:
            result = self._read_result(workflow_id)
            for callback in callbacks:
                self._call(callback, result)

    def _ensure_listening(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            pubsub = self._client.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
            pubsub.psubscribe(self._keys.channel_pattern())
            while True:  # wait for the confirmation: events published after this point are received
                message = pubsub.get_message(timeout=5.0)
                if message is None:
                    raise redis.ConnectionError("no confirmation of the event subscription")
                if message["type"] == "psubscribe":
                    break
            self._pubsub = pubsub
            self._thread = threading.Thread(target=self._listen, name="deflow-events", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        pubsub = self._pubsub
        assert pubsub is not None
        while not self._stop.is_set():
            try:
                message = pubsub.get_message(timeout=0.1)
            except (redis.RedisError, OSError, ValueError) as exc:
                if self._stop.is_set():
                    return
                logger.warning("event subscription interrupted (%s); resubscribing", exc)
                self._stop.wait(0.5)
                continue
            if message is None or message.get("type") != "pmessage":
                continue
            try:
                self._dispatch(message["channel"], message["data"])
            except Exception:
                logger.exception("could not dispatch an event")

    def _dispatch(self, channel: str, data: str) -> None:
        workflow_id = self._keys.workflow_id_of_channel(channel)
        event = json.loads(data)
        kind = event.get("type")
        if kind == "done":
            self.fire_done(workflow_id)
            return
        with self._lock:
            entry = self._callbacks.get(workflow_id)
            callbacks = list(entry.get(kind, [])) if entry is not None else []
        if not callbacks:
            return
        if kind == "next_task":
            for task in event.get("tasks", []):
                for callback in callbacks:
                    self._call(callback, task)
        elif kind == "error":
            error = decode_error(event)
            for callback in callbacks:
                self._call(callback, error)

    @staticmethod
    def _call(callback: Callback, value: Any) -> None:
        try:
            callback(value)
        except Exception:
            logger.exception("an event callback raised")

    def close(self) -> None:
        """Stop listening and drop every callback."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        if self._pubsub is not None:
            self._pubsub.close()
            self._pubsub = None
        with self._lock:
            self._callbacks.clear()
