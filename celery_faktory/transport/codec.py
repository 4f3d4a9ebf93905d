"""kombu messages to Faktory jobs and back, queue names and priorities: pure functions, no I/O, no clock.

Everything here takes what it needs as arguments (the options, the time, the jid), so each function can be
tested on its own. The channel owns the sockets; this module owns the layout of a job.

**Queue names.** Faktory queue names must match ``[a-zA-Z0-9._-]+``; kombu's may hold anything
(``celery@host.celery.pidbox``, ``a:b``, non-ASCII). :func:`encode_queue_name` keeps letters, digits, ``.`` and
``-``, doubles ``_`` and writes every other character as ``_`` plus the lowercase hex of each of its UTF-8 bytes
(``@`` becomes ``_40``); :func:`decode_queue_name` reverses it exactly. After a ``_`` the encoding therefore only
ever puts another ``_`` or a hex digit, so the priority suffix ``_p<step>`` (``celery_p9``) can never come out of a
plain name, and the lowest step has no suffix at all, so foreign producers pushing to ``celery`` reach Celery.

**Jobs.** A job always has a fresh jid, ``jobtype`` = the Celery task name (``"kombu"`` for other messages), an
explicit ``retry`` and a ``reserve_for``; its ``custom`` holds:

``kombu``
    The envelope: ``headers``, ``properties`` (without ``delivery_tag``), ``content-type``,
    ``content-encoding``, plus ``embed`` (native encoding) or ``body`` (envelope encoding: the body exactly as
    kombu produced it, base64 by default). ``body`` always wins over ``args``. ``exact`` (rare) holds
    headers and properties as JSON text when they carry numbers Faktory's 64-bit floats would change.
``kwargs``
    Native encoding (and foreign jobs): the keyword arguments.
``kq``
    The kombu queue name.
``expires_at``
    Message TTL deadline (RFC 3339, UTC); never set for messages with a Celery ``expires`` header.
``redelivered``, ``celery_task_id``
    Set on copies pushed by a requeue or a restore.

Native encoding (``job_args="native"``) is used for JSON protocol-2 Celery task messages: ``args`` holds the
positional arguments, so Go, Ruby and Node workers see an ordinary job. Everything else (pickle, compressed,
non-task kombu messages, pidbox) is an envelope with empty ``args``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import math
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Final

from celery_faktory.protocol.payload import format_timestamp, parse_timestamp
from celery_faktory.transport.options import DEFAULT_RETRY, MAX_RESERVE_FOR, MIN_RESERVE_FOR, TransportOptions

__all__ = [
    "KOMBU_JOBTYPE",
    "RESERVE_FOR_HEADER",
    "EncodedJob",
    "MalformedJob",
    "decode_job",
    "decode_queue_name",
    "encode_message",
    "encode_queue_name",
    "faktory_queue",
    "fetch_plan",
    "foreign_message",
    "is_expired",
    "is_foreign",
    "parse_faktory_queue",
    "priority_step",
    "requeue_job",
    "sub_queues",
]

#: The jobtype of a message that is not a Celery task.
KOMBU_JOBTYPE: Final = "kombu"
#: The header a task (or a caller) sets to ask for a longer reservation, in seconds.
RESERVE_FOR_HEADER: Final = "faktory_reserve_for"
#: Largest integer a 64-bit float holds exactly.
_EXACT_INT: Final = 2**53
_SAFE_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_HEX: Final = frozenset("0123456789abcdef")
_EMPTY_EMBED: Final = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
_JSON_TYPES: Final = frozenset({"application/json"})
_UTF8: Final = frozenset({"utf-8", "utf8"})
#: ``delivery_info`` keys that describe one delivery; a re-published message must not carry them along.
_DELIVERY_KEYS: Final = ("faktory_jid", "faktory_queue", "redelivered")
_repr = reprlib.Repr()
_repr.maxstring = 200
_repr.maxother = 200


class MalformedJob(ValueError):
    """A fetched job claims to carry a kombu message but its ``custom.kombu`` cannot be read back."""


@dataclass(frozen=True, slots=True)
class EncodedJob:
    """The result of :func:`encode_message`.

    Attributes:
        job: The job to PUSH.
        warnings: Things the caller should log (a reservation that had to be clamped ...).
    """

    job: dict[str, Any]
    warnings: tuple[str, ...] = ()


# -- queue names ---------------------------------------------------------------------------------------


def encode_queue_name(name: str) -> str:
    """The Faktory form of a kombu queue name (reversible; see the module docstring).

    Raises:
        ValueError: ``name`` is empty.
    """
    if not name:
        raise ValueError("an empty kombu queue name has no Faktory queue")
    out: list[str] = []
    for char in name:
        if char in _SAFE_CHARS:
            out.append(char)
        elif char == "_":
            out.append("__")
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def _scan(encoded: str) -> tuple[str, int | None]:
    """Decode left to right; return the kombu name and the priority suffix's step (``None`` without one)."""
    data = bytearray()
    index = 0
    length = len(encoded)
    while index < length:
        char = encoded[index]
        if char in _SAFE_CHARS:
            data += char.encode("ascii")
            index += 1
            continue
        if char != "_" or index + 1 >= length:
            raise ValueError(f"{encoded!r} is not an encoded kombu queue name")
        following = encoded[index + 1]
        if following == "_":
            data += b"_"
            index += 2
        elif following == "p":
            digits = encoded[index + 2 :]
            if not digits.isdigit() or not digits.isascii() or (len(digits) > 1 and digits[0] == "0"):
                raise ValueError(f"{encoded!r} has an invalid priority suffix")
            return _utf8(data, encoded), int(digits)
        elif index + 2 < length and following in _HEX and encoded[index + 2] in _HEX:
            data.append(int(encoded[index + 1 : index + 3], 16))
            index += 3
        else:
            raise ValueError(f"{encoded!r} is not an encoded kombu queue name")
    return _utf8(data, encoded), None


def _utf8(data: bytearray, encoded: str) -> str:
    if not data:
        raise ValueError(f"{encoded!r} encodes an empty name")
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{encoded!r} does not encode UTF-8 text") from exc


def decode_queue_name(encoded: str) -> str:
    """The kombu queue name that :func:`encode_queue_name` turned into ``encoded``.

    Raises:
        ValueError: ``encoded`` is not such a name, or carries a priority suffix.
    """
    name, step = _scan(encoded)
    if step is not None:
        raise ValueError(f"{encoded!r} carries a priority suffix; use parse_faktory_queue")
    return name


def priority_step(priority: Any, steps: Sequence[int]) -> int:
    """The priority step a message priority falls into: the largest step not above it (the lowest step otherwise).

    Anything that is not a number counts as priority 0.
    """
    try:
        value = int(priority)
    except (TypeError, ValueError, OverflowError):
        value = 0
    chosen = steps[0]
    for step in steps:
        if step <= value:
            chosen = step
    return chosen


def faktory_queue(name: str, step: int, options: TransportOptions) -> str:
    """The Faktory queue of kombu queue ``name`` at priority step ``step``: prefix, encoded name, suffix."""
    suffix = "" if step == options.priority_steps[0] else f"_p{step}"
    return options.queue_name_prefix + encode_queue_name(name) + suffix


def parse_faktory_queue(queue: str, options: TransportOptions) -> tuple[str, int] | None:
    """The kombu queue and priority step behind a Faktory queue name, or ``None`` when it is not one of ours."""
    prefix = options.queue_name_prefix
    if not queue.startswith(prefix):
        return None
    try:
        name, step = _scan(queue[len(prefix) :])
    except ValueError:
        return None
    if step is None:
        return name, options.priority_steps[0]
    if step not in options.priority_steps or step == options.priority_steps[0]:
        return None
    return name, step


def sub_queues(name: str, options: TransportOptions) -> list[str]:
    """Every Faktory queue of kombu queue ``name``, in FETCH order (first served first)."""
    return [faktory_queue(name, step, options) for step in options.fetch_priorities]


def fetch_plan(queues: Iterable[str], options: TransportOptions, rotation: int = 0) -> list[tuple[str, str]]:
    """The keys of one FETCH over several kombu queues, as ``(faktory queue, kombu queue)`` pairs.

    Priority-major: every queue's top step first, then every queue's next step, and so on. Within a step the
    queues are rotated left by ``rotation``, so that successive FETCHes (``rotation`` = 0, 1, 2 ...) take turns
    at the front, since FETCH strictly prefers its first key. Duplicate queue names count once.
    """
    unique = list(dict.fromkeys(queues))
    if not unique:
        return []
    shift = rotation % len(unique)
    ordered = unique[shift:] + unique[:shift]
    return [(faktory_queue(name, step, options), name) for step in options.fetch_priorities for name in ordered]


# -- numbers -------------------------------------------------------------------------------------------

_OK, _INEXACT, _UNSENDABLE = 0, 1, 2


def _number_hazard(value: Any) -> int:
    """How a JSON value fares through Faktory: exact, changed by 64-bit floats, or not sendable at all."""
    worst = _OK
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None:
            continue
        if isinstance(item, int):
            if abs(item) > _EXACT_INT:
                worst = max(worst, _INEXACT)
        elif isinstance(item, float):
            if not math.isfinite(item):
                return _UNSENDABLE
            if item.is_integer():
                worst = max(worst, _INEXACT)
        elif isinstance(item, str):
            if not _utf8_safe(item):
                return _UNSENDABLE
        elif isinstance(item, dict):
            for key, nested in item.items():
                if isinstance(key, str) and not _utf8_safe(key):
                    return _UNSENDABLE
                stack.append(nested)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return worst


def _utf8_safe(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- time ----------------------------------------------------------------------------------------------


def _parse_iso(text: Any) -> float | None:
    """Unix seconds of an ISO 8601 timestamp (naive ones count as UTC); ``None`` when unreadable."""
    if not isinstance(text, str) or not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _timestamp(unix_seconds: float) -> str:
    return format_timestamp(round(unix_seconds * 1_000_000) * 1000)


# -- encoding ------------------------------------------------------------------------------------------


def _body_bytes(message: Mapping[str, Any]) -> bytes | None:
    """The body as the serializer produced it (the body encoding undone), or ``None`` when unreadable."""
    body = message.get("body")
    encoding = (message.get("properties") or {}).get("body_encoding")
    if isinstance(body, str):
        raw = body.encode("utf-8", "surrogatepass")
    elif isinstance(body, bytes):
        raw = body
    else:
        return None
    if encoding == "base64":
        try:
            return base64.b64decode(raw, validate=True)
        except binascii.Error:
            return None
    if encoding and str(encoding).lower() not in _UTF8:
        return None
    return raw


def _native_body(message: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any], dict[str, Any]] | None:
    """The ``[args, kwargs, embed]`` of a JSON protocol-2 Celery task message, or ``None`` for anything else."""
    headers = message.get("headers") or {}
    if not isinstance(headers.get("task"), str) or not headers["task"] or not headers.get("id"):
        return None
    if "compression" in headers:
        return None
    if (message.get("content-type") or "").lower() not in _JSON_TYPES:
        return None
    if (message.get("content-encoding") or "").lower() not in _UTF8:
        return None
    raw = _body_bytes(message)
    if raw is None:
        return None
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], list)
        and isinstance(value[1], dict)
        and isinstance(value[2], dict)
    ):
        return value[0], value[1], value[2]
    return None


def _reserve_for(headers: Mapping[str, Any], options: TransportOptions) -> tuple[int, list[str]]:
    warnings: list[str] = []
    wanted = float(options.reserve_for)
    timelimit = headers.get("timelimit")
    if isinstance(timelimit, (list, tuple)) and timelimit:
        hard = timelimit[0]
        if isinstance(hard, (int, float)) and not isinstance(hard, bool) and math.isfinite(hard) and hard > 0:
            wanted = max(wanted, hard + options.reserve_for_grace)
    override = headers.get(RESERVE_FOR_HEADER)
    if isinstance(override, str):
        try:
            override = float(override)
        except ValueError:
            warnings.append(f"ignoring {RESERVE_FOR_HEADER}={override!r}: not a number of seconds")
            override = None
    if isinstance(override, (int, float)) and not isinstance(override, bool) and math.isfinite(override):
        wanted = max(wanted, override)
    seconds = math.ceil(wanted)
    if seconds > MAX_RESERVE_FOR:
        warnings.append(
            f"task {headers.get('task')!r} ({headers.get('id')}) wants a reservation of {seconds} s; Faktory allows "
            f"at most {MAX_RESERVE_FOR} s, so a task running longer than that will run twice"
        )
        seconds = MAX_RESERVE_FOR
    return max(seconds, MIN_RESERVE_FOR), warnings


def _envelope(message: Mapping[str, Any]) -> dict[str, Any]:
    properties = dict(message.get("properties") or {})
    properties.pop("delivery_tag", None)
    delivery_info = dict(properties.get("delivery_info") or {})
    for key in _DELIVERY_KEYS:
        delivery_info.pop(key, None)
    properties["delivery_info"] = delivery_info
    return {
        "headers": dict(message.get("headers") or {}),
        "properties": properties,
        "content-type": message.get("content-type"),
        "content-encoding": message.get("content-encoding"),
    }


def encode_message(
    message: Mapping[str, Any],
    queue: str,
    *,
    jid: str,
    now: float,
    options: TransportOptions,
) -> EncodedJob:
    """The Faktory job for a kombu message published to ``queue``; ``message`` is not changed.

    Args:
        message: The dict kombu's virtual channel hands to ``_put`` (body already in its body encoding).
        queue: The kombu queue it goes to.
        jid: A fresh job id (never reuse one: ACK, FAIL and reservations are keyed by jid).
        now: The current Unix time in seconds (ETA threshold and TTL).
        options: The transport's options.
    """
    headers: Mapping[str, Any] = message.get("headers") or {}
    properties: Mapping[str, Any] = message.get("properties") or {}
    task = headers.get("task")
    jobtype = task if isinstance(task, str) and task else KOMBU_JOBTYPE
    step = priority_step(properties.get("priority"), options.priority_steps)
    reserve_for, warnings = _reserve_for(headers, options)
    kombu = _envelope(message)
    custom: dict[str, Any] = {"kq": queue, "kombu": kombu}
    if message.get("redelivered"):
        custom["redelivered"] = True
    args: list[Any] = []

    native = _native_body(message) if options.job_args == "native" else None
    if native is not None:
        positional, keyword, embed = native
        hazard = _number_hazard(native)
        if hazard == _UNSENDABLE:
            native = None
        else:
            args = positional
            custom["kwargs"] = keyword
            kombu["embed"] = embed
            if hazard == _INEXACT:
                kombu["body"] = message.get("body")
    if native is None:
        kombu["body"] = message.get("body")
        if options.job_args == "repr":
            args = [headers.get("argsrepr"), headers.get("kwargsrepr")] if "argsrepr" in headers else []
            if _number_hazard(args) == _UNSENDABLE:
                args = []

    meta = {"headers": kombu["headers"], "properties": kombu["properties"]}
    if _number_hazard(meta) == _INEXACT:
        kombu["exact"] = json.dumps(meta, separators=(",", ":"), ensure_ascii=False)

    expiration = properties.get("expiration")
    if expiration is not None and headers.get("expires") is None:
        try:
            ttl = float(expiration) / 1000.0
        except (TypeError, ValueError):
            warnings.append(f"ignoring the message's expiration {expiration!r}: not a number of milliseconds")
        else:
            if math.isfinite(ttl):
                custom["expires_at"] = _timestamp(now + max(ttl, 0.0))

    job: dict[str, Any] = {
        "jid": jid,
        "jobtype": jobtype,
        "args": args,
        "queue": faktory_queue(queue, step, options),
        "retry": options.retry,
        "reserve_for": reserve_for,
        "custom": custom,
    }
    eta = _parse_iso(headers.get("eta"))
    if eta is not None and eta - now > options.eta_threshold:
        job["at"] = _timestamp(eta)
    return EncodedJob(job, tuple(warnings))


# -- decoding ------------------------------------------------------------------------------------------


def is_foreign(job: Mapping[str, Any]) -> bool:
    """Whether the job was pushed by another Faktory client (it carries no kombu envelope)."""
    custom = job.get("custom")
    return not (isinstance(custom, dict) and isinstance(custom.get("kombu"), dict))


def is_expired(job: Mapping[str, Any], now: float) -> bool:
    """Whether the job's message TTL (``custom.expires_at``) has passed at Unix time ``now``."""
    custom = job.get("custom")
    if not isinstance(custom, dict):
        return False
    deadline = custom.get("expires_at")
    if not isinstance(deadline, str):
        return False
    try:
        return parse_timestamp(deadline) / 1e9 <= now
    except ValueError:
        return False


def _redelivered(job: Mapping[str, Any]) -> bool:
    custom = job.get("custom")
    return bool(job.get("failure")) or (isinstance(custom, dict) and custom.get("redelivered") is True)


def _encode_body(text: str, body_encoding: Any) -> str:
    if body_encoding == "base64":
        return base64.b64encode(text.encode("utf-8")).decode("ascii")
    return text


def decode_job(job: Mapping[str, Any], queue: str) -> dict[str, Any]:
    """The kombu message payload for a fetched job, as kombu's virtual channel delivers it.

    ``delivery_tag`` is the jid; ``delivery_info`` gains ``faktory_jid`` and ``faktory_queue``, and
    ``redelivered`` when the job failed before or is a requeued copy. A foreign job becomes a protocol-2 JSON
    Celery task message (see :func:`foreign_message`).

    Args:
        job: The job as FETCH returned it.
        queue: The kombu queue it is delivered to.

    Raises:
        MalformedJob: The job's kombu envelope is damaged.
    """
    jid = str(job["jid"])
    payload = foreign_message(job, queue) if is_foreign(job) else _kombu_message(job)
    properties = payload["properties"]
    properties["delivery_tag"] = jid
    delivery_info = properties.setdefault("delivery_info", {})
    delivery_info["faktory_jid"] = jid
    delivery_info["faktory_queue"] = job.get("queue")
    if _redelivered(job):
        delivery_info["redelivered"] = True
        payload["headers"]["redelivered"] = True
    return payload


def _kombu_message(job: Mapping[str, Any]) -> dict[str, Any]:
    custom = job["custom"]
    kombu = custom["kombu"]
    exact = kombu.get("exact")
    if isinstance(exact, str):
        try:
            meta = json.loads(exact)
        except ValueError as exc:
            raise MalformedJob(f"job {job.get('jid')}: custom.kombu.exact is not JSON") from exc
        headers, properties = meta.get("headers"), meta.get("properties")
    else:
        headers, properties = kombu.get("headers"), kombu.get("properties")
    if not isinstance(headers, dict) or not isinstance(properties, dict):
        raise MalformedJob(f"job {job.get('jid')}: custom.kombu lacks headers or properties")
    properties = copy.deepcopy(properties)
    if not isinstance(properties.get("delivery_info"), dict):
        properties["delivery_info"] = {}
    body = kombu.get("body")
    if body is None:
        embed = kombu.get("embed")
        kwargs = custom.get("kwargs")
        args = job.get("args")
        if not isinstance(embed, dict) or not isinstance(kwargs, dict) or not isinstance(args, list):
            raise MalformedJob(f"job {job.get('jid')}: a native job needs args, custom.kwargs and custom.kombu.embed")
        text = json.dumps([args, kwargs, embed], ensure_ascii=False, separators=(",", ":"))
        body = _encode_body(text, properties.get("body_encoding"))
    return {
        "body": body,
        "content-type": kombu.get("content-type"),
        "content-encoding": kombu.get("content-encoding"),
        "headers": copy.deepcopy(headers),
        "properties": properties,
    }


def foreign_message(job: Mapping[str, Any], queue: str) -> dict[str, Any]:
    """A protocol-2 JSON Celery task message for a job pushed by another Faktory client.

    The task is the jobtype, the task id the jid (or ``custom.celery_task_id`` on a requeued copy), the
    positional arguments ``args`` and the keyword arguments ``custom.kwargs``; there are no callbacks, errbacks,
    chain or chord. ``retries`` counts the job's Faktory failures.
    """
    custom = _mapping(job.get("custom"))
    args = job.get("args")
    if not isinstance(args, list):
        args = []
    kwargs = _mapping(custom.get("kwargs"))
    task_id = custom.get("celery_task_id") or str(job["jid"])
    failure = job.get("failure")
    retries = int(failure.get("retry_count", 0)) + 1 if isinstance(failure, dict) else 0
    headers: dict[str, Any] = {
        "lang": "py",
        "task": str(job.get("jobtype")),
        "id": task_id,
        "shadow": None,
        "eta": None,
        "expires": None,
        "group": None,
        "group_index": None,
        "retries": retries,
        "timelimit": [None, None],
        "root_id": task_id,
        "parent_id": None,
        "argsrepr": _repr.repr(args),
        "kwargsrepr": _repr.repr(kwargs),
        "origin": "faktory",
        "ignore_result": False,
        "replaced_task_nesting": 0,
        "stamped_headers": None,
        "stamps": {},
    }
    text = json.dumps([args, kwargs, dict(_EMPTY_EMBED)], ensure_ascii=False, separators=(",", ":"))
    return {
        "body": _encode_body(text, "base64"),
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": headers,
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "priority": 0,
            "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": queue},
        },
    }


def requeue_job(job: Mapping[str, Any], *, jid: str) -> dict[str, Any]:
    """A copy of a fetched job to PUSH back at once, marked as redelivered, under a fresh ``jid``.

    The server's bookkeeping (``enqueued_at``, ``failure``, a past ``at``) is dropped; a foreign job keeps its
    original jid as ``custom.celery_task_id`` so its Celery task id (and result) stays the same.
    """
    copied = {key: copy.deepcopy(value) for key, value in job.items() if key not in ("enqueued_at", "failure", "at")}
    custom = _mapping(copied.get("custom"))
    if is_foreign(job):
        custom.setdefault("celery_task_id", str(job["jid"]))
    custom["redelivered"] = True
    copied["custom"] = custom
    copied["jid"] = jid
    retry = copied.get("retry")
    if not isinstance(retry, int) or isinstance(retry, bool):
        copied["retry"] = DEFAULT_RETRY
    return copied


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
