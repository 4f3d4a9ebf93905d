"""The server's fault injection, which client tests use to break replies on purpose."""

from __future__ import annotations

import time

import pytest

from celery_faktory.errors import MalformedReply
from celery_faktory.protocol import Simple, commands
from celery_faktory.server import FaktoryServer, Fault
from tests.faktory.wire import connect

pytestmark = pytest.mark.faktory_server_only


@pytest.fixture
def server(faktory_server_factory) -> FaktoryServer:
    return faktory_server_factory()


def test_delay_holds_the_reply_back(server: FaktoryServer) -> None:
    with connect(server.url) as conn:
        server.inject_fault("INFO", Fault(delay=0.3))
        started = time.monotonic()
        conn.json(commands.info())
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        conn.json(commands.info())
        assert time.monotonic() - started < 0.3


def test_split_writes_the_reply_in_pieces(server: FaktoryServer) -> None:
    with connect(server.url) as conn:
        server.inject_fault("INFO", Fault(split=7))
        conn.send(commands.info())
        pieces = []
        deadline = time.monotonic() + 5
        data = b""
        while not data.endswith(b"}\r\n") and time.monotonic() < deadline:
            piece = conn.sock.recv(65536)
            pieces.append(piece)
            data += piece
        assert len(pieces) > 2
        assert max(len(piece) for piece in pieces) <= 14  # at most two 7-byte writes coalesce in one read
        conn.parser.feed(data)
        assert conn.reply().value.startswith('{"now":')  # type: ignore[union-attr]


def test_hold_glues_two_replies_into_one_write(server: FaktoryServer) -> None:
    with connect(server.url) as conn:
        server.inject_fault("FLUSH", Fault(hold=True))
        conn.send(commands.flush())
        conn.sock.settimeout(0.3)
        with pytest.raises(TimeoutError):
            conn.sock.recv(100)
        conn.sock.settimeout(5)
        conn.send(commands.flush())
        time.sleep(0.1)
        assert conn.sock.recv(100) == b"+OK\r\n+OK\r\n"


def test_drop_after_cuts_the_reply_and_the_connection(server: FaktoryServer) -> None:
    with connect(server.url) as conn:
        server.inject_fault("INFO", Fault(drop_after=10))
        conn.send(commands.info())
        with pytest.raises(EOFError):
            conn.reply()
    with connect(server.url) as other:
        assert other.command(commands.flush()) == Simple("OK")


def test_garbage_replaces_the_reply(server: FaktoryServer) -> None:
    with connect(server.url) as conn:
        server.inject_fault("FLUSH", Fault(garbage=b"?what\r\n"))
        conn.send(commands.flush())
        with pytest.raises(MalformedReply):
            conn.reply()


def test_times_and_clear(server: FaktoryServer) -> None:
    with connect(server.url) as conn:
        server.inject_fault("FLUSH", Fault(garbage=b"+X\r\n"), times=2)
        assert conn.command(commands.flush()) == Simple("X")
        server.clear_faults()
        assert conn.command(commands.flush()) == Simple("OK")
