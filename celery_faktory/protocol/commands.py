"""Client-to-server framing: one encoder per Faktory verb.

Each function returns the complete command line (CRLF included) and takes the verb's required arguments in its
signature, so a verb can never be sent without them: on Faktory 1.9.4 a bare ``PUSH``, ``ACK``, ``FAIL``,
``BEAT`` or ``QUEUE PAUSE`` kills the whole server. Values are checked before anything is encoded; a bad value
raises :class:`~celery_faktory.errors.InvalidCommand` and produces no bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from celery_faktory.errors import InvalidCommand
from celery_faktory.protocol.encoding import dumps, dumps_spaceless
from celery_faktory.protocol.payload import job_problem, job_type_problem, queue_name_problem

__all__ = [
    "MUTATE_COMMANDS",
    "MUTATE_TARGETS",
    "WORKER_STATES",
    "ack",
    "beat",
    "end",
    "fail",
    "fetch",
    "flush",
    "hello",
    "info",
    "job_error",
    "mutate",
    "push",
    "push_bulk",
    "queue_latency",
    "queue_pause",
    "queue_remove",
    "queue_resume",
]

#: The ``cmd`` values MUTATE knows.
MUTATE_COMMANDS: Final = frozenset({"clear", "kill", "discard", "requeue"})
#: The sets MUTATE can work on.
MUTATE_TARGETS: Final = frozenset({"retries", "scheduled", "dead"})
#: The ``current_state`` values a worker may report in BEAT.
WORKER_STATES: Final = frozenset({"running", "quiet", "terminate"})

_CRLF = b"\r\n"


def _line(verb: str, argument: str | None = None) -> bytes:
    if argument is None:
        return verb.encode() + _CRLF
    try:
        return verb.encode() + b" " + argument.encode() + _CRLF
    except UnicodeEncodeError as exc:
        raise InvalidCommand(f"{verb}: text that UTF-8 cannot carry (a lone surrogate?): {exc}") from exc


def _require_text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidCommand(f"{name} must be a non-empty string, got {value!r}")
    return value


def _queue_names(verb: str, names: Sequence[str], *, wildcard: bool) -> str:
    for name in names:
        _require_text("queue name", name)
        if any(char.isspace() for char in name):
            raise InvalidCommand(f"{verb}: queue name {name!r} contains whitespace")
        if name == "*" and not wildcard:
            raise InvalidCommand(f"{verb} does not support the * wildcard")
    return " ".join(names)


def hello(payload: Mapping[str, Any]) -> bytes:
    """``HELLO {payload}``; build the payload with :func:`~celery_faktory.protocol.handshake.hello_payload`."""
    return _line("HELLO", dumps(dict(payload)))


def flush() -> bytes:
    """``FLUSH``: delete every job, set and counter on the server."""
    return _line("FLUSH")


def info() -> bytes:
    """``INFO``: ask for the server's state document."""
    return _line("INFO")


def end() -> bytes:
    """``END``: the server closes the connection without a reply."""
    return _line("END")


def job_error(job: Mapping[str, Any]) -> str | None:
    """Why a server would reject ``job`` at PUSH, in the server's words, or ``None`` if it would accept it."""
    if not isinstance(job, Mapping):
        return f"invalid JSON: json: cannot unmarshal {type(job).__name__} into Go value of type client.Job"
    data = dict(job)
    type_problem = job_type_problem(data)
    if type_problem is not None:
        return f"invalid JSON: {type_problem}"
    problem = job_problem(data)
    if problem is None and data.get("queue"):
        problem = queue_name_problem(data["queue"])
    return problem


def _checked_job(job: Mapping[str, Any]) -> dict[str, Any]:
    problem = job_error(job)
    if problem is not None:
        raise InvalidCommand(problem)
    return dict(job)


def push(job: Mapping[str, Any]) -> bytes:
    """``PUSH {job}``.

    Raises:
        InvalidCommand: The job would be rejected by the server (the message is the server's text).
    """
    return _line("PUSH", dumps(_checked_job(job)))


def push_bulk(jobs: Sequence[Mapping[str, Any]]) -> bytes:
    """``PUSHB [job, ...]``; every job is checked as :func:`push` checks one."""
    return _line("PUSHB", dumps([_checked_job(job) for job in jobs]))


def fetch(queue: str, *queues: str) -> bytes:
    """``FETCH q1 [q2 ...]``: reserve a job from the first non-empty queue, in the order given."""
    return _line("FETCH", _queue_names("FETCH", (queue, *queues), wildcard=False))


def ack(jid: str) -> bytes:
    """``ACK {"jid": ...}``: the job succeeded."""
    return _line("ACK", dumps({"jid": _require_text("jid", jid)}))


def fail(jid: str, *, errtype: str, message: str, backtrace: Sequence[str] | None = None) -> bytes:
    """``FAIL {...}``: the job failed; the server retries it, moves it to the dead set, or drops it."""
    payload: dict[str, Any] = {"jid": _require_text("jid", jid), "errtype": str(errtype), "message": str(message)}
    if backtrace is not None:
        payload["backtrace"] = [str(line) for line in backtrace]
    return _line("FAIL", dumps(payload))


def beat(wid: str, *, current_state: str | None = None, rss_kb: int | None = None) -> bytes:
    """``BEAT {...}``: the worker's heartbeat, with the state it entered on its own and its memory use."""
    payload: dict[str, Any] = {"wid": _require_text("wid", wid)}
    if current_state is not None:
        if current_state not in WORKER_STATES:
            raise InvalidCommand(f"current_state must be one of {sorted(WORKER_STATES)}, got {current_state!r}")
        payload["current_state"] = current_state
    if rss_kb is not None:
        if not isinstance(rss_kb, int) or isinstance(rss_kb, bool) or rss_kb < 0:
            raise InvalidCommand(f"rss_kb must be a non-negative integer, got {rss_kb!r}")
        payload["rss_kb"] = rss_kb
    return _line("BEAT", dumps(payload))


def queue_pause(queue: str, *queues: str) -> bytes:
    """``QUEUE PAUSE q1 [q2 ...]`` (``*`` means every queue): FETCH skips paused queues."""
    return _line("QUEUE", "PAUSE " + _queue_names("QUEUE PAUSE", (queue, *queues), wildcard=True))


def queue_resume(queue: str, *queues: str) -> bytes:
    """``QUEUE RESUME q1 [q2 ...]`` (``*`` means every queue)."""
    return _line("QUEUE", "RESUME " + _queue_names("QUEUE RESUME", (queue, *queues), wildcard=True))


def queue_remove(queue: str, *queues: str) -> bytes:
    """``QUEUE REMOVE q1 [q2 ...]`` (``*`` means every queue): delete the queues and all their jobs."""
    return _line("QUEUE", "REMOVE " + _queue_names("QUEUE REMOVE", (queue, *queues), wildcard=True))


def queue_latency(queue: str, *queues: str) -> bytes:
    """``QUEUE LATENCY q1 [q2 ...]``: the age of each queue's oldest job, in seconds."""
    return _line("QUEUE", "LATENCY " + _queue_names("QUEUE LATENCY", (queue, *queues), wildcard=False))


def mutate(cmd: str, target: str, filter: Mapping[str, Any] | None = None) -> bytes:  # noqa: A002
    r"""``MUTATE {...}`` on the retries, scheduled or dead set.

    Args:
        cmd: ``clear``, ``kill``, ``discard`` or ``requeue``.
        target: ``retries``, ``scheduled`` or ``dead``.
        filter: Optional ``jids`` (list of str), ``regexp`` (a Redis glob) and ``jobtype`` (str).

    The JSON is written without a single space character (spaces inside strings become ``\u0020``), because
    the server splits the MUTATE line on spaces.
    """
    if cmd not in MUTATE_COMMANDS:
        raise InvalidCommand(f"MUTATE cmd must be one of {sorted(MUTATE_COMMANDS)}, got {cmd!r}")
    if target not in MUTATE_TARGETS:
        raise InvalidCommand(f"MUTATE target must be one of {sorted(MUTATE_TARGETS)}, got {target!r}")
    payload: dict[str, Any] = {"cmd": cmd, "target": target}
    if filter:
        checked: dict[str, Any] = {}
        for key, value in filter.items():
            if key == "jids":
                jids = list(value) if isinstance(value, (list, tuple, set, frozenset)) else None
                if not jids or not all(isinstance(jid, str) and jid for jid in jids):
                    raise InvalidCommand(f"MUTATE filter jids must be a non-empty list of strings, got {value!r}")
                checked[key] = jids
            elif key in ("regexp", "jobtype"):
                checked[key] = _require_text(f"MUTATE filter {key}", value)
            else:
                raise InvalidCommand(f"unknown MUTATE filter key {key!r}")
        payload["filter"] = checked
    return _line("MUTATE", dumps_spaceless(payload))
