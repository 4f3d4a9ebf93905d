"""Errors: -ERR replies become ServerError subclasses, and every way a connection can fail has its error (§4.5, §5)."""

from __future__ import annotations

import socket
import time

import pytest

from celery_faktory.client import Client, Connection
from celery_faktory.client.connection import expect_ok, expect_text
from celery_faktory.config import ClientConfig
from celery_faktory.errors import (
    AuthenticationFailed,
    ConnectFailed,
    FaktoryConnectionError,
    FaktoryError,
    FaktoryTimeout,
    HandshakeError,
    InvalidCommand,
    JobRejected,
    MalformedReply,
    ServerError,
    VersionMismatch,
)
from celery_faktory.protocol import Bulk, Error, Simple, dumps
from tests.faktory.client.helpers import ScriptedServer, faktory_like, greeting_only, wait_closed
from tests.faktory.wire import unique

QUEUE_RULE = "queue names must match \\A[a-zA-Z0-9._-]+\\z"


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- -ERR replies ---------------------------------------------------------------------------------------


def test_push_rejected_by_the_server_raises_job_rejected(client: Client) -> None:
    job = {"jid": unique("badq"), "jobtype": "x", "args": [], "queue": "bad queue!", "retry": 25}
    reply = client.request(b"PUSH " + dumps(job).encode() + b"\r\n")
    assert reply == Error("ERR", f'cannot get "bad queue!" queue: {QUEUE_RULE}')
    with pytest.raises(JobRejected) as info:
        expect_ok(reply)
    assert info.value.code == "ERR"
    assert info.value.message == f'cannot get "bad queue!" queue: {QUEUE_RULE}'
    assert client.info()["server"]["description"] == "Faktory"  # the connection is still usable


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'PUSH {"jid":"shrt","jobtype":"x","args":[],"retry":25}\r\n', "jobs must have a reasonable jid parameter"),
        (b'PUSH {"jid":"abcdefgh12","args":[],"retry":25}\r\n', "jobs must have a jobtype parameter"),
        (b'PUSH {"jid":"abcdefgh12","jobtype":"x","retry":25}\r\n', "jobs must have an args parameter"),
        (b"PUSH [1]\r\n", "invalid JSON: json: cannot unmarshal array into Go value of type client.Job"),
    ],
)
def test_other_push_rejections(client: Client, line: bytes, message: str) -> None:
    with pytest.raises(JobRejected) as info:
        expect_ok(client.request(line))
    assert info.value.message == message


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ({"jobtype": "x", "args": [], "queue": "bad queue!"}, f'cannot get "bad queue!" queue: {QUEUE_RULE}'),
        ({"jid": "shrt", "jobtype": "x", "args": []}, "jobs must have a reasonable jid parameter"),
        ({"jobtype": "", "args": []}, "jobs must have a jobtype parameter"),
        ({"jobtype": "x"}, "jobs must have an args parameter"),
        ({"jobtype": "x", "args": {"a": 1}}, "cannot unmarshal object into Go struct field Job.args"),
        ({"jobtype": "x", "args": [], "reserve_for": 86401}, "jobs cannot be reserved for more than one day"),
        ({"jobtype": "x", "args": [], "at": "tomorrow"}, "invalid timestamp for 'at'"),
        ({"jobtype": "x", "args": [float("nan")]}, "JSON"),
    ],
)
def test_push_refuses_invalid_mappings_locally(client: Client, job: dict[str, object], message: str) -> None:
    job = {"jid": unique("local"), **job}
    with pytest.raises(InvalidCommand) as info:
        client.push(job)
    assert message in str(info.value)
    assert not isinstance(info.value, ServerError)
    assert client.info()  # nothing half-sent broke the connection


def test_unknown_command(client: Client) -> None:
    reply = client.request(b"BOGUS with args\r\n")
    with pytest.raises(ServerError) as info:
        expect_ok(reply)
    assert type(info.value) is ServerError
    assert info.value.message == "unknown command BOGUS"
    with pytest.raises(ServerError, match="unknown command"):
        expect_text(client.request(b"BOGUS\r\n"))


def test_expect_helpers() -> None:
    assert expect_ok(Simple("OK")) is None
    assert expect_text(Bulk(None)) is None
    assert expect_text(Bulk("x")) == "x"
    assert expect_text(Simple("y")) == "y"
    with pytest.raises(MalformedReply):
        expect_ok(Simple("NOPE"))
    with pytest.raises(MalformedReply):
        expect_ok(Bulk("OK"))
    with pytest.raises(ServerError) as info:
        expect_ok(Error("NOTUNIQUE", "Job not unique"))
    assert info.value.code == "NOTUNIQUE"


def test_error_hierarchy() -> None:
    for cls in (ConnectFailed, FaktoryTimeout, HandshakeError, AuthenticationFailed):
        assert issubclass(cls, FaktoryConnectionError)
        assert issubclass(cls, FaktoryError)
    assert issubclass(AuthenticationFailed, HandshakeError)
    assert issubclass(FaktoryTimeout, TimeoutError)
    assert issubclass(JobRejected, ServerError)
    assert issubclass(InvalidCommand, ValueError)


# -- authentication -------------------------------------------------------------------------------------


def test_correct_password(faktory_password_url: str) -> None:
    with Client(faktory_password_url) as client:
        assert client.info()["server"]["description"] == "Faktory"


def test_wrong_password(faktory_password_url: str) -> None:
    config = ClientConfig.from_url(faktory_password_url).with_options(password="wrong-password")
    with pytest.raises(AuthenticationFailed) as info, Client(config=config) as client:
        client.info()
    assert "wrong-password" not in str(info.value)


def test_missing_password(faktory_password_url: str) -> None:
    config = ClientConfig.from_url(faktory_password_url).with_options(password=None)
    with pytest.raises(AuthenticationFailed), Client(config=config) as client:
        client.info()


def test_authentication_failure_is_not_retried(faktory_password_url: str) -> None:
    config = ClientConfig.from_url(faktory_password_url).with_options(password="wrong-password")
    started = time.monotonic()
    with pytest.raises(AuthenticationFailed), Connection(config):
        pass
    with pytest.raises(AuthenticationFailed), Client(config=config, max_retries=3) as client:
        client.push({"jid": unique(), "jobtype": "x", "args": []})
    assert time.monotonic() - started < 2  # no backoff loop: a wrong password stays wrong


# -- connecting -----------------------------------------------------------------------------------------


def test_connection_refused() -> None:
    url = f"tcp://127.0.0.1:{closed_port()}"
    with pytest.raises(ConnectFailed) as info:
        Connection(ClientConfig.from_url(url))
    assert url in str(info.value)
    started = time.monotonic()
    with pytest.raises(ConnectFailed), Client(url, max_retries=2) as client:
        client.info()
    assert time.monotonic() - started < 3


def test_refused_password_url_is_masked() -> None:
    with pytest.raises(ConnectFailed) as info:
        Connection(ClientConfig.from_url(f"tcp://:hunter2@127.0.0.1:{closed_port()}"))
    assert "hunter2" not in str(info.value)


def test_server_closing_before_the_greeting(scripted_server) -> None:  # type: ignore[no-untyped-def]
    server: ScriptedServer = scripted_server(lambda sock, server: None)
    with pytest.raises(HandshakeError, match="closed the connection before greeting"):
        Connection(ClientConfig.from_url(server.url, connect_timeout=2))


def test_server_closing_after_hello(scripted_server) -> None:  # type: ignore[no-untyped-def]
    def handler(sock: socket.socket, server: ScriptedServer) -> None:
        sock.sendall(b'+HI {"v":2}\r\n')
        server.read_line(sock, bytearray())

    server: ScriptedServer = scripted_server(handler)
    with pytest.raises(HandshakeError, match="rejected the HELLO"):
        Connection(ClientConfig.from_url(server.url, connect_timeout=2))


def test_error_greeting(scripted_server) -> None:  # type: ignore[no-untyped-def]
    server: ScriptedServer = scripted_server(greeting_only(b"-ERR shutdown in progress\r\n"))
    with pytest.raises(HandshakeError):
        Connection(ClientConfig.from_url(server.url, connect_timeout=2))


def test_protocol_version_4_is_refused(scripted_server) -> None:  # type: ignore[no-untyped-def]
    server: ScriptedServer = scripted_server(greeting_only(b'+HI {"v":4}\r\n'))
    with pytest.raises(VersionMismatch):
        Connection(ClientConfig.from_url(server.url, connect_timeout=2))


@pytest.mark.parametrize(
    "greeting",
    [b"SSH-2.0-OpenSSH_9.6\r\n", b"+HELLO\r\n", b"+HI not-json\r\n", b"HTTP/1.1 400 Bad Request\r\n\r\n"],
)
def test_a_server_speaking_another_protocol_is_a_handshake_error(scripted_server, greeting: bytes) -> None:  # type: ignore[no-untyped-def]
    """Connection documents HandshakeError for a server that "spoke another protocol"."""
    server: ScriptedServer = scripted_server(greeting_only(greeting))
    with pytest.raises(HandshakeError):
        Connection(ClientConfig.from_url(server.url, connect_timeout=2))


def test_refused_hello(scripted_server) -> None:  # type: ignore[no-untyped-def]
    server: ScriptedServer = scripted_server(faktory_like())

    def handler(sock: socket.socket, srv: ScriptedServer) -> None:
        sock.sendall(b'+HI {"v":2}\r\n')
        srv.read_line(sock, bytearray())
        sock.sendall(b"-ERR bad hello\r\n")

    refusing: ScriptedServer = scripted_server(handler)
    with pytest.raises(HandshakeError, match="bad hello"):
        Connection(ClientConfig.from_url(refusing.url, connect_timeout=2))
    with Connection(ClientConfig.from_url(server.url)) as connection:
        assert not connection.broken
    assert wait_closed(server)[0].endswith(b"END\r\n")


def test_silent_server_times_out_within_connect_timeout(scripted_server) -> None:  # type: ignore[no-untyped-def]
    def handler(sock: socket.socket, server: ScriptedServer) -> None:
        sock.settimeout(10)
        sock.recv(1)

    server: ScriptedServer = scripted_server(handler)
    started = time.monotonic()
    with pytest.raises(FaktoryConnectionError):
        Connection(ClientConfig.from_url(server.url, connect_timeout=0.5))
    assert time.monotonic() - started < 2
