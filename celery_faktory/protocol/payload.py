"""The job payload: field types, validation with Faktory's own error texts, and its timestamps.

Shared by the job builder (which refuses a bad job before it reaches the wire) and by the server (which
answers a bad PUSH with the exact text a Faktory 1.9.4 server sends). Timestamps are RFC 3339 in UTC; the
caller supplies the time, this module reads no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = [
    "DEFAULT_QUEUE",
    "DEFAULT_RETRY",
    "JOB_FIELDS",
    "MAX_RESERVE_FOR",
    "QUEUE_NAME",
    "format_timestamp",
    "go_quote",
    "job_problem",
    "job_type_problem",
    "parse_timestamp",
    "queue_name_problem",
]

#: The queue a job without ``queue`` goes to.
DEFAULT_QUEUE = "default"
#: The number of retries a job without ``retry`` gets on a server that has not been tampered with.
DEFAULT_RETRY = 25
#: The longest reservation a job may ask for, in seconds.
MAX_RESERVE_FOR = 86400
#: The rule every queue name must follow.
QUEUE_NAME = re.compile(r"\A[a-zA-Z0-9._-]+\Z")

#: Every top-level field Faktory keeps, in the order a 1.9.4 server writes them, with its Go type name.
JOB_FIELDS: dict[str, str] = {
    "retry": "int",
    "failure": "client.Failure",
    "custom": "map[string]interface {}",
    "jid": "string",
    "queue": "string",
    "jobtype": "string",
    "created_at": "string",
    "enqueued_at": "string",
    "at": "string",
    "args": "[]interface {}",
    "reserve_for": "int",
    "backtrace": "int",
}

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_RFC3339_LAYOUT = "2006-01-02T15:04:05.999999999Z07:00"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _json_kind(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _matches(value: object, go_type: str | None) -> bool:
    if value is None or go_type is None:
        return True
    if go_type == "string":
        return isinstance(value, str)
    if go_type == "int":
        return _is_int(value)
    if go_type == "[]interface {}":
        return isinstance(value, list)
    return isinstance(value, dict)


def job_type_problem(job: object) -> str | None:
    """Check the JSON types of one decoded job, as Go's decoder would.

    Returns:
        ``None``, or the message after ``invalid JSON: `` that a Faktory server gives.
    """
    if not isinstance(job, dict):
        return f"json: cannot unmarshal {_json_kind(job)} into Go value of type client.Job"
    # Go's decoder reports the first mismatch in the order the fields appear in the document.
    for field, value in job.items():
        go_type = JOB_FIELDS.get(field)
        if not _matches(value, go_type):
            kind = _json_kind(value)
            if go_type == "int" and kind == "number":
                kind = f"number {value}"
            return f"json: cannot unmarshal {kind} into Go struct field Job.{field} of type {go_type}"
    return _failure_type_problem(job.get("failure"))


def _failure_type_problem(failure: object) -> str | None:
    if isinstance(failure, dict):
        for field in ("retry_count", "remaining"):
            if not _matches(failure.get(field), "int"):
                return f"json: cannot unmarshal into Go struct field Failure.{field} of type int"
    return None


def queue_name_problem(queue: str) -> str | None:
    """``None``, or the server's message for a queue name that breaks :data:`QUEUE_NAME`."""
    if QUEUE_NAME.match(queue):
        return None
    return f"cannot get {go_quote(queue)} queue: queue names must match \\A[a-zA-Z0-9._-]+\\z"


def job_problem(job: Mapping[str, Any]) -> str | None:
    """Check a job with the field types already right, in the server's order of checks.

    Returns:
        ``None`` for a job the server accepts, else the server's error text (without ``ERR``).
    """
    jid = job.get("jid")
    if not isinstance(jid, str) or len(jid.encode()) < 8:
        return "jobs must have a reasonable jid parameter"
    if not job.get("jobtype"):
        return "jobs must have a jobtype parameter"
    if job.get("args") is None:
        return "jobs must have an args parameter"
    reserve_for = job.get("reserve_for")
    if reserve_for is not None and reserve_for > MAX_RESERVE_FOR:
        return "jobs cannot be reserved for more than one day"
    at = job.get("at")
    if at:
        try:
            parse_timestamp(at)
        except ValueError as exc:
            return f"invalid timestamp for 'at': {go_quote(at)}: {exc}"
    return None


def parse_timestamp(text: str) -> int:
    """Parse an RFC 3339 timestamp with an explicit offset into Unix nanoseconds.

    Accepts 0 to 9 fractional digits and ``Z`` or ``±HH:MM``, as Go's ``time.RFC3339Nano`` does.

    Raises:
        ValueError: ``text`` is not such a timestamp; the message follows Go's wording.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"parsing time {go_quote(text)}{_layout_error(text)}")
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    for name, value, low, high in (("month", month, 1, 12), ("hour", hour, 0, 23), ("minute", minute, 0, 59)):
        if not low <= value <= high:
            raise ValueError(f"parsing time {go_quote(text)}: {name} out of range")
    if second > 59:
        raise ValueError(f"parsing time {go_quote(text)}: second out of range")
    fraction, sign, off_hours, off_minutes = match.group(7), match.group(9), match.group(10), match.group(11)
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
        if sign:
            offset = timedelta(hours=int(off_hours), minutes=int(off_minutes))
            if int(off_hours) > 23 or int(off_minutes) > 59:
                raise ValueError("time zone offset out of range")
            moment -= offset if sign == "+" else -offset
    except (ValueError, OverflowError) as exc:
        what = "day out of range" if "day" in str(exc) else str(exc)
        raise ValueError(f"parsing time {go_quote(text)}: {what}") from exc
    seconds = int((moment - _EPOCH).total_seconds())
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


#: Go's RFC 3339 layout, element by element: (kind, text) with kind "digits", "literal", "fraction" or "zone".
_LAYOUT_ELEMENTS = (
    ("digits", "2006"),
    ("literal", "-"),
    ("digits", "01"),
    ("literal", "-"),
    ("digits", "02"),
    ("literal", "T"),
    ("digits", "15"),
    ("literal", ":"),
    ("digits", "04"),
    ("literal", ":"),
    ("digits", "05"),
    ("fraction", ".999999999"),
    ("zone", "Z07:00"),
)
_ZONE = re.compile(r"Z|[+-]\d{2}:\d{2}")


def _layout_error(text: str) -> str:
    """The tail of Go's error for ``text`` against the RFC 3339 layout (``as "…": cannot parse "…" as "…"``)."""
    rest = text
    for kind, element in _LAYOUT_ELEMENTS:
        if kind == "digits":
            width = len(element)
            if not (len(rest) >= width and rest[:width].isascii() and rest[:width].isdigit()):
                break
            rest = rest[width:]
        elif kind == "literal":
            if not rest.startswith(element):
                break
            rest = rest[len(element) :]
        elif kind == "fraction":
            digits = re.match(r"\.\d+", rest)
            rest = rest[digits.end() :] if digits else rest
        else:
            zone = _ZONE.match(rest)
            if zone is None:
                break
            rest = rest[zone.end() :]
    else:
        return f": extra text: {go_quote(rest)}"
    return f" as {go_quote(_RFC3339_LAYOUT)}: cannot parse {go_quote(rest)} as {go_quote(element)}"


_GO_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(text: str) -> str:
    """Quote ``text`` as Go's ``%q`` does, so that error messages match a Faktory server's byte for byte."""
    out = []
    for char in text:
        code = ord(char)
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif not char.isprintable():
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def format_timestamp(unix_ns: int) -> str:
    """Format Unix nanoseconds as Faktory writes time: UTC, ``Z``, up to 9 fractional digits, zeros trimmed."""
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    moment = _EPOCH + timedelta(seconds=seconds)
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S}"
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"
