"""The sans-I/O Faktory protocol core, shared by client, worker, transport and server.

Nothing in this package opens a socket, starts a thread, reads a clock or imports another part of
``celery_faktory`` except :mod:`celery_faktory.errors`. Bytes and values go in, bytes and values come out.
"""

from celery_faktory.protocol import commands
from celery_faktory.protocol.encoding import dumps, loads
from celery_faktory.protocol.handshake import Greeting, hello_payload, parse_greeting, password_hash
from celery_faktory.protocol.replies import (
    NEED_DATA,
    Array,
    Bulk,
    Error,
    Integer,
    NeedData,
    Reply,
    ReplyParser,
    Simple,
)

__all__ = [
    "NEED_DATA",
    "Array",
    "Bulk",
    "Error",
    "Greeting",
    "Integer",
    "NeedData",
    "Reply",
    "ReplyParser",
    "Simple",
    "commands",
    "dumps",
    "hello_payload",
    "loads",
    "parse_greeting",
    "password_hash",
]
