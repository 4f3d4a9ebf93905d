"""Fixtures of the transport tests.

Every kombu test gets a fresh ``queue_name_prefix``, so tests never see each other's messages, and everything the
test left on the server under that prefix (queues, scheduled, retrying and dead jobs) is removed afterwards. The
tests run unchanged against a real Faktory (``FAKTORY_URL``) unless marked ``faktory_server_only``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from typing import Any

import kombu
import pytest

from celery_faktory.client import Client
from tests.faktory.brokers import broker_url, remove_prefixed
from tests.faktory.wire import unique


def dead_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def remote() -> bool:
    """Whether the tests talk to a real Faktory (FAKTORY_URL)."""
    return bool(os.environ.get("FAKTORY_URL"))


@pytest.fixture
def fetch_block(request: pytest.FixtureRequest, remote: bool) -> float:
    """How long an empty FETCH blocks on the server: 2 s on a real Faktory, less on the session server."""
    if remote:
        return 2.0
    return float(request.getfixturevalue("faktory_server").config.fetch_timeout)


@pytest.fixture
def prefix(faktory_url: str) -> Iterator[str]:
    """A unique queue name prefix; its queues and jobs are removed after the test."""
    value = unique("kt") + "."
    yield value
    remove_prefixed(faktory_url, value)


@pytest.fixture
def faktory(faktory_url: str) -> Iterator[Client]:
    """A plain Faktory client of the tests' server, to look at what the transport did."""
    with Client(faktory_url) as client:
        yield client


@pytest.fixture
def url(faktory_url: str) -> str:
    """The tests' server as a ``faktory://`` URL."""
    return broker_url(faktory_url)


@pytest.fixture
def options(prefix: str) -> dict[str, Any]:
    """Transport options of the ``connection`` fixture; tests may change them before first use."""
    return {"queue_name_prefix": prefix}


@pytest.fixture
def make_connection(url: str, options: dict[str, Any]) -> Iterator[Callable[..., kombu.Connection]]:
    """``make_connection(url=..., **transport_options)``: connections to the tests' server, closed afterwards."""
    made: list[kombu.Connection] = []

    def make(target: str | None = None, **overrides: Any) -> kombu.Connection:
        connection = kombu.Connection(target or url, transport_options={**options, **overrides})
        made.append(connection)
        return connection

    yield make
    for connection in made:
        connection.release()


@pytest.fixture
def connection(make_connection: Callable[..., kombu.Connection]) -> kombu.Connection:
    """A kombu connection to the tests' server with the test's prefix (not connected yet)."""
    return make_connection()


@pytest.fixture
def invalid_connection(make_connection: Callable[..., kombu.Connection]) -> kombu.Connection:
    """A connection to a port where nothing listens."""
    return make_connection(f"faktory://127.0.0.1:{dead_port()}", connect_timeout=1, interval_start=0)


@pytest.fixture
def failover_connection(url: str, make_connection: Callable[..., kombu.Connection]) -> kombu.Connection:
    """A dead URL first, then the live one."""
    return make_connection(f"faktory://127.0.0.1:{dead_port()};{url}")
