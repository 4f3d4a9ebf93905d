"""The client-side scenarios of faktory_worker_node's test suite, ported one for one (reference §13.3).

(M) scenarios use a scripted server or a request spy, (R) ones the tests' Faktory, (U) ones no server.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import trustme

from celery_faktory.client import Client, Connection
from celery_faktory.config import ClientConfig
from celery_faktory.errors import InvalidCommand, MalformedReply, VersionMismatch
from celery_faktory.job import Job
from celery_faktory.protocol import Bulk, Simple, commands
from celery_faktory.protocol.handshake import password_hash
from celery_faktory.protocol.replies import Reply
from tests.faktory.client.helpers import (
    RequestSpy,
    ScriptedServer,
    fail_one,
    faktory_like,
    fetch_all,
    greeting_only,
    take_from_set,
    wait_closed,
)
from tests.faktory.wire import unique

Scripted = Callable[[Callable[[socket.socket, ScriptedServer], Any]], ScriptedServer]


def hello_of(received: bytes) -> dict[str, Any]:
    """The HELLO payload in what a connection sent."""
    line = received.split(b"\r\n", 1)[0]
    assert line.startswith(b"HELLO {")
    return json.loads(line[6:])


def challenge(greeting: bytes) -> Callable[[socket.socket, ScriptedServer], None]:
    """Like the Node mock server: greet with ``greeting``, then answer HELLO with +OK without checking it."""

    def handler(sock: socket.socket, server: ScriptedServer) -> None:
        sock.sendall(greeting)
        buffer = bytearray()
        received = b""
        try:
            while line := server.read_line(sock, buffer):
                received += line
                if line.startswith(b"HELLO "):
                    sock.sendall(b"+OK\r\n")
        finally:
            server.received.append(received)

    return handler


# -- client defaults and HELLO (U/M) --------------------------------------------------------------------


def test_defaults() -> None:
    config = ClientConfig.from_env({})
    # Node defaults to 127.0.0.1; the Go and Ruby clients, and this one, to localhost.
    assert (config.host, config.port) == ("localhost", 7419)
    client = Client(config=config)
    assert client._pool.size == 5
    assert client.max_retries == 3


def test_hello_without_wid(scripted_server: Scripted) -> None:
    server = scripted_server(faktory_like())
    with Connection(ClientConfig.from_url(server.url)):
        pass
    hello = hello_of(wait_closed(server)[0])
    assert hello == {"v": 2, "hostname": socket.gethostname()}


def test_hello_with_wid_pid_and_labels(scripted_server: Scripted) -> None:
    server = scripted_server(faktory_like())
    with Connection(ClientConfig.from_url(server.url), wid="w-123", labels=["a", "b"]):
        pass
    with Connection(ClientConfig.from_url(server.url, labels=("from-config",)), wid="w-456"):
        pass
    first, second = (hello_of(received) for received in wait_closed(server, 2))
    assert first == {"v": 2, "hostname": socket.gethostname(), "wid": "w-123", "pid": os.getpid(), "labels": ["a", "b"]}
    assert second["labels"] == ["from-config"]


def test_hello_sends_the_username(scripted_server: Scripted) -> None:
    server = scripted_server(faktory_like())
    with Connection(ClientConfig.from_url(f"tcp://proxyuser@127.0.0.1:{server.port}")):
        pass
    assert hello_of(wait_closed(server)[0])["username"] == "proxyuser"


def test_hello_password_hash_vector(scripted_server: Scripted) -> None:
    server = scripted_server(challenge(b'+HI {"v":2,"s":"123","i":3}\r\n'))
    with Connection(ClientConfig.from_url(f"tcp://:abcde123@127.0.0.1:{server.port}")):
        pass
    hello = hello_of(wait_closed(server)[0])
    assert hello["pwdhash"] == "ef646abadf4ffba660d9bbb8de8e45576970de917b4c9da8cad96b49e64636d9"
    assert hello["v"] == 2


@pytest.mark.parametrize("password", ["abcd%3D", "abcd="])
def test_hello_password_is_unescaped(scripted_server: Scripted, password: str) -> None:
    server = scripted_server(challenge(b'+HI {"v":2,"s":"abc","i":3}\r\n'))
    with Connection(ClientConfig.from_url(f"tcp://:{password}@127.0.0.1:{server.port}")):
        pass
    assert hello_of(wait_closed(server)[0])["pwdhash"] == password_hash("abcd=", "abc", 3)


def test_protocol_version_2_accepted_4_rejected(scripted_server: Scripted) -> None:
    good = scripted_server(faktory_like())
    with Connection(ClientConfig.from_url(good.url)) as connection:
        assert not connection.broken
    bad = scripted_server(greeting_only(b'+HI {"v":4}\r\n'))
    with pytest.raises(VersionMismatch):
        Connection(ClientConfig.from_url(bad.url))


# -- explicit connect and close: HELLO then END, over TCP and TLS (M) -----------------------------------


def test_connect_and_close_send_hello_and_end(scripted_server: Scripted) -> None:
    server = scripted_server(faktory_like())
    client = Client(server.url)
    with client._pool.connection() as connection:  # connect explicitly
        assert not connection.broken
    client.close()  # says END on the idle connection and closes it
    assert connection.broken
    received = wait_closed(server)[0]
    assert received.startswith(b"HELLO {")
    assert received.endswith(b"\r\nEND\r\n")


def test_connect_and_close_over_tls(scripted_server: Scripted, tmp_path: Any) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    plain = faktory_like()

    def handler(sock: socket.socket, server: ScriptedServer) -> None:
        with context.wrap_socket(sock, server_side=True) as tls:
            plain(tls, server)

    server = scripted_server(handler)
    with Connection(ClientConfig.from_url(f"tcp+tls://127.0.0.1:{server.port}", tls_ca=str(ca_file))):
        pass
    received = wait_closed(server)[0]
    assert received.startswith(b"HELLO {")
    assert received.endswith(b"END\r\n")


# -- INFO, PUSH, FETCH, ACK, FAIL, BEAT (R) -------------------------------------------------------------


def test_info(client: Client) -> None:
    assert client.info()["server"]["description"] == "Faktory"


def test_several_infos_in_sequence(client: Client) -> None:
    counts = [client.info()["server"]["command_count"] for _ in range(5)]
    assert counts == sorted(counts)
    assert len(set(counts)) == 5
    assert len(client._pool._idle) == 1  # all on one connection


def test_sequential_pushes(client: Client, queue: str) -> None:
    jids = [client.push(Job("Seq", [n], queue=queue)) for n in range(10)]
    assert [job.jid for job in fetch_all(client, queue, 10)] == jids


def test_concurrent_pushes(client: Client, queue: str) -> None:
    with ThreadPoolExecutor(10) as executor:
        jids = list(executor.map(lambda n: client.push(Job("Conc", [n], queue=queue)), range(30)))
    assert sorted(job.jid for job in fetch_all(client, queue, 30)) == sorted(jids)


def test_push_resolves_with_the_jid(client: Client, queue: str) -> None:
    job = Job("x", queue=queue)
    assert client.push(job) == job.jid
    raw = unique("raw")
    assert client.push({"jid": raw, "jobtype": "x", "args": [], "queue": queue}) == raw
    fetch_all(client, queue, 2)


def test_fetch_returns_the_pushed_job(client: Client, queue: str) -> None:
    job = Job("MyJob", [1, "a", {"b": None}], queue=queue)
    client.push(job)
    fetched = client.fetch(queue)
    assert fetched is not None
    assert (fetched.jid, fetched.args, fetched.jobtype) == (job.jid, job.args, job.jobtype)
    assert client.ack(fetched.jid) is None  # +OK


def test_fail_variants(client: Client, queue: str, discard_later: list[str]) -> None:
    plain, errno, stackless = (Job("F", [n], queue=queue) for n in range(3))
    discard_later.extend([plain.jid, errno.jid, stackless.jid])
    try:
        raise RuntimeError("with a stack")
    except RuntimeError as exc:
        fail_one(client, queue, plain, exc)
    fail_one(client, queue, errno, OSError(5, "Input/output error"))  # an error whose code is a number
    fail_one(client, queue, stackless, ValueError("never raised"))  # an error without a stack
    stored = {}
    for job in (plain, errno, stackless):
        back = take_from_set(client, client.retries, job.jid, queue)
        assert back is not None
        assert back.failure is not None
        stored[job.jid] = back.failure
    assert stored[plain.jid]["message"] == "with a stack"
    assert stored[plain.jid]["backtrace"]
    assert (stored[errno.jid]["errtype"], stored[errno.jid]["message"]) == ("OSError", "[Errno 5] Input/output error")
    assert (stored[stackless.jid]["errtype"], stored[stackless.jid]["message"]) == ("ValueError", "never raised")
    assert "backtrace" not in stored[stackless.jid]


def test_beat(faktory_url: str) -> None:
    wid = unique("wid")
    with Connection(ClientConfig.from_url(faktory_url), wid=wid) as connection:
        assert connection.request(commands.beat(wid)) == Simple("OK")


def test_beat_returns_the_state_sent_by_the_server(scripted_server: Scripted) -> None:
    server = scripted_server(faktory_like(lambda line: b'$17\r\n{"state":"quiet"}\r\n'))
    with Connection(ClientConfig.from_url(server.url), wid="w1") as connection:
        assert connection.request(commands.beat("w1")) == Bulk('{"state":"quiet"}')


# -- payload defaults and replies, without a server (M) -------------------------------------------------


def replies(line: bytes) -> Reply:
    verb = line.split(b" ", 1)[0].strip()
    return {b"PUSH": Simple("OK"), b"PUSHB": Bulk("{}"), b"FETCH": Bulk(None), b"MUTATE": Simple("OK")}[verb]


def test_fetch_nothing_is_none() -> None:
    client = Client("tcp://127.0.0.1:1")
    RequestSpy(client, replies)
    assert client.fetch("default") is None


def test_push_and_push_bulk_payload_defaults() -> None:
    client = Client("tcp://127.0.0.1:1")
    spy = RequestSpy(client, replies)
    client.push(Job("MyJob"))
    client.push_bulk([Job("MyJob"), Job("MyJob")])
    single = json.loads(spy.lines[0][len(b"PUSH ") :])
    bulk = json.loads(spy.lines[1][len(b"PUSHB ") :])
    for payload in (single, *bulk):
        assert payload["queue"] == "default"
        assert payload["args"] == []
        assert payload["retry"] == 25
        assert payload["jobtype"] == "MyJob"
        assert "priority" not in payload  # dropped by Faktory since 0.9.6 (§7.2)


def test_custom_and_negative_retry_serialise() -> None:
    client = Client("tcp://127.0.0.1:1")
    spy = RequestSpy(client, replies)
    client.push(Job("MyJob", [1], jid="abcdefgh12", retry=-1, custom={"unique_for": 10, "nested": {"a": [1]}}))
    assert spy.lines == [
        b'PUSH {"jid":"abcdefgh12","jobtype":"MyJob","args":[1],"queue":"default","retry":-1,'
        b'"custom":{"unique_for":10,"nested":{"a":[1]}}}\r\n'
    ]


def test_push_bulk_result_mapping() -> None:
    client = Client("tcp://127.0.0.1:1")
    result = '{"abcdefgh12":"jobs must have a jobtype parameter","shrt":"jobs must have a reasonable jid parameter"}'
    RequestSpy(client, lambda line: Bulk(result))
    assert client.push_bulk([Job("x")]) == {
        "abcdefgh12": "jobs must have a jobtype parameter",
        "shrt": "jobs must have a reasonable jid parameter",
    }
    RequestSpy(client, lambda line: Bulk("{}"))
    assert client.push_bulk([Job("x")]) == {}
    RequestSpy(client, lambda line: Bulk("[]"))
    with pytest.raises(MalformedReply):
        client.push_bulk([Job("x")])


# -- MUTATE (M): the exact JSON of every command on every set -------------------------------------------


@pytest.mark.parametrize("cmd", ["clear", "kill", "discard", "requeue"])
@pytest.mark.parametrize("target", ["retries", "scheduled", "dead"])
def test_mutate_json(cmd: str, target: str) -> None:
    client = Client("tcp://127.0.0.1:1")
    spy = RequestSpy(client, replies)
    filter_ = {"jobtype": "SendEmail", "jids": ["abc12345", "def67890"], "regexp": "*hello world*"}
    client.mutate(cmd, target, filter_)
    sorted_set = getattr(client, target)
    if cmd == "clear":
        sorted_set.clear()
    else:
        getattr(sorted_set, cmd)(jids=filter_["jids"], regexp=filter_["regexp"], jobtype=filter_["jobtype"])
    raw, typed = spy.lines
    assert raw.startswith(b"MUTATE {")
    assert raw.endswith(b"}\r\n")
    assert b" " not in raw[len(b"MUTATE ") :]  # the server splits the line on spaces
    assert json.loads(raw[len(b"MUTATE ") :]) == {"cmd": cmd, "target": target, "filter": filter_}
    expected_typed = {"cmd": cmd, "target": target}
    if cmd != "clear":
        expected_typed["filter"] = filter_  # type: ignore[assignment]
    assert json.loads(typed[len(b"MUTATE ") :]) == expected_typed


def test_mutate_without_filter() -> None:
    client = Client("tcp://127.0.0.1:1")
    spy = RequestSpy(client, replies)
    client.dead.discard()
    client.retries.requeue()
    assert spy.lines == [
        b'MUTATE {"cmd":"discard","target":"dead"}\r\n',
        b'MUTATE {"cmd":"requeue","target":"retries"}\r\n',
    ]


@pytest.mark.parametrize("kwargs", [{"jids": [1]}, {"jids": [""]}, {"regexp": 5}, {"jobtype": ["x"]}, {"jids": [None]}])
def test_mutate_non_string_filter_throws(kwargs: dict[str, Any]) -> None:
    client = Client("tcp://127.0.0.1:1")
    spy = RequestSpy(client, replies)
    with pytest.raises(InvalidCommand):
        client.retries.kill(**kwargs)
    assert spy.lines == []


# -- the Job object (U) ---------------------------------------------------------------------------------


def test_job_json_shape_and_push_delegates_to_the_client() -> None:
    client = Client("tcp://127.0.0.1:1")
    spy = RequestSpy(client, replies)
    job = client.job("MyJob", 1, 2, queue="critical", retry=3, reserve_for=90, custom={"x": 1})
    assert job.push() == job.jid
    assert json.loads(spy.lines[0][5:]) == {
        "jid": job.jid,
        "jobtype": "MyJob",
        "args": [1, 2],
        "queue": "critical",
        "retry": 3,
        "reserve_for": 90,
        "custom": {"x": 1},
    }
