"""Fixtures of the client tests.

Every test that talks to a server goes through ``faktory_url``, so it runs unchanged against a real Faktory
(``FAKTORY_URL``): unique queue names and jids, everything fetched is acknowledged, every queue is removed and
every jid left in a set is discarded at teardown.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celery_faktory.client import Client
from tests.faktory.client.helpers import ScriptedServer
from tests.faktory.wire import unique


@pytest.fixture
def client(faktory_url: str) -> Iterator[Client]:
    """A client of the tests' Faktory, closed after the test."""
    with Client(faktory_url) as faktory:
        yield faktory


@pytest.fixture
def queue(faktory_url: str) -> Iterator[str]:
    """A unique queue name, removed with its jobs after the test."""
    name = unique("cq")
    yield name
    with Client(faktory_url) as faktory:
        faktory.queue_remove(name)


@pytest.fixture
def discard_later(faktory_url: str) -> Iterator[list[str]]:
    """Append jids to this list: they are discarded from the retries, scheduled and dead sets at teardown."""
    jids: list[str] = []
    yield jids
    if jids:
        with Client(faktory_url) as faktory:
            for target in (faktory.retries, faktory.scheduled, faktory.dead):
                target.discard(jids=jids)


@pytest.fixture
def scripted_server() -> Iterator[Callable[[Callable[[socket.socket, ScriptedServer], Any]], ScriptedServer]]:
    """Start :class:`ScriptedServer` instances, closed after the test."""
    servers: list[ScriptedServer] = []

    def start(handler: Callable[[socket.socket, ScriptedServer], Any]) -> ScriptedServer:
        server = ScriptedServer(handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()
