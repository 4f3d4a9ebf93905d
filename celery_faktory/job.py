"""The :class:`Job` builder: one unit of work as Faktory carries it.

A job always travels with an explicit ``retry`` (a Faktory 1.9.4 server that receives a PUSH without one gives
it whatever ``retry`` the previous job carried), with ``at`` in UTC ending in ``Z``, and with a generated jid.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from celery_faktory.errors import InvalidCommand
from celery_faktory.protocol.encoding import dumps
from celery_faktory.protocol.payload import DEFAULT_QUEUE, DEFAULT_RETRY, format_timestamp, parse_timestamp

if TYPE_CHECKING:
    from celery_faktory.client.client import Client

__all__ = ["Job", "new_jid"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def new_jid() -> str:
    """A random job id: 24 lowercase hex characters (96 bits)."""
    return os.urandom(12).hex()


def _utc_timestamp(at: datetime | str) -> str:
    if isinstance(at, str):
        try:
            return format_timestamp(parse_timestamp(at))
        except ValueError as exc:
            raise InvalidCommand(f"at must be an RFC 3339 timestamp with an offset: {exc}") from exc
    if at.tzinfo is None or at.utcoffset() is None:
        raise InvalidCommand("at must be a timezone-aware datetime (naive datetimes are ambiguous)")
    delta = at - _EPOCH
    return format_timestamp((delta // timedelta(microseconds=1)) * 1000)


@dataclass(eq=False)
class Job:
    """A Faktory job.

    Attributes:
        jobtype: What kind of work this is; workers look their function up by it.
        args: The positional arguments (JSON values).
        jid: The job id, generated when not given.
        queue: The queue to push to.
        retry: Retries after a failure (0: discard on failure; negative: straight to the dead set).
        at: When to run it (a timezone-aware datetime or an RFC 3339 string); ``None`` for now.
        reserve_for: Seconds the server waits for ACK/FAIL before failing the job itself (60 to 86400).
        backtrace: How many backtrace lines a worker should send with FAIL.
        custom: Extra JSON data that every Faktory client passes through.
        created_at: Set by the server.
        enqueued_at: Set by the server at each enqueue.
        failure: The server's record of the last failure, on a retried job.
    """

    jobtype: str
    args: Sequence[Any] = ()
    jid: str = field(default_factory=new_jid)
    queue: str = DEFAULT_QUEUE
    retry: int = DEFAULT_RETRY
    at: datetime | str | None = None
    reserve_for: int | None = None
    backtrace: int | None = None
    custom: dict[str, Any] | None = None
    created_at: str | None = None
    enqueued_at: str | None = None
    failure: dict[str, Any] | None = None
    client: Client | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.jobtype, str) or not self.jobtype:
            raise InvalidCommand("a job needs a non-empty jobtype")
        if isinstance(self.args, (str, bytes, Mapping)):
            raise InvalidCommand(f"args must be a list of values, got {type(self.args).__name__}")
        self.args = list(self.args)

    @property
    def retry_count(self) -> int:
        """How many times this job has failed before (0 on its first execution)."""
        return 0 if not self.failure else int(self.failure.get("retry_count", 0)) + 1

    def to_dict(self) -> dict[str, Any]:
        """The payload to PUSH."""
        payload: dict[str, Any] = {
            "jid": self.jid,
            "jobtype": self.jobtype,
            "args": list(self.args),
            "queue": self.queue,
            "retry": self.retry,
        }
        if self.at is not None:
            payload["at"] = _utc_timestamp(self.at)
        if self.reserve_for is not None:
            payload["reserve_for"] = self.reserve_for
        if self.backtrace is not None:
            payload["backtrace"] = self.backtrace
        if self.custom:
            payload["custom"] = self.custom
        if self.created_at is not None:
            payload["created_at"] = self.created_at
        return payload

    def to_json(self) -> str:
        """The payload to PUSH, as compact JSON."""
        return dumps(self.to_dict())

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any], client: Client | None = None) -> Job:
        """A job from a payload a server sent (FETCH) or a mapping shaped like one."""
        retry = payload.get("retry")
        return cls(
            jobtype=payload["jobtype"],
            args=payload.get("args") or [],
            jid=payload["jid"],
            queue=payload.get("queue") or DEFAULT_QUEUE,
            retry=DEFAULT_RETRY if retry is None else retry,
            at=payload.get("at") or None,
            reserve_for=payload.get("reserve_for"),
            backtrace=payload.get("backtrace"),
            custom=payload.get("custom"),
            created_at=payload.get("created_at"),
            enqueued_at=payload.get("enqueued_at"),
            failure=payload.get("failure"),
            client=client,
        )

    def push(self, client: Client | None = None) -> str:
        """PUSH this job through ``client`` (or the client that built it); returns the jid."""
        target = client or self.client
        if target is None:
            raise InvalidCommand("this job has no client: call job.push(client)")
        return target.push(self)
