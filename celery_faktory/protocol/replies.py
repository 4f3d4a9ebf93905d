"""Server-to-client framing: the RESP2 subset Faktory answers with.

:class:`ReplyParser` is incremental: feed it whatever bytes arrived, in pieces of any size, and take complete
replies out; "not enough bytes yet" is the return value :data:`NEED_DATA`, never an exception. Bytes that can
never become a valid reply raise :class:`~celery_faktory.errors.MalformedReply`, and the parser stays broken
afterwards (the stream cannot be resynchronised). The ``encode_*`` functions build replies for a server.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Union

from celery_faktory.errors import MalformedReply, ServerError, server_error

__all__ = [
    "NEED_DATA",
    "Array",
    "Bulk",
    "Error",
    "Integer",
    "NeedData",
    "Reply",
    "ReplyParser",
    "Simple",
    "encode_bulk",
    "encode_error",
    "encode_simple",
]


class NeedData(enum.Enum):
    """The type of :data:`NEED_DATA`."""

    NEED_DATA = "NEED_DATA"


#: Returned by :meth:`ReplyParser.next_reply` when the buffered bytes do not yet hold a whole reply.
NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Simple:
    """A simple string reply, ``+text``: ``OK``, the ``HI {...}`` greeting, or a payload sent inline."""

    text: str


@dataclass(frozen=True, slots=True)
class Error:
    """An error reply, ``-CODE message``."""

    code: str
    message: str

    def to_exception(self) -> ServerError:
        """The :class:`~celery_faktory.errors.ServerError` subclass that this reply stands for."""
        return server_error(self.code, self.message)


@dataclass(frozen=True, slots=True)
class Bulk:
    """A bulk string reply, ``$n``; ``value`` is ``None`` for ``$-1`` ("nothing")."""

    value: str | None


@dataclass(frozen=True, slots=True)
class Integer:
    """An integer reply, ``:n`` (never sent by the open-source server, parsed anyway)."""

    value: int


@dataclass(frozen=True, slots=True)
class Array:
    """An array reply, ``*n``; ``items`` is ``None`` for ``*-1``."""

    items: tuple[Reply, ...] | None


Reply = Union[Simple, Error, Bulk, Integer, Array]

_LENGTH = re.compile(rb"-1|0|[1-9][0-9]{0,17}")
_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]{0,18})")

#: Largest bulk string accepted, in bytes (Redis caps a string at 512 MiB).
DEFAULT_MAX_BULK = 512 * 1024 * 1024
#: Longest line (simple string, error, length header) accepted, in bytes.
DEFAULT_MAX_LINE = 64 * 1024 * 1024
#: Deepest nesting of arrays accepted.
MAX_DEPTH = 32


class ReplyParser:
    """Turns a byte stream from a Faktory server into :data:`Reply` values.

    Args:
        max_line: Longest simple string, error or header line, in bytes.
        max_bulk: Largest bulk string, in bytes.
    """

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE, max_bulk: int = DEFAULT_MAX_BULK) -> None:
        self._buffer = bytearray()
        self._pos = 0
        self._max_line = max_line
        self._max_bulk = max_bulk
        self._broken: MalformedReply | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet consumed by a complete reply."""
        return len(self._buffer) - self._pos

    def feed(self, data: bytes) -> None:
        """Append bytes received from the server."""
        self._buffer += data

    def next_reply(self) -> Reply | NeedData:
        """Take the next complete reply out of the buffer, or :data:`NEED_DATA`.

        Raises:
            MalformedReply: The buffered bytes can never form a valid reply.
        """
        if self._broken is not None:
            raise self._broken
        try:
            parsed = self._parse(self._pos, 0)
        except MalformedReply as exc:
            self._broken = exc
            raise
        if parsed is None:
            return NEED_DATA
        reply, self._pos = parsed
        if self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        elif self._pos > 65536 and self._pos * 2 > len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0
        return reply

    def _line(self, pos: int) -> tuple[bytes, int] | None:
        buffer = self._buffer
        end = buffer.find(b"\n", pos)
        if end < 0:
            # Still no LF: the bytes so far are the line plus, at most, its CR.
            if len(buffer) - pos > self._max_line + 1:
                raise MalformedReply(f"reply line longer than {self._max_line} bytes")
            return None
        if end == pos or buffer[end - 1] != 0x0D:
            raise MalformedReply("reply line not terminated by CRLF")
        if end - 1 - pos > self._max_line:
            raise MalformedReply(f"reply line longer than {self._max_line} bytes")
        line = bytes(buffer[pos : end - 1])
        if b"\r" in line:
            raise MalformedReply("carriage return inside a reply line")
        return line, end + 1

    def _parse(self, pos: int, depth: int) -> tuple[Reply, int] | None:
        buffer = self._buffer
        if pos >= len(buffer):
            return None
        kind = buffer[pos]
        if kind not in b"+-$:*":
            raise MalformedReply(f"unexpected reply type byte {bytes([kind])!r}")
        got = self._line(pos + 1)
        if got is None:
            return None
        line, pos = got
        if kind == 0x2B:  # "+"
            return Simple(_decode(line)), pos
        if kind == 0x2D:  # "-"
            code, _, message = _decode(line).partition(" ")
            if not code:
                raise MalformedReply("error reply without a code")
            return Error(code, message), pos
        if kind == 0x3A:  # ":"
            if not _INTEGER.fullmatch(line):
                raise MalformedReply(f"invalid integer reply {line!r}")
            return Integer(int(line)), pos
        if not _LENGTH.fullmatch(line):
            raise MalformedReply(f"invalid length {line!r}")
        length = int(line)
        if kind == 0x24:  # "$"
            if length < 0:
                return Bulk(None), pos
            if length > self._max_bulk:
                raise MalformedReply(f"bulk reply of {length} bytes exceeds {self._max_bulk}")
            end = pos + length
            if len(buffer) < end + 2:
                return None
            if buffer[end : end + 2] != b"\r\n":
                raise MalformedReply("bulk reply not terminated by CRLF")
            return Bulk(_decode(bytes(buffer[pos:end]))), end + 2
        # "*"
        if length < 0:
            return Array(None), pos
        if depth >= MAX_DEPTH:
            raise MalformedReply(f"arrays nested deeper than {MAX_DEPTH}")
        items: list[Reply] = []
        for _ in range(length):
            parsed = self._parse(pos, depth + 1)
            if parsed is None:
                return None
            item, pos = parsed
            items.append(item)
        return Array(tuple(items)), pos


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedReply(f"reply is not valid UTF-8: {exc}") from exc


def encode_simple(text: str) -> bytes:
    """Encode ``+text``, e.g. ``encode_simple("OK")`` for ``+OK``; newlines are flattened to spaces."""
    flat = text.replace("\r", " ").replace("\n", " ")
    return b"+" + flat.encode() + b"\r\n"


def encode_error(message: str, code: str = "ERR") -> bytes:
    """Encode ``-CODE message``; newlines in ``message`` are flattened to spaces."""
    flat = message.replace("\r", " ").replace("\n", " ")
    return b"-" + code.encode() + b" " + flat.encode() + b"\r\n"


def encode_bulk(value: str | None) -> bytes:
    """Encode ``$n`` with its body, or ``$-1`` for ``None``."""
    if value is None:
        return b"$-1\r\n"
    body = value.encode()
    return b"$%d\r\n%b\r\n" % (len(body), body)
