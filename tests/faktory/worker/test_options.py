"""Worker options, validated once when the Worker is built (no server needed: nothing connects yet)."""

from __future__ import annotations

import re

import pytest

from celery_faktory import ClientConfig
from celery_faktory.errors import ConfigurationError
from celery_faktory.worker import Worker
from celery_faktory.worker.options import default_fetchers, default_reporters

URL = "tcp://127.0.0.1:7419"


@pytest.mark.parametrize(("concurrency", "fetchers"), [(1, 1), (5, 1), (10, 2), (16, 3), (20, 4), (200, 4)])
def test_default_fetchers_grow_with_concurrency_up_to_four(concurrency: int, fetchers: int) -> None:
    assert default_fetchers(concurrency) == fetchers
    assert Worker(URL, concurrency=concurrency).options.fetchers == fetchers


@pytest.mark.parametrize(("concurrency", "reporters"), [(1, 1), (9, 1), (10, 2), (20, 2), (200, 2)])
def test_a_busy_worker_gets_a_second_ack_connection(concurrency: int, reporters: int) -> None:
    assert default_reporters(concurrency) == reporters
    assert Worker(URL, concurrency=concurrency).options.reporters == reporters
    assert Worker(URL, concurrency=concurrency, reporters=3).options.reporters == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"beat_interval": 0}, "beat_interval"),  # pyfaktory builds this error and forgets to raise it
        ({"beat_interval": -1}, "beat_interval"),
        ({"concurrency": 0}, "concurrency"),
        ({"fetchers": 0}, "fetchers"),
        ({"reporters": 0}, "reporters"),
        ({"fetch_depth": 0}, "fetch_depth"),
        ({"shutdown_timeout": -1}, "shutdown_timeout"),
        ({"wid": "has space"}, "wid"),
        ({"queues": []}, "at least one queue"),
    ],
)
def test_bad_options_raise_at_once(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        Worker(URL, **options)  # type: ignore[arg-type]


def test_the_wid_is_stable_and_random_by_default() -> None:
    """cdrx's get_worker_id() makes a new id on every call."""
    worker = Worker(URL)
    assert re.fullmatch(r"[0-9a-f]{16}", worker.wid)
    assert worker.wid == worker.wid == worker.options.wid
    assert Worker(URL).wid != worker.wid
    assert Worker(URL, wid="my-worker-1").wid == "my-worker-1"


def test_client_options_and_config() -> None:
    worker = Worker("tcp://:secret@example.com:7500", read_timeout=30.0)
    assert (worker.config.host, worker.config.port, worker.config.password) == ("example.com", 7500, "secret")
    assert worker.config.read_timeout == 30.0
    assert worker.options.labels == ("python",)
    assert "secret" not in repr(worker)
    config = ClientConfig.from_url(URL, labels=("from-config",))
    worker = Worker(config=config, connect_timeout=1.0)
    assert worker.config.connect_timeout == 1.0
    assert worker.options.labels == ("from-config",)
    assert Worker(config=config, labels=["own"]).options.labels == ("own",)


def test_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKTORY_URL", "tcp://faktory.internal:7433")
    monkeypatch.delenv("FAKTORY_PROVIDER", raising=False)
    worker = Worker()
    assert (worker.config.host, worker.config.port) == ("faktory.internal", 7433)
