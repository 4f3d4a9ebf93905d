"""``Executor``: runs DeFlow's work inside the internal Celery tasks, and serves the ``Step`` methods.

A tasks message names a range of task positions (first attempts) or a list of ``(position, attempt)``
(retries). Its worker claims the due attempts in windows -- about ``claim_window`` seconds of work by the
measured pace, at least one task -- under one lease per window, runs each attempt (``handler``, then
``on_handler_error`` on failure, then ``after_each``), and records the window's outcomes in one transition,
pipelined with the claim of the next window. When the rest of its range would take longer than
``split_after``, it publishes the back half as a new message, which another node can take.

Imports ``store``, ``handler``, ``attempts``, ``leases``, ``phases``, ``step``, ``results``, ``events``, ``model``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from .attempts import HookCaller
from .errors import HandlerNotAllowed, HookError, StateError
from .events import error_event
from .handler import HandlerLoader, StepHandler, describe, resolve
from .leases import LeaseKeeper
from .model import HOOK_KINDS, PhaseKind, Progress, format_token, merge_options, next_window
from .phases import PhaseDriver
from .results import task_id
from .step import Step, Task
from .store import AttemptRef, Slot, StateStore, StepRecord, dumps

__all__ = ["Executor"]

logger = logging.getLogger(__name__)

#: Items per ``add_tasks`` transition when a hook adds many tasks at once.
ADD_CHUNK = 5000
#: Weight of the newest measurement in the per-step pace estimate.
PACE_WEIGHT = 0.3
#: Step records (their fixed fields never change) and per-step paces kept per process.
RECORD_CACHE = 512

Claimed = list[tuple[int, int, Any]] | None


@dataclass(slots=True)
class _Run:
    """One message's work on one step."""

    record: StepRecord
    step: Step
    token: str
    lease: str = ""
    fn: Callable[..., Any] | None = None
    on_error: Callable[..., Any] | None = None
    after_each: Callable[..., Any] | None = None
    refused: str | None = None
    finished: dict[int, Task] = field(default_factory=dict)


@dataclass(slots=True)
class _Attempt:
    """The attempt whose hooks are running (in a context variable)."""

    run: _Run
    position: int
    attempt: int
    calls: int = 0

    def next_ref(self) -> AttemptRef:
        self.calls += 1
        record = self.run.record
        return AttemptRef(record.workflow_id, self.run.token, self.position, self.attempt, self.run.lease, self.calls)


_CURRENT: ContextVar[_Attempt | None] = ContextVar("celery_deflow_attempt", default=None)


class _Cursor:
    """Hands out the claim specs of a message, window by window."""

    def __init__(self, spec: list[Any]) -> None:
        self._range = spec[0] == "r"
        self._lo, self._hi = (int(spec[1]), int(spec[2])) if self._range else (0, 0)
        self._pairs: list[list[int]] = [] if self._range else [list(p) for p in spec[1]]

    def split(self) -> tuple[int, int] | None:
        """Give away the back half of what remains of a range (``None`` for lists or under two tasks)."""
        if not self._range or self._hi - self._lo < 2:
            return None
        middle = self._lo + (self._hi - self._lo + 1) // 2
        back, self._hi = (middle, self._hi), middle
        return back

    def remaining(self) -> int:
        return self._hi - self._lo if self._range else len(self._pairs)

    def take(self, size: int) -> list[Any] | None:
        if self._range:
            if self._lo >= self._hi:
                return None
            end = min(self._hi, self._lo + size)
            spec: list[Any] = ["r", self._lo, end]
            self._lo = end
            return spec
        if not self._pairs:
            return None
        chunk, self._pairs = self._pairs[:size], self._pairs[size:]
        return ["l", *(value for pair in chunk for value in pair)]


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _message(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Executor:
    """Runs task windows and hook phases in worker processes; implements ``StepOps`` for ``Step``."""

    def __init__(
        self,
        store: StateStore,
        loader: HandlerLoader,
        caller: HookCaller,
        keeper: LeaseKeeper,
        driver: PhaseDriver,
        *,
        claim_window: float,
        max_window: int,
        split_after: float,
    ) -> None:
        self._store = store
        self._loader = loader
        self._caller = caller
        self._keeper = keeper
        self._driver = driver
        self._claim_window = claim_window
        self._max_window = max_window
        self._split_after = split_after
        self._pace: OrderedDict[str, float] = OrderedDict()
        self._records: OrderedDict[tuple[str, int], StepRecord] = OrderedDict()

    # -- messages -----------------------------------------------------------------------------------------

    def run_tasks(self, workflow_id: str, sid: int, spec: list[Any], node: str) -> None:
        """Run the attempts of a tasks message (``["r", lo, hi]`` or ``["l", [[pos, attempt], ...]]``)."""
        record = self._record(workflow_id, sid)
        if record is None:
            return
        run = _Run(record, self._step_of(record), format_token(sid, "t"))
        try:
            handler = self._loader.load(record.handler)
        except HandlerNotAllowed as exc:
            run.refused = f"HandlerNotAllowed: {exc}"
            self._run_windows(run, _Cursor(spec), None)
            self._store.publish(workflow_id, error_event(workflow_id, exc, record.key))
            return
        run.fn = getattr(handler, "handler", None)
        run.on_error = getattr(handler, "on_handler_error", None)
        run.after_each = getattr(handler, "after_each", None)
        self._run_windows(run, _Cursor(spec), node)

    def _record(self, workflow_id: str, sid: int) -> StepRecord | None:
        """The step record; its fixed fields are cached (the counters in it are not kept up to date)."""
        key = (workflow_id, sid)
        record = self._records.get(key)
        if record is None:
            record = self._store.step(workflow_id, sid)
            if record is not None:
                self._records[key] = record
                while len(self._records) > RECORD_CACHE:
                    self._records.popitem(last=False)
        return record

    def run_hook(self, workflow_id: str, sid: int, kind: PhaseKind) -> None:
        """Run a ``before_all`` (``"b"``) or ``after_all`` (``"a"``) phase."""
        record = self._record(workflow_id, sid)
        if record is None:
            return
        token = format_token(sid, kind)
        lease = self._keeper.new_lease()
        if self._store.claim_hook(workflow_id, sid, kind, lease) != "ok":
            return
        self._keeper.hold(lease)
        try:
            error = self._call_hook(_Run(record, self._step_of(record), token, lease), HOOK_KINDS[kind])
            complete = self._store.finish_hook(workflow_id, sid, kind, lease, error)
        finally:
            self._keeper.release(lease)
        if complete:
            self._driver.close(workflow_id, token, arrived=False)

    def _call_hook(self, run: _Run, name: str) -> str | None:
        record = run.record
        try:
            handler = self._loader.load(record.handler)
        except HandlerNotAllowed as exc:
            self._store.publish(record.workflow_id, error_event(record.workflow_id, exc, record.key))
            return f"HandlerNotAllowed: {exc}"
        fn = getattr(handler, name, None)
        if fn is None:
            return None
        reset = _CURRENT.set(_Attempt(run, 0, 1))
        try:
            self._caller.call(fn, (run.step,))
        except Exception as exc:
            return self._hook_failed(record, name, exc, store=False)
        finally:
            _CURRENT.reset(reset)
        return None

    def _hook_failed(self, record: StepRecord, name: str, exc: Exception, *, store: bool = True) -> str:
        message = f"{name} of step {record.index} ({record.name}) raised {type(exc).__name__}: {exc}"
        logger.warning("%s", message)
        if store:
            self._store.record_hook_error(record.workflow_id, record.sid, message)
        self._store.publish(record.workflow_id, error_event(record.workflow_id, HookError(message), record.key))
        return message

    def _remember_pace(self, step_key: str, pace: float) -> None:
        self._pace[step_key] = pace
        self._pace.move_to_end(step_key)
        while len(self._pace) > RECORD_CACHE:
            self._pace.popitem(last=False)

    def _first_claim(self, record: StepRecord, lease: str, spec: list[Any], slot: Slot | None) -> Claimed:
        """The message's first claim, waiting while its node's concurrency slots are all taken."""
        delay = 0.005
        while True:
            claimed = self._store.claim_tasks(record.workflow_id, record.sid, lease, spec, slot)
            if claimed != "busy":
                return claimed
            if self._store.status(record.workflow_id) != "running":
                return None
            time.sleep(delay)
            delay = min(0.2, delay * 2)

    def _run_windows(self, run: _Run, cursor: _Cursor, node: str | None) -> None:
        """Claim, run and record a message's attempts window by window.

        Throughout, one of the node's ``task_concurrency`` slots for the step is held (none when ``node`` is
        ``None``): the first claim takes it, the last finish gives it back.
        """
        record = run.record
        wf, sid = record.workflow_id, record.sid
        pace = self._pace.get(record.key)
        size = 1
        if pace is not None:
            size = next_window(self._max_window, pace, window=self._claim_window, limit=self._max_window)
        spec = cursor.take(size)
        if spec is None:
            return
        lease = self._keeper.new_lease()
        limit = record.options.task_concurrency
        slot = None if node is None else (f"{node}|{self._keeper.new_lease()}", f"{node}|", limit)
        claimed = self._first_claim(record, lease, spec, slot)
        if claimed is None:
            return
        slots_key = self._store.slots_key(wf, sid)
        if slot is not None:
            self._keeper.hold_slot(slots_key, slot[0])
        released = slot is None
        try:
            while claimed is not None:
                run.lease = lease
                self._keeper.hold(lease)
                try:
                    outcomes: list[Any] = []
                    started = time.perf_counter()
                    for position, attempt, data in claimed:
                        self._attempt(run, position, attempt, data, outcomes)
                    if claimed:
                        measured = (time.perf_counter() - started) / len(claimed)
                        pace = measured if pace is None else pace + PACE_WEIGHT * (measured - pace)
                        self._remember_pace(record.key, pace)
                    size = next_window(max(size, len(claimed)), pace, window=self._claim_window, limit=self._max_window)
                    if pace is not None and run.refused is None and cursor.remaining() * pace > self._split_after:
                        back = cursor.split()
                        if back is not None:
                            self._driver.dispatch_added(wf, sid, *back)
                    next_spec = cursor.take(size)
                    next_lease = None if next_spec is None else self._keeper.new_lease()
                    release = slot[0] if slot is not None and next_spec is None else ""
                    finished, next_claimed = self._store.finish_and_claim(
                        wf, sid, lease, outcomes, next_lease, next_spec, release
                    )
                    released = released or bool(release)
                finally:
                    self._keeper.release(lease)
                    run.finished.clear()
                if finished is not None:
                    complete, retries = finished
                    self._driver.dispatch_retries(wf, sid, retries, record.options.task_fail_retry_delay)
                    if complete:
                        self._driver.close(wf, run.token, arrived=False)
                if next_lease is None:
                    return
                lease, claimed = next_lease, next_claimed
        finally:
            if slot is not None:
                self._keeper.release_slot(slots_key, slot[0])
                if not released:
                    self._store.release_slot(wf, sid, slot[0])

    def _attempt(self, run: _Run, position: int, attempt: int, data: Any, out: list[Any]) -> None:
        record = run.record
        task = Task(task_id(record.id, position), data, None, None, attempt - 1, record.key, run.step)
        if run.refused is not None:
            task.failed_count, task.error = attempt, run.refused
            out.append((position, attempt, "x", run.refused))
            return
        reset = _CURRENT.set(_Attempt(run, position, attempt))
        try:
            try:
                if run.fn is None:
                    raise StateError(f"handler {record.handler} has no 'handler' hook to run tasks with")
                result = self._caller.call(run.fn, (task, run.step), record.options.task_timeout)
                payload = dumps(result)
            except Exception as exc:
                task.failed_count, task.error = attempt, _message(exc)
                out.append((position, attempt, "f", task.error))
                if attempt >= record.options.attempts:
                    run.finished[position] = task
                if run.on_error is not None:
                    self._guarded(record, "on_handler_error", run.on_error, (task, run.step, exc))
            else:
                task.result = result
                out.append((position, attempt, "s", payload))
                run.finished[position] = task
            if run.after_each is not None:
                self._guarded(record, "after_each", run.after_each, (task, run.step))
        finally:
            _CURRENT.reset(reset)

    def _guarded(self, record: StepRecord, name: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            self._caller.call(fn, args)
        except Exception as exc:
            self._hook_failed(record, name, exc)

    # -- Step objects and their methods (StepOps) -------------------------------------------------------

    def _step_of(self, record: StepRecord) -> Step:
        return Step(
            self,
            record.sid,
            step_id=record.id,
            name=record.name,
            index=record.index,
            data=record.data,
            options=record.options.to_dict(),
            workflow_id=record.workflow_id,
            key=record.key,
            parent_key=record.parent_key,
        )

    @staticmethod
    def _require_attempt(step: Step, what: str) -> _Attempt:
        state = _CURRENT.get()
        if state is None or state.run.record.workflow_id != step.workflow_id:
            raise StateError(f"{what} can only be called from a hook running in this step's workflow")
        return state

    def add_tasks(self, step: Step, items: Iterable[Any]) -> None:
        """Append tasks to ``step`` on behalf of the running attempt (see ``Step.add_tasks``)."""
        state = self._require_attempt(step, "add_tasks")
        for chunk in _chunks(items, ADD_CHUNK):
            status, lo, hi, running = self._store.add_tasks(state.next_ref(), step.sid, chunk)
            if status == "closed":
                raise StateError("add_tasks refused: the calling attempt is over (timed out or presumed lost)")
            if status == "ended":
                raise StateError(f"add_tasks refused: the tasks of step {step.index} have all run")
            if running and hi > lo:
                self._driver.dispatch_added(step.workflow_id, step.sid, lo, hi, owed=True)

    def add_after(
        self,
        step: Step,
        handler: type[StepHandler] | str,
        data: Any,
        tasks: Iterable[Any] | None,
        options: Mapping[str, Any] | None,
    ) -> Step:
        """Insert a step after the calling phase (see ``Step.add_after``)."""
        state = self._require_attempt(step, "add_after")
        info = describe(resolve(handler))
        workflow = self._store.workflow(step.workflow_id)
        if workflow is None:
            raise StateError(f"workflow {step.workflow_id!r} is gone")
        effective = merge_options(workflow.defaults, info.options, options)
        added = self._store.add_after(
            state.next_ref(),
            step_id=uuid.uuid4().hex[:16],
            name=info.name,
            handler=info.path,
            data=data,
            options=effective,
            has_before=info.has_before,
            has_after=info.has_after,
            tasks=list(tasks or ()),
        )
        if added is None:
            raise StateError("add_after refused: the calling attempt is over (timed out or presumed lost)")
        sid, step_id, index, key = added
        return Step(
            self,
            sid,
            step_id=step_id,
            name=info.name,
            index=index,
            data=data,
            options=effective.to_dict(),
            workflow_id=step.workflow_id,
            key=key,
            parent_key=state.run.record.key,
        )

    def progress(self, step: Step) -> Progress:
        """The step's progress, including this worker's outcomes not yet recorded."""
        done, total = self._store.counts(step.workflow_id, step.sid)
        state = _CURRENT.get()
        if state is not None and state.run.record.sid == step.sid and state.run.record.workflow_id == step.workflow_id:
            done += len(state.run.finished)
        return Progress.of(min(done, total), total)

    def results(self, step: Step) -> list[Task]:
        """The step's finished tasks in insertion order, including this worker's outcomes not yet recorded."""
        state = _CURRENT.get()
        local: dict[int, Task] = {}
        if state is not None and state.run.record.sid == step.sid and state.run.record.workflow_id == step.workflow_id:
            local = state.run.finished
        tasks = []
        for row in self._store.tasks(step.workflow_id, step.sid, all_finished=False):
            if row.position in local:
                tasks.append(local[row.position])
            elif row.finished:
                tid = task_id(step.id, row.position)
                tasks.append(Task(tid, row.data, row.result, row.error, row.failed_count, step.key, step))
        return tasks

    def task_count(self, step: Step) -> int:
        """The number of tasks ever added to the step."""
        return self._store.counts(step.workflow_id, step.sid)[1]
