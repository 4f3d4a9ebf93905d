"""All the semantics of a Faktory 1.9.4 work server, in memory, without sockets.

:class:`ServerState` owns the queues, the scheduled, retries and dead sets, the reservations, the worker
records and the counters. It is driven by one thread (the listener's event loop); time comes from the
:class:`~celery_faktory.clock.Clock` it was given and randomness from its ``random.Random``, so tests can
make both exact. It imports the protocol core and the clock, nothing that does I/O.
"""

from __future__ import annotations

import bisect
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any

from celery_faktory.clock import Clock
from celery_faktory.protocol.encoding import dumps
from celery_faktory.protocol.payload import (
    DEFAULT_QUEUE,
    DEFAULT_RETRY,
    JOB_FIELDS,
    format_timestamp,
    job_problem,
    parse_timestamp,
    queue_name_problem,
)
from celery_faktory.server.config import ServerConfig

__all__ = [
    "JobSet",
    "Rejected",
    "Reservation",
    "ServerState",
    "UnknownWorker",
    "WorkerRecord",
    "encode_job",
    "encode_json",
]

_NS = 1_000_000_000
_STATE_ORDER = {"running": 0, "quiet": 1, "terminate": 2}
#: Fields that the server omits when they are empty.
_OMIT_EMPTY = frozenset({"failure", "custom", "created_at", "enqueued_at", "at", "reserve_for", "backtrace"})
#: Characters Go's JSON encoder escapes (they only ever occur inside strings).
_GO_JSON_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
#: Most backtrace lines kept from a FAIL.
MAX_BACKTRACE = 50


class Rejected(Exception):
    """A command was refused; ``str(exc)`` is the text after ``-ERR``."""


class UnknownWorker(Rejected):
    """A BEAT named a worker id that no live connection announced."""


def encode_json(value: Any) -> str:
    """Compact JSON as Go's encoder writes it: ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, UTF-8 kept."""
    text = dumps(value)
    for char, escape in _GO_JSON_ESCAPES:
        if char in text:
            text = text.replace(char, escape)
    return text


def encode_job(job: Mapping[str, Any]) -> str:
    """The JSON text of a stored job, keys in the order Faktory 1.9.4 writes them."""
    return encode_json({name: job[name] for name in JOB_FIELDS if name in job})


def _ns(seconds: float) -> int:
    return round(seconds * _NS)


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    data = text.encode()
    if len(data) > limit:
        # Cut at the byte, as Go does; a split character becomes U+FFFD when encoded.
        text = data[:limit].decode(errors="replace")
    return text or "unknown"


@dataclass(slots=True)
class Reservation:
    """A fetched job waiting for its ACK or FAIL."""

    job: dict[str, Any]
    reserved_at: int
    expires_at: int
    wid: str


@dataclass(slots=True)
class WorkerRecord:
    """What the server knows of one worker process (one ``wid``)."""

    wid: str
    hostname: str
    pid: int
    labels: list[str]
    started_at: int
    last_beat: int
    creator: int
    state: str = "running"
    rss_kb: int = 0
    connections: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _TaskStats:
    cycles: int = 0
    enqueued: int = 0
    wall_time_ns: int = 0
    last_run: int = 0


class JobSet:
    """A sorted set of jobs scored by a time in nanoseconds (the scheduled, retries and dead sets)."""

    def __init__(self) -> None:
        self._entries: list[tuple[int, int, dict[str, Any]]] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (job for _, _, job in self._entries)

    def add(self, score: int, job: dict[str, Any]) -> None:
        """Insert ``job`` at ``score``; equal scores keep insertion order."""
        bisect.insort(self._entries, (score, next(self._seq), job), key=lambda entry: entry[:2])

    def pop_due(self, now: int, limit: int) -> list[dict[str, Any]]:
        """Remove and return up to ``limit`` jobs whose score is at most ``now``, earliest first."""
        count = 0
        while count < min(limit, len(self._entries)) and self._entries[count][0] <= now:
            count += 1
        due = [job for _, _, job in self._entries[:count]]
        del self._entries[:count]
        return due

    def take(self, match: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Remove and return every job for which ``match`` is true."""
        taken = [entry for entry in self._entries if match(entry[2])]
        if taken:
            self._entries = [entry for entry in self._entries if not match(entry[2])]
        return [job for _, _, job in taken]

    def clear(self) -> None:
        """Remove everything."""
        self._entries.clear()


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    r"""Translate a Redis glob (``*``, ``?``, ``[...]``, ``\`` escapes) into a compiled regular expression."""
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        index += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and index < len(pattern):
            out.append(re.escape(pattern[index]))
            index += 1
        elif char == "[":
            end = pattern.find("]", index + 1)
            if end < 0:
                out.append(re.escape(char))
                continue
            body = pattern[index:end]
            index = end + 1
            negate = body.startswith("^")
            if negate:
                body = body[1:]
            escaped = "".join("\\" + c if c in "\\^[]" else c for c in body)
            out.append(f"[{'^' if negate else ''}{escaped}]")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


class ServerState:
    """The in-memory state and rules of a Faktory work server.

    Args:
        config: Timings and limits.
        clock: Where time comes from.
        rng: The random source of the retry backoff.
        on_enqueue: Called with a queue name whenever a job joins that queue (wakes blocked FETCHes).
    """

    def __init__(
        self,
        config: ServerConfig,
        clock: Clock,
        rng: Random,
        on_enqueue: Callable[[str], None] = lambda queue: None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._rng = rng
        self._on_enqueue = on_enqueue
        self.queues: dict[str, deque[dict[str, Any]]] = {}
        self.paused: set[str] = set()
        self.scheduled = JobSet()
        self.retries = JobSet()
        self.dead = JobSet()
        self.working: dict[str, Reservation] = {}
        self.workers: dict[str, WorkerRecord] = {}
        self.processed = 0
        self.failures = 0
        self.command_count = 0
        self.started_at = clock.time_ns()
        self._tasks = {name: _TaskStats(last_run=self.started_at) for name in ("Scheduled", "Retries", "Dead")}
        self._busy_reaped = 0
        self._busy_last = self.started_at
        self._workers_reaped = 0
        self._workers_last = self.started_at

    def now(self) -> int:
        """The current time in Unix nanoseconds."""
        return self._clock.time_ns()

    # -- producing -------------------------------------------------------------------------------------

    def push(self, job: dict[str, Any]) -> None:
        """Accept one job whose JSON types are already checked.

        Raises:
            Rejected: The job breaks a PUSH rule; the message is Faktory's.
        """
        problem = job_problem(job)
        if problem is not None:
            raise Rejected(problem)
        stored = {name: job[name] for name in JOB_FIELDS if job.get(name) is not None}
        for name in _OMIT_EMPTY:
            if name in stored and not stored[name]:
                del stored[name]
        stored.setdefault("retry", DEFAULT_RETRY)
        stored["queue"] = stored.get("queue") or DEFAULT_QUEUE
        now = self.now()
        stored.setdefault("created_at", format_timestamp(now))
        at = stored.get("at")
        if at and parse_timestamp(at) > now:
            self.scheduled.add(parse_timestamp(at), stored)
            return
        self._enqueue(stored, now)

    def _enqueue(self, job: dict[str, Any], now: int, *, keep_enqueued_at: bool = False) -> None:
        queue = job["queue"]
        if queue not in self.queues:
            problem = queue_name_problem(queue)
            if problem is not None:
                raise Rejected(problem)
            self.queues[queue] = deque()
        if not keep_enqueued_at:
            job["enqueued_at"] = format_timestamp(now)
        self.queues[queue].append(job)
        self._on_enqueue(queue)

    # -- consuming -------------------------------------------------------------------------------------

    def fetch_refused(self, queues: Sequence[str], wid: str) -> bool:
        """Whether a FETCH must wait out its timeout and answer nothing.

        That is so when the worker is quiet or terminating, or when every queue the FETCH names is paused.
        """
        record = self.workers.get(wid) if wid else None
        if record is not None and record.state != "running":
            return True
        return all(queue in self.paused for queue in queues)

    def fetch(self, queues: Sequence[str], wid: str) -> dict[str, Any] | None:
        """Reserve and return the first job of the first non-empty, non-paused queue, or ``None``."""
        for name in queues:
            queue = self.queues.get(name)
            if queue and name not in self.paused:
                job = queue.popleft()
                now = self.now()
                reserve = job.get("reserve_for") or self.config.default_reservation
                reserve = max(reserve, self.config.reservation_floor)
                self.working[job["jid"]] = Reservation(job, now, now + _ns(reserve), wid)
                return job
        return None

    def ack(self, jid: str) -> None:
        """The job succeeded; an unknown jid is accepted and changes nothing."""
        if self.working.pop(jid, None) is not None:
            self.processed += 1

    def fail(self, jid: str, errtype: str, message: str, backtrace: list[str] | None) -> None:
        """The job failed: retry it later, kill it, or drop it, by its ``retry``.

        Raises:
            Rejected: The jid is not reserved.
        """
        reservation = self.working.pop(jid, None)
        if reservation is None:
            raise Rejected(f"Job not found {jid}")
        self._failed(reservation.job, errtype, message, backtrace)

    def _failed(self, job: dict[str, Any], errtype: str, message: str, backtrace: list[str] | None) -> None:
        now = self.now()
        self.processed += 1
        self.failures += 1
        retry = job.get("retry", DEFAULT_RETRY)
        old = job.get("failure")
        failure: dict[str, Any] = {"failed_at": old["failed_at"] if old else format_timestamp(now)}
        count = old["retry_count"] + 1 if old else 0
        remaining = max(old["remaining"] - 1, 0) if old else retry
        failure["message"] = _clip(message, 1000)
        failure["errtype"] = _clip(errtype, 100)
        if backtrace:
            failure["backtrace"] = backtrace[:MAX_BACKTRACE]
        failure["retry_count"] = count
        failure["remaining"] = remaining
        job["failure"] = failure
        if retry == 0:
            return
        if count < retry:
            delay = count**4 + 15 + self._rng.randrange(30) * (count + 1)
            due = now + delay * _NS
            job["failure"] = {"failed_at": failure.pop("failed_at"), "next_at": format_timestamp(due), **failure}
            self.retries.add(due, job)
        else:
            self.dead.add(now + _ns(self.config.dead_ttl), job)

    # -- workers ---------------------------------------------------------------------------------------

    def hello(self, connection: int, payload: Mapping[str, Any]) -> None:
        """Register a connection whose HELLO was accepted; a ``wid`` creates or joins a worker record."""
        wid = payload.get("wid") or ""
        if not wid:
            return
        record = self.workers.get(wid)
        if record is None:
            now = self.now()
            record = WorkerRecord(
                wid=wid,
                hostname=payload.get("hostname") or "",
                pid=payload.get("pid") or 0,
                labels=list(payload.get("labels") or []),
                started_at=now,
                last_beat=now,
                creator=connection,
            )
            self.workers[wid] = record
        record.connections.add(connection)

    def disconnect(self, connection: int, wid: str) -> None:
        """Forget a closed connection; a worker record goes with its last connection."""
        record = self.workers.get(wid) if wid else None
        if record is not None:
            record.connections.discard(connection)
            if not record.connections:
                del self.workers[wid]

    def beat(self, wid: str, current_state: str, rss_kb: int | None) -> str:
        """Record a heartbeat and return the worker's state (``running``, ``quiet`` or ``terminate``).

        Raises:
            UnknownWorker: No live connection announced ``wid``.
        """
        record = self.workers.get(wid)
        if record is None:
            raise UnknownWorker(f"unknown worker {wid}")
        record.last_beat = self.now()
        if rss_kb is not None:
            record.rss_kb = rss_kb
        if current_state in ("quiet", "terminate"):
            self.set_worker_state(wid, current_state)
        return record.state

    def set_worker_state(self, wid: str, state: str) -> bool:
        """Move a worker to ``quiet`` or ``terminate`` (states only move forward); False if unknown."""
        record = self.workers.get(wid)
        if record is None:
            return False
        if _STATE_ORDER[state] > _STATE_ORDER[record.state]:
            record.state = state
        return True

    # -- queues ----------------------------------------------------------------------------------------

    def _names(self, names: Iterable[str]) -> list[str]:
        names = list(names)
        return list(self.queues) if "*" in names else names

    def pause(self, names: Iterable[str]) -> None:
        """Pause queues that exist (a queue never seen is not remembered)."""
        self.paused.update(name for name in self._names(names) if name in self.queues)

    def resume(self, names: Iterable[str]) -> None:
        """Resume queues."""
        self.paused.difference_update(self._names(names))

    def remove(self, names: Iterable[str]) -> None:
        """Delete queues with all their jobs; they leave INFO until their next push."""
        for name in self._names(names):
            self.queues.pop(name, None)
            self.paused.discard(name)

    def latency(self, names: Iterable[str]) -> dict[str, float]:
        """The age in seconds of each queue's oldest job; 0 for empty and unknown queues."""
        now = self.now()
        result: dict[str, float] = {}
        for name in names:
            queue = self.queues.get(name)
            result[name] = (now - parse_timestamp(queue[0]["enqueued_at"])) / _NS if queue else 0
        return dict(sorted(result.items()))

    # -- MUTATE ----------------------------------------------------------------------------------------

    def job_set(self, target: str) -> JobSet | None:
        """The sorted set called ``target`` (``retries``, ``scheduled`` or ``dead``), or ``None``."""
        return {"retries": self.retries, "scheduled": self.scheduled, "dead": self.dead}.get(target)

    def mutate(self, cmd: str, target: str, filter: Mapping[str, Any]) -> None:  # noqa: A002
        """Run a MUTATE operation.

        Raises:
            Rejected: Unknown target or operation (Faktory's texts).
        """
        if cmd not in ("clear", "kill", "discard", "requeue"):
            raise Rejected("unknown mutate operation")
        job_set = self.job_set(target)
        if job_set is None:
            raise Rejected("invalid target for mutation command")
        if cmd == "clear":
            job_set.clear()
            return
        taken = job_set.take(_job_filter(filter))
        now = self.now()
        for job in taken:
            if cmd == "kill":
                self.dead.add(now + _ns(self.config.dead_ttl), job)
            elif cmd == "requeue":
                self._requeue(job, now)

    def _requeue(self, job: dict[str, Any], now: int) -> None:
        try:
            self._enqueue(job, now, keep_enqueued_at=True)
        except Rejected:
            self.dead.add(now + _ns(self.config.dead_ttl), job)

    # -- periodic tasks --------------------------------------------------------------------------------

    def tick(self, *, force: bool = False) -> set[int]:
        """Run the periodic tasks that are due (all of them with ``force``).

        Returns:
            The connections the heartbeat reaper dropped; the caller closes them.
        """
        now = self.now()
        config = self.config
        if force or now - self._tasks["Scheduled"].last_run >= _ns(config.scheduled_period):
            self._promote("Scheduled", self.scheduled, now)
        if force or now - self._tasks["Retries"].last_run >= _ns(config.retries_period):
            self._promote("Retries", self.retries, now)
        if force or now - self._tasks["Dead"].last_run >= _ns(config.dead_period):
            stats = self._tasks["Dead"]
            stats.cycles += 1
            stats.last_run = now
            while self.dead.pop_due(now, 100):
                pass
        if force or now - self._busy_last >= _ns(config.reservation_period):
            self._busy_last = now
            for jid, reservation in list(self.working.items()):
                if reservation.expires_at <= now:
                    del self.working[jid]
                    self._busy_reaped += 1
                    self._failed(reservation.job, "ReservationExpired", "Faktory job reservation expired", None)
        dropped: set[int] = set()
        if force or now - self._workers_last >= _ns(config.heartbeat_period):
            self._workers_last = now
            for wid, record in list(self.workers.items()):
                if now - record.last_beat > _ns(config.heartbeat_timeout):
                    del self.workers[wid]
                    self._workers_reaped += 1
                    dropped |= record.connections
        return dropped

    def _promote(self, name: str, job_set: JobSet, now: int) -> None:
        stats = self._tasks[name]
        stats.cycles += 1
        stats.last_run = now
        started = self._clock.time_ns()
        while True:
            due = job_set.pop_due(now, 100)
            for job in due:
                try:
                    self._enqueue(job, now)
                except Rejected:
                    self.dead.add(now + _ns(self.config.dead_ttl), job)
                else:
                    stats.enqueued += 1
            if len(due) < 100:
                break
        stats.wall_time_ns += self._clock.time_ns() - started

    # -- whole-server commands -------------------------------------------------------------------------

    def flush(self) -> None:
        """Delete every job, set, reservation, paused flag and counter (workers stay connected)."""
        self.queues.clear()
        self.paused.clear()
        self.scheduled.clear()
        self.retries.clear()
        self.dead.clear()
        self.working.clear()
        self.processed = 0
        self.failures = 0
        for stats in self._tasks.values():
            stats.cycles = stats.enqueued = stats.wall_time_ns = 0
        self._busy_reaped = 0
        self._workers_reaped = 0

    def info(self, *, connections: int, used_memory_mb: int) -> dict[str, Any]:
        """The INFO document, in Faktory 1.9.4's shape."""
        now = self.now()
        seconds = now // _NS
        queues = {name: len(queue) for name, queue in sorted(self.queues.items())}
        tasks: dict[str, Any] = {"Busy": {"reaped": self._busy_reaped, "size": len(self.working)}}
        sizes = {"Dead": len(self.dead), "Retries": len(self.retries), "Scheduled": len(self.scheduled)}
        for name, stats in sorted(self._tasks.items()):
            tasks[name] = {
                "cycles": stats.cycles,
                "enqueued": stats.enqueued,
                "size": sizes[name],
                "wall_time_sec": stats.wall_time_ns / _NS,
            }
        tasks["Workers"] = {"reaped": self._workers_reaped, "size": len(self.workers)}
        return {
            "now": format_timestamp(now),
            "server_utc_time": f"{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d} UTC",
            "faktory": {
                "queues": queues,
                "sets": {
                    "dead": len(self.dead),
                    "retries": len(self.retries),
                    "scheduled": len(self.scheduled),
                    "working": len(self.working),
                },
                "tasks": tasks,
                "total_failures": self.failures,
                "total_processed": self.processed,
                "total_enqueued": sum(queues.values()),
                "total_queues": len(queues),
            },
            "server": {
                "description": "Faktory",
                "faktory_version": "1.9.4",
                "uptime": (now - self.started_at) // _NS,
                "connections": connections,
                "command_count": self.command_count,
                "used_memory_mb": used_memory_mb,
            },
        }


def _job_filter(filter: Mapping[str, Any]) -> Callable[[dict[str, Any]], bool]:  # noqa: A002
    jids = filter.get("jids")
    if jids:
        wanted = set(jids)
        return lambda job: job.get("jid") in wanted
    pattern, jobtype = filter.get("regexp"), filter.get("jobtype")
    if pattern:
        regex = glob_to_regex(pattern)
        if jobtype:
            marker = dumps({"jobtype": jobtype})[1:-1]
            return lambda job: bool(regex.fullmatch(encode_job(job))) and marker in encode_job(job)
        return lambda job: bool(regex.fullmatch(encode_job(job)))
    if jobtype:
        return lambda job: job.get("jobtype") == jobtype
    return lambda job: True
