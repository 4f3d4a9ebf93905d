"""From one command line to store calls and reply bytes, with Faktory 1.9.4's exact error texts.

:class:`CommandHandler` answers every verb except FETCH on the spot. FETCH may block, so the handler only
parses it into a :class:`FetchRequest` that the listener serves. Every input gets an answer: where Faktory
1.9.4 crashes (a verb without its argument), this server answers an ``-ERR`` and carries on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery_faktory.protocol.payload import job_type_problem
from celery_faktory.protocol.replies import encode_bulk, encode_error, encode_simple
from celery_faktory.protocol.session import Command
from celery_faktory.server.store import Rejected, ServerState, encode_json

__all__ = ["CLOSE", "CommandHandler", "FetchRequest"]

_OK = encode_simple("OK")


class _Close:
    """The marker for "close the connection without a reply" (END)."""


#: Returned for END: close the connection and write nothing.
CLOSE = _Close()


@dataclass(frozen=True, slots=True)
class FetchRequest:
    """A parsed FETCH, for the listener to serve (it may have to wait for a job)."""

    queues: tuple[str, ...]


def _decode(text: str) -> Any:
    return json.loads(text)


def _json_error(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError) and exc.pos >= len(exc.doc.rstrip()):
        return "unexpected end of JSON input"
    return str(exc)


class CommandHandler:
    """Answers the commands of one server.

    Args:
        state: The server's state.
        connections: Returns how many connections are open (for INFO).
        used_memory_mb: Returns the memory in use, in MB (for INFO).
    """

    def __init__(
        self,
        state: ServerState,
        connections: Callable[[], int],
        used_memory_mb: Callable[[], int],
    ) -> None:
        self._state = state
        self._connections = connections
        self._used_memory_mb = used_memory_mb
        # Every handler but MUTATE's treats a missing argument as an empty one: where Faktory 1.9.4 crashes
        # on a bare PUSH, ACK, FAIL, BEAT or QUEUE, this server answers what it answers to "PUSH " and so on.
        self._verbs: dict[str, Callable[[str | None], bytes | FetchRequest | _Close]] = {
            "PUSH": lambda argument: self._push(argument or ""),
            "PUSHB": lambda argument: self._push_bulk(argument or ""),
            "FETCH": lambda argument: self._fetch(argument or ""),
            "ACK": lambda argument: self._ack(argument or ""),
            "FAIL": lambda argument: self._fail(argument or ""),
            "BEAT": lambda argument: self._beat(argument or ""),
            "INFO": lambda _: encode_bulk(encode_json(self._state_info())),
            "FLUSH": self._flush,
            "QUEUE": lambda argument: self._queue(argument or ""),
            "MUTATE": self._mutate,
            "END": lambda _: CLOSE,
            "BATCH": lambda _: encode_error("batch subsystem is only available in Faktory Enterprise"),
            "TRACK": lambda _: encode_error("tracking subsystem is only available in Faktory Enterprise"),
        }

    def handle(self, command: Command) -> bytes | FetchRequest | _Close:
        """Answer one command: reply bytes, a :class:`FetchRequest`, or :data:`CLOSE`."""
        self._state.command_count += 1
        handler = self._verbs.get(command.verb)
        if handler is None:
            return encode_error(f"unknown command {command.verb}")
        return handler(command.argument)

    def _state_info(self) -> dict[str, Any]:
        return self._state.info(connections=self._connections(), used_memory_mb=self._used_memory_mb())

    def _push(self, argument: str) -> bytes:
        try:
            job = _decode(argument)
        except ValueError as exc:
            return encode_error(f"invalid JSON: {_json_error(exc)}")
        problem = job_type_problem(job)
        if problem is not None:
            return encode_error(f"invalid JSON: {problem}")
        try:
            self._state.push(job)
        except Rejected as exc:
            return encode_error(str(exc))
        return _OK

    def _push_bulk(self, argument: str) -> bytes:
        try:
            jobs = _decode(argument)
        except ValueError as exc:
            return encode_error(f"invalid JSON: {_json_error(exc)}")
        if not isinstance(jobs, list):
            kind = "object" if isinstance(jobs, dict) else "value"
            return encode_error(f"invalid JSON: json: cannot unmarshal {kind} into Go value of type []client.Job")
        for job in jobs:
            problem = job_type_problem(job)
            if problem is not None:
                return encode_error(f"invalid JSON: {problem}")
        rejected: dict[str, str] = {}
        for job in jobs:
            try:
                self._state.push(job)
            except Rejected as exc:
                rejected[str(job.get("jid") or "")] = str(exc)
        return encode_bulk(encode_json(dict(sorted(rejected.items()))))

    def _fetch(self, argument: str) -> bytes | FetchRequest:
        queues = tuple(name for name in argument.split(" ") if name)
        if not queues:
            return encode_error("must call fetch with at least one queue")
        return FetchRequest(queues)

    def _ack(self, argument: str) -> bytes:
        try:
            payload = _decode(argument)
        except ValueError:
            payload = None
        if (
            not isinstance(payload, dict)
            or not all(value is None or isinstance(value, str) for value in payload.values())
            or "jid" not in payload
        ):
            return encode_error(f"invalid ACK {argument}")
        self._state.ack(payload["jid"] or "")
        return _OK

    def _fail(self, argument: str) -> bytes:
        try:
            payload = _decode(argument)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not _fail_types_ok(payload):
            return encode_error(f"invalid FAIL {argument}")
        jid = payload.get("jid")
        if not jid:
            return encode_error("missing JID")
        try:
            self._state.fail(jid, payload.get("errtype") or "", payload.get("message") or "", payload.get("backtrace"))
        except Rejected as exc:
            return encode_error(str(exc))
        return _OK

    def _beat(self, argument: str) -> bytes:
        try:
            payload = _decode(argument)
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or not _beat_types_ok(payload):
            return encode_error(f"invalid BEAT {argument}")
        try:
            state = self._state.beat(
                payload.get("wid") or "", payload.get("current_state") or "", payload.get("rss_kb")
            )
        except Rejected as exc:
            return encode_error(str(exc))
        return _OK if state == "running" else encode_bulk(encode_json({"state": state}))

    def _flush(self, argument: str | None) -> bytes:
        self._state.flush()
        return _OK

    def _queue(self, argument: str) -> bytes:
        subcommand, _, rest = argument.partition(" ")
        subcommand = subcommand.upper()
        names = [name for name in rest.split(" ") if name]
        if not subcommand:
            return encode_error("QUEUE needs a subcommand: PAUSE, RESUME, REMOVE or LATENCY")
        if subcommand == "LATENCY":
            if "*" in names:
                return encode_error("QUEUE LATENCY does not support wildcards")
            return encode_bulk(encode_json(self._state.latency(names)))
        actions = {"PAUSE": self._state.pause, "RESUME": self._state.resume, "REMOVE": self._state.remove}
        action = actions.get(subcommand)
        if action is None:
            return encode_error(f"no such QUEUE subcommand: {subcommand}")
        if not names:
            return encode_error(f"QUEUE {subcommand} needs at least one queue name")
        action(names)
        return _OK

    def _mutate(self, argument: str | None) -> bytes:
        if argument is None or " " in argument:
            return encode_error("invalid format")
        try:
            operation = _decode(argument)
        except ValueError as exc:
            return encode_error(_json_error(exc))
        if not isinstance(operation, dict):
            return encode_error("json: cannot unmarshal into Go value of type client.Operation")
        filter_ = operation.get("filter") or {}
        if not isinstance(filter_, dict) or not _filter_types_ok(filter_):
            return encode_error("json: cannot unmarshal into Go struct field Operation.filter")
        try:
            self._state.mutate(str(operation.get("cmd") or ""), str(operation.get("target") or ""), filter_)
        except Rejected as exc:
            return encode_error(str(exc))
        return _OK


def _fail_types_ok(payload: dict[str, Any]) -> bool:
    for name in ("jid", "errtype", "message"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            return False
    backtrace = payload.get("backtrace")
    return backtrace is None or (isinstance(backtrace, list) and all(isinstance(line, str) for line in backtrace))


def _beat_types_ok(payload: dict[str, Any]) -> bool:
    for name in ("wid", "current_state"):
        if payload.get(name) is not None and not isinstance(payload[name], str):
            return False
    rss_kb = payload.get("rss_kb")
    return rss_kb is None or (isinstance(rss_kb, int) and not isinstance(rss_kb, bool))


def _filter_types_ok(filter_: dict[str, Any]) -> bool:
    jids = filter_.get("jids")
    if jids is not None and not (isinstance(jids, list) and all(isinstance(jid, str) for jid in jids)):
        return False
    return all(filter_.get(name) is None or isinstance(filter_[name], str) for name in ("regexp", "jobtype"))
