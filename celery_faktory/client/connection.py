"""One socket to a Faktory server, driven by the protocol core.

:class:`Connection` opens the socket (TCP keepalive on, Nagle off, TLS when asked), completes the HI/HELLO
handshake, and then sends command lines and reads replies, one at a time or pipelined. Socket failures become
:class:`~celery_faktory.errors.ConnectionLost`, :class:`~celery_faktory.errors.ConnectFailed` or
:class:`~celery_faktory.errors.FaktoryTimeout`, after which the connection is marked broken and must be
replaced. It never imports the server.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import ssl
from collections.abc import Sequence

from celery_faktory.config import ClientConfig
from celery_faktory.errors import (
    AuthenticationFailed,
    ConnectFailed,
    ConnectionLost,
    FaktoryTimeout,
    HandshakeError,
    MalformedReply,
    ServerError,
)
from celery_faktory.protocol import commands
from celery_faktory.protocol.handshake import hello_payload, parse_greeting
from celery_faktory.protocol.replies import NEED_DATA, Bulk, Error, NeedData, Reply, ReplyParser, Simple

__all__ = ["Connection", "expect_ok", "expect_text"]

#: Error replies after which the server closes the connection.
_CLOSING_ERRORS = ("Invalid password", "too many connections", "shutdown in progress")
_RECV_SIZE = 64 * 1024  # larger reads cost an mmap per recv()


def expect_ok(reply: Reply) -> None:
    """Accept ``+OK``; raise the server's error for ``-ERR``, :class:`MalformedReply` for anything else."""
    if isinstance(reply, Error):
        raise reply.to_exception()
    if reply != Simple("OK"):
        raise MalformedReply(f"expected +OK, got {reply!r}")


def expect_text(reply: Reply) -> str | None:
    """The payload of a bulk (or simple) string reply; ``None`` for ``$-1``; the server's error raised."""
    if isinstance(reply, Error):
        raise reply.to_exception()
    if isinstance(reply, Bulk):
        return reply.value
    if isinstance(reply, Simple):
        return reply.text
    raise MalformedReply(f"expected a string reply, got {reply!r}")


class Connection:
    """A connected, authenticated socket to a Faktory server.

    Args:
        config: Where the server is and how to reach it.
        wid: A worker id: the connection then belongs to that worker process (heartbeats, quiet).
        labels: The worker's labels (only sent with a ``wid``); default ``config.labels``.

    Raises:
        ConnectFailed: The server could not be reached, or TLS failed.
        AuthenticationFailed: The password is wrong or missing.
        HandshakeError: The server closed the connection during the handshake or spoke another protocol.
    """

    def __init__(self, config: ClientConfig, *, wid: str | None = None, labels: Sequence[str] | None = None) -> None:
        self.config = config
        self.wid = wid
        self.broken = False
        self.pid = os.getpid()
        self._parser = ReplyParser()
        self._sock = self._open()
        try:
            self._handshake(labels)
        except BaseException:
            self._sock.close()
            raise

    def _open(self) -> socket.socket:
        config = self.config
        try:
            sock = socket.create_connection((config.host, config.port), timeout=config.connect_timeout)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to Faktory at {config.safe_url}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        context = config.ssl_context()
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_hostname=config.host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise ConnectFailed(
                    f"TLS handshake with {config.safe_url} failed ({exc}); does the server speak TLS?"
                ) from exc
        return sock

    def _handshake(self, labels: Sequence[str] | None) -> None:
        config = self.config
        try:
            greeting_reply = self.read_reply()
            if not isinstance(greeting_reply, Simple):
                raise MalformedReply(f"expected the HI greeting, got {greeting_reply!r}")
            greeting = parse_greeting(greeting_reply.text)
        except ConnectionLost as exc:
            raise HandshakeError(
                f"{config.safe_url} closed the connection before greeting (TLS mismatch, or not Faktory?)"
            ) from exc
        except FaktoryTimeout as exc:
            raise HandshakeError(
                f"{config.safe_url} sent no greeting within {config.connect_timeout} s "
                "(a TLS server? then use tcp+tls://)"
            ) from exc
        except MalformedReply as exc:
            raise HandshakeError(f"{config.safe_url} does not speak the Faktory protocol: {exc}") from exc
        payload = hello_payload(
            greeting,
            hostname=config.hostname,
            password=config.password,
            wid=self.wid,
            pid=os.getpid(),
            labels=config.labels if labels is None else labels,
            username=config.username,
        )
        try:
            reply = self.request(commands.hello(payload))
        except ConnectionLost as exc:
            raise HandshakeError(f"{config.safe_url} rejected the HELLO (bad HELLO, or TLS mismatch)") from exc
        if isinstance(reply, Error) and reply.message == "Invalid password":
            raise AuthenticationFailed(f"{config.safe_url} rejected the password")
        try:
            expect_ok(reply)
        except (ServerError, MalformedReply) as exc:
            raise HandshakeError(f"{config.safe_url} refused the HELLO: {exc}") from exc
        self._sock.settimeout(config.read_timeout)

    def send(self, data: bytes) -> None:
        """Write command bytes (one or several complete lines)."""
        if self.broken:
            raise ConnectionLost("this connection is broken; open a new one")
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self.broken = True
            raise ConnectionLost(f"sending to {self.config.safe_url} failed: {exc}") from exc

    def read_reply(self) -> Reply:
        """Read the next reply."""
        while True:
            reply = self._parsed()
            if reply is not NEED_DATA:
                return reply
            try:
                data = self._sock.recv(_RECV_SIZE)
            except TimeoutError as exc:
                self.broken = True
                raise FaktoryTimeout(
                    f"{self.config.safe_url} sent no reply within {self.config.read_timeout} s"
                ) from exc
            except OSError as exc:
                self.broken = True
                raise ConnectionLost(f"reading from {self.config.safe_url} failed: {exc}") from exc
            self._received(data)

    def read_nowait(self) -> Reply | None:
        """The next reply if the bytes that already arrived complete it, else ``None``; never waits.

        For event loops that watch :meth:`fileno`. Raises like :meth:`read_reply`.
        """
        sock = self._sock
        sock.setblocking(False)
        try:
            while True:
                reply = self._parsed()
                if reply is not NEED_DATA:
                    return reply
                try:
                    data = sock.recv(_RECV_SIZE)
                except (BlockingIOError, ssl.SSLWantReadError):
                    return None
                except OSError as exc:
                    self.broken = True
                    raise ConnectionLost(f"reading from {self.config.safe_url} failed: {exc}") from exc
                self._received(data)
        finally:
            if not self.broken:
                sock.settimeout(self.config.read_timeout)

    def fileno(self) -> int:
        """The socket's file descriptor (for an event loop to watch)."""
        return self._sock.fileno()

    def _parsed(self) -> Reply | NeedData:
        """The next complete reply from the bytes received so far, or ``NEED_DATA``."""
        try:
            reply = self._parser.next_reply()
        except MalformedReply:
            self.broken = True
            raise
        if isinstance(reply, Error) and reply.message.startswith(_CLOSING_ERRORS):
            self.broken = True
        return reply

    def _received(self, data: bytes) -> None:
        if not data:
            self.broken = True
            raise ConnectionLost(f"{self.config.safe_url} closed the connection")
        self._parser.feed(data)

    def wait_readable(self, timeout: float) -> bool:
        """Whether reply bytes are ready to read now, or become ready within ``timeout`` seconds.

        Lets a caller with a command in flight (a blocking FETCH) wait for its reply without committing to
        read it.
        """
        if self._parser.buffered:
            return True
        sock = self._sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], max(timeout, 0.0))
        except (OSError, ValueError) as exc:
            self.broken = True
            raise ConnectionLost(f"waiting for {self.config.safe_url} failed: {exc}") from exc
        return bool(readable)

    def request(self, line: bytes) -> Reply:
        """Send one command line and read its reply."""
        self.send(line)
        return self.read_reply()

    def pipeline(self, lines: Sequence[bytes]) -> list[Reply]:
        """Send several command lines in one write, then read their replies, in order."""
        self.send(b"".join(lines))
        return [self.read_reply() for _ in lines]

    def close(self) -> None:
        """Say END (when the connection is healthy and still ours) and close the socket."""
        if not self.broken and self.pid == os.getpid():
            with contextlib.suppress(OSError):
                self._sock.sendall(commands.end())
        self.broken = True
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "broken" if self.broken else "open"
        return f"<Connection {self.config.safe_url} wid={self.wid!r} {state}>"
