"""Regression tests for the known bugs of other Faktory clients (reference §13.2)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celery_faktory.client import Client, Connection
from celery_faktory.client import connection as connection_module
from celery_faktory.config import ClientConfig
from celery_faktory.errors import AuthenticationFailed, InvalidCommand, ServerError
from celery_faktory.job import Job
from celery_faktory.protocol import commands, handshake
from celery_faktory.server import FaktoryServer, Fault
from tests.faktory.client.helpers import RequestSpy, fetch_all
from tests.faktory.wire import unique

# -- cdrx: -ERR replies were ignored --------------------------------------------------------------------


@pytest.fixture
def private(faktory_server_factory: Callable[..., FaktoryServer]) -> Iterator[tuple[FaktoryServer, Client]]:
    server = faktory_server_factory()
    with Client(server.url) as client:
        yield server, client


@pytest.mark.faktory_server_only
@pytest.mark.parametrize(
    ("verb", "command"),
    [
        ("PUSH", lambda client: client.push(Job("x", queue="q"))),
        ("PUSHB", lambda client: client.push_bulk([Job("x", queue="q")])),
        ("ACK", lambda client: client.ack("abcdefgh12")),
        ("FAIL", lambda client: client.fail("abcdefgh12", "x")),
        ("FETCH", lambda client: client.fetch("q")),
        ("INFO", lambda client: client.info()),
        ("QUEUE", lambda client: client.queue_pause("q")),
        ("QUEUE", lambda client: client.queue_resume("q")),
        ("QUEUE", lambda client: client.queue_remove("q")),
        ("QUEUE", lambda client: client.queue_latency("q")),
        ("MUTATE", lambda client: client.retries.kill(jids=["abcdefgh12"])),
        ("MUTATE", lambda client: client.dead.requeue()),
        ("FLUSH", lambda client: client.flush()),
    ],
)
def test_error_replies_are_never_ignored(
    private: tuple[FaktoryServer, Client], verb: str, command: Callable[[Client], Any]
) -> None:
    server, client = private
    client.info()
    connection = client._pool._idle[0]
    server.inject_fault(verb, Fault(garbage=b"-ERR injected failure\r\n"))
    with pytest.raises(ServerError) as info:
        command(client)
    assert info.value.code == "ERR"
    assert info.value.message == "injected failure"
    assert client._pool._idle == [connection]  # an -ERR leaves the connection usable
    assert client.info()


def test_fail_of_an_unknown_job_raises(client: Client) -> None:
    with pytest.raises(ServerError, match="Job not found"):
        client.fail(unique("nojob"), "x")


# -- pyfaktory: sent the server's host name in HELLO ----------------------------------------------------


def test_hello_sends_the_local_hostname(faktory_server: FaktoryServer) -> None:
    wid = unique("wid")
    config = ClientConfig.from_url(faktory_server.url)
    with Connection(config, wid=wid, labels=["python", "regression"]):
        worker = faktory_server.workers()[wid]
    assert worker["hostname"] == socket.gethostname()
    assert worker["hostname"] != config.host
    assert worker["pid"] == os.getpid()
    assert worker["labels"] == ["python", "regression"]


def test_hostname_can_be_overridden(faktory_server: FaktoryServer) -> None:
    wid = unique("wid")
    with Connection(ClientConfig.from_url(faktory_server.url, hostname="box-17"), wid=wid):
        assert faktory_server.workers()[wid]["hostname"] == "box-17"


# -- pyfaktory: an empty FETCH held the only socket for 2 s ---------------------------------------------


def test_an_empty_fetch_does_not_block_other_commands(client: Client, queue: str) -> None:
    client.info()
    fetching = threading.Thread(target=client.fetch, args=(queue,))
    fetching.start()
    time.sleep(0.05)
    started = time.monotonic()
    client.info()
    client.ack(unique("nojob"))
    assert time.monotonic() - started < 0.3
    fetching.join()


# -- cdrx: password hashed once, no "v" -----------------------------------------------------------------


@pytest.fixture
def hello_payloads(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The HELLO payloads the client sends from now on."""
    sent: list[dict[str, Any]] = []
    original = commands.hello

    def spy(payload: dict[str, Any]) -> bytes:
        sent.append(dict(payload))
        return original(payload)

    monkeypatch.setattr(commands, "hello", spy)
    return sent


def test_password_hash_uses_the_v2_iterations(
    faktory_password_url: str, hello_payloads: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client(faktory_password_url) as client:
        assert client.info()
    assert hello_payloads[0]["v"] == 2
    assert len(hello_payloads[0]["pwdhash"]) == 64

    # The server checks the iteration count: one application fewer, or a single one (cdrx), is refused.
    # (The HELLO is doctored in the client only: our in-process server shares the protocol module.)
    original = connection_module.hello_payload

    def sha256_applied(password: str, salt: str, times: int) -> str:
        digest = hashlib.sha256(password.encode() + salt.encode()).digest()
        for _ in range(times - 1):
            digest = hashlib.sha256(digest).digest()
        return digest.hex()

    config = ClientConfig.from_url(faktory_password_url)
    assert config.password is not None
    for wrong in (lambda i: i - 1, lambda i: 1, lambda i: i + 1):

        def doctored(greeting: handshake.Greeting, wrong: Callable[[int], int] = wrong, **kwargs: Any) -> dict:
            payload = original(greeting, **kwargs)
            assert greeting.iterations is not None
            assert greeting.salt is not None
            assert payload["pwdhash"] == sha256_applied(config.password, greeting.salt, greeting.iterations)
            payload["pwdhash"] = sha256_applied(config.password, greeting.salt, wrong(greeting.iterations))
            return payload

        monkeypatch.setattr(connection_module, "hello_payload", doctored)
        with pytest.raises(AuthenticationFailed):
            Connection(config)


# -- cdrx: retry 5 by default rewrote the server-wide default ---------------------------------------------


def test_retry_is_always_sent(client: Client, queue: str) -> None:
    spy = RequestSpy(client)
    client.push(Job("x", queue=queue))
    client.push({"jid": unique("raw"), "jobtype": "x", "args": [], "queue": queue})
    client.push_bulk([Job("x", queue=queue), {"jid": unique("raw"), "jobtype": "x", "args": [], "queue": queue}])
    pushed = [json.loads(spy.lines[0][5:]), json.loads(spy.lines[1][5:]), *json.loads(spy.lines[2][6:])]
    assert [job["retry"] for job in pushed] == [25, 25, 25, 25]
    fetched = fetch_all(client, queue, 4)
    assert [job.retry for job in fetched] == [25, 25, 25, 25]


def test_an_explicit_retry_is_kept(client: Client, queue: str) -> None:
    client.push({"jid": unique("raw"), "jobtype": "x", "args": [], "queue": queue, "retry": 2})
    client.push(Job("x", queue=queue, retry=0))
    assert [job.retry for job in fetch_all(client, queue, 2)] == [2, 0]


# -- pyfaktory: send() instead of sendall() deadlocked on 200 KB ----------------------------------------


@pytest.mark.parametrize("size", [200 * 1024, 2 * 1024 * 1024])
def test_large_payloads(client: Client, queue: str, size: int) -> None:
    text = ("žluťoučký kůň 🐎 " * (size // 30))[: size // 2]
    blob = "x" * (size // 2)
    job = Job("Big", [text, blob, {"nested": [text[:1000]] * 10}], queue=queue)
    assert len(job.to_json().encode()) >= size
    client.push(job)
    fetched = fetch_all(client, queue, 1)[0]
    assert fetched.args == job.args


def test_large_bulk_push(client: Client, queue: str) -> None:
    jobs = [Job("Big", ["ž" * 50_000], queue=queue) for _ in range(20)]  # 2 MB in one PUSHB line
    assert client.push_bulk(jobs) == {}
    assert [job.args for job in fetch_all(client, queue, 20)] == [job.args for job in jobs]


# -- numbers (§7.3) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused_locally(client: Client, queue: str, value: float) -> None:
    spy = RequestSpy(client)
    with pytest.raises(InvalidCommand):
        client.push(Job("x", [value], queue=queue))
    with pytest.raises(InvalidCommand):
        client.push({"jid": unique(), "jobtype": "x", "args": [{"v": value}], "queue": queue})
    with pytest.raises(InvalidCommand):
        client.push_bulk([Job("x", queue=queue), Job("x", [value], queue=queue)])
    assert spy.lines == []  # nothing reached the wire
    assert client.queue_sizes().get(queue, 0) == 0


def test_big_integers_come_back_about_equal(client: Client, queue: str) -> None:
    """Behaviour differs by server: Faktory passes numbers through a float64, ours keeps them (next test)."""
    client.push(Job("x", [2**64, 2**53 + 1, 1.5], queue=queue))
    big, odd, half = fetch_all(client, queue, 1)[0].args
    assert abs(big - 2**64) <= 2**64 * 1e-15
    assert abs(odd - (2**53 + 1)) <= 1
    assert half == 1.5


@pytest.mark.faktory_server_only
def test_big_integers_are_kept_exactly_by_our_server(client: Client, queue: str) -> None:
    client.push(Job("x", [2**64, 2**53 + 1, -(2**70)], queue=queue))
    assert fetch_all(client, queue, 1)[0].args == [2**64, 2**53 + 1, -(2**70)]
