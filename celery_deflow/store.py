"""``StateStore``: the only code that talks to Redis. Imports redis, ``keys``, ``model``, ``scripts``.

Every state transition is one Lua script (``lua/``); reads are plain commands. Times passed to the scripts
come from the store's clock, in milliseconds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Literal, NamedTuple

import redis

from .clock import Clock, SystemClock
from .keys import KeySchema
from .model import STEP_OPTION_NAMES, PhaseKind, StepOptions, merge_options, parse_token
from .scripts import ScriptSet

__all__ = [
    "Advance",
    "AttemptRef",
    "NewStep",
    "PhaseState",
    "Slot",
    "Reclaimed",
    "StateStore",
    "StepRecord",
    "TaskRow",
    "WorkflowRecord",
]

#: Task data items written per RPUSH when storing a workflow.
WRITE_CHUNK = 2000
#: Task positions read per request when reading results.
READ_CHUNK = 10_000


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A stored workflow."""

    id: str
    name: str
    options: dict[str, Any]
    defaults: dict[str, Any]
    status: str
    clean_on_done: bool
    current: str
    total: int
    done: int
    failed: int


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A stored step (immutable fields plus its counters at read time)."""

    workflow_id: str
    sid: int
    id: str
    key: str
    name: str
    index: str
    data: Any
    options: StepOptions
    handler: str
    parent_key: str | None
    has_before: bool
    has_after: bool
    total: int
    done: int
    failed: int


@dataclass(frozen=True, slots=True)
class NewStep:
    """A step to store at ``run()``: ``tasks`` is consumed once, in chunks."""

    sid: int
    id: str
    key: str
    name: str
    index: str
    data: Any
    options: StepOptions
    handler: str
    has_before: bool
    has_after: bool
    tasks: Iterable[Any]


#: A concurrency slot to take: ``(member "<node>|<id>", "<node>|", slots per node)``.
Slot = tuple[str, str, int]


class Advance(NamedTuple):
    """The outcome of moving a workflow on.

    ``launch`` phase ``token`` (with ``total`` tasks), ``done``, ``wait`` (the phase is not finished yet) or
    ``stale`` (nothing to do).
    """

    action: Literal["launch", "done", "wait", "stale"]
    token: str = ""
    total: int = 0


class AttemptRef(NamedTuple):
    """The live attempt that makes an ``add_after``/``add_tasks`` call (hooks: position 0, attempt 1)."""

    workflow_id: str
    token: str
    position: int
    attempt: int
    lease_id: str
    call: int


class TaskRow(NamedTuple):
    """A task as read back: JSON texts are decoded."""

    position: int
    data: Any
    result: Any
    error: str | None
    failed_count: int
    finished: bool


class PhaseState(NamedTuple):
    """Where a running workflow stands, for the recovery scan."""

    token: str
    body_arrived: bool
    launched: bool
    finished: bool
    total: int


class Reclaimed(NamedTuple):
    """An expired lease taken over by a recovery scan."""

    workflow_id: str
    sid: int
    kind: PhaseKind
    complete: bool
    retries: list[tuple[int, int]]


def _advance(reply: Sequence[Any]) -> Advance:
    action = reply[0]
    if action == "launch":
        return Advance("launch", str(reply[1]), int(reply[2]))
    if action in {"done", "wait"}:
        return Advance(action)
    return Advance("stale")


class Owed(NamedTuple):
    """A dispatch recorded in Redis but not yet confirmed published.

    Tasks ``[lo, hi)`` added to a running tasks phase (``attempts`` empty), or the retries ``attempts``
    (``(position, attempt)`` pairs) made due.
    """

    workflow_id: str
    sid: int
    lo: int = 0
    hi: int = 0
    attempts: tuple[tuple[int, int], ...] = ()

    @property
    def member(self) -> str:
        """The entry's member in the workflow's owed zset (as the Lua scripts write it)."""
        if self.attempts:
            return f"l|{self.sid}|" + ",".join(f"{pos},{attempt}" for pos, attempt in self.attempts)
        return f"r|{self.sid}|{self.lo}|{self.hi}"

    @classmethod
    def parse(cls, workflow_id: str, member: str) -> Owed:
        """The entry written as ``member``."""
        kind, sid, rest = member.split("|", 2)
        if kind == "l":
            return cls(workflow_id, int(sid), attempts=tuple(_pairs(rest.split(","))))
        lo, hi = rest.split("|")
        return cls(workflow_id, int(sid), int(lo), int(hi))


def _pairs(flat: Sequence[Any]) -> list[tuple[int, int]]:
    return [(int(flat[i]), int(flat[i + 1])) for i in range(0, len(flat), 2)]


def _chunks(items: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def dumps(value: Any) -> str:
    """JSON text of a task datum, result or step datum (compact)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class StateStore:
    """Reads and transitions of workflow state in Redis."""

    def __init__(
        self,
        client: redis.Redis,
        keys: KeySchema,
        *,
        lease_ms: int,
        state_ttl_ms: int,
        result_ttl_ms: int,
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.lease_ms = lease_ms
        self.state_ttl_ms = state_ttl_ms
        self.result_ttl_ms = result_ttl_ms
        self.clock: Clock = clock or SystemClock()
        self.scripts = ScriptSet(client)

    # -- creating and starting ------------------------------------------------------------------------------

    def write_workflow(self, record: WorkflowRecord, steps: Iterable[NewStep]) -> int:
        """Store a pending workflow, its steps and their tasks (streamed in chunks); returns the task count."""
        wf = record.id
        ttl = self.state_ttl_ms
        total = 0
        plan: list[str] = []
        sids = 0
        for step in steps:
            sids += 1
            data_key = self.keys.step_part(wf, step.sid, "data")
            count = 0
            for chunk in _chunks((dumps(item) for item in step.tasks), WRITE_CHUNK):
                pipe = self.client.pipeline(transaction=False)
                pipe.rpush(data_key, *chunk)
                pipe.pexpire(data_key, ttl)
                pipe.execute()
                count += len(chunk)
            total += count
            skey = self.keys.step(wf, step.sid)
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(
                skey,
                mapping={
                    "sid": step.sid,
                    "id": step.id,
                    "key": step.key,
                    "wf": wf,
                    "name": step.name,
                    "handler": step.handler,
                    "data": dumps(step.data),
                    "options": dumps(step.options.to_dict()),
                    "max": step.options.attempts,
                    "hb": int(step.has_before),
                    "ha": int(step.has_after),
                    "index": step.index,
                    "parent": "",
                    "total": count,
                    "done": 0,
                    "failed": 0,
                    "kids": 0,
                    "tph": "pending",
                },
            )
            pipe.pexpire(skey, ttl)
            pipe.execute()
            if step.has_before:
                plan.append(f"{step.sid}:b")
            plan.append(f"{step.sid}:t")
            if step.has_after:
                plan.append(f"{step.sid}:a")
        base = self.keys.workflow(wf)
        pipe = self.client.pipeline(transaction=True)
        if plan:
            pipe.rpush(self.keys.plan(wf), *plan)
            pipe.pexpire(self.keys.plan(wf), ttl)
        pipe.hset(
            base,
            mapping={
                "id": wf,
                "name": record.name,
                "options": dumps(record.options),
                "defaults": dumps(record.defaults),
                "status": "pending",
                "clean": int(record.clean_on_done),
                "created": self.clock.now_ms(),
                "chan": self.keys.channel(wf),
                "sids": sids,
                "total": total,
                "done": 0,
                "failed": 0,
                "cur": "",
                "body": 0,
            },
        )
        pipe.pexpire(base, ttl)
        pipe.sadd(self.keys.names(record.name), wf)
        pipe.pexpire(self.keys.names(record.name), max(ttl, self.result_ttl_ms))
        pipe.execute()
        return total

    def start_workflow(self, workflow_id: str) -> Advance:
        """Make a pending workflow running and move it to its first phase."""
        reply = self.scripts.start_workflow(
            [self.keys.workflow(workflow_id), self.keys.running()], [self.clock.now_ms(), self.result_ttl_ms]
        )
        return _advance(reply)

    def close_phase(self, workflow_id: str, token: str, *, arrived: bool) -> Advance:
        """Close phase ``token`` if its body arrived (now, when ``arrived``) and its work is finished."""
        reply = self.scripts.close_phase(
            [self.keys.workflow(workflow_id), self.keys.running()],
            [token, int(arrived), self.clock.now_ms(), self.result_ttl_ms],
        )
        return _advance(reply)

    def mark_launched(self, workflow_id: str, token: str) -> None:
        """Record that phase ``token`` was published."""
        self.client.hset(self.keys.workflow(workflow_id), "launched", token)

    # -- task attempts ----------------------------------------------------------------------------------------

    def _lease_keys(self, workflow_id: str, lease_id: str) -> list[str]:
        return [self.keys.workflow(workflow_id), self.keys.leases(), self.keys.lease(lease_id)]

    def _claim(
        self, workflow_id: str, sid: int, lease_id: str, spec: Sequence[Any], slot: Slot | None
    ) -> tuple[list[str], list[Any]]:
        now = self.clock.now_ms()
        member, prefix, limit = slot or ("", "", 0)
        keys = [*self._lease_keys(workflow_id, lease_id), self.slots_key(workflow_id, sid)]
        return keys, [sid, lease_id, now + self.lease_ms, self.state_ttl_ms, member, prefix, limit, now, *spec]

    def claim_tasks(
        self, workflow_id: str, sid: int, lease_id: str, spec: Sequence[Any], slot: Slot | None = None
    ) -> list[tuple[int, int, Any]] | Literal["busy"] | None:
        """Claim the due attempts named by ``spec`` (``['r', lo, hi]`` or ``['l', pos, attempt, ...]``).

        With ``slot`` (``(member, "<node>|", limit)``), first take one of the node's concurrency slots for the
        step. Returns ``(position, attempt, data)`` for each attempt taken, ``"busy"`` when the node has
        no free slot, or ``None`` when the workflow or the step's tasks phase is no longer running.
        """
        reply = self.scripts.claim_tasks(*self._claim(workflow_id, sid, lease_id, spec, slot))
        return "busy" if reply[0] == "busy" else _claimed(reply)

    def finish_and_claim(
        self,
        workflow_id: str,
        sid: int,
        lease_id: str,
        outcomes: Sequence[Any],
        next_lease: str | None,
        next_spec: Sequence[Any] | None,
        release: str = "",
    ) -> tuple[tuple[bool, list[tuple[int, int]]] | None, list[tuple[int, int, Any]] | None]:
        """Record the outcomes of one lease and, in the same round trip, claim the next window.

        ``outcomes`` are ``(position, attempt, code, payload)``.

        ``release`` is the concurrency slot member to give back (with the message's last window). Returns
        ``((complete, retries) or None when stopped, claimed or None)``.
        """

        def build(pipe: redis.client.Pipeline) -> None:
            keys = [*self._lease_keys(workflow_id, lease_id), self.slots_key(workflow_id, sid)]
            args: list[str | int] = [
                sid,
                lease_id,
                self.state_ttl_ms,
                release,
                json.dumps(outcomes, separators=(",", ":")),
                self._overdue_at(),
            ]
            self.scripts.finish_tasks.queue(pipe, keys, args)
            if next_lease is not None and next_spec is not None:
                self.scripts.claim_tasks.queue(pipe, *self._claim(workflow_id, sid, next_lease, next_spec, None))

        _, replies = self.scripts.execute(build)
        finished = replies[0]
        result = None if finished[0] != "ok" else (bool(finished[1]), _pairs(finished[2:]))
        claimed = _claimed(replies[1]) if len(replies) > 1 else None
        return result, claimed

    def claim_hook(self, workflow_id: str, sid: int, kind: PhaseKind, lease_id: str) -> str:
        """Take the run of a hook phase: ``"ok"``, ``"busy"`` (ran or runs elsewhere) or ``"stop"``."""
        expiry = self.clock.now_ms() + self.lease_ms
        keys = self._lease_keys(workflow_id, lease_id)
        return str(self.scripts.claim_hook(keys, [sid, kind, lease_id, expiry, self.state_ttl_ms])[0])

    def finish_hook(self, workflow_id: str, sid: int, kind: PhaseKind, lease_id: str, error: str | None) -> bool:
        """Record the end of a hook run; whether its phase can now close."""
        reply = self.scripts.finish_hook(
            self._lease_keys(workflow_id, lease_id), [sid, kind, lease_id, error or "", self.state_ttl_ms]
        )
        return reply[0] == "ok" and bool(reply[1])

    # -- additions ----------------------------------------------------------------------------------------

    def add_after(
        self,
        ref: AttemptRef,
        *,
        step_id: str,
        name: str,
        handler: str,
        data: Any,
        options: StepOptions,
        has_before: bool,
        has_after: bool,
        tasks: Iterable[Any],
    ) -> tuple[int, str, str, str] | None:
        """Create a step that runs after the calling phase.

        Returns ``(sid, id, index, key)``, or ``None`` when the calling attempt is no longer live.
        """
        reply = self.scripts.add_after(
            [self.keys.workflow(ref.workflow_id)],
            [
                ref.token,
                ref.position,
                ref.attempt,
                ref.lease_id,
                ref.call,
                step_id,
                name,
                handler,
                dumps(data),
                dumps(options.to_dict()),
                options.attempts,
                int(has_before),
                int(has_after),
                self.state_ttl_ms,
                *(dumps(item) for item in tasks),
            ],
        )
        if reply[0] != "ok":
            return None
        return int(reply[1]), str(reply[2]), str(reply[3]), str(reply[4])

    def add_tasks(self, ref: AttemptRef, sid: int, items: Iterable[Any]) -> tuple[str, int, int, bool]:
        """Append tasks to step ``sid``.

        Returns ``("ok", lo, hi, running)``, ``("closed", ...)`` when the caller is no longer live, or
        ``("ended", ...)`` when that step's tasks phase is over.
        """
        reply = self.scripts.add_tasks(
            [self.keys.workflow(ref.workflow_id)],
            [
                ref.token,
                ref.position,
                ref.attempt,
                ref.lease_id,
                ref.call,
                sid,
                self.state_ttl_ms,
                self._overdue_at(),
                *(dumps(item) for item in items),
            ],
        )
        if reply[0] != "ok":
            return str(reply[0]), 0, 0, False
        return "ok", int(reply[1]), int(reply[2]), bool(reply[3])

    # -- leases, slots, recovery -----------------------------------------------------------------------------

    def renew(self, lease_ids: Iterable[str], slots: Iterable[tuple[str, str]]) -> None:
        """Push the expiry of live leases and slots forward (never re-creating a reclaimed one)."""
        expiry = self.clock.now_ms() + self.lease_ms
        leases = dict.fromkeys(lease_ids, expiry)
        pipe = self.client.pipeline(transaction=False)
        if leases:
            pipe.zadd(self.keys.leases(), leases, xx=True)
        for key, member in slots:
            pipe.zadd(key, {member: expiry}, xx=True)
        pipe.execute()

    def expired_leases(self, limit: int = 100) -> list[str]:
        """Ids of leases whose expiry has passed."""
        found = self.client.zrangebyscore(self.keys.leases(), "-inf", self.clock.now_ms(), start=0, num=limit)
        return [str(lease) for lease in found]

    def reclaim_lease(self, lease_id: str, error: str) -> Reclaimed | None:
        """Take over an expired lease, failing what it held with ``error``; ``None`` if there is nothing to do."""
        reply = self.scripts.reclaim_lease(
            [self.keys.leases(), self.keys.lease(lease_id)],
            [lease_id, self.clock.now_ms(), error, self.state_ttl_ms, uuid.uuid4().hex, self._overdue_at()],
        )
        if reply[0] == "task":
            return Reclaimed(str(reply[1]), int(reply[2]), "t", bool(reply[3]), _pairs(reply[4:]))
        if reply[0] == "hook":
            kind: PhaseKind = "b" if reply[3] == "b" else "a"
            return Reclaimed(str(reply[1]), int(reply[2]), kind, bool(reply[4]), [])
        return None

    # -- owed dispatches -------------------------------------------------------------------------------------

    def _overdue_at(self) -> int:
        """When a dispatch recorded now is overdue (ms): two lease timeouts, as for a stalled phase."""
        return self.clock.now_ms() + 2 * self.lease_ms

    def settle(self, owed: Owed) -> None:
        """Remove an owed dispatch once it has been published."""
        self.client.zrem(self.keys.owed(owed.workflow_id), owed.member)

    def overdue(self, workflow_id: str, limit: int = 100) -> list[Owed]:
        """The workflow's owed dispatches whose publisher has not confirmed them in time."""
        found = self.client.zrangebyscore(self.keys.owed(workflow_id), "-inf", self.clock.now_ms(), 0, limit)
        return [Owed.parse(workflow_id, str(member)) for member in found]

    def running_workflows(self, limit: int = 1000) -> list[str]:
        """Ids of running workflows, oldest first (at most ``limit``)."""
        return [str(wf) for wf in self.client.zrange(self.keys.running(), 0, limit - 1)]

    def phase_state(self, workflow_id: str) -> PhaseState | None:
        """The current phase of a running workflow, or ``None``."""
        status, token, body, launched = self.client.hmget(
            self.keys.workflow(workflow_id), "status", "cur", "body", "launched"
        )
        if status != "running" or not token:
            return None
        sid, kind = parse_token(str(token))
        step = self.keys.step(workflow_id, sid)
        if kind == "t":
            done, total = self.client.hmget(step, "done", "total")
            finished, count = int(done or 0) >= int(total or 0), int(total or 0)
        else:
            finished, count = self.client.hget(step, f"{kind}st") == "done", 0
        return PhaseState(str(token), body == "1", launched == token, finished, count)

    def slots_key(self, workflow_id: str, sid: int) -> str:
        """The zset of a step's task_concurrency slots."""
        return self.keys.step_part(workflow_id, sid, "slots")

    def release_slot(self, workflow_id: str, sid: int, member: str) -> None:
        """Give a concurrency slot back."""
        self.client.zrem(self.slots_key(workflow_id, sid), member)

    # -- cancelling and deleting ---------------------------------------------------------------------------

    def cancel(self, workflow_id: str, event: str) -> bool:
        """Cancel a pending or running workflow, publishing ``event``; whether it was cancelled now."""
        reply = self.scripts.cancel_workflow(
            [self.keys.workflow(workflow_id), self.keys.running()],
            [self.clock.now_ms(), self.result_ttl_ms, event],
        )
        return bool(reply[0] == "cancelled")

    def delete_workflow(self, workflow_id: str, name: str, event: str) -> None:
        """Delete every key of a workflow (cancelling it first, with ``event``, if it still runs)."""
        self.scripts.delete_workflow(
            [self.keys.workflow(workflow_id), self.keys.running(), self.keys.names(name)], [event, workflow_id]
        )

    def record_hook_error(self, workflow_id: str, sid: int, message: str) -> None:
        """Append an error of an ``after_each``/``on_handler_error`` hook to the step's hook errors."""
        key = self.keys.step_part(workflow_id, sid, "herr")
        pipe = self.client.pipeline(transaction=False)
        pipe.rpush(key, message)
        pipe.pexpire(key, self.state_ttl_ms)
        pipe.execute()

    # -- events ---------------------------------------------------------------------------------------------

    def publish(self, workflow_id: str, event: str) -> None:
        """Publish an event (JSON text) on the workflow's channel."""
        self.client.publish(self.keys.channel(workflow_id), event)

    # -- reads ----------------------------------------------------------------------------------------------

    def _hash(self, key: str) -> dict[str, str]:
        raw: dict[str, str] = self.client.hgetall(key)  # type: ignore[assignment]
        return raw

    def workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The workflow record, or ``None``."""
        raw = self._hash(self.keys.workflow(workflow_id))
        if not raw or "id" not in raw:
            return None
        return WorkflowRecord(
            id=raw["id"],
            name=raw["name"],
            options=json.loads(raw["options"]),
            defaults=json.loads(raw["defaults"]),
            status=raw["status"],
            clean_on_done=raw["clean"] == "1",
            current=raw.get("cur", ""),
            total=int(raw.get("total", 0)),
            done=int(raw.get("done", 0)),
            failed=int(raw.get("failed", 0)),
        )

    def status(self, workflow_id: str) -> str | None:
        """The workflow's status, or ``None`` when it is not stored."""
        value: str | None = self.client.hget(self.keys.workflow(workflow_id), "status")  # type: ignore[assignment]
        return value

    def counts(self, workflow_id: str, sid: int | None = None) -> tuple[int, int]:
        """``(done, total)`` of a step, or of the whole workflow when ``sid`` is ``None``."""
        key = self.keys.workflow(workflow_id) if sid is None else self.keys.step(workflow_id, sid)
        done, total = self.client.hmget(key, "done", "total")
        return int(done or 0), int(total or 0)

    def step(self, workflow_id: str, sid: int) -> StepRecord | None:
        """A step record, or ``None``."""
        raw = self._hash(self.keys.step(workflow_id, sid))
        if not raw or "id" not in raw:
            return None
        options = json.loads(raw["options"])
        return StepRecord(
            workflow_id=workflow_id,
            sid=sid,
            id=raw["id"],
            key=raw["key"],
            name=raw["name"],
            index=raw["index"],
            data=json.loads(raw["data"]),
            options=merge_options({k: v for k, v in options.items() if k in STEP_OPTION_NAMES}),
            handler=raw["handler"],
            parent_key=raw["parent"] or None,
            has_before=raw["hb"] == "1",
            has_after=raw["ha"] == "1",
            total=int(raw["total"]),
            done=int(raw["done"]),
            failed=int(raw["failed"]),
        )

    def order(self, workflow_id: str) -> list[int]:
        """Sids of the steps whose tasks phase started, in execution order."""
        return [int(sid) for sid in self.client.lrange(self.keys.order(workflow_id), 0, -1)]

    def hook_errors(self, workflow_id: str, sid: int) -> list[str]:
        """Errors recorded for a step's hooks, oldest first."""
        return [str(e) for e in self.client.lrange(self.keys.step_part(workflow_id, sid, "herr"), 0, -1)]

    def tasks(self, workflow_id: str, sid: int, *, all_finished: bool) -> Iterator[TaskRow]:
        """A step's tasks in insertion order. Unless ``all_finished``, each row says whether it has finished."""
        part = self.keys.step_part
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(part(workflow_id, sid, "res"))
        pipe.hgetall(part(workflow_id, sid, "fail"))
        pipe.hgetall(part(workflow_id, sid, "err"))
        if not all_finished:
            pipe.hgetall(part(workflow_id, sid, "st"))
        replies = pipe.execute()
        results, fails, errors = replies[0], replies[1], replies[2]
        states: dict[str, str] | None = None if all_finished else replies[3]
        data_key = part(workflow_id, sid, "data")
        start = 0
        while True:
            chunk = self.client.lrange(data_key, start, start + READ_CHUNK - 1)
            for offset, data in enumerate(chunk):
                pos = start + offset
                field = str(pos)
                raw_result = results.get(field)
                yield TaskRow(
                    position=pos,
                    data=json.loads(data),
                    result=None if raw_result is None else json.loads(raw_result),
                    error=errors.get(field),
                    failed_count=int(fails.get(field, 0)),
                    finished=True if states is None else states.get(field) == "d",
                )
            if len(chunk) < READ_CHUNK:
                return
            start += READ_CHUNK

    def names(self, name: str) -> list[str]:
        """Ids of the stored workflows called ``name`` (forgetting those whose keys have expired)."""
        key = self.keys.names(name)
        ids = sorted(str(i) for i in self.client.smembers(key))
        pipe = self.client.pipeline(transaction=False)
        for wf in ids:
            pipe.hget(self.keys.workflow(wf), "created")
        created = pipe.execute()
        alive = [(int(c), wf) for wf, c in zip(ids, created, strict=True) if c is not None]
        gone = [wf for wf, c in zip(ids, created, strict=True) if c is None]
        if gone:
            self.client.srem(key, *gone)
        return [wf for _, wf in sorted(alive)]


def _claimed(reply: Sequence[Any]) -> list[tuple[int, int, Any]] | None:
    if reply[0] != "ok":
        return None
    return [(int(pos), int(attempt), data) for pos, attempt, data in json.loads(reply[1])]
