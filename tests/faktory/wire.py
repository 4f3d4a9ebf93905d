"""A raw-socket Faktory connection for tests: bytes out, parsed replies in, nothing hidden.

It uses only the protocol core, so conformance tests see exactly what a server sends, and the same tests run
against a real Faktory (``FAKTORY_URL``).
"""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from typing import Any
from urllib.parse import unquote, urlsplit

from celery_faktory.protocol import NEED_DATA, Bulk, Reply, ReplyParser, Simple, commands, hello_payload
from celery_faktory.protocol.handshake import parse_greeting


def unique(prefix: str = "t") -> str:
    """A fresh name for a queue or jid, unique across runs (at least 8 bytes)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class RawConnection:
    """One socket to a Faktory server."""

    def __init__(self, url: str, *, timeout: float = 10.0, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(url)
        self.password = unquote(parts.password) if parts.password is not None else None
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 7419
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        if parts.scheme == "tcp+tls":
            context = ssl_context or ssl.create_default_context()
            sock = context.wrap_socket(sock, server_hostname=self.host)
        self.sock = sock
        self.parser = ReplyParser()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Reply:
        """The next reply; raises EOFError if the server closes first."""
        while True:
            reply = self.parser.next_reply()
            if reply is not NEED_DATA:
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("server closed the connection")
            self.parser.feed(data)

    def command(self, line: bytes) -> Reply:
        self.send(line)
        return self.reply()

    def greeting(self) -> Simple:
        reply = self.reply()
        assert isinstance(reply, Simple), reply
        return reply

    def handshake(self, **fields: Any) -> Reply:
        """Read the greeting and send a proper HELLO (with pwdhash when asked for); return the reply."""
        greeting = parse_greeting(self.greeting().text)
        payload = hello_payload(greeting, hostname=socket.gethostname(), password=self.password, **fields)
        return self.command(commands.hello(payload))

    def closed_by_server(self, within: float = 5.0) -> bool:
        """Whether the server closes the socket (EOF or reset) within ``within`` seconds, sending nothing."""
        self.sock.settimeout(within)
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def json(self, line: bytes) -> Any:
        """Send a command whose reply is a JSON bulk string and decode it."""
        reply = self.command(line)
        assert isinstance(reply, Bulk), reply
        assert reply.value is not None, reply
        return json.loads(reply.value)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def connect(url: str, **fields: Any) -> RawConnection:
    """A connection that has completed the handshake."""
    connection = RawConnection(url)
    reply = connection.handshake(**fields)
    assert reply == Simple("OK"), reply
    return connection


def wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
