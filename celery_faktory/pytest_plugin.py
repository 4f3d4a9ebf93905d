"""Pytest fixtures for Faktory, registered through the ``pytest11`` entry point.

Fixtures:
    faktory_server_config: The :class:`~celery_faktory.server.ServerConfig` of the session server (Faktory's
        real timings by default; override this fixture to shorten them).
    faktory_server: The session's in-process :class:`~celery_faktory.server.FaktoryServer`. Skipped when
        ``FAKTORY_URL`` is set, so tests that need its controls skip against a real Faktory.
    faktory_url: The URL tests connect to: ``FAKTORY_URL`` when set, else the session server's.
    faktory_server_factory: Starts extra private servers (``factory(password="x")``), stopped after the test.

Marker:
    faktory_server_only: The test relies on behaviour or controls only this package's server has; it is
        skipped when ``FAKTORY_URL`` points at a real Faktory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celery_faktory.server import FaktoryServer, ServerConfig

__all__ = ["faktory_server", "faktory_server_config", "faktory_server_factory", "faktory_url"]

_REMOTE_REASON = "needs the in-process Faktory server (FAKTORY_URL points at a real one)"


def _remote_url() -> str | None:
    return os.environ.get("FAKTORY_URL") or None


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``faktory_server_only`` marker."""
    config.addinivalue_line(
        "markers", "faktory_server_only: needs celery_faktory's own server; skipped when FAKTORY_URL is set"
    )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip ``faktory_server_only`` tests when a real Faktory is in use."""
    if _remote_url() and item.get_closest_marker("faktory_server_only") is not None:
        pytest.skip(_REMOTE_REASON)


@pytest.fixture(scope="session")
def faktory_server_config() -> ServerConfig:
    """Timings of the session server; override in a conftest to shorten them (see ServerConfig.fast)."""
    return ServerConfig()


@pytest.fixture(scope="session")
def faktory_server(faktory_server_config: ServerConfig) -> Iterator[FaktoryServer]:
    """The session's in-process Faktory server (skipped when FAKTORY_URL is set)."""
    if _remote_url():
        pytest.skip(_REMOTE_REASON)
    with FaktoryServer(config=faktory_server_config) as server:
        yield server


@pytest.fixture(scope="session")
def faktory_url(request: pytest.FixtureRequest) -> str:
    """Where the tests' Faktory is: FAKTORY_URL, else the session server started on a free port."""
    remote = _remote_url()
    if remote:
        return remote
    server: FaktoryServer = request.getfixturevalue("faktory_server")
    return server.url


@pytest.fixture
def faktory_server_factory(faktory_server_config: ServerConfig) -> Iterator[Callable[..., FaktoryServer]]:
    """Start private servers: ``factory(password=..., config=..., clock=..., ssl_context=...)``."""
    servers: list[FaktoryServer] = []

    def factory(**kwargs: Any) -> FaktoryServer:
        kwargs.setdefault("config", faktory_server_config)
        server = FaktoryServer(**kwargs).start()
        servers.append(server)
        return server

    yield factory
    for server in servers:
        server.stop()
