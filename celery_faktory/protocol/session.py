"""The server side of a Faktory conversation, as a state machine without I/O.

:class:`ServerSession` takes the bytes a client sent and hands back events: the accepted :class:`Hello`, each
later :class:`Command` line, or a :class:`Close` that says what to write before closing (nothing at all for the
silent closes Faktory performs). It owns every framing and handshake rule: the first line must start with
``HELLO {``, the HELLO fields must have Faktory's types, the password hash must match, lines end in LF or CRLF.
"""

from __future__ import annotations

import enum
import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Union

from celery_faktory.protocol.handshake import encode_greeting, expected_password_hash
from celery_faktory.protocol.replies import NEED_DATA, NeedData, encode_error

__all__ = ["Close", "Command", "Hello", "ServerEvent", "ServerSession", "SessionState"]

#: The longest command line a server session accepts by default, in bytes.
DEFAULT_MAX_LINE = 256 * 1024 * 1024

#: HELLO fields with the Python types Faktory's decoder accepts for them (``None`` is always accepted).
_HELLO_FIELDS: dict[str, tuple[type, ...]] = {
    "hostname": (str,),
    "wid": (str,),
    "pid": (int,),
    "labels": (list,),
    "pwdhash": (str,),
    "username": (str,),
    "rss_kb": (int,),
    "v": (int,),
}


class SessionState(enum.Enum):
    """Where a :class:`ServerSession` stands."""

    AWAIT_HELLO = "AWAIT_HELLO"
    READY = "READY"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's HELLO was accepted; the server answers ``+OK``.

    Attributes:
        payload: The decoded HELLO object, fields type-checked.
    """

    payload: dict[str, Any] = field(hash=False)

    @property
    def wid(self) -> str:
        """The worker id, ``""`` for a producer connection."""
        return self.payload.get("wid") or ""


@dataclass(frozen=True, slots=True)
class Command:
    """One command line after the handshake.

    Attributes:
        verb: Everything before the first space (case-sensitive).
        argument: The rest of the line after that space, or ``None`` when the line has no space.
    """

    verb: str
    argument: str | None


@dataclass(frozen=True, slots=True)
class Close:
    """Write ``reply`` (possibly empty), then close the connection."""

    reply: bytes = b""


ServerEvent = Union[Hello, Command, Close]


class ServerSession:
    """One client connection, from the server's point of view.

    Args:
        password: The password clients must prove they know, or ``None`` for an open server.
        iterations: The hash iterations announced in the greeting (needed with a password).
        salt: The salt announced in the greeting (needed with a password).
        max_line: The longest command line accepted, in bytes.
    """

    def __init__(
        self,
        *,
        password: str | None = None,
        iterations: int = 1,
        salt: str = "",
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self._password = password
        self._iterations = iterations
        self._salt = salt
        self._max_line = max_line
        self._buffer = bytearray()
        self._scanned = 0
        self.state = SessionState.AWAIT_HELLO

    def greeting(self) -> bytes:
        """The ``+HI`` line the server writes as soon as the client connects."""
        if self._password is None:
            return encode_greeting()
        return encode_greeting(self._iterations, self._salt)

    def receive_data(self, data: bytes) -> None:
        """Append bytes the client sent."""
        self._buffer += data

    def next_event(self) -> ServerEvent | NeedData:
        """The next event, or :data:`~celery_faktory.protocol.replies.NEED_DATA` until a whole line arrived."""
        if self.state is SessionState.CLOSED:
            return NEED_DATA
        line = self._next_line()
        # Without its LF, the buffer holds the line plus, at most, its CR.
        if line is None and len(self._buffer) <= self._max_line + 1:
            return NEED_DATA
        if line is None or len(line) > self._max_line:
            return self._close(encode_error(f"command line longer than {self._max_line} bytes"))
        if self.state is SessionState.AWAIT_HELLO:
            return self._hello(line)
        text = line.decode("utf-8", errors="replace")
        verb, space, argument = text.partition(" ")
        return Command(verb, argument if space else None)

    def _next_line(self) -> bytes | None:
        end = self._buffer.find(b"\n", self._scanned)
        if end < 0:
            self._scanned = len(self._buffer)
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        self._scanned = 0
        return line[:-1] if line.endswith(b"\r") else line

    def _close(self, reply: bytes = b"") -> Close:
        self.state = SessionState.CLOSED
        return Close(reply)

    def _hello(self, line: bytes) -> ServerEvent:
        if not line.startswith(b"HELLO {"):
            return self._close()
        try:
            payload = json.loads(line[6:].decode("utf-8", errors="replace"))
        except ValueError:
            return self._close()
        if not isinstance(payload, dict) or not _hello_types_ok(payload):
            return self._close()
        version = payload.get("v") or 0
        if self._password is not None:
            sent = payload.get("pwdhash")
            wanted = expected_password_hash(self._password, self._salt, self._iterations, version)
            if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), wanted.encode()):
                return self._close(encode_error("Invalid password"))
        self.state = SessionState.READY
        return Hello(payload)


def _hello_types_ok(payload: dict[str, Any]) -> bool:
    for name, types in _HELLO_FIELDS.items():
        value = payload.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            return False
    version = payload.get("v")
    if version is not None and not 0 <= version <= 255:
        return False
    labels = payload.get("labels")
    return labels is None or all(isinstance(label, str) for label in labels)
