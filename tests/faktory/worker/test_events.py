"""Lifecycle events (``Worker.on``): startup, quiet, shutdown, stopped -- each once, in order, whoever caused it."""

from __future__ import annotations

import threading

import pytest

from celery_faktory import Client
from celery_faktory.server import FaktoryServer
from celery_faktory.worker import Registry, Worker
from tests.faktory.wire import wait_until
from tests.faktory.worker.conftest import WorkerFactory
from tests.faktory.worker.support import push


def record(worker: Worker) -> list[tuple[str, str, int]]:
    """Subscribe to every event; each entry is (event, worker state, jobs running)."""
    seen: list[tuple[str, str, int]] = []
    for event in ("startup", "quiet", "shutdown", "stopped"):
        worker.on(event, lambda w, event=event: seen.append((event, w.state, w.in_progress)))  # type: ignore[misc]
    return seen


def test_events_fire_once_in_order(client: Client, queue: str, registry: Registry, make_worker: WorkerFactory) -> None:
    gate = threading.Event()

    @registry.register("block")
    def block() -> None:
        gate.wait(10)

    worker = make_worker()
    seen = record(worker)
    worker.start()
    assert seen == [("startup", "running", 0)]
    push(client, queue, "block")
    wait_until(lambda: worker.in_progress == 1)
    worker.quiet()
    worker.quiet()
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    wait_until(lambda: len(seen) == 3)
    assert seen[1:] == [("quiet", "quiet", 1), ("shutdown", "terminate", 1)]  # the running job still has its time
    gate.set()
    stopper.join(10)
    assert seen[3] == ("stopped", "terminate", 0)
    assert worker.stopped
    assert worker.stats().acked == 1


def test_server_quiet_and_terminate_fire_the_events(faktory_server: FaktoryServer, make_worker: WorkerFactory) -> None:
    worker = make_worker(beat_interval=0.1)
    seen = record(worker)
    worker.start()
    assert faktory_server.quiet(worker.wid)
    wait_until(lambda: [event for event, _, _ in seen] == ["startup", "quiet"])
    assert faktory_server.terminate(worker.wid)
    assert worker.join(timeout=5)
    assert [event for event, _, _ in seen] == ["startup", "quiet", "shutdown", "stopped"]


def test_a_raising_callback_is_logged_and_harmless(
    make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    worker = make_worker()
    calls: list[str] = []

    def broken(w: Worker) -> None:
        raise RuntimeError("callback bug")

    worker.on("startup", broken)
    worker.on("startup", lambda w: calls.append("second"))
    worker.start()
    assert calls == ["second"]
    assert "callback bug" in caplog.text
    worker.stop()
    assert worker.stopped


def test_unknown_event_is_refused(make_worker: WorkerFactory) -> None:
    with pytest.raises(ValueError, match="unknown worker event 'started'; the events are startup, quiet, shutdown"):
        make_worker().on("started", print)  # type: ignore[arg-type]
