"""The heartbeat: its own connection and thread, rss_kb, the local host name, recovery from "unknown worker".

Several tests are regression tests for bugs of other clients (the protocol reference, section 13.2).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections.abc import Callable

import pytest

from celery_faktory.server import FaktoryServer, Fault, ServerConfig
from celery_faktory.worker.heartbeat import rss_kb
from tests.faktory.wire import wait_until
from tests.faktory.worker.conftest import WorkerFactory

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


@linux_only
def test_rss_kb_is_the_current_vmrss() -> None:
    """faktory_worker_go always sends rss_kb 0 on Linux: it fails to parse the "\\t 1780 kB" text."""
    with open("/proc/self/status") as status:
        expected = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    measured = rss_kb()
    assert measured is not None
    assert measured > 0
    assert measured == pytest.approx(expected, rel=0.2)


def test_beats_keep_flowing_while_fetches_block_on_an_empty_queue(make_worker: WorkerFactory) -> None:
    """pyfaktory's empty FETCH holds the shared socket for 2 s, delaying every BEAT behind it."""
    worker = make_worker(beat_interval=0.1).start()
    beats = worker.stats().beats
    started = time.monotonic()
    wait_until(lambda: worker.stats().beats >= beats + 8, timeout=5)
    assert time.monotonic() - started < 1.9  # shorter than one FETCH block on Faktory (2 s)
    assert worker.fetching


def test_beat_carries_rss_kb(faktory_server: FaktoryServer, make_worker: WorkerFactory) -> None:
    worker = make_worker(beat_interval=0.1).start()
    wait_until(lambda: faktory_server.workers()[worker.wid]["rss_kb"])
    assert faktory_server.workers()[worker.wid]["rss_kb"] == pytest.approx(rss_kb(), rel=0.5)


def test_hello_sends_the_local_host_name_pid_and_labels(
    faktory_server: FaktoryServer, make_worker: WorkerFactory
) -> None:
    """pyfaktory sends the Faktory server's host name as its own."""
    worker = make_worker(labels=("blue", "py"))
    worker.start()
    record = faktory_server.workers()[worker.wid]
    assert record["hostname"] == socket.gethostname()
    assert record["pid"] == os.getpid()
    assert record["labels"] == ["blue", "py"]
    connections = 1 + worker.options.reporters + worker.options.fetchers  # heartbeat, ACK/FAIL, FETCH: never shared
    wait_until(lambda: faktory_server.workers()[worker.wid]["connections"] == connections)


@pytest.mark.faktory_server_only
def test_unknown_worker_makes_the_heartbeat_register_again(
    faktory_server_factory: Callable[..., FaktoryServer], make_worker: WorkerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """faktory_worker_go looks for "Unknown worker" (capital U) and never sees the server's lower-case text."""
    server = faktory_server_factory()
    worker = make_worker(url=server.url, beat_interval=0.1).start()
    with caplog.at_level(logging.WARNING, logger="celery_faktory.worker.heartbeat"):
        server.inject_fault("BEAT", Fault(garbage=f"-ERR unknown worker {worker.wid}\r\n".encode()))
        beats = worker.stats().beats
        wait_until(lambda: worker.stats().beats >= beats + 3)
    assert "forgot worker" in caplog.text
    assert worker.wid in server.workers()
    assert not worker.stopped


@pytest.mark.faktory_server_only
def test_worker_survives_being_reaped(
    faktory_server_factory: Callable[..., FaktoryServer], make_worker: WorkerFactory
) -> None:
    """The server reaps a worker without a recent BEAT and closes all its connections; it must come back."""
    server = faktory_server_factory(config=ServerConfig.fast(heartbeat_timeout=0.3))
    worker = make_worker(url=server.url, beat_interval=0.6).start()
    wait_until(lambda: worker.wid not in server.workers(), timeout=5)  # reaped
    wait_until(lambda: worker.wid in server.workers(), timeout=5)  # and registered again
    assert not worker.stopped
