"""Fixtures of the server conformance suite.

Every test here runs unchanged against the in-process server and against a real Faktory 1.9.4
(``FAKTORY_URL``), except those marked ``faktory_server_only``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.faktory.server.support import Cleanup
from tests.faktory.wire import RawConnection, connect


@pytest.fixture
def remote() -> bool:
    """Whether the tests talk to a real Faktory (FAKTORY_URL)."""
    return bool(os.environ.get("FAKTORY_URL"))


@pytest.fixture
def fetch_timeout(request: pytest.FixtureRequest, remote: bool) -> float:
    """How long an empty FETCH blocks: 2 s on a real Faktory, the session server's fetch_timeout on ours."""
    if remote:
        return 2.0
    return float(request.getfixturevalue("faktory_server").config.fetch_timeout)


@pytest.fixture
def cleanup(faktory_url: str) -> Iterator[Cleanup]:
    """Collects the test's queues and jids, and removes them from the server afterwards."""
    tracker = Cleanup()
    yield tracker
    tracker.run(faktory_url)


@pytest.fixture
def conn(faktory_url: str) -> Iterator[RawConnection]:
    """A connection that has completed the handshake, closed after the test."""
    connection = connect(faktory_url)
    yield connection
    connection.close()
