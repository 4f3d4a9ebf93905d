"""DeFlow.register / unregister / get_instance, and configuration."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from celery import Celery

from celery_deflow import DeFlow, NotRegistered
from celery_deflow.config import RedisSettings
from celery_deflow.tasks import TASK_NAMES


@pytest.fixture
def app(redis_url: str) -> Celery:
    return Celery("runtime-tests", broker=redis_url, backend=redis_url, set_as_current=False)


@pytest.fixture(autouse=True)
def _clean() -> None:
    DeFlow.unregister()


def test_get_instance_without_registration() -> None:
    with pytest.raises(RuntimeError, match="You must register a DeFlow instance"):
        DeFlow.get_instance()
    with pytest.raises(NotRegistered):
        DeFlow.get_instance()
    DeFlow.unregister()  # no-op


def test_register_twice_returns_the_same_instance(
    app: Celery, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = DeFlow.register(app, url=redis_url)
    with caplog.at_level(logging.WARNING):
        second = DeFlow.register(app, url=redis_url)
    assert second is first
    assert second.id == first.id
    assert "more than once" in caplog.text
    assert DeFlow.get_instance() is first
    assert set(TASK_NAMES) <= set(app.tasks)
    DeFlow.unregister()
    with pytest.raises(RuntimeError):
        DeFlow.get_instance()


def test_recovery_scan_interval(app: Celery, redis_url: str) -> None:
    off = DeFlow.register(app, url=redis_url, check_process_queue_interval=0)
    assert not off.scanner.running
    DeFlow.unregister()
    on = DeFlow.register(app, url=redis_url, check_process_queue_interval=0.1)
    assert on.scanner.running
    DeFlow.unregister()
    assert not any(t.name == "deflow-recovery" and t.is_alive() for t in threading.enumerate())


def test_connection_settings(app: Celery, redis_server: Any) -> None:
    port = int(redis_server.port)
    deflow = DeFlow.register(
        app,
        connection={
            "host": "127.0.0.1",
            "port": port,
            "db": 3,
            "max_attempts": 2,
            "connect_timeout": 2.0,
            "retry_max_delay": 0.5,
        },
    )
    assert deflow.client.ping()
    assert deflow.client.connection_pool.connection_kwargs["db"] == 3
    with pytest.raises(ValueError, match="unknown connection keys"):
        RedisSettings.from_connection({"hostname": "x"})


def test_backend_url_is_the_default(app: Celery, redis_url: str) -> None:
    deflow = DeFlow.register(app)
    assert deflow.config.redis.url == redis_url


def test_password_is_masked() -> None:
    settings = RedisSettings(url="redis://user:s3cret@example:6379/0")
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in RedisSettings(host="h", password="s3cret").masked_url()


def test_not_a_redis_backend(redis_url: str) -> None:
    app = Celery("x", broker=redis_url, backend="rpc://", set_as_current=False)
    with pytest.raises(ValueError, match="no Redis for DeFlow"):
        DeFlow.register(app)
