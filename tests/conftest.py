from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from celery_faktory.server import FaktoryServer, ServerConfig

pytest_plugins = ["tests.services"]

#: The password of the password-protected server used by handshake tests (non-ASCII on purpose).
TEST_PASSWORD = "s3cr3t-pässword"


@pytest.fixture(scope="session")
def faktory_server_config() -> ServerConfig:
    """Our own server runs with shortened timings; a real Faktory (FAKTORY_URL) keeps its own."""
    return ServerConfig.fast()


@pytest.fixture
def faktory_password_url(faktory_server_factory: Callable[..., FaktoryServer]) -> str:
    """A password-protected server: FAKTORY_PASSWORD_URL (tcp://:password@host:port) when set, else ours."""
    remote = os.environ.get("FAKTORY_PASSWORD_URL")
    if remote:
        return remote
    return faktory_server_factory(password=TEST_PASSWORD).url
